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

"""Rejuvenation runs inside nova-compute, as the RPC endpoint asks for them.

HostRejuvenation checks a request (changing nothing when it is bad), runs
the engine's Orchestrator, and is the orchestrator's RunListener: it moves
the driver's libvirt connection to the new generation, fences each guest
from Nova's own operations while it moves (Nova's per-instance lock, and
its lifecycle events suppressed), records an instance action per moved
instance and sends the vmbeam.rejuvenate.* notifications.

Everything it returns over RPC is plain JSON-able primitives.
"""

import contextlib
import os
import threading
import time
import uuid as uuid_mod

from nova import context as nova_context
from nova import exception as nova_exception
from nova import objects
from nova.virt import event as virtevent
from oslo_concurrency import lockutils
from oslo_log import log as logging
from oslo_utils import uuidutils

from nova_vmbeam import exception
from nova_vmbeam import records
from nova_vmbeam.rejuvenation import orchestrator as orchestrator_mod
from nova_vmbeam import siblings as siblings_mod
from nova_vmbeam.virt import notifications

LOG = logging.getLogger(__name__)

#: the instance action and its event, as "openstack server event list"
#: shows them
ACTION = 'vmbeam-rejuvenate'
EVENT = 'compute_vmbeam_move'


class HostRejuvenation(orchestrator_mod.RunListener):
    """Rejuvenation of this compute host, for one VMBeamDriver."""

    def __init__(self, driver, conf, host):
        self.driver = driver
        self.conf = conf
        self.host = host
        self.orchestrator = orchestrator_mod.Orchestrator(conf,
                                                          listener=self)
        self._lock = threading.Lock()
        self._busy = None           # what runs now: a dict, or None
        self._last = None           # how the last request ended
        self._thread = None
        # Who asked for what runs now (a Nova RequestContext, as vmbeam-api
        # sent it): the instance actions record that user and project.
        self._requester = None
        # Set once the run in the background is in the journal.
        self._begun = threading.Event()

    # --- requests (from the RPC endpoint) ------------------------------------

    def _fallback(self):
        return 'precopy' if self.conf.vmbeam.plain_ram_policy == 'precopy' \
            else None

    @contextlib.contextmanager
    def _claim(self, kind, context, **fields):
        """Mark this host busy, or refuse: one request at a time."""
        with self._lock:
            if self._busy is not None:
                raise exception.RejuvenationRunning(
                    pid=os.getpid(), path=self.orchestrator.journal.path)
            self._busy = dict(fields, kind=kind, state='running',
                              started=time.time())
            self._requester = context
        try:
            yield self._busy
        except BaseException:
            with self._lock:
                self._busy = None
                self._requester = None
            raise

    def _release(self, **outcome):
        with self._lock:
            if self._busy is not None:
                self._last = dict(self._busy, finished=time.time(),
                                  **outcome)
            self._busy = None
            self._requester = None

    def rejuvenate_host(self, context, concurrency=None, mover=None):
        """Start a host rejuvenation in the background; return at once."""
        with self._claim('host', context, mover=mover) as busy:
            plan = self.orchestrator.preflight(
                mover, concurrency, fallback_mover=self._fallback())
            run_id = plan.run_id or str(uuid_mod.uuid4())
            busy.update(run_id=run_id, generation=plan.target)
            self._begun.clear()
            self._thread = threading.Thread(
                target=self._run_host, name='vmbeam-rejuvenation',
                args=(context, run_id, plan, concurrency, mover),
                daemon=True)
            self._thread.start()
        # Answer once the run is in the journal (its generation started):
        # the run id the caller gets then names a run that a crash of
        # nova-compute right after this answer leaves to be settled.
        deadline = time.monotonic() + \
            self.conf.vmbeam.sibling_start_timeout + 30
        while not self._begun.wait(0.05):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                break
        return {'run_id': run_id, 'state': 'running',
                'generation': plan.target}

    def rejuvenate_and_wait(self):
        """Rejuvenate this host now and return when the run has ended.

        For the aging monitor; raises if the run could not start or did
        not complete.
        """
        started = self.rejuvenate_host(nova_context.get_admin_context())
        thread = self._thread
        if thread is not None:
            thread.join()
        run = self._journal_run()
        if run is None or run.id != started['run_id'] or \
                run.state != 'completed':
            raise exception.VMBeamError(
                'rejuvenation %s ended %s' % (
                    started['run_id'], run.state if run else 'unknown'))
        return run

    def _run_host(self, context, run_id, plan, concurrency, mover):
        pending = {name: records.GuestEntry(
                       state=records.PENDING, uuid=plan.uuids[name], mover=m)
                   for name, m in plan.movers.items()}
        notifications.notify(
            context, self.host, notifications.START,
            records.Run(id=run_id, source=plan.source, target=plan.target,
                        state='running', guests=pending,
                        mover=mover or siblings_mod.default_mover(self.conf)),
            state='running')
        outcome = {'state': 'error', 'error': 'the run thread died'}
        try:
            run = self.orchestrator.rejuvenate(
                mover, concurrency, fallback_mover=self._fallback(),
                run_id=run_id)
            outcome = {'state': run.state, 'error': self._run_error(run)}
            self._report(context, run)
        except Exception as exc:
            LOG.exception('rejuvenation %s failed', run_id)
            outcome = {'state': 'error', 'error': str(exc)}
            notifications.notify(
                context, self.host, notifications.ERROR,
                self._journal_run(), state='error', error=str(exc))
        finally:
            self._release(**outcome)

    def _journal_run(self):
        try:
            return self.orchestrator.state().run
        except Exception:
            return None

    @staticmethod
    def _run_error(run, only=None):
        left = run.left_behind(only)
        if not left:
            return None
        return 'not moved: %s' % '; '.join(
            '%s (%s)' % item for item in sorted(left.items()))

    def _report(self, context, run, only=None):
        error = self._run_error(run, only)
        if run.state == 'completed' or (only and not error):
            event, state = notifications.END, run.state
        else:
            event, state = notifications.ERROR, run.state
        notifications.notify(context, self.host, event, run, state=state,
                             error=error, only=only)

    def _instance(self, context, instance_uuid):
        """The instance, checked to be Nova's and on this host."""
        if not uuidutils.is_uuid_like(instance_uuid):
            raise exception.InstanceNotFound(uuid=instance_uuid)
        try:
            return objects.Instance.get_by_uuid(
                context.elevated(), instance_uuid,
                expected_attrs=['flavor', 'system_metadata'])
        except nova_exception.InstanceNotFound:
            raise exception.InstanceNotFound(uuid=instance_uuid)

    def rejuvenate_instance(self, context, instance_uuid, mover=None):
        """Move one instance onto the next generation; its figures."""
        with self._claim('instance', context, instance_uuid=instance_uuid,
                         mover=mover) as busy:
            instance = self._instance(context, instance_uuid)
            if instance.host != self.host:
                raise exception.InstanceNotOnHost(
                    uuid=instance_uuid, where=instance.host or 'no host',
                    host=self.host)
            try:
                guest = self.driver.running_guest(instance)
                running = guest.is_active()
            except nova_exception.InstanceNotFound:
                guest, running = None, False
            if not running:
                raise exception.InstanceNotRunning(
                    uuid=instance_uuid, host=self.host,
                    state='no guest' if guest is None else 'not running')
            name = guest.name
            try:
                plan = self.orchestrator.preflight(
                    mover, names=[name], fallback_mover=self._fallback())
            except exception.RamNotShareable as exc:
                raise exception.NotVMBeamReady(
                    uuid=instance_uuid, mover=exc.kwargs.get('mover'),
                    reason=exc.kwargs.get('reason'))
            run_id = plan.run_id or str(uuid_mod.uuid4())
            busy.update(run_id=run_id, generation=plan.target)
        try:
            notifications.notify(
                context, self.host, notifications.START,
                records.Run(id=run_id, source=plan.source,
                            target=plan.target, state='running',
                            mover=plan.movers[name],
                            guests={name: records.GuestEntry(
                                state=records.PENDING,
                                uuid=instance_uuid)}),
                state='running')
            run = self.orchestrator.move(name, mover,
                                         fallback_mover=self._fallback(),
                                         run_id=run_id)
        except Exception as exc:
            notifications.notify(
                context, self.host, notifications.ERROR, self._journal_run(),
                state='error', error=str(exc), only=[name])
            self._release(state='error', error=str(exc))
            raise
        self._report(context, run, only=[name])
        entry = run.guests.get(name) or records.GuestEntry(state=None)
        error = self._run_error(run, only=[name])
        self._release(state=entry.state, error=error)
        if entry.state != records.MOVED:
            raise exception.InstanceMoveFailed(
                uuid=instance_uuid,
                reason='%s; it still runs on generation %s' % (
                    entry.error or entry.state, run.source))
        # The RPC reply: plain data.
        return dict(entry.result.to_dict() if entry.result else {},
                    instance_uuid=instance_uuid, name=name,
                    state=entry.state, run_id=run.id,
                    generation=run.target)

    def status(self, context=None):
        # Requests first: a request is done only once the journal says
        # so, hence "not running" here means the journal below is final.
        with self._lock:
            busy = dict(self._busy) if self._busy else None
            last = dict(self._last) if self._last else None
        status = self.orchestrator.status()
        return {'host': self.host,
                'active_generation': status.active,
                'connection': self.driver.connection_uri,
                'generations': {str(number): records.as_json(generation)
                                for number, generation in
                                status.generations.items()},
                'run': records.as_json(status.run),
                'history': records.as_json(status.history),
                'running': busy,
                'last_request': last,
                'aging': self.driver._aging_status()}

    def stop(self, timeout):
        """nova-compute stops: end the run between guests."""
        self.orchestrator.abort()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout)
            if thread.is_alive():
                LOG.warning('a move was still running at shutdown; the '
                            'next start settles it')

    # --- RunListener ---------------------------------------------------------

    def run_started(self, run, source, target):
        self.driver.follow_generations(target.uri, source.uri)
        self._begun.set()

    @contextlib.contextmanager
    def moving(self, name, uuid):
        # Nova's own per-instance lock (utils.synchronized(instance.uuid)):
        # reboot, stop, delete, attach and the power-state sync wait for
        # the move instead of racing it.
        with lockutils.lock(uuid, lock_file_prefix='nova-'):
            context = self._start_action(uuid)
            self.driver.begin_move(uuid)
            moved = False
            try:
                yield
                moved = self._entry(name).state == records.MOVED
            finally:
                self.driver.end_move(uuid, moved)
                self._finish_action(context, uuid, name)

    def _entry(self, name):
        return self.orchestrator.guest_entry(name)

    def _action_context(self):
        """The requester's user and project, with the rights to record.

        vmbeam-api authorized the request; the aging monitor's own runs
        have no requester and are recorded as the service's.
        """
        requester = self._requester
        if requester is None or not getattr(requester, 'user_id', None):
            return nova_context.get_admin_context()
        return requester.elevated()

    def _start_action(self, uuid):
        context = self._action_context()
        try:
            objects.InstanceAction.action_start(context, uuid, ACTION,
                                                want_result=False)
            objects.InstanceActionEvent.event_start(
                context, uuid, EVENT, want_result=False, host=self.host)
        except Exception as exc:
            # Not an instance of this cloud (or the conductor is away):
            # the move itself does not depend on the record.
            LOG.warning('no instance action for %s: %s', uuid, exc)
            return None
        return context

    def _finish_action(self, context, uuid, name):
        if context is None:
            return
        entry = self._entry(name)
        error = None
        if entry.state != records.MOVED:
            error = entry.error or 'not moved (%s)' % entry.state
        try:
            objects.InstanceActionEvent.event_finish_with_failure(
                context, uuid, EVENT, exc_val=error,
                exc_tb=error, want_result=False)
            objects.InstanceAction.action_finish(context, uuid,
                                                 want_result=False)
        except Exception as exc:
            LOG.warning('could not finish the instance action of %s: %s',
                        uuid, exc)

    def guest_done(self, name, uuid, entry):
        if entry.state != records.MOVED:
            return
        # The source's pause was hidden from Nova; tell it where the guest
        # is now, so the power state it records is the destination's.
        transition = virtevent.EVENT_LIFECYCLE_RESUMED \
            if entry.was_running is not False \
            else virtevent.EVENT_LIFECYCLE_PAUSED
        try:
            self.driver.emit_event(virtevent.LifecycleEvent(uuid,
                                                            transition))
        except Exception:
            LOG.exception('lifecycle event for %s after its move', uuid)

    def retiring(self, source, target):
        self.driver.release_old_generations()
