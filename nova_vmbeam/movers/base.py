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
import contextlib
import os
import time

from oslo_log import log as logging

from nova_vmbeam import exception
from nova_vmbeam.qemu import sched
from nova_vmbeam import records

LOG = logging.getLogger(__name__)

PHASES = ('check', 'prepare', 'transfer', 'verify', 'switchover')


class MoveContext:
    """State of one move, shared by its phases and its rollback."""

    def __init__(self, source, target):
        self.source = source
        self.target = target
        self.destination = None
        self.source_was_running = None
        # resume_sent: the destination was told to run (it may have, even
        # if the call failed); destination_resumed: it is known to run.
        self.resume_sent = False
        self.destination_resumed = False
        self.destination_reaped = False
        self.marks = {}
        # The same marks by the wall clock, to line them up with QEMU's
        # event timestamps.
        self.wall_marks = {}
        self.migration = {}
        #: called (no arguments) just before the destination is resumed,
        #: so a journal can record that the source may be stale from now on
        self.on_switchover = None
        #: called (no arguments) once the destination runs, before the
        #: source is retired: the guest's pause is over
        self.on_resumed = None

    def mark(self, name):
        self.marks[name] = time.monotonic()
        self.wall_marks[name] = time.time()

    def ms(self, start, end):
        return (self.marks[end] - self.marks[start]) * 1000.0


