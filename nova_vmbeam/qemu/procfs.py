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

"""What /proc says about a process: the RAM it maps, its CPU time, its
memory, descriptors and cgroups; and the pid files that name processes.
The one /proc module of the project (QEMUs mostly, daemons too).

The maps are how a move proves that the destination QEMU maps the very same
RAM as the source (same device and inode) before the source is let go.

Processes are named by a ProcessIdentity (pid and start time), never by a
bare pid, wherever they are signalled or waited for: a pid is reused as
soon as its process has been reaped, and a pid file outlives its process
when that dies without tidying up.
"""

import collections
import ctypes
import dataclasses
import fcntl
import os
import signal

Mapping = collections.namedtuple(
    'Mapping', 'start end shared dev inode path')

RamIdentity = collections.namedtuple('RamIdentity', 'dev inode')


def read_maps(pid):
    mappings = []
    with open('/proc/%d/maps' % pid) as maps:
        for line in maps:
            fields = line.split(None, 5)
            if len(fields) < 5:
                continue
            span, perms, _offset, dev, inode = fields[:5]
            path = fields[5].strip() if len(fields) == 6 else ''
            start, end = (int(x, 16) for x in span.split('-'))
            major, minor = (int(x, 16) for x in dev.split(':'))
            mappings.append(Mapping(start, end, perms[3] == 's',
                                    os.makedev(major, minor), int(inode),
                                    path))
    return mappings


def file_identity(path):
    st = os.stat(path)
    return RamIdentity(st.st_dev, st.st_ino)


def shared_ram(pid, size):
    """Identities of the shared file mappings of at least ``size`` bytes.

    Sizes are summed per file because the kernel may split one mapping into
    several areas (madvise, mprotect).
    """
    sizes = collections.Counter()
    for m in read_maps(pid):
        if m.shared and m.inode:
            sizes[RamIdentity(m.dev, m.inode)] += m.end - m.start
    return {identity for identity, total in sizes.items() if total >= size}


def maps_identity(pid, identity, size):
    """True if ``pid`` maps ``identity`` shared over at least ``size``."""
    return identity in shared_ram(pid, size)


def pids_mapping(identity):
    """Pids of all processes that map ``identity`` (for pool release)."""
    pids = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            if any(RamIdentity(m.dev, m.inode) == identity
                   for m in read_maps(int(entry))):
                pids.append(int(entry))
        except (OSError, ValueError):
            continue   # the process went away, or is not ours to read
    return pids


def cpu_seconds(pid, thread_prefix=None):
    """CPU time of a process's threads, from schedstat (ns resolution).

    utime/stime in /proc/<pid>/stat tick at 10 ms, too coarse for a move
    that takes a few milliseconds. With ``thread_prefix``, only threads
    whose name starts with it count.
    """
    total = 0
    task_dir = '/proc/%d/task' % pid
    try:
        tids = os.listdir(task_dir)
    except OSError:
        return 0.0
    for tid in tids:
        try:
            if thread_prefix:
                with open(os.path.join(task_dir, tid, 'comm')) as f:
                    if not f.read().startswith(thread_prefix):
                        continue
            with open(os.path.join(task_dir, tid, 'schedstat')) as f:
                total += int(f.read().split()[0])
        except OSError:
            continue   # the thread ended meanwhile
    return total / 1e9


def status_kib(pid, field):
    """A size field of /proc/<pid>/status (VmRSS, RssAnon...) in KiB.

    0 when the process is gone or has no such field (a zombie, a kernel
    thread): a health report counts what is there to count.
    """
    prefix = field + ':'
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith(prefix):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def open_fds(pid):
    """Number of descriptors ``pid`` has open; 0 when it is gone."""
    try:
        return len(os.listdir('/proc/%d/fd' % pid))
    except OSError:
        return 0


def cpu_cgroup(pid):
    """The CPU cgroup of ``pid`` (as /proc/<pid>/cgroup names it), or None.

    cgroup v1: the hierarchy holding the cpu controller; v2: the unified one.
    """
    try:
        with open('/proc/%d/cgroup' % pid) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    unified = None
    for line in lines:
        _hierarchy, controllers, path = line.split(':', 2)
        if 'cpu' in controllers.split(','):
            return path
        if controllers == '':
            unified = path
    return unified


