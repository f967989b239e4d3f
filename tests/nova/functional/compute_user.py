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

"""nova-compute's own user for the driver's functional tests.

Nova's harness runs nova-compute in the test process. Here that process
drops to the compute user (``nova``, or VMBEAM_TEST_COMPUTE_USER) once its
root-only set-up (the broker, the test's directories) is done, and the
driver is created and run as that user, every thread of it: what a
packaged nova-compute is. Its privsep daemons, Nova's and nova-vmbeam's,
are started through sudo, as on a real node, by a rule for this test
environment's privsep-helper only.

The drop is process-wide (glibc applies setresuid to every thread) but
keeps root as the *saved* uid, so that the test can take root back for the
few checks only root can make (/proc/<QEMU>/fd, losetup) and for its
clean-up. While the effective uid is not 0 the process has no effective
capabilities.
"""

import contextlib
import ctypes
import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import fixtures

#: sudo skips files in /etc/sudoers.d whose name holds a dot
SUDOERS = '/etc/sudoers.d/vmbeam-nova-ft-%s' % hashlib.sha256(
    sys.prefix.encode()).hexdigest()[:8]
_PR_SET_DUMPABLE = 4


def helper_path():
    """This environment's privsep-helper, which the sudo rule names."""
    return os.path.join(os.path.dirname(sys.executable), 'privsep-helper')


#: setresuid and setresgid system call numbers, by machine
_SYSCALLS = {'x86_64': (117, 119), 'aarch64': (147, 149)}
_SETRESUID, _SETRESGID = 0, 1


def _thread_setres(which, ident):
    """setres[ug]id(ident, ident, 0) for the calling thread only."""
    numbers = _SYSCALLS.get(os.uname().machine)
    if numbers is None:
        raise RuntimeError('no setresuid system call number for %s' %
                           os.uname().machine)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(numbers[which], ident, ident, 0) != 0:
        raise OSError(ctypes.get_errno(), 'setres%sid' % 'ug'[which])


def _set_dumpable():
    # A change of effective uid makes the process undumpable, so its own
    # /proc/self entries turn root's; nova-compute reads some of them.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), 'prctl(PR_SET_DUMPABLE)')


