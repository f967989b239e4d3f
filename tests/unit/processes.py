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

"""Real processes for tests about pids: strangers and pid-file holders."""

import os
import subprocess
import sys

# What libvirt's virPidFileAcquirePath does: lock the pid file (a POSIX
# lock on its first byte), write our pid, and hold the lock while we run.
_HOLD_PIDFILE = '''
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
os.ftruncate(fd, 0)
os.write(fd, b"%d\\n" % os.getpid())
print("holding", flush=True)
time.sleep(600)
'''


def _stop(process):
    if process.poll() is None:
        process.kill()
    process.wait()


def stranger(test):
    """A live process (``sleep``) that is no daemon and no QEMU of ours."""
    process = subprocess.Popen(['sleep', '600'])
    test.addCleanup(_stop, process)
    return process


def pidfile_holder(test, path, argv0='python3', args=()):
    """A process that holds its pid file at ``path`` as libvirt's do.

    ``argv0`` and ``args`` are what /proc/<pid>/cmdline shows beyond the
    script (say, a QEMU's name and its -name guest=...).
    """
    # Python finds its library from argv[0]; told where it is, it takes
    # any name.
    env = dict(os.environ, PYTHONHOME=sys.base_prefix)
    process = subprocess.Popen(
        [argv0, '-c', _HOLD_PIDFILE, path] + list(args),
        executable=sys.executable, stdout=subprocess.PIPE, env=env)
    test.addCleanup(_stop, process)
    test.assertEqual(b'holding\n', process.stdout.readline())
    return process


def fake_qemu_args(name):
    """The cmdline tail by which libvirt's QEMU of domain ``name`` is known."""
    return ['-name', 'guest=%s,debug-threads=on' % name]
