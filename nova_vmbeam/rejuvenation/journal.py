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

"""The rejuvenation journal: one JSON file, written atomically.

It records the hypervisor generations (which one is active), the current
or last run and each guest's progress in it, so that an orchestrator killed
at any point can be run again and either finish or roll back every guest.
load() returns, and save() and update() take, a records.JournalState: the
file's JSON is read and written here only.
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
from nova_vmbeam import records

#: the journal's format; load() migrates older ones (see _migrate)
VERSION = 2

# Guest states within a run (see nova_vmbeam.records).
PENDING = records.PENDING
MOVING = records.MOVING
MOVED = records.MOVED
FAILED = records.FAILED
GONE = records.GONE


AlreadyRunning = exception.RejuvenationRunning


def _encode(state):
    """records.JournalState -> the file's text.

    The one place (with load()) where the journal's records become plain
    data.
    """
    # One line, by json's C encoder: it runs while other guests' moves
    # wait for the interpreter, and json.dump or an indent would take the
    # pure-Python encoder (a copy.deepcopy to compare was as slow).
    # "vmbeam status" or "python3 -m json.tool" shows it readably.
    return json.dumps(state.to_dict(VERSION), sort_keys=True)


def _health_v2(report):
    """A version-1 health report in the one shape of records.HealthReport.

    Version 1 named the daemon that hosts the guests by its kind:
    'libvirtd' (and 'virtlogd') colocated, 'l1' nested.
    """
    if not report or 'daemon' in report:
        return report
    helpers = []
    if 'l1' in report:
        daemon = dict(report['l1'], name='l1')
    else:
        daemon = dict(report.get('libvirtd') or {}, name='libvirtd')
        if 'virtlogd' in report:
            helpers.append(dict(report['virtlogd'], name='virtlogd'))
    guests = report.get('guests') or {}
    if isinstance(guests, list):   # nested: names only
        guests = {name: {} for name in guests}
    return {'generation': report.get('generation'),
            'running': report.get('running', False),
            'daemon': {'name': daemon['name'], 'pid': daemon.get('pid'),
                       'rss_kib': daemon.get('rss_kib', 0),
                       'fds': daemon.get('fds', 0)},
            'helpers': [{'name': h['name'], 'pid': h.get('pid'),
                         'rss_kib': h.get('rss_kib', 0),
                         'fds': h.get('fds', 0)} for h in helpers],
            'guests': {name: {'pid': g.get('pid'),
                              'overhead_kib': g.get('overhead_kib', 0)}
                       for name, g in guests.items()},
            'address': report.get('address'),
            'libvirt_alive': report.get('libvirt'),
            'error': report.get('error')}


def _run_v2(run):
    if not run:
        return run
    for key in ('aging_before', 'aging_after'):
        if key in run:
            run[key] = _health_v2(run[key])
    for entry in run.get('guests', {}).values():
        if 'shell' in entry:
            entry['prepared'] = entry.pop('shell')
    return run


def _migrate(state):
    """Bring a journal of an earlier format to VERSION, in place.

    Version 1 (or none: the first journals) called a prepared destination
    a "shell" ('shells' of a generation, 'shell' of a run's guest), the
    generations 'siblings', and kept the health report in one shape per
    sibling kind.
    """
    if state.get('version', 1) == 1:
        state['generations'] = state.pop('siblings', {})
        for record in state['generations'].values():
            if 'shells' in record:
                record['prepared'] = record.pop('shells')
        _run_v2(state.get('run'))
        for run in state.get('history', []):
            _run_v2(run)
        state['version'] = 2
    return state


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
        """The journal's records.JournalState (empty if there is none)."""
        return self._load()[0]

    def _load(self):
        """(the state, its encoding by _encode() or None if unknown)."""
        try:
            with open(self.path) as f:
                text = f.read()
        except FileNotFoundError:
            return records.JournalState(), None
        state = json.loads(text)
        if state.get('version', 1) < VERSION:
            state, text = _migrate(state), None
        if state.get('version') != VERSION:
            raise exception.VMBeamError(
                'journal %s has version %s; this nova-vmbeam reads version '
                '%d' % (self.path, state.get('version'), VERSION))
        return records.JournalState.from_dict(state), text

    def save(self, state, text=None):
        """Replace the journal atomically: a crash leaves old or new.

        ``text``: ``state`` already encoded by _encode().
        """
        text = _encode(state) if text is None else text
        files.replace(self.path, text, durable=True)

    @contextlib.contextmanager
    def update(self):
        """Load, let the caller change, save (only if it changed)."""
        state, before = self._load()
        if before is None:
            before = _encode(state)
        # Otherwise the file's text is the state's encoding: save() wrote
        # it with _encode(), which is deterministic (sorted keys).
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
