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

"""The vmbeam RPC API: client, endpoint and driver, over oslo.messaging.

Bad input gets a clear error of its own class back and changes nothing.
"""

import os
import time
from unittest import mock

from nova import context as nova_context
from nova import objects
from nova import rpc as nova_rpc
from nova.tests import fixtures as nova_fixtures
from oslo_context import context as oslo_context

from nova_vmbeam import exception
from nova_vmbeam import records
from nova_vmbeam.rpc import api as rpc_api
from nova_vmbeam.virt import notifications
from nova_vmbeam.virt import rejuvenation
from tests.nova.unit import base

U1 = '6f1c2a4e-3b5d-4e7f-8a9b-0c1d2e3f4a5b'


def completed_run(run_id, name, uuid, state=records.MOVED):
    return records.Run(
        id=run_id, source=1, target=2, state='completed', mover='zerocopy',
        guests={name: records.GuestEntry(
            state=state, uuid=uuid,
            error=None if state == records.MOVED else 'boom',
            result=records.MoveResult(
                guest=name, mover='zerocopy', ok=True, total_ms=12.5,
                downtime_ms=3.25, transferred_bytes=4096))})


class TestRpc(base.DriverTestCase):

    def setUp(self):
        super().setUp()
        self.notifier = self.useFixture(
            nova_fixtures.NotificationFixture(self))
        self.api = rpc_api.VMBeamAPI(self.transport, timeout=30)
        self.service = self.connection._rejuvenation
        self.journal = self.service.orchestrator.journal.path

    def assert_nothing_changed(self, instance=None):
        self.assertFalse(os.path.exists(self.journal))
        self.assertIsNone(self.service._busy)
        if instance is not None:
            self.assertEqual([], objects.InstanceActionList.
                             get_by_instance_uuid(self.ctxt, instance.uuid)
                             .objects[1:])

    def test_status(self):
        status = self.api.status(self.ctxt, base.CONF.host)
        self.assertEqual(base.CONF.host, status['host'])
        self.assertIsNone(status['active_generation'])
        self.assertEqual(base.PRIMARY, status['connection'])
        self.assertIsNone(status['running'])
        self.assertIsNone(status['run'])

    def test_unknown_instance(self):
        for bad in ('3b4e1f2a-0000-4000-8000-000000000000', 'nonsense'):
            exc = self.assertRaises(exception.InstanceNotFound,
                                    self.api.rejuvenate_instance, self.ctxt,
                                    base.CONF.host, bad)
            self.assertIn(bad, str(exc))
            self.assertIn('openstack server show', str(exc))
        self.assert_nothing_changed()

    def test_instance_on_another_host(self):
        instance = self.make_instance(host='compute-7')
        exc = self.assertRaises(exception.InstanceNotOnHost,
                                self.api.rejuvenate_instance, self.ctxt,
                                base.CONF.host, instance.uuid)
        self.assertIn('compute-7', str(exc))
        self.assertIn('Send the request to compute-7', str(exc))
        self.assert_nothing_changed(instance)

    def test_instance_without_a_guest(self):
        instance = self.make_instance()
        exc = self.assertRaises(exception.InstanceNotRunning,
                                self.api.rejuvenate_instance, self.ctxt,
                                base.CONF.host, instance.uuid)
        self.assertIn('Start it first', str(exc))
        self.assert_nothing_changed(instance)

    def test_instance_not_vmbeam_ready(self):
        self.flags(plain_ram_policy='refuse', group='vmbeam')
        instance = self.make_instance()
        self.spawn(instance)
        # The preflight needs a real generation (see the functional test
        # for the whole path); here it says what zerocopy says.
        with mock.patch.object(
                self.service.orchestrator, 'preflight',
                side_effect=exception.RamNotShareable(
                    guest=instance.name, mover='zerocopy',
                    reason='its RAM is anonymous, not a file in the RAM '
                           'pool', fix='')):
            exc = self.assertRaises(exception.NotVMBeamReady,
                                    self.api.rejuvenate_instance, self.ctxt,
                                    base.CONF.host, instance.uuid)
        self.assertIn(instance.uuid, str(exc))
        self.assertIn('vmbeam:ram=true', str(exc))
        self.assert_nothing_changed(instance)

    def test_bad_mover_and_concurrency(self):
        exc = self.assertRaises(exception.UnknownPlugin,
                                self.api.rejuvenate_host, self.ctxt,
                                base.CONF.host, mover='warp')
        self.assertIn('zerocopy', str(exc))
        for bad in (0, 'two', True):
            exc = self.assertRaises(exception.InvalidInput,
                                    self.api.rejuvenate_host, self.ctxt,
                                    base.CONF.host, concurrency=bad)
            self.assertIn('concurrency', str(exc))
        self.assert_nothing_changed()

    def test_one_rejuvenation_at_a_time(self):
        instance = self.make_instance()
        with self.service._claim('host', None):
            self.assertRaises(exception.RejuvenationRunning,
                              self.api.rejuvenate_host, self.ctxt,
                              base.CONF.host)
            exc = self.assertRaises(exception.RejuvenationRunning,
                                    self.api.rejuvenate_instance, self.ctxt,
                                    base.CONF.host, instance.uuid)
            self.assertIn('already running', str(exc))
            self.assertEqual('host', self.api.status(
                self.ctxt, base.CONF.host)['running']['kind'])

    def test_rejuvenate_host_runs_in_the_background(self):
        run = completed_run('r-1', 'instance-00000001', U1)
        plan = records.RunPlan(run_id=None, source=1, target=2,
                               movers={'instance-00000001': 'zerocopy'},
                               uuids={'instance-00000001': U1})
        orchestrator = self.service.orchestrator
        with mock.patch.object(orchestrator, 'preflight',
                               return_value=plan), \
                mock.patch.object(orchestrator, 'rejuvenate',
                                  return_value=run) as rejuvenate:
            started = self.api.rejuvenate_host(self.ctxt, base.CONF.host,
                                               concurrency=2)
            self.assertEqual({'state': 'running', 'generation': 2},
                             {k: started[k] for k in ('state',
                                                      'generation')})
            self.service._thread.join(10)
        rejuvenate.assert_called_once_with(
            None, 2, fallback_mover='precopy', run_id=started['run_id'])
        events = self.notifier.wait_for_versioned_notifications(
            notifications.END)
        payload = events[0]['payload']['nova_object.data']
        guest = payload['guests'][0]['nova_object.data']
        self.assertEqual(3.25, guest['downtime_ms'])
        self.assertEqual('moved', guest['state'])
        self.assertEqual(
            [notifications.START, notifications.END],
            [n['event_type'] for n in self.notifier.versioned_notifications])
        last = self.api.status(self.ctxt, base.CONF.host)['last_request']
        self.assertEqual('completed', last['state'])

    def test_rejuvenate_host_answers_once_the_run_is_recorded(self):
        # The run id the caller gets must name a run in the journal: the
        # answer waits for the orchestrator's run_started (after the run
        # is written), not only for the thread to start.
        run = completed_run('r-6', 'instance-00000001', U1)
        plan = records.RunPlan(
            run_id=None, source=1, target=2,
            movers={'instance-00000001': 'zerocopy'},
            uuids={'instance-00000001': U1})
        orchestrator = self.service.orchestrator
        recorded = []

        def rejuvenate(*args, **kwargs):
            time.sleep(0.3)
            recorded.append(time.monotonic())
            with mock.patch.object(self.connection, 'follow_generations'):
                self.service.run_started(run, mock.Mock(uri='a'),
                                         mock.Mock(uri='b'))
            time.sleep(0.3)
            return run
        with mock.patch.object(orchestrator, 'preflight',
                               return_value=plan), \
                mock.patch.object(orchestrator, 'rejuvenate',
                                  side_effect=rejuvenate):
            self.api.rejuvenate_host(self.ctxt, base.CONF.host)
            answered = time.monotonic()
            self.service._thread.join(10)
        self.assertEqual(1, len(recorded))
        self.assertGreaterEqual(answered, recorded[0])

    def test_failed_run_sends_the_error_notification(self):
        orchestrator = self.service.orchestrator
        plan = records.RunPlan(run_id='r-2', source=1, target=2, movers={},
                               uuids={})
        with mock.patch.object(orchestrator, 'preflight',
                               return_value=plan), \
                mock.patch.object(orchestrator, 'rejuvenate',
                                  side_effect=exception.RejuvenationAborted(
                                      reason='no daemon', active='gen1')):
            self.api.rejuvenate_host(self.ctxt, base.CONF.host)
            self.service._thread.join(10)
        event = self.notifier.wait_for_versioned_notifications(
            notifications.ERROR)[0]
        self.assertEqual('ERROR', event['priority'])
        self.assertIn('no daemon',
                      event['payload']['nova_object.data']['error'])
        deadline = time.monotonic() + 5
        while self.service._busy and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertIsNone(self.service._busy)


