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

"""Typed records the rejuvenation engine hands to the rest of the project.

Modules outside ``rejuvenation/`` read these by attribute; only two edges
turn them into plain dictionaries: the journal file (journal.py) and the
JSON a command or an RPC call returns (``as_json``).
"""

import dataclasses
import typing


@dataclasses.dataclass
class DaemonHealth:
    """Resource use of one process of a generation's hypervisor stack."""

    #: what the process is: 'libvirtd', 'virtlogd' (colocated), 'l1'
    #: (nested: the L1 VM's QEMU on this host)
    name: str
    pid: typing.Optional[int] = None
    rss_kib: int = 0
    fds: int = 0

    @classmethod
    def from_dict(cls, data):
        return cls(**data)


@dataclasses.dataclass
class GuestUsage:
    """Resource use of one guest's QEMU beyond the guest's RAM."""

    #: None where the QEMU cannot be seen from this host (nested L2)
    pid: typing.Optional[int] = None
    overhead_kib: int = 0

    @classmethod
    def from_dict(cls, data):
        return cls(**data)


@dataclasses.dataclass
class KernelHealth:
    """The hypervisor's own kernel, where it is not the host's.

    Nested: the L1's kernel, read inside the L1. ``boot_id`` is new with
    every boot, so a generation whose boot id differs from the one it
    replaced runs a kernel booted afresh: what shows that a rejuvenation
    renewed the kernel, with ``uptime_s``.
    """

    boot_id: str
    uptime_s: float
    mem_total_kib: int
    mem_available_kib: int
    #: slab the kernel cannot reclaim (SUnreclaim): grows with kernel leaks
    slab_unreclaimable_kib: int

    @classmethod
    def from_dict(cls, data):
        return cls(**data) if data else None


@dataclasses.dataclass
class HealthReport:
    """A generation's resource use: the aging evidence, one shape.

    ``daemon`` is the process that hosts the guests, whatever the sibling
    kind: libvirtd (colocated) or the L1 VM (nested). Aging probes read
    it and need not know the kind.
    """

    generation: int
    running: bool
    daemon: DaemonHealth
    #: the stack's other processes (colocated: virtlogd)
    helpers: typing.List[DaemonHealth] = dataclasses.field(
        default_factory=list)
    #: guest name -> its QEMU's use
    guests: typing.Dict[str, GuestUsage] = dataclasses.field(
        default_factory=dict)
    #: nested: the L1's address, and whether its libvirt answers
    address: typing.Optional[str] = None
    libvirt_alive: typing.Optional[bool] = None
    #: why the guests could not all be measured (retired while looked at)
    error: typing.Optional[str] = None
    #: the hypervisor's own kernel (nested: the L1's); None where the
    #: hypervisor runs on the host's kernel, or it could not be read
    kernel: typing.Optional[KernelHealth] = None

    def describe(self):
        """One line on the generation's resource use."""
        line = ('%s pid %s, RSS %d KiB, %d open fds; %d guests, QEMU '
                'overhead beyond guest RAM %d KiB in all' %
                (self.daemon.name, self.daemon.pid, self.daemon.rss_kib,
                 self.daemon.fds, len(self.guests),
                 sum(g.overhead_kib for g in self.guests.values())))
        if self.kernel is not None:
            line += ('; its kernel: boot %s, up %.0f s, %d of %d KiB '
                     'available, unreclaimable slab %d KiB' % (
                         self.kernel.boot_id, self.kernel.uptime_s,
                         self.kernel.mem_available_kib,
                         self.kernel.mem_total_kib,
                         self.kernel.slab_unreclaimable_kib))
        return line

    def to_dict(self):
        # By hand: dataclasses.asdict deep-copies, and a run's journal
        # record, with two reports, is encoded on every guest's update.
        data = dict(self.__dict__)
        data['daemon'] = dict(self.daemon.__dict__)
        data['helpers'] = [dict(h.__dict__) for h in self.helpers]
        data['guests'] = {name: dict(g.__dict__)
                          for name, g in self.guests.items()}
        data['kernel'] = dict(self.kernel.__dict__) if self.kernel else None
        return data

    @classmethod
    def from_dict(cls, data):
        if data is None:
            return None
        data = dict(data)
        data['daemon'] = DaemonHealth.from_dict(data['daemon'])
        data['helpers'] = [DaemonHealth.from_dict(h)
                           for h in data.get('helpers', ())]
        data['guests'] = {name: GuestUsage.from_dict(g)
                          for name, g in data.get('guests', {}).items()}
        data['kernel'] = KernelHealth.from_dict(data.get('kernel'))
        return cls(**data)


