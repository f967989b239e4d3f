"""The rejuvenation orchestrator.

Rejuvenating a host: start sibling generation N+1 beside the active N, move
every guest from N to N+1 with a mover, make N+1 active and retire N once it
is empty. The journal records each step before it happens; an orchestrator
that was killed is simply run again: recover() looks at both daemons and
settles every guest that was in flight (the destination wins only if it
already runs; otherwise it is destroyed and the source resumed), then the
run goes on. Exactly one generation is active; a guest runs exactly once.
"""

import concurrent.futures
import contextlib
import hashlib
import os
import threading
import time
import uuid

import libvirt
from oslo_log import log as logging

from nova_vmbeam import exception
from nova_vmbeam import movers as movers_mod
from nova_vmbeam.movers import base as movers_base
from nova_vmbeam import records
from nova_vmbeam.rejuvenation import journal as journal_mod
from nova_vmbeam import siblings as siblings_mod

LOG = logging.getLogger(__name__)

_HISTORY = 10

# A generation started ahead of a rejuvenation (see standby()).
STANDBY = 'standby'
# A standby's destination QEMU that waits for its guest.
PREPARED_READY = 'ready'
# A run whose orchestrator died (nova-compute killed or stopped mid-run):
# its guests are settled, some may still be on the old generation; the
# next rejuvenation goes on with it.
INTERRUPTED = 'interrupted'


# Journal states of guests whose destination, if any, was destroyed.
_NOT_MOVED = (journal_mod.PENDING, journal_mod.FAILED, journal_mod.GONE)

RejuvenationAborted = exception.RejuvenationAborted
NotInitialized = exception.NotInitialized


