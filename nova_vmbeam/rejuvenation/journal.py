"""The rejuvenation journal: one JSON file, written atomically.

It records the sibling generations (which one is active), the current or
last run and each guest's progress in it, so that an orchestrator killed at
any point can be run again and either finish or roll back every guest.
A lock file held for the length of a run keeps two orchestrators apart; the
kernel drops it when its holder dies.

One fact is kept beside the file instead: that a guest's switchover has
begun (its destination is told to run). It is written while the guest is
paused, where rewriting the whole journal and waiting for the disk
(milliseconds, tens of them on a busy disk) would lengthen the pause. It is
a small file per guest, created without fsync: it guards against this
process dying between the resume and the next journal write, and a dead
process leaves the page cache behind, so recovery reads it. A host crash
takes every QEMU and the RAM pool (tmpfs, hugetlbfs) with it, so there is
then no guest left for the mark to protect.
"""

import contextlib
import errno
import fcntl
import json
import os
import urllib.parse

from nova_vmbeam import exception
from nova_vmbeam import files

VERSION = 1

# Guest states within a run.
PENDING = 'pending'     # still on the source generation
MOVING = 'moving'       # a move has begun: resolve from the daemons
MOVED = 'moved'         # runs on the target generation
FAILED = 'failed'       # the move failed and was rolled back
GONE = 'gone'           # no longer on the source (deleted): nothing to move


AlreadyRunning = exception.RejuvenationRunning


def _encode(state):
    # One line, by json's C encoder: it runs while other guests' moves
    # wait for the interpreter, and json.dump or an indent would take the
    # pure-Python encoder (a copy.deepcopy to compare was as slow).
    # "vmbeam status" or "python3 -m json.tool" shows it readably.
    return json.dumps(state, sort_keys=True)


def _empty():
    return {'version': VERSION, 'active': None, 'siblings': {},
            'run': None, 'history': []}


class Journal:

    def __init__(self, path):
        self.path = path
        self.lock_path = path + '.lock'
        self.switching_dir = path + '.switching'
        self._lock_fd = None

    # --- switchover marks (see the module's docstring) ---------------------

    def _switching_path(self, name):
        return os.path.join(self.switching_dir,
                            urllib.parse.quote(name, safe=''))

    def mark_switching(self, name):
        """Guest ``name``'s destination is about to run: never its source."""
        os.makedirs(self.switching_dir, exist_ok=True)
        with open(self._switching_path(name), 'w'):
            pass

    def is_switching(self, name):
        return os.path.exists(self._switching_path(name))

    def clear_switching(self, name=None):
        """Drop the mark of ``name`` (all marks: None) once it is settled."""
        if name is None:
            try:
                names = os.listdir(self.switching_dir)
            except FileNotFoundError:
                return
            for entry in names:
                self.clear_switching(urllib.parse.unquote(entry))
            return
        try:
            os.unlink(self._switching_path(name))
        except FileNotFoundError:
            pass

    def load(self):
        try:
            with open(self.path) as f:
                state = json.load(f)
        except FileNotFoundError:
            return _empty()
        if state.get('version') != VERSION:
            raise exception.VMBeamError(
                'journal %s has version %s; this nova-vmbeam reads version '
                '%d' % (self.path, state.get('version'), VERSION))
        return state

    def save(self, state, text=None):
        """Replace the journal atomically: a crash leaves old or new.

        ``text``: ``state`` already encoded by _encode().
        """
        text = _encode(state) if text is None else text
        files.replace(self.path, text, durable=True)

    @contextlib.contextmanager
    def update(self):
        """Load, let the caller change, save (only if it changed)."""
        state = self.load()
        before = _encode(state)
        yield state
        after = _encode(state)
        if after != before:
            self.save(state, after)

    @contextlib.contextmanager
    def locked(self):
        """Hold the host's rejuvenation lock (non-blocking).

        A hand-written flock, not oslo.concurrency's lockutils, which
        waits for the lock: a second run must be refused at once, and
        told the holder's pid, which the holder writes into the lock
        file once it has the lock.
        """
        os.makedirs(os.path.dirname(self.lock_path), exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode().strip() or 'unknown'
            os.close(fd)
            raise AlreadyRunning(pid=holder, path=self.path)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
