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

"""VMBeamHost: switching generations, lookups across them, event fences."""

from unittest import mock

from nova import exception as nova_exception
from nova.tests.fixtures import libvirt as fakelibvirt
from nova.virt import event as virtevent

from tests.nova.unit import base

DOMAIN = '''<domain type="qemu"><name>%s</name><uuid>%s</uuid>
<memory>131072</memory><vcpu>1</vcpu><os><type>hvm</type></os>
<devices/></domain>'''

SECOND = 'qemu:///session'


class TestGenerations(base.DriverTestCase):

    def setUp(self):
        super().setUp()
        self.host = self.connection._host
        self.queued = []
        patcher = mock.patch.object(self.host._event_handler, '_queue_event',
                                    side_effect=self.queued.append)
        patcher.start()
        self.addCleanup(patcher.stop)

    def define(self, conn, instance):
        dom = conn.defineXML(DOMAIN % (instance.name, instance.uuid))
        dom.create()
        return dom

    def lifecycle(self, conn, uuid,
                  event=fakelibvirt.VIR_DOMAIN_EVENT_STARTED):
        dom = mock.Mock(UUIDString=mock.Mock(return_value=uuid))
        self.host._event_lifecycle_callback(conn, dom, event, 0, self.host)

    def lifecycle_events(self):
        return [e for e in self.queued
                if isinstance(e, virtevent.LifecycleEvent)]

    def test_switch_keeps_guests_of_the_old_generation_found(self):
        old = self.host.get_connection()
        on_old = self.make_instance()
        self.define(old, on_old)
        conn_events = self.host._conn_event_handler_queue.qsize()
        self.host.switch_uri(SECOND)
        new = self.host.get_connection()
        self.assertIsNot(old, new)
        self.assertEqual(SECOND, self.host.uri)
        self.assertEqual([base.PRIMARY], self.host.secondary_uris())
        on_new = self.make_instance()
        self.define(new, on_new)
        # Lookups and listings cover both daemons while a run is open.
        self.assertEqual(on_old.uuid, self.host.get_guest(on_old).uuid)
        self.assertEqual(on_new.uuid, self.host.get_guest(on_new).uuid)
        self.assertEqual({on_old.uuid, on_new.uuid},
                         set(self.connection.list_instance_uuids()))
        # No connection up/down event: the service stays enabled.
        self.assertEqual(conn_events,
                         self.host._conn_event_handler_queue.qsize())
        self.host.release_secondaries()
        self.assertEqual([], self.host.secondary_uris())
        self.assertRaises(nova_exception.InstanceNotFound,
                          self.host.get_guest, on_old)
        self.assertEqual([on_new.uuid],
                         self.connection.list_instance_uuids())

    def test_a_failed_switch_keeps_the_old_connection(self):
        old = self.host.get_connection()
        self.assertRaises(fakelibvirt.libvirtError, self.host.switch_uri,
                          'qemu:///nowhere?socket=/nonexistent')
        self.assertIs(old, self.host.get_connection())
        self.assertEqual(base.PRIMARY, self.host.uri)

    def test_events_of_moving_guests_and_left_generations_are_dropped(self):
        old = self.host.get_connection()
        self.host.switch_uri(SECOND)
        new = self.host.get_connection()
        uuid = 'a5bd4bb6-9b83-4a88-a8bb-8b8b3b3bb1b1'
        other = '1f0b8f8a-6d2d-4c55-9f21-3a1b2e7c9d01'
        self.lifecycle(old, uuid)
        self.assertEqual(1, len(self.lifecycle_events()))
        self.host.begin_move(uuid)
        self.lifecycle(old, uuid, fakelibvirt.VIR_DOMAIN_EVENT_SUSPENDED)
        self.lifecycle(new, uuid)
        self.lifecycle(new, other)
        self.assertEqual([uuid, other],
                         [e.uuid for e in self.lifecycle_events()])
        self.host.end_move(uuid, moved=True)
        # The source quits on the old daemon: not the instance stopping.
        self.lifecycle(old, uuid, fakelibvirt.VIR_DOMAIN_EVENT_STOPPED)
        self.assertEqual(2, len(self.lifecycle_events()))
        self.lifecycle(new, uuid, fakelibvirt.VIR_DOMAIN_EVENT_STOPPED)
        self.assertEqual(virtevent.EVENT_LIFECYCLE_STOPPED,
                         self.lifecycle_events()[-1].transition)
        # Once released, nothing from the old daemon counts any more.
        self.host.release_secondaries()
        self.lifecycle(old, other)
        self.assertEqual(3, len(self.lifecycle_events()))

    def test_only_the_primary_connection_closing_disables_the_service(self):
        old = self.host.get_connection()
        self.host.switch_uri(SECOND)
        self.host._close_callback(old, 1, None)
        self.assertEqual([], [e for e in self.queued if isinstance(e, dict)])
        self.host._close_callback(self.host.get_connection(), 1, None)
        self.assertEqual(1, len([e for e in self.queued
                                 if isinstance(e, dict)]))

    def test_a_close_during_the_connection_s_own_test_does_not_deadlock(self):
        # libvirt calls the close callback inside getLibVersion when the
        # connection is dead, in the thread of Host._get_connection, which
        # holds _wrapped_conn_lock: Nova's handler would wait for it
        # forever. That thread handles the loss itself.
        conn = self.host.get_connection()
        with self.host._wrapped_conn_lock:
            self.host._close_callback(conn, 1, None)
        self.assertEqual([], [e for e in self.queued if isinstance(e, dict)])
        # Not under the lock: handled as before.
        self.host._close_callback(conn, 1, None)
        self.assertEqual(1, len([e for e in self.queued
                                 if isinstance(e, dict)]))

    def test_follow_generations_at_run_start(self):
        self.connection.follow_generations(SECOND, base.PRIMARY)
        self.assertEqual(SECOND, self.host.uri)
        self.assertEqual([base.PRIMARY], self.host.secondary_uris())
        # Taken up again (nova-compute restarted in between): idempotent.
        self.connection.follow_generations(SECOND, base.PRIMARY)
        self.assertEqual([base.PRIMARY], self.host.secondary_uris())