@dataclasses.dataclass
class MoveResult:
    """What one move did and cost (a mover's answer, per guest).

    ``destination`` is the guest's endpoint now; it stays in memory and is
    never written out.
    """

    guest: str
    mover: str
    ok: bool
    prepare_ms: float = 0.0
    total_ms: float = 0.0
    downtime_ms: float = 0.0
    transferred_bytes: int = 0
    cpu_s: float = 0.0
    retire_ms: float = 0.0
    #: where the guest's pause went, in ms, in order (see the mover's
    #: measure()); empty when a mover does not break it down
    pause_ms: dict = dataclasses.field(default_factory=dict)
    error: typing.Optional[str] = None
    #: the destination was prepared ahead by a standby and taken over
    standby: bool = False
    destination: typing.Any = dataclasses.field(default=None, repr=False,
                                                compare=False)

    def to_dict(self):
        return {f.name: getattr(self, f.name)
                for f in dataclasses.fields(self) if f.name != 'destination'}

    @classmethod
    def from_dict(cls, data):
        if data is None:
            return None
        return cls(**_fields(cls, data))


# --- the journal's records ---------------------------------------------------

# A guest's state within a run.
PENDING = 'pending'     # still on the source generation
MOVING = 'moving'       # a move has begun: resolve from the daemons
MOVED = 'moved'         # runs on the target generation
FAILED = 'failed'       # the move failed and was rolled back
GONE = 'gone'           # no longer on the source (deleted): nothing to move

# A prepared destination's state.
PREPARING = 'preparing'     # journalled before its QEMU is started
READY = 'ready'             # its QEMU waits, paused, for the guest


def _fields(cls, data):
    """The keys of ``data`` that are fields of ``cls`` (unknown: dropped)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclasses.dataclass
class PreparedDestination:
    """A destination QEMU started ahead (by a standby), waiting paused.

    It is taken over only by the same mover for the very same domain XML
    (``digest``).
    """

    mover: str
    digest: str
    state: str = PREPARING
    prepare_ms: float = 0.0

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        return None if data is None else cls(**_fields(cls, data))


@dataclasses.dataclass
class Generation:
    """One hypervisor generation, as the journal keeps it.

    A generation is one running instance of the hypervisor stack, made by
    the configured sibling plugin (``kind``); ``sibling`` is that plugin's
    own record (Sibling.record()), handed back to it to find the
    generation again.
    """

    number: int
    kind: str
    #: 'starting', 'standby', 'ready', 'active', 'retired' or 'failed'
    state: str
    sibling: dict
    ready_ms: typing.Optional[float] = None
    #: guest name -> the destination a standby prepared for it
    prepared: typing.Dict[str, PreparedDestination] = dataclasses.field(
        default_factory=dict)

    @property
    def uri(self):
        return self.sibling.get('uri')

    def to_dict(self):
        # Flat, as version 1 wrote it: the plugin's record and ours.
        data = dict(self.sibling, state=self.state)
        if self.ready_ms is not None:
            data['ready_ms'] = self.ready_ms
        if self.prepared:
            data['prepared'] = {name: p.to_dict()
                                for name, p in self.prepared.items()}
        return data

    @classmethod
    def from_dict(cls, data):
        sibling = {k: v for k, v in data.items()
                   if k not in ('state', 'ready_ms', 'prepared')}
        return cls(number=int(data['generation']), kind=data['kind'],
                   state=data['state'], sibling=sibling,
                   ready_ms=data.get('ready_ms'),
                   prepared={name: PreparedDestination.from_dict(p)
                             for name, p in
                             data.get('prepared', {}).items()})


@dataclasses.dataclass
class GuestEntry:
    """One guest's progress in a run, and its figures once moved."""

    state: str = PENDING
    uuid: typing.Optional[str] = None
    mover: typing.Optional[str] = None
    #: whether the source ran (not paused) when its move began
    was_running: typing.Optional[bool] = None
    prepared: typing.Optional[PreparedDestination] = None
    result: typing.Optional[MoveResult] = None
    error: typing.Optional[str] = None

    def to_dict(self):
        data = {'state': self.state}
        for name in ('uuid', 'mover', 'was_running', 'error'):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.prepared is not None:
            data['prepared'] = self.prepared.to_dict()
        if self.result is not None:
            data['result'] = self.result.to_dict()
        return data

    @classmethod
    def from_dict(cls, data):
        data = _fields(cls, data)
        data['prepared'] = PreparedDestination.from_dict(
            data.get('prepared'))
        data['result'] = MoveResult.from_dict(data.get('result'))
        return cls(**data)


#: Run attributes kept under another key in the journal (Python words)
_RUN_KEYS = {'source': 'from', 'target': 'to'}


