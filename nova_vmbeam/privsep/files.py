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


"""Files handed to the QEMU user and back (privsep entrypoints).

Generations never chown (two of them share an instance's files during a
move), so what QEMU opens is made the QEMU user's beforehand: instance
files, a generation's migrate directory, the RAM pool, Cinder volumes.
"""

import os
import re
import resource
import stat

from nova_vmbeam.privsep import vmbeam_pctxt


def _check_ids(uid, gid):
    for value in (uid, gid):
        if not isinstance(value, int) or isinstance(value, bool) or \
                value < 0:
            raise ValueError('not a user or group id: %r' % (value,))


@vmbeam_pctxt.entrypoint
def chown(path, uid, gid):
    """Give ``path`` to ``uid``:``gid``.

    A regular file or directory is changed only where it is, never
    through a symbolic link (one planted in an instance directory cannot
    hand /etc/shadow to QEMU). A block device may be named through links
    (os-brick's /dev/disk/by-path/...), as long as it is one under /dev.
    """
    if not isinstance(path, str) or not os.path.isabs(path):
        raise ValueError('not an absolute path: %r' % (path,))
    _check_ids(uid, gid)
    real = os.path.realpath(path)
    if real.startswith('/dev/') and stat.S_ISBLK(os.stat(real).st_mode):
        os.chown(real, uid, gid)
        return
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise ValueError('%s is neither a file, a directory nor a block '
                             'device' % path)
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)


#: where the host's libvirt settings are, which every generation starts from
LIBVIRT_CONF_DIR = '/etc/libvirt'

_MAX_CORE = re.compile(rb'^\s*max_core\s*=', re.M)


def _max_core_line(qemu_conf):
    """A max_core setting the generation's libvirtd can apply, or b''.

    libvirt sets each QEMU's core size limit to max_core, unlimited
    unless set, and fails to start the guest where its own hard limit is
    lower and it may not raise it. The daemon inherits this process's
    limit: sudo leaves a core limit of 0 where it cannot restore the
    caller's (no CAP_SYS_RESOURCE, as in a container). Then the limit is
    written as max_core, unless the host's qemu.conf sets one.
    """
    hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
    if hard == resource.RLIM_INFINITY or _MAX_CORE.search(qemu_conf):
        return b''
    return (b'\n# nova-vmbeam: the core size limit this daemon may grant\n'
            b'max_core = %d\n' % hard)


@vmbeam_pctxt.entrypoint
def copy_libvirt_conf(dest, uid, gid):
    """Copy the host's /etc/libvirt/*.conf into ``dest``, as uid:gid's.

    A generation's daemons start from the host's settings (qemu.conf is
    root's only, mode 0600), to which its starter then adds its own.
    Only the top-level .conf files: none of the host's domains, networks
    or hooks.
    """
    if not isinstance(dest, str) or not os.path.isabs(dest):
        raise ValueError('not an absolute path: %r' % (dest,))
    _check_ids(uid, gid)
    if os.path.islink(dest) or not os.path.isdir(dest):
        raise ValueError('%s is not a directory' % dest)
    copied = []
    for name in sorted(os.listdir(LIBVIRT_CONF_DIR)):
        source = os.path.join(LIBVIRT_CONF_DIR, name)
        if not name.endswith('.conf') or not os.path.isfile(source):
            continue
        target = os.path.join(dest, name)
        with open(source, 'rb') as f:
            data = f.read()
        if name == 'qemu.conf':
            data += _max_core_line(data)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC |
                     os.O_NOFOLLOW, 0o600)
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, 0o600)
            os.write(fd, data)
        finally:
            os.close(fd)
        copied.append(name)
    return copied