def cgroups(pid='self', path=None):
    """The cgroups of ``pid``: hierarchy key -> cgroup path; {} if gone.

    The key is what /proc/<pid>/cgroup names the hierarchy by: '' for the
    unified (cgroup v2) one, else its controllers as listed there
    ('pids', 'cpu,cpuacct', 'name=systemd').
    """
    try:
        with open(path or '/proc/%s/cgroup' % pid) as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        try:
            _hierarchy, controllers, cgroup = line.split(':', 2)
        except ValueError:
            continue
        found[controllers] = cgroup
    return found


CgroupMount = collections.namedtuple('CgroupMount',
                                     'fstype options root mount_point')


def cgroup_mounts(path='/proc/self/mountinfo'):
    """The cgroup file systems mounted here, as CgroupMount records.

    ``options`` are the super options (a v1 hierarchy's controllers and
    name= among them); ``root`` is the cgroup mounted there ('/' unless a
    subtree is bind-mounted).
    """
    mounts = []
    with open(path) as mountinfo:
        for line in mountinfo:
            fields = line.split()
            try:
                sep = fields.index('-')
            except ValueError:
                continue
            fstype = fields[sep + 1]
            if fstype not in ('cgroup', 'cgroup2'):
                continue
            mounts.append(CgroupMount(
                fstype, frozenset(fields[sep + 3].split(',')),
                fields[3].replace('\\040', ' '),
                fields[4].replace('\\040', ' ')))
    return mounts


def _stat(pid):
    """The fields of /proc/<pid>/stat after the command name, or None.

    Index 0 is field 3 (the state); field 22 (start time) is index 19. The
    command name is cut off at its last ')' since it may hold spaces and
    parentheses itself.
    """
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()
    except (OSError, IndexError):
        return None


_STATE = 0
_START_TIME = 19


def alive(pid):
    """True while ``pid`` runs (a zombie has exited already)."""
    fields = _stat(pid)
    return bool(fields) and fields[_STATE] != 'Z'


@dataclasses.dataclass(frozen=True)
class ProcessIdentity:
    """One process, told apart from any later process with the same pid.

    ``start_ticks`` is field 22 of /proc/<pid>/stat: clock ticks after
    boot at which the process started. A pid is only ever reused by a
    process started later, so pid and start time together name exactly
    one process for as long as the host runs.
    """

    pid: int
    start_ticks: int

    @classmethod
    def of(cls, pid):
        """The identity of the process ``pid`` now, or None if none runs."""
        fields = _stat(pid)
        if not fields or fields[_STATE] == 'Z':
            return None
        return cls(pid, int(fields[_START_TIME]))

    @classmethod
    def current(cls):
        return cls.of(os.getpid())

    @classmethod
    def from_pidfile(cls, path):
        """The identity in a "pid start_ticks" pid file, or None.

        None if the file is missing or holds something else. Whether that
        process still runs is alive()'s question.
        """
        numbers = _pidfile_numbers(path)
        if numbers is None or len(numbers) != 2:
            return None
        return cls(*numbers)

    def write_pidfile(self, path):
        """Write "pid start_ticks" to ``path`` (see from_pidfile).

        Unlike a bare pid, it never names a later process that got the
        same pid.
        """
        with open(path, 'w') as f:
            f.write('%d %d\n' % (self.pid, self.start_ticks))

    def alive(self):
        """True while this very process runs (not a zombie, not a reuse)."""
        fields = _stat(self.pid)
        return bool(fields) and fields[_STATE] != 'Z' and \
            int(fields[_START_TIME]) == self.start_ticks

    def signal(self, sig):
        """Send ``sig`` to this process only; False if it is gone.

        Through a pidfd: once opened it refers to one process whatever
        happens to the pid, and the start time is compared after opening
        it, so a process that replaced ours under the same pid is never
        signalled.
        """
        try:
            pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return False
        try:
            if not self.alive():
                return False
            signal.pidfd_send_signal(pidfd, sig)
            return True
        except ProcessLookupError:
            return False
        finally:
            os.close(pidfd)


class _Flock(ctypes.Structure):
    """struct flock (fcntl(2)), laid out by ctypes as the C compiler does."""

    _fields_ = [('l_type', ctypes.c_short), ('l_whence', ctypes.c_short),
                ('l_start', ctypes.c_int64), ('l_len', ctypes.c_int64),
                ('l_pid', ctypes.c_int)]