def _qemu_overhead_kib(pid):
    """Private memory of a QEMU beyond guest RAM (RssAnon)."""
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('RssAnon:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def describe_health(report):
    """One line on a generation's resource use (aging evidence).

    ``report``: a records.HealthReport, or one as a run's journal record
    keeps it.
    """
    if isinstance(report, dict):
        report = records.HealthReport.from_dict(report)
    return report.describe()


class RunListener:
    """What a program embedding the orchestrator hears of a run.

    The Nova driver follows the generations with it: new guests go to the
    target as soon as it is ready, a guest is fenced from Nova's own
    operations while it moves, and the old daemon's connection is let go
    before that daemon is retired. Every method may be left out.
    """

    def run_started(self, run, source, target):
        """``target`` (a Sibling) accepts guests; none moved yet.

        Also called when an open run is taken up again.
        """

    @contextlib.contextmanager
    def moving(self, name, uuid):
        """Held around one guest's move (from lookup to persist)."""
        yield

    def guest_done(self, name, uuid, entry):
        """A move ended; ``entry`` is the guest's journal entry."""

    def retiring(self, source, target):
        """Every guest runs on ``target``; ``source`` is retired next."""

    def run_finished(self, run):
        """The run's journal record, after it completed or stopped."""


class Orchestrator:

    #: where the active generation's libvirt socket is always found (a
    #: symlink replaced atomically on every switch), for clients that
    #: cannot know the generation: other hosts' live migrations
    ACTIVE_SOCKET = 'active-libvirt-sock'

    def __init__(self, conf, journal=None, listener=None):
        self.conf = conf
        self.journal = journal or journal_mod.Journal(
            os.path.join(conf.vmbeam.state_path, 'journal.json'))
        self.listener = listener or RunListener()
        # Set by abort(): the run stops between guests.
        self._abort = threading.Event()
        # Moves run in threads; each journal update is load-change-save.
        self._journal_lock = threading.Lock()

    def _set_guest(self, name, **fields):
        with self._journal_lock, self.journal.update() as state:
            state['run']['guests'].setdefault(name, {}).update(fields)

    # --- generations ------------------------------------------------------

    def _sibling(self, record):
        cls = siblings_mod.kind(record['kind'])
        return cls.from_record(self.conf, record)

    def _new_sibling(self, generation):
        cls = siblings_mod.kind(self.conf.vmbeam.sibling_kind)
        return cls(self.conf, generation)

    def sibling(self, generation, state=None):
        state = state or self.journal.load()
        record = state['siblings'].get(str(generation))
        return self._sibling(record) if record else None

    def active(self, state=None):
        state = state or self.journal.load()
        if state['active'] is None:
            raise NotInitialized(path=self.journal.path)
        return self.sibling(state['active'], state)

    def _ensure_running(self, sibling):
        """A generation's daemon died: start it again on its own state.

        Its guests' QEMUs outlive the daemon; the restarted daemon finds
        them again from its private run directory.
        """
        if not sibling.running():
            LOG.warning('daemon of %s is not running; restarting it',
                        sibling.name)
            sibling.start()
            sibling.wait_ready(self.conf.vmbeam.sibling_start_timeout)
            self._wait_reconnected(sibling,
                                   self.conf.vmbeam.sibling_start_timeout)

    @staticmethod
    def _wait_reconnected(sibling, timeout):
        """Until a restarted daemon has settled the QEMUs it found again.

        It answers before that: a domain whose QEMU died while the daemon
        was down stays listed as running until the daemon's reconnect
        notices, and starting that guest there meanwhile is refused
        ("already active").
        """
        host = sibling.host()
        try:
            deadline = time.monotonic() + timeout
            while True:
                stale = set(host.domains()) - set(host.running_qemus())
                if not stale:
                    return
                if time.monotonic() > deadline:
                    LOG.warning('%s still lists %s as running without a '
                                'QEMU', sibling.name, ', '.join(sorted(stale)))
                    return
                time.sleep(0.05)
        finally:
            host.close()

    def active_socket(self):
        return os.path.join(self.conf.vmbeam.state_path, self.ACTIVE_SOCKET)

    def _link_active(self, sibling):
        """Point the active-socket symlink at ``sibling`` (atomically)."""
        socket_path = getattr(sibling, 'socket_path', None)
        if not socket_path:
            return
        link = self.active_socket()
        tmp = '%s.%d.tmp' % (link, os.getpid())
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(socket_path, tmp)
        os.replace(tmp, link)

    def init(self):
        """Start generation 1 if no generation is active yet."""
        with self.journal.locked():
            state = self.journal.load()
            if state['active'] is not None:
                sibling = self.active(state)
                self._ensure_running(sibling)
                self._link_active(sibling)
                return sibling
            sibling = self._new_sibling(1)
            sibling.start()
            sibling.wait_ready(self.conf.vmbeam.sibling_start_timeout)
            with self.journal.update() as state:
                state['siblings']['1'] = dict(sibling.record(),
                                              state='active')
                state['active'] = 1
            self._link_active(sibling)
            return sibling

    # --- status -------------------------------------------------------------

    def health(self, sibling):
        """Resource use of a generation: daemons and per-guest QEMU."""
        report = sibling.health()
        guests = {}
        if sibling.running():
            host = sibling.host()
            try:
                for name in host.domains():
                    try:
                        pid = host.qemu_pid(name, timeout=0.5)
                    except exception.VMBeamError:
                        continue
                    guests[name] = records.GuestUsage(
                        pid=pid, overhead_kib=_qemu_overhead_kib(pid))
            except (exception.VMBeamError, libvirt.libvirtError) as exc:
                # Retired (or died) while we looked: report, do not fail.
                report.error = str(exc)
            finally:
                host.close()
        report.guests = guests
        return report

    def status(self):
        state = self.journal.load()
        generations = {}
        for gen, record in state['siblings'].items():
            if record['state'] in ('retired', 'failed'):
                continue
            generations[gen] = dict(record, health=self.health(
                self._sibling(record)))
        return {'active': state['active'], 'generations': generations,
                'run': state['run'], 'history': state['history']}

    # --- recovery -----------------------------------------------------------

    def _settle(self, mover, name, entry, source_host, target_host):
        """Decide where an in-flight guest lives; return its journal state.

        Never two running, never the stale one: once the switchover began
        (``switching``) the destination may have run and written the shared
        RAM, so it owns the guest and the source is destroyed. Before that,
        a destination that runs anyway owns it too; any other destination
        is destroyed first and only then is the source resumed, exactly as
        in a rollback.
        """
        src = source_host.guest(name)
        dst = target_host.guest(name)
        if dst is not None and not dst.alive():
            dst = None
        dst_state = dst.status() if dst is not None else None
        if self.journal.is_switching(name) or dst_state == 'running':
            if dst is None:
                raise exception.VMBeamError(
                    'guest %s: its destination on %s was told to run and '
                    'is gone; the stopped source on %s is stale and must '
                    'not be resumed. Check the guest by hand.' %
                    (name, target_host.name, source_host.name))
            if src is not None:
                src.destroy()
            if dst_state != 'running' and entry.get('was_running', True):
                dst.resume()
            dst.persist()
            return journal_mod.MOVED
        if src is None:
            raise exception.VMBeamError(
                'guest %s runs on neither %s nor %s: check it by hand '
                'before going on' % (name, source_host.name,
                                     target_host.name))
        ctx = movers_base.MoveContext(src, target_host)
        ctx.destination = dst
        ctx.source_was_running = entry.get('was_running', True)
        mover.rollback(ctx)
        return journal_mod.PENDING

    def recover(self):
        """Settle what a killed orchestrator left in flight."""
        state = self.journal.load()
        if state['active'] is None:
            return
        self._ensure_running(self.active(state))
        run = state['run']
        if not run or run['state'] == 'completed':
            return
        source = self.sibling(run['from'], state)
        target = self.sibling(run['to'], state)
        self._ensure_running(target)
        source_host, target_host = source.host(), target.host()
        try:
            for name, entry in run['guests'].items():
                if entry['state'] in _NOT_MOVED:
                    self._remove_stray(name, entry, target_host)
                    continue
                if entry['state'] != journal_mod.MOVING:
                    continue
                try:
                    mover = movers_mod.load(
                        entry.get('mover') or run['mover'], self.conf)
                    settled = self._settle(mover, name, entry, source_host,
                                           target_host)
                except Exception as exc:
                    # Left "moving" for the operator; the others go on.
                    LOG.error('cannot settle %s: %s', name, exc)
                    self._set_guest(name, error=str(exc))
                    continue
                LOG.warning('recovered %s after an interrupted move: %s',
                            name, settled)
                self._set_guest(name, state=settled)
                self.journal.clear_switching(name)
        finally:
            source_host.close()
            target_host.close()
        # Whoever ran this run is gone (recover runs under the host's
        # rejuvenation lock): it is open, not running. An operator reads
        # this state; the next rejuvenation takes the run up again.
        with self._journal_lock, self.journal.update() as st:
            if st['run'] and st['run']['state'] == 'running':
                st['run']['state'] = INTERRUPTED

    def _remove_stray(self, name, entry, target_host):
        """Destroy a destination of ``name`` that never received the guest.

        For a guest the run has not moved and is not moving (``entry``
        pending, failed or gone), nothing on the target holds it: every
        move that failed destroyed its destination first. A domain of
        that name there all the same is a stray, left by a createXML that
        failed half way while its daemon was out of reach (killed during
        the call, it found that QEMU again when restarted). It is told
        apart from a moved guest by the journal, from a destination a
        standby prepared by its journal record, and by its QEMU's state:
        only one still waiting for a migration ('inmigrate': destinations
        start with -incoming, and a guest that moved in has left that
        state for good), or already gone, is destroyed. Anything else (a
        guest that runs, or one Nova started paused: 'prelaunch') is left
        for the operator.
        """
        prepared = entry.get('prepared')
        if prepared and prepared.get('state') == PREPARED_READY:
            return   # a standby's destination, taken over by the run
        try:
            stray = target_host.guest(name)
            if stray is None:
                return
            state = stray.status() if stray.alive() else None
            if state not in (None, 'inmigrate'):
                raise exception.VMBeamError(
                    'guest %s is %s, but %s has a domain of it that is %s, '
                    'not a destination that never received it; check it '
                    'by hand' % (name, entry['state'], target_host.name,
                                 state))
            LOG.warning('%s is %s, but %s has a destination of it that '
                        'never received it (left by a failed start): '
                        'destroying it', name, entry['state'],
                        target_host.name)
            stray.destroy()
        except (exception.VMBeamError, libvirt.libvirtError) as exc:
            LOG.error('%s', exc)
            self._set_guest(name, error=str(exc))

    # --- rejuvenation -------------------------------------------------------

    def _start_sibling(self, state, generation, journal_state):
        """Start generation ``generation``; abort cleanly if it fails."""
        old = self.active(state)
        new = self._new_sibling(generation)
        with self.journal.update() as st:
            st['siblings'][str(generation)] = dict(new.record(),
                                                   state='starting')
        started = time.monotonic()
        try:
            new.start(seed_from=old)
            new.wait_ready(self.conf.vmbeam.sibling_start_timeout)
        except Exception as exc:
            try:
                new.retire()
            except Exception:
                LOG.exception('stopping the failed sibling %s', new.name)
            with self.journal.update() as st:
                st['siblings'][str(generation)]['state'] = 'failed'
            raise RejuvenationAborted(reason=str(exc), active=old.name)
        self._carry_secrets(old, new)
        ready_ms = (time.monotonic() - started) * 1000.0
        with self.journal.update() as st:
            st['siblings'][str(generation)].update(state=journal_state,
                                                   ready_ms=ready_ms)
        return new, ready_ms

    @staticmethod
    def _standby_generation(state):
        for gen, record in state['siblings'].items():
            if record['state'] == STANDBY:
                return int(gen)
        return None

    def _begin_run(self, state, mover_name, guests, run_id=None):
        """Open a run onto N+1 (nothing moved yet).

        A standby generation, started ahead by standby(), is taken over
        with the destinations it prepared; otherwise N+1 starts now.
        """
        old = self.active(state)
        begun = time.time()
        aging_before = self.health(old).to_dict()
        generation = self._standby_generation(state)
        prepared_all = {}
        if generation is not None:
            # A standby whose daemon died still has its prepared QEMUs:
            # restarted, the daemon finds them again.
            self._ensure_running(self.sibling(generation, state))
            ready_ms = 0.0
            prepared_all = state['siblings'][str(generation)].get(
                'prepared', {})
            LOG.info('taking over standby generation %d with %d prepared '
                     'destinations', generation, len(prepared_all))
            self._discard_prepared_except(generation, set(guests))
        else:
            generation = max(int(g) for g in state['siblings']) + 1
            _new, ready_ms = self._start_sibling(state, generation, 'ready')
        run = {'id': run_id or str(uuid.uuid4()), 'from': old.generation,
               'to': generation, 'state': 'running', 'mover': mover_name,
               'begun': begun, 'started': time.time(),
               'sibling_ready_ms': ready_ms, 'standby': bool(prepared_all),
               'guests': {name: {'state': journal_mod.PENDING,
                                 'uuid': guest.spec.uuid}
                          for name, guest in guests.items()},
               'aging_before': aging_before}
        # Marks a settled earlier run may have left (see Journal).
        self.journal.clear_switching()
        with self.journal.update() as st:
            record = st['siblings'][str(generation)]
            record['state'] = 'ready'
            record.pop('prepared', None)
            for name, prepared in prepared_all.items():
                if name in run['guests']:
                    run['guests'][name]['prepared'] = prepared
            st['run'] = run
        return run

    def abort(self):
        """Stop the run in progress after the moves under way.

        Guests not moved yet stay on the source; the run is left
        incomplete, and the next rejuvenate() takes it up again.
        """
        self._abort.set()

    def _carry_secrets(self, old, new):
        """Define the old generation's libvirt secrets in the new one.

        Secrets (Ceph keys, LUKS passphrases, vTPM) live in one daemon;
        guests moved without them would fail at their next attach or
        start. Private secrets cannot be read out and are left behind.
        """
        source, target = old.host(), new.host()
        try:
            for secret in source.conn.listAllSecrets():
                try:
                    value = secret.value()
                except libvirt.libvirtError:
                    LOG.warning('secret %s of %s is private; not carried '
                                'over to %s', secret.UUIDString(), old.name,
                                new.name)
                    continue
                copy = target.conn.secretDefineXML(secret.XMLDesc())
                copy.setValue(value)
        finally:
            source.close()
            target.close()

    def discard_standby(self, names=None):
        """Discard the standby generation, or some prepared destinations.

        With ``names``, only the destinations prepared for those guests
        (guests about to be deleted, whose RAM they map). Returns the
        number of prepared destinations destroyed.
        """
        if self._standby_generation(self.journal.load()) is None:
            return 0   # the common case, without waiting for a run's lock
        with self.journal.locked():
            state = self.journal.load()
            generation = self._standby_generation(state)
            if generation is None:
                return 0
            sibling = self.sibling(generation, state)
            self._ensure_running(sibling)
            host = sibling.host()
            count = 0
            try:
                for endpoint in host.guests():
                    if names is None or endpoint.name in names:
                        self._discard_prepared(endpoint)
                        self._set_prepared(generation, endpoint.name, None)
                        count += 1
            finally:
                host.close()
            if names is None:
                sibling.retire()
                with self.journal.update() as st:
                    record = st['siblings'][str(generation)]
                    record['state'] = 'retired'
                    record.pop('prepared', None)
            return count

    def _discard_prepared_except(self, generation, names):
        """Destroy the prepared destinations of guests not in ``names``.

        A guest deleted (or stopped) after standby() left its destination
        behind, mapping RAM that must be freed.
        """
        host = self.sibling(generation).host()
        try:
            for endpoint in host.guests():
                if endpoint.name not in names:
                    LOG.info('discarding the prepared destination of %s: '
                             'the guest is gone', endpoint.name)
                    self._discard_prepared(endpoint)
        finally:
            host.close()

    @staticmethod
    def _discard_prepared(endpoint):
        """Destroy a prepared destination that never received a guest.

        Only a QEMU still waiting for its migration is one; anything else
        may hold a guest and is left for the operator.
        """
        state = endpoint.status() if endpoint.alive() else None
        if state not in (None, 'inmigrate', 'prelaunch'):
            raise exception.VMBeamError(
                'domain %s on %s is %s, not a prepared destination; '
                'check it by hand' % (endpoint.name, endpoint.host.name,
                                      state))
        endpoint.destroy()

    @staticmethod
    def _xml_digest(endpoint):
        return hashlib.sha256(
            endpoint.spec.domain_xml.encode()).hexdigest()

    def _prepare_one(self, mover, name, source_host, target_host):
        """Journal the move, then get its destination ready (paused).

        A standby's destination is adopted when it was prepared by this
        mover from the very same domain XML; otherwise it is discarded
        and a new one started. Returns the MoveContext, or None.
        """
        src = source_host.guest(name)
        if src is None:
            # Deleted (or stopped) meanwhile: nothing left to move.
            self._set_guest(name, state=journal_mod.GONE,
                            error='not running on %s any more' %
                            source_host.name)
            return None
        prepared = self.journal.load()['run']['guests'][name].get('prepared')
        self._set_guest(name, state=journal_mod.MOVING, prepared=None,
                        mover=mover.name,
                        was_running=src.status() == 'running')
        try:
            ctx = None
            dest = target_host.guest(name) if prepared else None
            if dest is not None:
                if prepared.get('state') == PREPARED_READY and \
                        prepared.get('mover') == mover.name and \
                        prepared.get('digest') == self._xml_digest(src):
                    try:
                        ctx = mover.adopt(src, target_host, dest)
                    except exception.InvalidInput as exc:
                        LOG.warning('%s; preparing a new one', exc)
                if ctx is None:
                    self._discard_prepared(dest)
            if ctx is None:
                ctx = mover.begin(src, target_host)
            ctx.adopted = dest is not None and ctx.destination is dest
            return ctx
        except exception.RollbackFailed as exc:
            # Where the guest is is unknown: it stays "moving", so the next
            # run's recovery settles it from what the daemons say.
            self._set_guest(name, error=str(exc))
            LOG.error('%s', exc)
        except exception.VMBeamError as exc:
            self._set_guest(name, state=journal_mod.FAILED, error=str(exc))
            LOG.error('%s', exc)
        return None

    def _finish_one(self, mover, name, ctx, target_host, pause_lock=None):
        # Only this move's own switchover may leave a mark from here on.
        self.journal.clear_switching(name)
        try:
            result = mover.finish(ctx, on_switchover=lambda:
                                  self.journal.mark_switching(name),
                                  pause_lock=pause_lock)
        except exception.RollbackFailed as exc:
            self._set_guest(name, error=str(exc))
            LOG.error('%s', exc)
            return None
        except exception.VMBeamError as exc:
            # Rolled back: the source runs the guest again.
            self._set_guest(name, state=journal_mod.FAILED, error=str(exc))
            self.journal.clear_switching(name)
            LOG.error('%s', exc)
            return None
        try:
            result.destination.persist()
        except libvirt.libvirtError as exc:
            # The guest runs on the target all the same; it stays a
            # transient domain there until defined again.
            LOG.warning('defining %s on %s failed: %s', name,
                        target_host.name, exc)
        result.standby = ctx.adopted
        figures = result.to_dict()
        self._set_guest(name, state=journal_mod.MOVED, result=figures,
                        error=None)
        self.journal.clear_switching(name)
        return figures

    def _move_all(self, movers, pending, on_source, source_host,
                  target_host, concurrency):
        """Prepare every destination first, then switch the guests over.

        Starting a destination QEMU through libvirt costs a few hundred
        milliseconds of CPU; done before any guest pauses, it does not
        compete with the switchovers, which stay short. Each guest is
        fenced (the run listener's ``moving``) from its prepare until its
        move has ended; abort() stops the run between guests and gives up
        the destinations prepared for the rest. Returns how long the two
        stages took: {'prepare_all_ms', 'switch_all_ms'}.
        """
        def pmap(fn, items):
            with concurrent.futures.ThreadPoolExecutor(
                    max_workers=concurrency) as pool:
                return list(pool.map(fn, items))

        fences = {}
        # One guest paused at a time; the rest of the moves overlap.
        pause_lock = threading.Lock()

        def release(name):
            fence = fences.pop(name, None)
            if fence is None:
                return
            fence.close()
            entry = self.journal.load()['run']['guests'].get(name, {})
            try:
                self.listener.guest_done(name, on_source[name].spec.uuid,
                                         entry)
            except Exception:
                LOG.exception('run listener failed after moving %s', name)

        def prepare(name):
            if self._abort.is_set():
                return None
            fence = contextlib.ExitStack()
            fence.enter_context(self.listener.moving(
                name, on_source[name].spec.uuid))
            fences[name] = fence
            ctx = self._prepare_one(movers[name], name, source_host,
                                    target_host)
            if ctx is None:
                release(name)
            return ctx

        def finish(item):
            name, ctx = item
            try:
                if self._abort.is_set():
                    self._give_up(movers[name], name, ctx)
                    return None
                return self._finish_one(movers[name], name, ctx,
                                        target_host, pause_lock)
            finally:
                release(name)

        try:
            started = time.monotonic()
            contexts = pmap(prepare, pending)
            prepared = time.monotonic()
            pmap(finish, [(n, c) for n, c in zip(pending, contexts)
                          if c is not None])
            return {'prepare_all_ms': (prepared - started) * 1e3,
                    'switch_all_ms': (time.monotonic() - prepared) * 1e3}
        finally:
            for name in list(fences):
                release(name)

    def _give_up(self, mover, name, ctx):
        """An aborted run: destroy a prepared destination, keep the guest."""
        try:
            mover.abort(ctx)
        except exception.RollbackFailed as exc:
            self._set_guest(name, error=str(exc))
            LOG.error('%s', exc)
            return
        self._set_guest(name, state=journal_mod.PENDING, was_running=None)

    def standby(self, mover_name=None):
        """Start generation N+1 ahead of time, destinations prepared.

        Every guest of the active generation gets a destination QEMU in
        N+1, paused and waiting for its migration; the next rejuvenate()
        takes them over and only switches the guests. Guests that left or
        changed since are prepared again; run it again to refresh.
        Returns the standby generation's journal record.
        """
        mover_name = mover_name or self.conf.vmbeam.default_mover
        mover = movers_mod.load(mover_name, self.conf)
        with self.journal.locked():
            self.recover()
            state = self.journal.load()
            run = state['run']
            if run and run['state'] != 'completed':
                raise exception.InvalidInput(
                    reason='a rejuvenation run from generation %s to %s is '
                           'open; finish it with "vmbeam rejuvenate" '
                           'first' % (run['from'], run['to']))
            generation = self._standby_generation(state)
            if generation is None:
                generation = max(int(g) for g in state['siblings']) + 1
                self._start_sibling(state, generation, STANDBY)
            else:
                self._ensure_running(self.sibling(generation, state))
            self._prepare_destinations(mover, generation)
            return self.journal.load()['siblings'][str(generation)]

    def _set_prepared(self, generation, name, prepared):
        with self._journal_lock, self.journal.update() as st:
            prepared_all = st['siblings'][str(generation)].setdefault(
                'prepared', {})
            if prepared is None:
                prepared_all.pop(name, None)
            else:
                prepared_all[name] = prepared

    def _prepare_destinations(self, mover, generation):
        source_host = self.active().host()
        target_host = self.sibling(generation).host()
        try:
            on_source = self._live_guests(source_host)
            record = self.journal.load()['siblings'][str(generation)]
            prepared_all = record.get('prepared', {})
            for endpoint in target_host.guests():
                prepared = prepared_all.get(endpoint.name)
                src = on_source.get(endpoint.name)
                if prepared and prepared['state'] == PREPARED_READY and \
                        src and prepared['mover'] == mover.name and \
                        prepared['digest'] == self._xml_digest(src):
                    continue
                LOG.info('discarding the stale prepared destination of %s',
                         endpoint.name)
                self._discard_prepared(endpoint)
                self._set_prepared(generation, endpoint.name, None)
            prepared_all = self.journal.load()['siblings'][
                str(generation)].get('prepared', {})
            for name, src in sorted(on_source.items()):
                if name in prepared_all:
                    continue
                try:
                    mover.check(src.spec)
                except exception.InvalidInput as exc:
                    LOG.warning('no prepared destination for %s: %s', name,
                                exc)
                    continue
                prepared = {'mover': mover.name,
                            'digest': self._xml_digest(src),
                            'state': 'preparing'}
                # Journalled first: a destination of a killed standby() is
                # found and discarded by the next one.
                self._set_prepared(generation, name, prepared)
                started = time.monotonic()
                try:
                    mover.begin(src, target_host)
                except exception.VMBeamError as exc:
                    LOG.error('preparing a destination for %s: %s', name,
                              exc)
                    self._set_prepared(generation, name, None)
                    continue
                self._set_prepared(generation, name, dict(
                    prepared, state=PREPARED_READY,
                    prepare_ms=(time.monotonic() - started) * 1000.0))
        finally:
            source_host.close()
            target_host.close()

    def _finish(self, run_id):
        """Activate the target and retire the source once it is empty."""
        state = self.journal.load()
        run = state['run']
        if run is None or run['id'] != run_id:
            return state['run']
        source = self.sibling(run['from'], state)
        target = self.sibling(run['to'], state)
        left = [n for n, g in run['guests'].items()
                if g['state'] not in (journal_mod.MOVED, journal_mod.GONE)]
        host = source.host()
        try:
            remaining = host.running_qemus()
        finally:
            host.close()
        if left or remaining:
            with self.journal.update() as st:
                st['run']['state'] = 'incomplete'
                st['run']['left'] = sorted(set(left) | set(remaining))
            return self.journal.load()['run']
        emptied = time.time()   # every guest runs on the target now
        aging_after = self.health(target).to_dict()
        self.listener.retiring(source, target)
        self._link_active(target)
        source.retire()
        with self.journal.update() as st:
            st['siblings'][str(run['from'])]['state'] = 'retired'
            st['siblings'][str(run['to'])]['state'] = 'active'
            st['active'] = run['to']
            st['run'].update(state='completed', emptied=emptied,
                             finished=time.time(), aging_after=aging_after)
            st['history'] = (st['history'] + [st['run']])[-_HISTORY:]
        return self.journal.load()['run']

    def _check_movable(self, mover, fallback, on_source, names, run):
        """Refuse, before anything changes, what this run cannot move.

        Returns the mover of each guest: ``mover``, or ``fallback`` for a
        guest whose RAM ``mover`` cannot move.
        """
        moved = {n for n, g in (run or {}).get('guests', {}).items()
                 if g['state'] == journal_mod.MOVED}
        unknown = [n for n in names or () if n not in on_source and
                   n not in moved]
        if unknown:
            raise exception.GuestNotFound(
                guest=', '.join(unknown),
                known=', '.join(sorted(on_source)) or 'none')
        chosen = {}
        for name in names or sorted(on_source):
            if name not in on_source:
                continue
            spec = on_source[name].spec
            try:
                mover.check(spec)
                chosen[name] = mover
            except exception.RamNotShareable:
                if fallback is None:
                    raise
                fallback.check(spec)
                chosen[name] = fallback
        return chosen

    def _movers(self, mover_name, fallback_mover, concurrency):
        mover_name = mover_name or self.conf.vmbeam.default_mover
        mover = movers_mod.load(mover_name, self.conf)
        fallback = (movers_mod.load(fallback_mover, self.conf)
                    if fallback_mover and fallback_mover != mover_name
                    else None)
        concurrency = concurrency or self.conf.vmbeam.rejuvenation_concurrency
        if not isinstance(concurrency, int) or concurrency < 1:
            raise exception.InvalidInput(
                reason='concurrency must be a whole number, 1 or more, not '
                       '%r' % (concurrency,))
        return mover_name, mover, fallback, concurrency

    def _open_run(self, state):
        """(the run to take up or None, the generation guests move from)."""
        run = state['run']
        if run and run['state'] == 'completed':
            run = None
        source = self.sibling(run['from'], state) if run \
            else self.active(state)
        return run, source

    @staticmethod
    def _live_guests(host):
        """Guests of ``host`` by name, live QEMUs only.

        libvirt lists a quit domain a little longer while it tidies up.
        """
        return {g.name: g for g in host.guests() if g.alive()}

    def preflight(self, mover_name=None, concurrency=None, names=None,
                  fallback_mover=None):
        """Check what rejuvenate() would do, changing nothing.

        Raises what rejuvenate() would raise before moving anything (a
        rejuvenation already running, unknown mover or guest, a guest the
        mover cannot move). Returns the run it would work on: its id
        (None for a new run), source and target generation, and each
        guest's mover.
        """
        _name, mover, fallback, _conc = self._movers(
            mover_name, fallback_mover, concurrency)
        with self.journal.locked():
            state = self.journal.load()
            run, source = self._open_run(state)
            source_host = source.host()
            try:
                on_source = self._live_guests(source_host)
                chosen = self._check_movable(mover, fallback, on_source,
                                             names, run)
            finally:
                source_host.close()
        return {'run_id': run['id'] if run else None,
                'from': source.generation,
                'to': run['to'] if run else
                (self._standby_generation(state) or
                 max(int(g) for g in state['siblings']) + 1),
                'movers': {n: m.name for n, m in chosen.items()},
                'uuids': {n: g.spec.uuid for n, g in on_source.items()}}

    def rejuvenate(self, mover_name=None, concurrency=None, names=None,
                   fallback_mover=None, run_id=None):
        """Move every guest (or ``names``) onto a fresh generation.

        Guests whose RAM ``mover_name`` cannot move are refused (nothing
        changes), or moved with ``fallback_mover`` when one is named. An
        interrupted or incomplete run is taken up again instead of
        starting yet another generation (``run_id`` names a new run).
        Returns the run's journal record.
        """
        mover_name, mover, fallback, concurrency = self._movers(
            mover_name, fallback_mover, concurrency)
        self._abort.clear()
        with self.journal.locked():
            self.recover()
            state = self.journal.load()
            run, source = self._open_run(state)
            source_host = source.host()
            try:
                on_source = self._live_guests(source_host)
                chosen = self._check_movable(mover, fallback, on_source,
                                             names, run)
                if run is None:
                    run = self._begin_run(state, mover_name, on_source,
                                          run_id)
                else:
                    with self.journal.update() as st:
                        st['run']['state'] = 'running'
                        guests = st['run']['guests']
                        for name in on_source:
                            entry = guests.setdefault(
                                name, {'uuid': on_source[name].spec.uuid})
                            if entry.get('state') in (None,
                                                      journal_mod.FAILED):
                                entry['state'] = journal_mod.PENDING
                        for name, entry in guests.items():
                            # Deleted since the last attempt.
                            if name not in on_source and entry['state'] in (
                                    journal_mod.PENDING, journal_mod.FAILED):
                                entry['state'] = journal_mod.GONE
                    run = self.journal.load()['run']
                target = self.sibling(run['to'])
                self._ensure_running(target)
                self.listener.run_started(run, source, target)
                target_host = target.host()
                pending = [n for n in sorted(on_source)
                           if run['guests'][n]['state'] ==
                           journal_mod.PENDING and
                           (names is None or n in names)]
                started = time.monotonic()
                try:
                    stages = self._move_all(chosen, pending, on_source,
                                            source_host, target_host,
                                            concurrency)
                finally:
                    target_host.close()
            finally:
                source_host.close()
            with self.journal.update() as st:
                st['run']['moves_ms'] = (time.monotonic() - started) * 1e3
                st['run'].update(stages)
            finished = self._finish(run['id'])
            self.listener.run_finished(finished)
            return finished

    def move(self, name, mover_name=None, fallback_mover=None, run_id=None):
        """Move one guest onto the open run's target generation.

        A new generation is started when no run is open.
        """
        return self.rejuvenate(mover_name, concurrency=1, names=[name],
                               fallback_mover=fallback_mover, run_id=run_id)
