"""The page-mover plugin interface.

A mover moves one running guest from its QEMU (the source) into a fresh
QEMU on a target hypervisor (the destination) in four phases:

  prepare    start the destination, paused, waiting for the migration
  transfer   migrate; with a zero-copy mover only device state crosses
  verify     prove the destination holds the guest: migration completed on
             both ends, destination still paused, same RAM mapped
  switchover resume the destination, retire the source

Safety rule: the source stays authoritative until verify has passed. Any
failure before the destination runs rolls back: the destination is killed
(and reaped, so it no longer maps the RAM) and only then is the source
resumed. Two QEMUs never run on one RAM.
"""

import abc
import dataclasses
import time
import typing

from oslo_log import log as logging

from nova_vmbeam import exception

LOG = logging.getLogger(__name__)

PHASES = ('check', 'prepare', 'transfer', 'verify', 'switchover')


@dataclasses.dataclass
class MoveResult:
    """What one move did and cost; ``destination`` is the guest now."""

    guest: str
    mover: str
    ok: bool
    prepare_ms: float = 0.0
    total_ms: float = 0.0
    downtime_ms: float = 0.0
    transferred_bytes: int = 0
    cpu_s: float = 0.0
    retire_ms: float = 0.0
    error: typing.Optional[str] = None
    destination: typing.Any = dataclasses.field(default=None, repr=False)

    def as_dict(self):
        return {f.name: getattr(self, f.name)
                for f in dataclasses.fields(self) if f.name != 'destination'}


class MoveContext:
    """State of one move, shared by its phases and its rollback."""

    def __init__(self, source, target):
        self.source = source
        self.target = target
        self.destination = None
        self.source_was_running = None
        self.destination_resumed = False
        self.marks = {}
        self.migration = {}

    def mark(self, name):
        self.marks[name] = time.monotonic()

    def ms(self, start, end):
        return (self.marks[end] - self.marks[start]) * 1000.0


class Mover(metaclass=abc.ABCMeta):
    """Base class of the movers in the ``nova_vmbeam.movers`` namespace."""

    #: entry-point name
    name = None
    #: the RAM backing (nova_vmbeam.guest.RAM_*) guests need for this mover,
    #: or None when any RAM will do
    ram_backing = None

    def __init__(self, conf):
        self.conf = conf

    @abc.abstractmethod
    def check(self, spec):
        """Raise InvalidInput if this mover cannot move ``spec``.

        Called before anything is changed; also used to refuse a guest
        up front (for example RAM that is not shareable).
        """

    @abc.abstractmethod
    def prepare(self, ctx):
        """Start ctx.destination on ctx.target, paused and incoming."""

    @abc.abstractmethod
    def transfer(self, ctx):
        """Migrate until completed; fill ctx.migration with QEMU's stats."""

    @abc.abstractmethod
    def verify(self, ctx):
        """Raise VerificationFailed unless the destination may take over."""

    @abc.abstractmethod
    def switchover(self, ctx):
        """Resume the destination, then retire the source."""

    @abc.abstractmethod
    def rollback(self, ctx):
        """Kill the destination, then make sure the source runs as before."""

    @abc.abstractmethod
    def measure(self, ctx, result):
        """Fill the figures of ``result`` from ``ctx``."""

    def move(self, source, target):
        """Move the guest of ``source`` onto ``target``.

        Returns a MoveResult whose ``destination`` is the guest's endpoint
        now. Raises InvalidInput (nothing changed), MoveFailed (rolled back,
        guest runs on the source) or RollbackFailed (operator needed).
        """
        spec = source.spec
        self.check(spec)
        ctx = MoveContext(source, target)
        phase = 'prepare'
        try:
            for phase, step in (('prepare', self.prepare),
                                ('transfer', self.transfer),
                                ('verify', self.verify),
                                ('switchover', self.switchover)):
                step(ctx)
        except Exception as exc:
            if ctx.destination_resumed:
                # The destination runs the guest: the move has happened and
                # only retiring the source failed. Never resume the source.
                LOG.exception('retiring the source of %s failed; killing '
                              'it', spec.name)
                ctx.source.destroy()
                ctx.mark('retired')
            else:
                LOG.warning('move of %s with %s failed during %s: %s; '
                            'rolling back', spec.name, self.name, phase, exc)
                self._rollback(ctx, phase, exc)
                raise exception.MoveFailed(guest=spec.name, mover=self.name,
                                           phase=phase, reason=exc) from exc
        result = MoveResult(guest=spec.name, mover=self.name, ok=True,
                            destination=ctx.destination)
        self.measure(ctx, result)
        return result

    def _rollback(self, ctx, phase, exc):
        try:
            self.rollback(ctx)
        except Exception as rb_exc:
            LOG.exception('rollback of %s failed', ctx.source.spec.name)
            raise exception.RollbackFailed(
                guest=ctx.source.spec.name, mover=self.name, phase=phase,
                reason=exc, rollback=rb_exc,
                pid=ctx.source.pid) from rb_exc