def _lock_holder(fd):
    """Pid of the process holding a POSIX lock on ``fd``'s file, or None."""
    query = _Flock(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    found = _Flock.from_buffer_copy(
        fcntl.fcntl(fd, fcntl.F_GETLK, bytes(query)))
    return found.l_pid if found.l_type != fcntl.F_UNLCK else None


#: more than a pid file's "pid" or "pid start_ticks" line
_PIDFILE_MAX = 64


def _parse_pidfile(text):
    """The whole numbers of a pid file's text, or None if there are none."""
    try:
        numbers = [int(word) for word in text.split()]
    except ValueError:
        return None
    return numbers or None


def _pidfile_numbers(path):
    try:
        with open(path) as f:
            return _parse_pidfile(f.read(_PIDFILE_MAX))
    except (OSError, UnicodeDecodeError):
        return None


def pidfile_pid(path):
    """The pid written in a pid file, whoever holds it; None if none is."""
    numbers = _pidfile_numbers(path)
    return numbers[0] if numbers else None


def pidfile_process(path):
    """The process a daemon's pid file names, or None if it is not there.

    libvirtd, virtlogd and the QEMUs libvirt starts all take a POSIX lock
    on their pid file (libvirt's virPidFileAcquirePath) and hold it for as
    long as they run; the kernel drops it when they exit. So the pid in
    the file counts only if that process holds the lock: a stale file
    (its process died without removing it) whose pid has been reused by
    any other process is refused. This is libvirt's own test
    (virPidFileReadIfLocked). The lock holder is asked again after the
    start time was read, so the identity returned is the holder's.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            numbers = _parse_pidfile(os.read(fd, _PIDFILE_MAX).decode())
        except (OSError, UnicodeDecodeError):
            return None
        if numbers is None:
            return None
        pid = numbers[0]
        if _lock_holder(fd) != pid:
            return None
        process = ProcessIdentity.of(pid)
        if process is None or _lock_holder(fd) != pid:
            return None
        return process
    finally:
        # We never lock these files, so closing drops no lock of ours.
        os.close(fd)


def _qemu_argv(pid):
    """The command line of ``pid`` if it is a live QEMU, else None."""
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            argv = f.read().split(b'\0')
    except OSError:
        return None
    if not os.path.basename(argv[0]).startswith(b'qemu-system') or \
            not alive(pid):
        return None
    return argv


def qemu_pids(*markers):
    """Pids of live QEMU processes whose command line has every marker."""
    pids = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        argv = _qemu_argv(int(entry))
        if argv is not None and all(m.encode() in b' '.join(argv)
                                    for m in markers):
            pids.append(int(entry))
    return pids


def is_libvirt_qemu(pid, name):
    """True if ``pid`` is the live QEMU libvirt started for domain ``name``.

    libvirt names its QEMUs with ``-name guest=<name>,...``.
    """
    argv = _qemu_argv(pid)
    if argv is None:
        return False
    try:
        value = argv[argv.index(b'-name') + 1]
    except (ValueError, IndexError):
        return False
    return value.split(b',')[0] == b'guest=' + name.encode()


_SO_ACCEPTCON = 0x10000


def listening(pid, path):
    """True once a unix socket listens at ``path`` (seen from ``pid``).

    QEMU binds a socket a moment before it listens on it.
    """
    try:
        with open('/proc/%d/net/unix' % pid) as table:
            next(table)   # header
            for line in table:
                fields = line.split()
                if len(fields) >= 8 and fields[7] == path and \
                        int(fields[3], 16) & _SO_ACCEPTCON:
                    return True
    except (OSError, ValueError):
        pass
    return False


def open_files_limit(pid):
    """The soft RLIMIT_NOFILE of ``pid`` (None if unreadable or unlimited).

    Read from /proc/<pid>/limits: a daemon's own limit is what its open
    descriptors run into, whatever ours is.
    """
    try:
        with open('/proc/%d/limits' % pid) as f:
            for line in f:
                if line.startswith('Max open files'):
                    soft = line[len('Max open files'):].split()[0]
                    return None if soft == 'unlimited' else int(soft)
    except (OSError, ValueError, IndexError):
        pass
    return None