class MoverBase(metaclass=abc.ABCMeta):
    """Base class of the movers in the ``nova_vmbeam.movers`` namespace."""

    #: entry-point name
    name = None
    #: the RAM backing (nova_vmbeam.guest.RAM_*) guests need for this mover,
    #: or None when any RAM will do
    ram_backing = None
    #: the sibling kind it moves between, or None for any hypervisor
    #: (benchmarks of plain QEMU processes leave the others out)
    sibling_kind = None

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

    def move(self, source, target, on_switchover=None):
        """Move the guest of ``source`` onto ``target``.

        Returns a records.MoveResult whose ``destination`` is the guest's
        endpoint now. Raises InvalidInput (nothing changed), MoveFailed
        (rolled back, guest runs on the source) or RollbackFailed (operator
        needed).
        """
        return self.finish(self.begin(source, target), on_switchover)

    def begin(self, source, target):
        """Check and prepare: the destination waits, the source runs on.

        Returns the MoveContext to hand to finish() or abort(). On failure
        the destination is gone again and MoveFailed is raised.
        """
        self.check(source.spec)
        ctx = MoveContext(source, target)
        # Starting a destination through libvirt is hundreds of monitor
        # round trips between the daemon and the new QEMU; on a host busy
        # with guests each waits for a time slice. The daemons and this
        # process get the switchover's priority for it (the new QEMU
        # starts at normal priority: boosted threads reset it on fork).
        try:
            with self._boost(ctx, qemus=False):
                self.prepare(ctx)
        except Exception as exc:
            self._fail(ctx, 'prepare', exc)
        return ctx

    def adopt(self, source, target, destination):
        """A MoveContext for a destination prepared earlier (a standby).

        Raises InvalidInput if this mover cannot take over ``destination``;
        the caller then discards it and prepares a new one with begin().
        """
        raise exception.InvalidInput(
            reason='mover %s cannot adopt a prepared destination' %
            self.name)

    def finish(self, ctx, on_switchover=None, pause_lock=None):
        """Transfer, verify and switch over a prepared move.

        ``pause_lock``, shared by moves that run at the same time, is held
        from the migration's start until the destination runs: guests
        then pause one at a time, each with the host's full attention,
        while the rest of their moves (retiring sources, bookkeeping)
        overlaps.
        """
        ctx.on_switchover = on_switchover
        # Held until the destination runs (closed by the switchover).
        paused = contextlib.ExitStack()
        if pause_lock is not None:
            paused.enter_context(pause_lock)
        self._boost_paused(ctx, paused)
        unpause = paused.close
        ctx.on_resumed = unpause
        phase = 'transfer'
        try:
            with self._boost(ctx):
                for phase, step in (('transfer', self.transfer),
                                    ('verify', self.verify),
                                    ('switchover', self.switchover)):
                    step(ctx)
        except Exception as exc:
            unpause()
            self._fail(ctx, phase, exc)
        finally:
            unpause()
        spec = ctx.source.spec
        result = records.MoveResult(guest=spec.name, mover=self.name,
                                    ok=True, destination=ctx.destination)
        try:
            self.measure(ctx, result)
        except Exception as exc:
            # The guest has moved; only its figures are missing.
            LOG.warning('figures of the move of %s: %s', spec.name, exc)
            result.error = 'figures incomplete: %s' % exc
        return result

    def _boost(self, ctx, qemus=True):
        """Priority for the threads this move's pause waits on.

        ``qemus`` False (while preparing): only this process and the
        daemons, not the source and destination QEMUs.
        """
        # A gone QEMU (no pid) fails the move in its own phase.
        source = self._pid(ctx.source, None) if qemus else None
        pids = [os.getpid(), source]
        if qemus:
            pids.append(self._pid(ctx.destination, None))
        for hypervisor in (ctx.source.host, ctx.target):
            if hypervisor is not None:
                pids.extend(hypervisor.control_pids())
        # The source starts its migration thread, which sends the device
        # state while the guest is paused, during the boost: it inherits.
        return sched.Boost(pids, self.conf.vmbeam.switchover_priority,
                           self.conf.vmbeam.switchover_nice,
                           inherit_pids=[source])

    def _boost_paused(self, ctx, paused):
        """Boosts held from the migration's start until the destination runs.

        Entered on ``paused`` (an ExitStack the switchover closes):
        - the cgroups of source and destination weigh more (where each
          guest has one, thread priorities only count within it);
        - the destination's vCPU threads: loading the device state, QEMU
          has each of them run a work item and waits for it (x86's vapic
          state does, for one). Paused, they only sleep; they lose the
          boost as soon as the destination runs.
        """
        vmbeam = self.conf.vmbeam
        paused.enter_context(sched.CpuSharesBoost(
            (ctx.source, ctx.destination),
            sched.shares_factor(vmbeam.switchover_priority,
                                vmbeam.switchover_nice)))
        paused.enter_context(sched.Boost(
            [self._pid(ctx.destination, None)], vmbeam.switchover_priority,
            vmbeam.switchover_nice, vcpus=True))

    def abort(self, ctx):
        """Give up a prepared move that never transferred.

        The destination is destroyed; the source, which never stopped,
        runs on. Raises RollbackFailed if the destination cannot be reaped.
        """
        try:
            self.rollback(ctx)
        except Exception as exc:
            raise self._rollback_failed(
                ctx, 'prepare', 'aborted', exc,
                'Destination QEMU: pid %s.' %
                self._pid(ctx.destination)) from exc

    def _fail(self, ctx, phase, exc):
        """Roll back (or go forward) after ``exc``; re-raise as needed."""
        spec = ctx.source.spec
        if ctx.resume_sent and not ctx.destination_resumed:
            self._settle_failed_resume(ctx, phase, exc)
        if ctx.destination_resumed:
            # The destination runs the guest: the move has happened and
            # only retiring the source failed. Never resume the source.
            LOG.exception('retiring the source of %s failed; killing '
                          'it', spec.name)
            try:
                ctx.source.destroy()
            except Exception:
                LOG.exception('killing the old source of %s failed; it '
                              'is stopped and must never be resumed',
                              spec.name)
            ctx.mark('retired')
            return
        LOG.warning('move of %s with %s failed during %s: %s; '
                    'rolling back', spec.name, self.name, phase, exc)
        self._rollback(ctx, phase, exc)
        raise exception.MoveFailed(guest=spec.name, mover=self.name,
                                   phase=phase, reason=exc) from exc

    def _settle_failed_resume(self, ctx, phase, exc):
        """The resume call failed: find out whether it ran all the same.

        A destination that ran has written the shared RAM: the source is
        stale and must never run again, so the move goes forward.
        """
        try:
            running = ctx.destination.alive() and \
                ctx.destination.status() == 'running'
        except Exception as status_exc:
            raise self._rollback_failed(
                ctx, phase, exc, status_exc,
                'Whether destination QEMU (pid %s) ran is unknown.' %
                self._pid(ctx.destination)) from status_exc
        if running:
            ctx.destination_resumed = True

    @staticmethod
    def _pid(endpoint, default='unknown'):
        try:
            return endpoint.pid
        except Exception:
            return default

    def _rollback_failed(self, ctx, phase, exc, rb_exc, where):
        return exception.RollbackFailed(
            guest=ctx.source.spec.name, mover=self.name, phase=phase,
            reason=exc, rollback=rb_exc, where=where)

    def _rollback(self, ctx, phase, exc):
        try:
            self.rollback(ctx)
        except Exception as rb_exc:
            LOG.exception('rollback of %s failed', ctx.source.spec.name)
            if ctx.destination is None or ctx.destination_reaped:
                where = ('No destination QEMU runs; the source QEMU (pid %s) '
                         'holds the guest.' % self._pid(ctx.source))
            else:
                where = ('Source QEMU: pid %s; destination QEMU: pid %s, '
                         'still there.' % (self._pid(ctx.source),
                                           self._pid(ctx.destination)))
            raise self._rollback_failed(ctx, phase, exc, rb_exc,
                                        where) from rb_exc
