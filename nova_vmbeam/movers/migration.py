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


class MigrationFailed(Exception):
    pass


class QmpMigrationMover(base.Mover):
    """prepare/transfer/verify/switchover/rollback over QMP."""

    #: migration capabilities enabled on both ends
    capabilities = ()
    #: migrate-set-parameters applied on both ends
    parameters = {}
    #: False where the destination's monitor only answers once migration
    #: has begun (cpr-transfer: after it has read the cpr channel)
    monitor_before_migrate = True

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
        except monitor_mod.MonitorError as exc:
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
        ctx.mark('prepared')
        return ctx

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
            raise MigrationFailed('not completed within %.0f s (status %s)'
                                  % (self.conf.vmbeam.migration_timeout,
                                     status))
        ctx.cpu_migration = ctx.source.cpu_seconds(_MIGRATION_THREAD_PREFIX)
        ctx.migration = info
        if status != 'completed':
            raise MigrationFailed('migration %s: %s' %
                                  (status, info.get('error-desc', '')))
        ctx.mark('transferred')

    def verify(self, ctx):
        source, dest = ctx.source, ctx.destination
        name = source.spec.name
        self._check_alive(ctx)
        # The source reports completed once it has sent everything; wait
        # until the destination has loaded it too.
        try:
            incoming = self._wait_finished(
                dest, ctx.wall_start, self.conf.vmbeam.qmp_timeout).get(
                    'status')
        except monitor_mod.MonitorError:
            if dest.alive():
                raise
            raise exception.VerificationFailed(
                guest=name, reason='destination QEMU exited: %s' %
                (dest.exit_reason() or 'no reason given'))
        if incoming != 'completed':
            raise exception.VerificationFailed(
                guest=name,
                reason='destination did not load the state (%s)' % incoming)
        state = dest.status()
        if state != 'paused':
            raise exception.VerificationFailed(
                guest=name, reason='destination is %r, expected paused '
                'before switchover' % state)
        self.verify_ram(ctx)
        self._check_alive(ctx)
        ctx.mark('verified')

    @staticmethod
    def _wait_finished(endpoint, since, timeout):
        """query-migrate of ``endpoint`` once its migration has finished.

        Waits for QEMU's MIGRATION event rather than asking the monitor
        over and over: on a busy host every round trip competes for CPU
        with the guests, while the guest being moved is paused. The event
        only says when; query-migrate, asked then, is the authority.
        Returns the last answer, finished or not, at the deadline.
        """
        deadline = time.monotonic() + timeout
        next_query = 0.0
        while True:
            now = time.monotonic()
            finished = any(
                event['event'] == 'MIGRATION' and
                monitor_mod.event_time(event) >= since and
                event['data'].get('status') in _FINISHED
                for event in endpoint.events())
            if finished or now >= next_query or now >= deadline:
                info = endpoint.execute('query-migrate')
                if info.get('status') in _FINISHED or now >= deadline:
                    return info
                next_query = now + _QUERY_INTERVAL_S
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
        ctx.resume_sent = True
        if ctx.source_was_running:
            ctx.destination.resume()
        # else: the guest was paused before the move and stays paused.
        ctx.destination_resumed = True
        ctx.mark('resumed')
        if ctx.on_resumed is not None:
            ctx.on_resumed()
        # Keep the source's events (its STOP gives the downtime) before
        # its monitor goes away with it.
        ctx.source.events()
        ctx.cpu_after = ctx.destination.cpu_seconds()
        ctx.source.retire()
        ctx.mark('retired')

    @staticmethod
    def _source_resumed(ctx):
        """True if the source emitted RESUME after the migration stopped it.

        Read from the events already received, so the guest's pause does
        not wait for another monitor round trip.
        """
        stopped = False
        for event in ctx.source.events():
            if monitor_mod.event_time(event) < ctx.wall_start:
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
            except monitor_mod.MonitorError as exc:
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

    def _downtime_ms(self, ctx):
        """Source STOP to destination RESUME, by QEMU's own clocks."""
        try:
            stop = ctx.source.wait_event('STOP', 1.0, since=ctx.wall_start)
            resume = ctx.destination.wait_event('RESUME', 1.0,
                                                since=ctx.wall_start)
        except monitor_mod.MonitorError as exc:
            LOG.warning('downtime of %s unknown: %s', ctx.source.spec.name,
                        exc)
            return float(ctx.migration.get('downtime', 0))
        return round((monitor_mod.event_time(resume) -
                      monitor_mod.event_time(stop)) * 1000.0, 3)
