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

    def describe(self):
        """One line on the generation's resource use."""
        return ('%s pid %s, RSS %d KiB, %d open fds; %d guests, QEMU '
                'overhead beyond guest RAM %d KiB in all' %
                (self.daemon.name, self.daemon.pid, self.daemon.rss_kib,
                 self.daemon.fds, len(self.guests),
                 sum(g.overhead_kib for g in self.guests.values())))

    def to_dict(self):
        return dataclasses.asdict(self)

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
        return cls(**data)


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
