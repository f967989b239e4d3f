# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.


"""The first process of a generation's mount namespace.

Run as ``unshare --mount --propagation private -- python -m
nova_vmbeam.libvirt.namespace --base BASE --libvirtd PATH [--virtlogd
PATH]`` by the privsep daemon (privsep/daemons.py). It bind-mounts the
generation's private directories over libvirt's (PRIVATE_DIRS), starts
virtlogd unless one runs already, and becomes libvirtd. No shell: every
value is an argument of its own.

Standalone on purpose: it imports nothing of the project, so that it
starts in a few milliseconds.
"""

import argparse
import os
import subprocess
import sys

# private directory (under BASE) -> where the daemons see it
PRIVATE_DIRS = (('run', '/run/libvirt'),
                ('lib', '/var/lib/libvirt'),
                ('log', '/var/log/libvirt'),
                ('cache', '/var/cache/libvirt'),
                ('etc', '/etc/libvirt'))


def parse(argv):
    parser = argparse.ArgumentParser(
        prog='python -m nova_vmbeam.libvirt.namespace',
        description='Start a generation\'s libvirtd in this mount '
                    'namespace (run under unshare --mount).')
    parser.add_argument('--base', required=True,
                        help='the generation\'s state directory')
    parser.add_argument('--libvirtd', required=True,
                        help='the libvirtd binary')
    parser.add_argument('--virtlogd',
                        help='the virtlogd binary; omitted when the '
                             'generation\'s virtlogd runs already')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    for private, target in PRIVATE_DIRS:
        os.makedirs(target, exist_ok=True)
        subprocess.run(['mount', '--bind',
                        os.path.join(args.base, private), target],
                       check=True)
    if args.virtlogd:
        subprocess.run([args.virtlogd, '--daemon', '--pid-file',
                        os.path.join(args.base, 'run', 'virtlogd.pid')],
                       check=True)
    os.execv(args.libvirtd, [args.libvirtd, '--pid-file',
                             os.path.join(args.base, 'run',
                                          'libvirtd.pid')])


if __name__ == '__main__':
    try:
        main()
    except subprocess.CalledProcessError as exc:
        sys.exit('%s failed with status %d' % (' '.join(exc.cmd),
                                               exc.returncode))