@dataclasses.dataclass
class Run:
    """One rejuvenation: every guest (or some) from ``source`` to ``target``.

    ``source`` and ``target`` are generation numbers.
    """

    id: str
    source: int
    target: int
    #: 'running', 'interrupted', 'incomplete', 'completed' (and 'error'
    #: in a notification of a run that could not start)
    state: str
    mover: typing.Optional[str] = None
    guests: typing.Dict[str, GuestEntry] = dataclasses.field(
        default_factory=dict)
    #: wall-clock times: asked for, moves begun, source emptied, retired
    begun: typing.Optional[float] = None
    started: typing.Optional[float] = None
    emptied: typing.Optional[float] = None
    finished: typing.Optional[float] = None
    #: how long the target generation took to accept guests (0: standby)
    sibling_ready_ms: float = 0.0
    #: the target was started ahead, with destinations prepared
    standby: bool = False
    moves_ms: typing.Optional[float] = None
    prepare_all_ms: typing.Optional[float] = None
    switch_all_ms: typing.Optional[float] = None
    #: guests still on the source of an incomplete run
    left: typing.List[str] = dataclasses.field(default_factory=list)
    aging_before: typing.Optional[HealthReport] = None
    aging_after: typing.Optional[HealthReport] = None

    def left_behind(self, only=None):
        """Name -> why, of the guests not moved (``only``: of these)."""
        return {name: entry.error or entry.state
                for name, entry in self.guests.items()
                if entry.state not in (MOVED, GONE) and
                (only is None or name in only)}

    def to_dict(self):
        data = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or (f.name == 'left' and not value):
                continue
            if f.name == 'guests':
                value = {n: e.to_dict() for n, e in value.items()}
            elif f.name in ('aging_before', 'aging_after'):
                value = value.to_dict()
            data[_RUN_KEYS.get(f.name, f.name)] = value
        return data

    @classmethod
    def from_dict(cls, data):
        if data is None:
            return None
        data = dict(data)
        for name, key in _RUN_KEYS.items():
            data[name] = data.pop(key)
        data = _fields(cls, data)
        data['guests'] = {n: GuestEntry.from_dict(e)
                          for n, e in data.get('guests', {}).items()}
        for name in ('aging_before', 'aging_after'):
            data[name] = HealthReport.from_dict(data.get(name))
        return cls(**data)


@dataclasses.dataclass
class JournalState:
    """The whole journal: the generations, the current or last run."""

    active: typing.Optional[int] = None
    generations: typing.Dict[int, Generation] = dataclasses.field(
        default_factory=dict)
    run: typing.Optional[Run] = None
    #: the last completed runs, oldest first
    history: typing.List[Run] = dataclasses.field(default_factory=list)

    def standby_generation(self):
        """Number of the generation started ahead by standby(), or None."""
        for number, generation in self.generations.items():
            if generation.state == 'standby':
                return number
        return None

    def next_generation(self):
        return max(self.generations) + 1

    def to_dict(self, version):
        return {'version': version, 'active': self.active,
                'generations': {str(n): g.to_dict()
                                for n, g in self.generations.items()},
                'run': self.run.to_dict() if self.run else None,
                'history': [r.to_dict() for r in self.history]}

    @classmethod
    def from_dict(cls, data):
        return cls(active=data.get('active'),
                   generations={
                       int(n): Generation.from_dict(g)
                       for n, g in data.get('generations', {}).items()},
                   run=Run.from_dict(data.get('run')),
                   history=[Run.from_dict(r)
                            for r in data.get('history', [])])


@dataclasses.dataclass
class RunPlan:
    """What a rejuvenation would do, found without changing anything."""

    #: the open run it would take up, or None for a new run
    run_id: typing.Optional[str]
    #: generation numbers the guests move from and to
    source: int
    target: int
    #: guest name -> the mover that would move it
    movers: typing.Dict[str, str]
    #: guest name -> its domain UUID, every guest of the source
    uuids: typing.Dict[str, str]


@dataclasses.dataclass
class GenerationStatus:
    """A generation that runs (not retired) and its health now."""

    generation: Generation
    health: HealthReport

    def to_dict(self):
        return dict(self.generation.to_dict(), health=self.health.to_dict())


@dataclasses.dataclass
class Status:
    """The orchestrator's status: generations that run, the last runs."""

    active: typing.Optional[int]
    generations: typing.Dict[int, GenerationStatus]
    run: typing.Optional[Run]
    history: typing.List[Run]

    def to_dict(self):
        return {'active': self.active,
                'generations': {str(n): g.to_dict()
                                for n, g in self.generations.items()},
                'run': self.run.to_dict() if self.run else None,
                'history': [r.to_dict() for r in self.history]}


def as_json(record):
    """A record (or a dict/list holding records) as plain JSON data.

    The one conversion for output: a command's --json, an RPC reply.
    """
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        to_dict = getattr(record, 'to_dict', None)
        return as_json(to_dict() if to_dict else dataclasses.asdict(record))
    if isinstance(record, dict):
        return {k: as_json(v) for k, v in record.items()}
    if isinstance(record, (list, tuple)):
        return [as_json(v) for v in record]
    return record
