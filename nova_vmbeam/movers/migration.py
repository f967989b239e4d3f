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

"""The QMP-driven migration that all three movers share.

They differ only in where guest RAM lives, which migration capabilities and
channels they use, and how they prove the destination maps the same RAM.
"""

import os
import time

from oslo_log import log as logging

from nova_vmbeam import exception
from nova_vmbeam.movers import base
from nova_vmbeam.qemu import monitor as monitor_mod
from nova_vmbeam.qemu import procfs

LOG = logging.getLogger(__name__)

_POLL_S = 0.0005
# While waiting for a migration's MIGRATION event, query-migrate is asked
# this often too, in case an event is lost.
_QUERY_INTERVAL_S = 0.05
_FINISHED = ('completed', 'failed', 'cancelled')
# Thread names QEMU gives its outgoing migration threads (debug-threads=on).
_MIGRATION_THREAD_PREFIX = 'mig/'


class QmpMigrationMover(base.MoverBase):
    """prepare/transfer/verify/switchover/rollback over QMP."""

    #: migration capabilities enabled on both ends
    capabilities = ()
    #: migrate-set-parameters applied on both ends
    parameters = {}
    #: False where the destination's monitor only answers once migration
    #: has begun (cpr-transfer: after it has read the cpr channel)
    monitor_before_migrate = True
    #: True where the destination maps the guest's RAM when it starts
    #: (then verify_ram runs before the guest pauses); False where it
    #: receives the RAM during the migration (cpr-transfer's memfd)
    ram_mapped_at_start = True
    #: True where QEMU stamps its events with our own clock (its QEMUs run
    #: on this kernel). False where they run in VMs with clocks of their
    #: own (nested): an event's time is then when libvirt delivered it
    #: here (_event_time). Either way a finished MIGRATION event newer
    #: than the move's start is final.
    event_clock_shared = True
    #: True where the QEMUs are processes of this host, so that whether
    #: one still runs is a look at /proc. False where asking is a round
    #: trip to another kernel's libvirt (nested): the pause then does
    #: without the checks that other answers already make (see verify).
    local_processes = True

    # --- hooks for the concrete movers -----------------------------------

    def incoming(self, ctx):
        """-incoming values of the destination's command line."""
        return ['defer']

    def start_incoming(self, ctx):
        """Make the connected destination listen; return migrate args."""
        uri = 'unix:%s' % self._socket_path(ctx, 'main')
        ctx.destination.execute('migrate-incoming', uri=uri)
        return {'uri': uri}

    def verify_ram(self, ctx):
        """Raise VerificationFailed unless the destination maps our RAM."""

    def check_source(self, ctx):
        """Raise VerificationFailed unless the source is fit to move."""

    def wait_listening(self, ctx, path):
        """Wait until the destination listens on ``path``.

        Probing with a connection would use up the destination's only
        accept; the kernel's socket table says it without touching it.
        """
        deadline = time.monotonic() + self.conf.vmbeam.qmp_timeout
        while not procfs.listening(ctx.destination.pid, path):
            if not ctx.destination.alive():
                ctx.destination.connect()   # raises QemuStartFailed
            if time.monotonic() > deadline:
                raise exception.QemuStartFailed(
                    guest=ctx.source.spec.name,
                    detail='not listening on %s after %.0f s' %
                    (path, self.conf.vmbeam.qmp_timeout))
            time.sleep(0.002)

    def destination_spec(self, ctx):
        """The destination runs the very same guest spec as the source."""
        return ctx.source.spec

    # --- phases ----------------------------------------------------------

    def _socket_path(self, ctx, kind):
        return os.path.join(ctx.target.run_dir, '%s.%s.sock' %
                            (ctx.source.spec.name, kind))

    def _configure(self, endpoint):
        # "events": QEMU reports each migration state change as a
        # MIGRATION event, so nobody has to poll it while the guest pauses.
        endpoint.execute('migrate-set-capabilities', capabilities=[
            {'capability': cap, 'state': True}
            for cap in ('events',) + tuple(self.capabilities)])
        if self.parameters:
            endpoint.execute('migrate-set-parameters', **self.parameters)

    def prepare(self, ctx):
        ctx.mark('prepare')
        ctx.source_was_running = ctx.source.status() == 'running'
        self.check_source(ctx)
        os.makedirs(ctx.target.run_dir, exist_ok=True)
        for kind in ('main', 'cpr'):
            path = self._socket_path(ctx, kind)
            if os.path.exists(path):
                os.unlink(path)
        ctx.destination = ctx.target.launch(self.destination_spec(ctx),
                                            incoming=self.incoming(ctx),
                                            paused=True)
        self._configure(ctx.source)
        if self.monitor_before_migrate:
            ctx.destination.connect()
            self._configure(ctx.destination)
        ctx.migrate_args = self.start_incoming(ctx)
        self._verify_ram_early(ctx)
        ctx.mark('prepared')

    def adopt(self, source, target, destination):
        """Take over a destination prepared earlier (a standby's).

        It must still be alive, waiting for an incoming migration and
        listening on this guest's socket: only then does it take exactly
        this source's state. Otherwise InvalidInput, and nothing changed.
        """
        self.check(source.spec)
        if not self.monitor_before_migrate:
            return super().adopt(source, target, destination)
        ctx = base.MoveContext(source, target)
        ctx.mark('prepare')
        path = self._socket_path(ctx, 'main')
        try:
            waiting = (destination.alive() and
                       destination.status() == 'inmigrate' and
                       procfs.listening(destination.pid, path))
        except exception.MonitorError as exc:
            waiting = False
            LOG.warning('prepared destination of %s: %s',
                        source.spec.name, exc)
        if not waiting:
            raise exception.InvalidInput(
                reason='the prepared destination of %s is not waiting for '
                       'a migration on %s' % (source.spec.name, path))
        ctx.destination = destination
        ctx.source_was_running = source.status() == 'running'
        self.check_source(ctx)
        self._configure(ctx.source)
        ctx.migrate_args = {'uri': 'unix:%s' % path}
        self._verify_adopted_ram(ctx)
        ctx.mark('prepared')
        return ctx

    def _verify_adopted_ram(self, ctx):
        """_verify_ram_early for adopt(): InvalidInput if it fails."""
        try:
            self._verify_ram_early(ctx)
        except exception.VerificationFailed as exc:
            # Not this guest's RAM: discarded, and a new one prepared.
            raise exception.InvalidInput(reason=str(exc)) from exc

    def _verify_ram_early(self, ctx):
        # Nothing remaps a destination's RAM once it has started, so it is
        # checked while it is prepared, long before the guest pauses;
        # after the pause only the destination's identity is checked again
        # (_check_alive).
        if self.ram_mapped_at_start:
            self.verify_ram(ctx)

    def transfer(self, ctx):
        ctx.mark('transfer')
        ctx.cpu_before = (ctx.destination.cpu_seconds() +
                          ctx.source.cpu_seconds(_MIGRATION_THREAD_PREFIX))
        ctx.wall_start = time.time()
        ctx.source.execute('migrate', **ctx.migrate_args)
        if not self.monitor_before_migrate:
            ctx.destination.connect()
        info = self._wait_finished(ctx.source, ctx.wall_start,
                                   self.conf.vmbeam.migration_timeout)
        status = info.get('status')
        if status not in _FINISHED:
            raise exception.MigrationFailed(
                'not completed within %.0f s (status %s)' %
                (self.conf.vmbeam.migration_timeout, status))
        ctx.cpu_migration = ctx.source.cpu_seconds(_MIGRATION_THREAD_PREFIX)
        ctx.migration = info
        if status != 'completed':
            if 'error-desc' not in info:
                info = ctx.source.execute('query-migrate')
            raise exception.MigrationFailed(
                'migration %s: %s' % (status, info.get('error-desc', '')))
        ctx.mark('transferred')

    def verify(self, ctx):
        source, dest = ctx.source, ctx.destination
        name = source.spec.name
        if self.local_processes:
            self._check_alive(ctx)
        # else: a destination that is gone fails the wait below (its
        # monitor does not answer), without a round trip first.
        # The source reports completed once it has sent everything; wait
        # until the destination has loaded it too.
        try:
            loaded = self._wait_finished(
                dest, ctx.wall_start, self.conf.vmbeam.qmp_timeout,
                expect_event=self.monitor_before_migrate)
        except exception.MonitorError:
            if dest.alive():
                raise
            raise exception.VerificationFailed(
                guest=name, reason='destination QEMU exited: %s' %
                (dest.exit_reason() or 'no reason given'))
        ctx.mark('loaded')
        if loaded.get('status') != 'completed':
            raise exception.VerificationFailed(
                guest=name,
                reason='destination did not load the state (%s)' %
                loaded.get('status'))
        if self._ran_early(ctx, loaded):
            # Someone else resumed it: it may have written the shared RAM
            # already, so it owns the guest and the source must never run
            # again. The failure handling settles it as a resume that was
            # sent (and the move goes forward if it does run).
            ctx.resume_sent = True
            raise exception.VerificationFailed(
                guest=name, reason='destination runs before switchover')
        if not self.ram_mapped_at_start:
            self.verify_ram(ctx)
        if self.local_processes or not self.ram_mapped_at_start:
            self._check_alive(ctx)
        # else: nothing ran since the destination reported the state
        # loaded; one that dies now fails the resume, which rolls back.
        ctx.mark('verified')

    def _ran_early(self, ctx, loaded):
        """True if the destination runs although we never resumed it.

        When its MIGRATION event said it loaded the state, its events say
        this too (a RESUME since the move began) without another round
        trip through the daemon while the guest is paused; otherwise
        query-status is asked.
        """
        if loaded.get('event'):
            return any(event['event'] == 'RESUME' and
                       self._is_new(event, ctx.wall_start)
                       for event in ctx.destination.events())
        return ctx.destination.status() != 'paused'

    def _wait_finished(self, endpoint, since, timeout, expect_event=True):
        """How ``endpoint``'s migration ended, or where it is at timeout.

        Waits for QEMU's MIGRATION event rather than asking the monitor
        over and over: on a busy host every round trip competes for CPU
        with the guests, while the guest being moved is paused. The event
        carries the very state query-migrate would report (QEMU emits it
        on every change of that state), so a finished state read from it
        is final; its answer is then ``{'status': ..., 'event': True}``.
        Newer: by QEMU's clock where it is ours, by the event's arrival
        here where it is not (_event_time). query-migrate is still asked
        every _QUERY_INTERVAL_S in case an event is lost, and at the
        deadline.
        """
        deadline = time.monotonic() + timeout
        # ``expect_event`` False: the endpoint's monitor came up after the
        # migration began (cpr's destination) and may never send the
        # event, so query-migrate is asked at once too. Otherwise not: a
        # round trip through the daemon while the guest is paused.
        last_query = time.monotonic() if expect_event else float('-inf')
        while True:
            now = time.monotonic()
            next_query = last_query + _QUERY_INTERVAL_S
            for event in endpoint.events():
                status = event['data'].get('status') \
                    if event['event'] == 'MIGRATION' else None
                if status in _FINISHED and self._is_new(event, since):
                    return {'status': status, 'event': True}
            if now >= next_query or now >= deadline:
                info = endpoint.execute('query-migrate')
                if info.get('status') in _FINISHED or now >= deadline:
                    return info
                last_query = now
            time.sleep(_POLL_S)

    def _check_alive(self, ctx):
        if not ctx.destination.alive():
            raise exception.VerificationFailed(
                guest=ctx.source.spec.name,
                reason='destination QEMU exited: %s' %
                (ctx.destination.exit_reason() or 'no reason given'))

    def switchover(self, ctx):
        if self._source_resumed(ctx):
            # A source that runs again (someone resumed it) has moved on
            # from the state the destination holds.
            raise exception.VerificationFailed(
                guest=ctx.source.spec.name,
                reason='source is running again after the migration')
        if ctx.on_switchover is not None:
            ctx.on_switchover()
        ctx.mark('resume')
        ctx.resume_sent = True
        if ctx.source_was_running:
            ctx.destination.resume()
        # else: the guest was paused before the move and stays paused.
        ctx.destination_resumed = True
        ctx.mark('resumed')
        if ctx.on_resumed is not None:
            ctx.on_resumed()
        if 'ram' not in ctx.migration:
            # The figures of a migration whose end came as an event:
            # asked now that the guest runs again.
            try:
                ctx.migration = ctx.source.execute('query-migrate')
            except exception.MonitorError as exc:
                LOG.warning('migration figures of %s: %s',
                            ctx.source.spec.name, exc)
        # Keep the source's events (its STOP gives the downtime) before
        # its monitor goes away with it.
        ctx.source.events()
        ctx.cpu_after = ctx.destination.cpu_seconds()
        ctx.source.retire()
        ctx.mark('retired')

    def _source_resumed(self, ctx):
        """True if the source emitted RESUME after the migration stopped it.

        Read from the events already received, so the guest's pause does
        not wait for another monitor round trip.
        """
        stopped = False
        for event in ctx.source.events():
            if not self._is_new(event, ctx.wall_start):
                continue
            if event['event'] == 'STOP':
                stopped = True
            elif event['event'] == 'RESUME' and stopped:
                return True
        return not stopped and ctx.source.status() == 'running'

    def rollback(self, ctx):
        source, dest = ctx.source, ctx.destination
        if not source.alive():
            # Then the destination may hold the only copy of the guest:
            # leave it be for the operator.
            raise RuntimeError('source QEMU is gone')
        if dest is not None:
            # Reaped before the source may run again: never two QEMUs
            # running on one RAM.
            dest.destroy()
            ctx.destination_reaped = True
        status = source.execute('query-migrate').get('status')
        if status not in (None,) + _FINISHED:
            try:
                source.execute('migrate_cancel')
            except exception.MonitorError as exc:
                LOG.warning('migrate_cancel: %s', exc)
            deadline = time.monotonic() + self.conf.vmbeam.qmp_timeout
            while source.execute('query-migrate').get('status') \
                    not in _FINISHED:
                if time.monotonic() > deadline:
                    raise RuntimeError('source migration did not stop')
                time.sleep(_POLL_S)
        if ctx.source_was_running and source.status() != 'running':
            source.resume()
        LOG.info('rolled back move of %s: source %s', source.spec.name,
                 source.status())

    def measure(self, ctx, result):
        result.prepare_ms = ctx.ms('prepare', 'prepared')
        result.total_ms = ctx.ms('transfer', 'resumed')
        result.retire_ms = ctx.ms('resumed', 'retired')
        ram = ctx.migration.get('ram', {})
        result.transferred_bytes = int(ram.get('transferred', 0))
        result.cpu_s = round(ctx.cpu_after + ctx.cpu_migration -
                             ctx.cpu_before, 4)
        result.downtime_ms = self._downtime_ms(ctx)
        result.pause_ms = self._pause_ms(ctx)

    def _pause_ms(self, ctx):
        """Where the pause (source STOP to destination RESUME) went.

        device_state: the source sends its device state (STOP to its
        migration completed), load: the destination loads it, notice: we
        learn of it, verify: our checks, switch: journal and last checks,
        resume: the resume command until the destination runs. QEMU's
        event times and ours are on the same wall clock, or the events'
        times of arrival are taken (_event_time).
        """
        def event_at(endpoint, name, status=None):
            return self._event_at(endpoint, name, ctx.wall_start, status)

        marks = ctx.wall_marks
        points = [('stop', event_at(ctx.source, 'STOP')),
                  ('device_state', event_at(ctx.source, 'MIGRATION',
                                            'completed')),
                  ('load', event_at(ctx.destination, 'MIGRATION',
                                    'completed')),
                  ('notice', marks.get('loaded')),
                  ('verify', marks.get('verified')),
                  ('switch', marks.get('resume')),
                  ('resume', event_at(ctx.destination, 'RESUME'))]
        if any(at is None for _, at in points):
            return {}
        return {name: round((at - points[i][1]) * 1000.0, 3)
                for i, (name, at) in enumerate(points[1:])}

    def _event_at(self, endpoint, name, since, status=None, timeout=0.0):
        """When ``endpoint``'s first ``name`` event since ``since`` happened.

        On our clock (_event_time); a MIGRATION event only with ``status``
        when one is given. Waits up to ``timeout`` seconds for it to
        arrive; None if it has not.
        """
        deadline = time.monotonic() + timeout
        while True:
            for event in endpoint.events():
                if (event['event'] == name and self._is_new(event, since) and
                        (status is None or
                         event['data'].get('status') == status)):
                    return self._event_time(event)
            if time.monotonic() >= deadline:
                return None
            time.sleep(_POLL_S)

    def _is_new(self, event, since):
        """True if ``event`` happened at or after ``since`` (our clock)."""
        at = self._event_time(event)
        return at is not None and at >= since

    def _event_time(self, event):
        """When ``event`` happened, on this host's clock, or None.

        QEMU's own stamp where its clock is ours. Where QEMU runs in a VM
        with a clock of its own (nested), when libvirt delivered the event
        here ('received', libvirt/host.py): later than QEMU emitted it by
        the delivery, but on our clock, so it can be compared with our
        marks. None for an event without it (not from libvirt).
        """
        if self.event_clock_shared:
            return monitor_mod.event_time(event)
        return event.get('received')

    def _downtime_ms(self, ctx):
        """Source STOP to destination RESUME, by QEMU's own clocks."""
        try:
            stop = ctx.source.wait_event('STOP', 1.0, since=ctx.wall_start)
            resume = ctx.destination.wait_event('RESUME', 1.0,
                                                since=ctx.wall_start)
        except exception.MonitorError as exc:
            LOG.warning('downtime of %s unknown: %s', ctx.source.spec.name,
                        exc)
            return float(ctx.migration.get('downtime', 0))
        return round((monitor_mod.event_time(resume) -
                      monitor_mod.event_time(stop)) * 1000.0, 3)