class TestMoveFencing(base.DriverTestCase):
    """What the run listener does around one guest's move."""

    def test_move_is_fenced_recorded_and_announced(self):
        instance = self.make_instance()
        self.spawn(instance)
        service = self.connection._rejuvenation
        events = []
        self.connection.register_event_listener(events.append)
        run = completed_run('r-3', instance.name, instance.uuid)
        service.orchestrator.journal.save(records.JournalState(run=run))
        host = self.connection._host
        lock = rejuvenation.lockutils.internal_lock(instance.uuid)
        with service.moving(instance.name, instance.uuid):
            self.assertTrue(host.is_moving(instance.uuid))
            # Nova's per-instance lock is held: its operations wait.
            self.assertFalse(lock.acquire(blocking=False))
        self.assertTrue(lock.acquire(blocking=False))
        lock.release()
        self.assertFalse(host.is_moving(instance.uuid))
        service.guest_done(instance.name, instance.uuid,
                           run.guests[instance.name])
        self.assertEqual([(instance.uuid, 'Resumed')],
                         [(e.uuid, e.get_name()) for e in events])
        actions = objects.InstanceActionList.get_by_instance_uuid(
            self.ctxt, instance.uuid)
        action = [a for a in actions if a.action == rejuvenation.ACTION][0]
        action_events = objects.InstanceActionEventList.get_by_action(
            self.ctxt, action.id)
        self.assertEqual([(rejuvenation.EVENT, 'Success')],
                         [(e.event, e.result) for e in action_events])

    def test_the_callers_context_arrives_as_novas(self):
        # What vmbeam-api sends (an oslo.context built from
        # keystonemiddleware's headers), as nova-compute's serializer
        # turns it into a Nova RequestContext.
        sent = oslo_context.RequestContext(
            user_id='alice-id', project_id='ops-id', user_name='alice',
            project_name='ops', roles=['rejuvenator'],
            request_id='req-from-the-api')
        wire = rpc_api._ContextSerializer().serialize_context(sent)
        got = nova_rpc.RequestContextSerializer(None).deserialize_context(
            wire)
        self.assertEqual(('alice-id', 'ops-id', 'alice', 'ops',
                          'req-from-the-api'),
                         (got.user_id, got.project_id, got.user_name,
                          got.project_name, got.request_id))

    def test_action_records_who_asked(self):
        # vmbeam-api's caller, as the RPC context carries it; not an admin
        # in Nova: the API authorized the request, the host records it.
        instance = self.make_instance()
        service = self.connection._rejuvenation
        run = completed_run('r-5', instance.name, instance.uuid)
        service.orchestrator.journal.save(records.JournalState(run=run))
        caller = nova_context.RequestContext(
            user_id='alice-id', project_id='ops-id', roles=['rejuvenator'],
            request_id='req-from-the-api')
        with service._claim('instance', caller):
            with service.moving(instance.name, instance.uuid):
                pass
        service._release(state='completed')
        action = [a for a in objects.InstanceActionList.get_by_instance_uuid(
            self.ctxt, instance.uuid) if a.action == rejuvenation.ACTION][0]
        self.assertEqual(('alice-id', 'ops-id', 'req-from-the-api'),
                         (action.user_id, action.project_id,
                          action.request_id))
        self.assertIsNone(service._requester)

    def test_failed_move_is_recorded_as_an_error(self):
        instance = self.make_instance()
        service = self.connection._rejuvenation
        run = completed_run('r-4', instance.name, instance.uuid,
                            state=records.FAILED)
        service.orchestrator.journal.save(records.JournalState(run=run))
        with service.moving(instance.name, instance.uuid):
            pass
        action = [a for a in objects.InstanceActionList.get_by_instance_uuid(
            self.ctxt, instance.uuid) if a.action == rejuvenation.ACTION][0]
        event, = objects.InstanceActionEventList.get_by_action(
            self.ctxt, action.id)
        self.assertEqual('Error', event.result)
        self.assertIn('boom', event.details)