class ComputeUser(fixtures.Fixture):
    """The unprivileged user nova-compute runs as, and the way back."""

    def __init__(self, name=None):
        super().__init__()
        self.name = name or os.environ.get('VMBEAM_TEST_COMPUTE_USER',
                                           'nova')

    def _setUp(self):
        if os.geteuid() != 0:
            raise RuntimeError('the driver tests start as root (they start '
                               'libvirt daemons, a broker and sudo rules)')
        try:
            pw = pwd.getpwnam(self.name)
        except KeyError:
            # As tools/run-cloud.sh makes it.
            subprocess.run(['useradd', '--system', '--user-group',
                            '--no-create-home', '--home-dir', '/nonexistent',
                            '--shell', '/usr/sbin/nologin', self.name],
                           check=True, capture_output=True)
            pw = pwd.getpwnam(self.name)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.groups = os.getgrouplist(self.name, self.gid)
        failed = _fails_as(self.uid, self.gid, sys.executable, '-c',
                           'import nova.virt.vmbeam')
        if failed:
            raise RuntimeError(
                '%s cannot import the driver as %s: %s. Its interpreter '
                'must be one that user may run (tox.ini: base_python = '
                '/usr/bin/python3, not a Python under /root) and every '
                'directory above %s searchable by it (tox.ini: chmod o+x '
                '{toxworkdir})' % (sys.executable, self.name, failed,
                                   sys.prefix))
        self._sudo_rule()
        # A temporary directory for the whole test, the compute user's
        # once it runs (become): the fixtures used from now on make
        # theirs in it. Nova's database fixture keeps its SQLite files
        # there, in directories of root's otherwise.
        self.tmp = tempfile.mkdtemp(prefix='vmbeam-nova-ft-', dir='/tmp')
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.useFixture(fixtures.EnvironmentVariable('TMPDIR', self.tmp))
        self.useFixture(fixtures.MonkeyPatch('tempfile.tempdir', self.tmp))

    def _sudo_rule(self):
        helper = helper_path()
        # rlimit_core=user: see tools/cloud/aio.py init_compute_user.
        rule = ('# nova-vmbeam driver tests (%s): nova-compute as %s '
                'starts its privsep daemons\n'
                'Defaults!%s rlimit_core=user\n'
                '%s ALL=(root) NOPASSWD: %s *\n' % (
                    sys.prefix, self.name, helper, self.name, helper))
        staged = SUDOERS + '.new'
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o440)
        with os.fdopen(fd, 'w') as f:
            f.write(rule)
        checked = subprocess.run(['visudo', '-c', '-q', '-f', staged],
                                 capture_output=True, text=True)
        if checked.returncode:
            os.unlink(staged)
            raise RuntimeError('sudo refused the test rule %s (is sudo '
                               'installed? bindep.txt): %s' % (
                                   staged, checked.stderr or checked.stdout))
        os.replace(staged, SUDOERS)
        self.addCleanup(os.unlink, SUDOERS)

    @property
    def helper_command(self):
        """[<privsep context>] helper_command for the compute user."""
        return 'sudo -n %s' % helper_path()

    def give(self, top):
        """Make ``top`` and everything in it the compute user's."""
        os.chown(top, self.uid, self.gid)
        for directory, dirs, files in os.walk(top):
            for name in dirs + files:
                os.lchown(os.path.join(directory, name), self.uid, self.gid)

    def become(self):
        """The whole process runs as the compute user from now on.

        Root stays the saved uid: restore() goes back.
        """
        # What the fixtures made in the temporary directory (Nova's
        # SQLite databases) becomes the compute user's.
        self.give(self.tmp)
        os.setgroups(self.groups)
        os.setresgid(self.gid, self.gid, 0)
        os.setresuid(self.uid, self.uid, 0)
        _set_dumpable()
        self.addCleanup(self.restore)

    def restore(self):
        if os.geteuid() == 0:
            return
        os.setresuid(0, 0, 0)
        os.setresgid(0, 0, 0)
        os.setgroups([0])
        _set_dumpable()

    @contextlib.contextmanager
    def as_root(self):
        """Root, in the calling thread only, for a check only root can make.

        The raw system calls change the calling thread's credentials
        alone (glibc's wrappers would change every thread's): the driver's
        threads stay the compute user's meanwhile.
        """
        uid, gid = os.getuid(), os.getgid()
        if uid == 0:
            yield
            return
        # Root's uid first: it brings back the capability to set the gid.
        _thread_setres(_SETRESUID, 0)
        _thread_setres(_SETRESGID, 0)
        try:
            yield
        finally:
            _thread_setres(_SETRESGID, gid)
            _thread_setres(_SETRESUID, uid)
            _set_dumpable()


def privsep_daemon_uids(context):
    """Effective uids of the running privsep daemons of ``context``."""
    uids = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as f:
                argv = f.read().decode(errors='replace').split('\0')
            uid = os.stat('/proc/%s' % pid).st_uid
        except OSError:
            continue   # gone meanwhile
        if any(a.endswith('privsep-helper') for a in argv[:2]) and \
                context in argv:
            uids.append(uid)
    return uids


def effective_capabilities():
    """This process's effective capability set (CapEff), as a number."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('CapEff:'):
                return int(line.split()[1], 16)
    raise AssertionError('no CapEff in /proc/self/status')


def _fails_as(uid, gid, *argv):
    """Why ``argv`` fails when uid/gid run it; '' if it does not."""
    try:
        done = subprocess.run(
            ['setpriv', '--reuid', str(uid), '--regid', str(gid),
             '--clear-groups', '--'] + list(argv), capture_output=True,
            text=True, cwd='/')
    except OSError as exc:
        return str(exc)
    if done.returncode == 0:
        return ''
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else 'exit status %d' % done.returncode
