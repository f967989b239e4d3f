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
from nova_vmbeam.rejuvenation import journal as journal_mod
from nova_vmbeam import siblings as siblings_mod

LOG = logging.getLogger(__name__)

_HISTORY = 10

# A generation started ahead of a rejuvenation (see standby()).
STANDBY = 'standby'
# A standby's destination QEMU that waits for its guest.
SHELL_READY = 'ready'


class RejuvenationAborted(exception.VMBeamError):
    msg_fmt = ('Rejuvenation aborted before any guest moved: %(reason)s. '
               'Generation %(active)s stays active; nothing changed.')


class NotInitialized(exception.VMBeamError):
    msg_fmt = ('No hypervisor generation is active on this host (journal '
               '%(path)s). Run "vmbeam init" first.')


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
    """One line on a generation's resource use (aging evidence)."""
    daemon = report.get('libvirtd', {})
    guests = report.get('guests', {})
    return ('libvirtd pid %s, RSS %d KiB, %d open fds; %d guests, QEMU '
            'overhead beyond guest RAM %d KiB in all' %
            (daemon.get('pid'), daemon.get('rss_kib', 0),
             daemon.get('fds', 0), len(guests),
             sum(g['overhead_kib'] for g in guests.values())))


class Orchestrator:

    def __init__(self, conf, journal=None):
        self.conf = conf
        self.journal = journal or journal_mod.Journal(
            os.path.join(conf.vmbeam.state_path, 'journal.json'))
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

    def init(self):
        """Start generation 1 if no generation is active yet."""
        with self.journal.locked():
            state = self.journal.load()
            if state['active'] is not None:
                sibling = self.active(state)
                self._ensure_running(sibling)
                return sibling
            sibling = self._new_sibling(1)
            sibling.start()
            sibling.wait_ready(self.conf.vmbeam.sibling_start_timeout)
            with self.journal.update() as state:
                state['siblings']['1'] = dict(sibling.record(),
                                              state='active')
                state['active'] = 1
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
                    guests[name] = {'pid': pid,
                                    'overhead_kib': _qemu_overhead_kib(pid)}
            finally:
                host.close()
        report['guests'] = guests
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
        if entry.get('switching') or dst_state == 'running':
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
        mover = movers_mod.load(run['mover'], self.conf)
        try:
            for name, entry in run['guests'].items():
                if entry['state'] != journal_mod.MOVING:
                    continue
                try:
                    settled = self._settle(mover, name, entry, source_host,
                                           target_host)
                except Exception as exc:
                    # Left "moving" for the operator; the others go on.
                    LOG.error('cannot settle %s: %s', name, exc)
                    self._set_guest(name, error=str(exc))
                    continue
                LOG.warning('recovered %s after an interrupted move: %s',
                            name, settled)
                self._set_guest(name, state=settled, switching=False)
        finally:
            source_host.close()
            target_host.close()

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
            raise RejuvenationAborted(reason=exc, active=old.name)
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

    def _begin_run(self, state, mover_name, guests):
        """Open a run onto N+1 (nothing moved yet).

        A standby generation, started ahead by standby(), is taken over
        with the destinations it prepared; otherwise N+1 starts now.
        """
        old = self.active(state)
        begun = time.time()
        aging_before = self.health(old)
        generation = self._standby_generation(state)
        shells = {}
        if generation is not None:
            # A standby whose daemon died still has its prepared QEMUs:
            # restarted, the daemon finds them again.
            self._ensure_running(self.sibling(generation, state))
            ready_ms = 0.0
            shells = state['siblings'][str(generation)].get('shells', {})
            LOG.info('taking over standby generation %d with %d prepared '
                     'destinations', generation, len(shells))
            self._discard_shells_except(generation, set(guests))
        else:
            generation = max(int(g) for g in state['siblings']) + 1
            _new, ready_ms = self._start_sibling(state, generation, 'ready')
        run = {'id': str(uuid.uuid4()), 'from': old.generation,
               'to': generation, 'state': 'running', 'mover': mover_name,
               'begun': begun, 'started': time.time(),
               'sibling_ready_ms': ready_ms, 'standby': bool(shells),
               'guests': {g: {'state': journal_mod.PENDING}
                          for g in guests},
               'aging_before': aging_before}
        with self.journal.update() as st:
            record = st['siblings'][str(generation)]
            record['state'] = 'ready'
            record.pop('shells', None)
            for name, shell in shells.items():
                if name in run['guests']:
                    run['guests'][name]['shell'] = shell
            st['run'] = run
        return run

    def discard_standby(self, names=None):
        """Discard the standby generation, or some prepared destinations.

        With ``names``, only the destinations prepared for those guests
        (guests about to be deleted, whose RAM they map). Returns the
        number of prepared destinations destroyed.
        """
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
                        self._discard_shell(endpoint)
                        self._set_shell(generation, endpoint.name, None)
                        count += 1
            finally:
                host.close()
            if names is None:
                sibling.retire()
                with self.journal.update() as st:
                    record = st['siblings'][str(generation)]
                    record['state'] = 'retired'
                    record.pop('shells', None)
            return count

    def _discard_shells_except(self, generation, names):
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
                    self._discard_shell(endpoint)
        finally:
            host.close()

    @staticmethod
    def _discard_shell(endpoint):
        """Destroy a prepared destination that never received a guest.

        Only a QEMU still waiting for its migration is a shell; anything
        else may hold a guest and is left for the operator.
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
            self._set_guest(name, state=journal_mod.FAILED,
                            error='not running on %s' % source_host.name)
            return None
        shell = self.journal.load()['run']['guests'][name].pop('shell', None)
        self._set_guest(name, state=journal_mod.MOVING, shell=None,
                        was_running=src.status() == 'running')
        try:
            ctx = None
            dest = target_host.guest(name) if shell else None
            if dest is not None:
                if shell.get('state') == SHELL_READY and \
                        shell.get('mover') == mover.name and \
                        shell.get('digest') == self._xml_digest(src):
                    try:
                        ctx = mover.adopt(src, target_host, dest)
                    except exception.InvalidInput as exc:
                        LOG.warning('%s; preparing a new one', exc)
                if ctx is None:
                    self._discard_shell(dest)
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
        try:
            result = mover.finish(ctx, on_switchover=lambda:
                                  self._set_guest(name, switching=True),
                                  pause_lock=pause_lock)
        except exception.RollbackFailed as exc:
            self._set_guest(name, error=str(exc))
            LOG.error('%s', exc)
            return None
        except exception.VMBeamError as exc:
            self._set_guest(name, state=journal_mod.FAILED, error=str(exc))
            LOG.error('%s', exc)
            return None
        try:
            result.destination.persist()
        except libvirt.libvirtError as exc:
            # The guest runs on the target all the same; it stays a
            # transient domain there until defined again.
            LOG.warning('defining %s on %s failed: %s', name,
                        target_host.name, exc)
        figures = dict(result.as_dict(), standby=ctx.adopted)
        self._set_guest(name, state=journal_mod.MOVED, result=figures,
                        error=None, switching=False)
        return figures

    def _move_all(self, mover, pending, source_host, target_host,
                  concurrency):
        """Prepare every destination first, then switch the guests over.

        Starting a destination QEMU through libvirt costs a few hundred
        milliseconds of CPU; done before any guest pauses, it does not
        compete with the switchovers, which stay short.
        """
        def pmap(fn, items):
            with concurrent.futures.ThreadPoolExecutor(
                    max_workers=concurrency) as pool:
                return list(pool.map(fn, items))

        contexts = pmap(lambda n: self._prepare_one(
            mover, n, source_host, target_host), pending)
        ready = [(n, c) for n, c in zip(pending, contexts) if c is not None]
        # One guest paused at a time; the rest of the moves overlap.
        pause_lock = threading.Lock()
        pmap(lambda item: self._finish_one(mover, item[0], item[1],
                                           target_host, pause_lock), ready)

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
            self._prepare_shells(mover, generation)
            return self.journal.load()['siblings'][str(generation)]

    def _set_shell(self, generation, name, shell):
        with self._journal_lock, self.journal.update() as st:
            shells = st['siblings'][str(generation)].setdefault('shells', {})
            if shell is None:
                shells.pop(name, None)
            else:
                shells[name] = shell

    def _prepare_shells(self, mover, generation):
        source_host = self.active().host()
        target_host = self.sibling(generation).host()
        try:
            on_source = {g.name: g for g in source_host.guests()
                         if g.alive()}
            record = self.journal.load()['siblings'][str(generation)]
            shells = record.get('shells', {})
            for endpoint in target_host.guests():
                shell = shells.get(endpoint.name)
                src = on_source.get(endpoint.name)
                if shell and shell['state'] == SHELL_READY and src and \
                        shell['mover'] == mover.name and \
                        shell['digest'] == self._xml_digest(src):
                    continue
                LOG.info('discarding the stale prepared destination of %s',
                         endpoint.name)
                self._discard_shell(endpoint)
                self._set_shell(generation, endpoint.name, None)
            shells = self.journal.load()['siblings'][str(generation)].get(
                'shells', {})
            for name, src in sorted(on_source.items()):
                if name in shells:
                    continue
                try:
                    mover.check(src.spec)
                except exception.InvalidInput as exc:
                    LOG.warning('no prepared destination for %s: %s', name,
                                exc)
                    continue
                shell = {'mover': mover.name,
                         'digest': self._xml_digest(src),
                         'state': 'preparing'}
                # Journalled first: a shell of a killed standby() is
                # found and discarded by the next one.
                self._set_shell(generation, name, shell)
                started = time.monotonic()
                try:
                    mover.begin(src, target_host)
                except exception.VMBeamError as exc:
                    LOG.error('preparing a destination for %s: %s', name,
                              exc)
                    self._set_shell(generation, name, None)
                    continue
                self._set_shell(generation, name, dict(
                    shell, state=SHELL_READY,
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
                if g['state'] != journal_mod.MOVED]
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
        aging_after = self.health(target)
        source.retire()
        with self.journal.update() as st:
            st['siblings'][str(run['from'])]['state'] = 'retired'
            st['siblings'][str(run['to'])]['state'] = 'active'
            st['active'] = run['to']
            st['run'].update(state='completed', emptied=emptied,
                             finished=time.time(), aging_after=aging_after)
            st['history'] = (st['history'] + [st['run']])[-_HISTORY:]
        return self.journal.load()['run']

    def _check_movable(self, mover, on_source, names, run):
        """Refuse, before anything changes, what this run cannot move."""
        moved = {n for n, g in (run or {}).get('guests', {}).items()
                 if g['state'] == journal_mod.MOVED}
        unknown = [n for n in names or () if n not in on_source and
                   n not in moved]
        if unknown:
            raise exception.GuestNotFound(
                guest=', '.join(unknown),
                known=', '.join(sorted(on_source)) or 'none')
        for name in names or sorted(on_source):
            if name in on_source:
                mover.check(on_source[name].spec)

    def rejuvenate(self, mover_name=None, concurrency=None, names=None):
        """Move every guest (or ``names``) onto a fresh generation.

        An interrupted or incomplete run is taken up again instead of
        starting yet another generation. Returns the run's journal record.
        """
        mover_name = mover_name or self.conf.vmbeam.default_mover
        mover = movers_mod.load(mover_name, self.conf)
        concurrency = concurrency or self.conf.vmbeam.rejuvenation_concurrency
        if concurrency < 1:
            raise exception.InvalidInput(
                reason='concurrency must be 1 or more, not %d' % concurrency)
        with self.journal.locked():
            self.recover()
            state = self.journal.load()
            run = state['run']
            if run and run['state'] == 'completed':
                run = None
            source = self.sibling(run['from'], state) if run \
                else self.active(state)
            source_host = source.host()
            try:
                # Live QEMUs only: libvirt lists a quit domain a little
                # longer while it tidies up.
                on_source = {g.name: g for g in source_host.guests()
                             if g.alive()}
                self._check_movable(mover, on_source, names, run)
                if run is None:
                    run = self._begin_run(state, mover_name, on_source)
                else:
                    with self.journal.update() as st:
                        st['run']['state'] = 'running'
                        guests = st['run']['guests']
                        for name in on_source:
                            entry = guests.setdefault(name, {})
                            if entry.get('state') in (None,
                                                      journal_mod.FAILED):
                                entry['state'] = journal_mod.PENDING
                    run = self.journal.load()['run']
                target = self.sibling(run['to'])
                self._ensure_running(target)
                target_host = target.host()
                pending = [n for n in sorted(on_source)
                           if run['guests'][n]['state'] ==
                           journal_mod.PENDING and
                           (names is None or n in names)]
                started = time.monotonic()
                try:
                    self._move_all(mover, pending, source_host, target_host,
                                   concurrency)
                finally:
                    target_host.close()
            finally:
                source_host.close()
            with self.journal.update() as st:
                st['run']['moves_ms'] = (time.monotonic() - started) * 1e3
            return self._finish(run['id'])

    def move(self, name, mover_name=None):
        """Move one guest onto the open run's target generation.

        A new generation is started when no run is open.
        """
        return self.rejuvenate(mover_name, concurrency=1, names=[name])
