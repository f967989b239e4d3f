"""What /proc says about a QEMU process: the RAM it maps, its CPU time.

The maps are how a move proves that the destination QEMU maps the very same
RAM as the source (same device and inode) before the source is let go.
"""

import collections
import os

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


def alive(pid):
    """True while ``pid`` runs (a zombie has exited already)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError):
        return False


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
