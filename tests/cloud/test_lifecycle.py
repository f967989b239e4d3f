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

"""What an operator and a user do with servers, before and after the host
is rejuvenated under them; and Nova's power-state sync afterwards."""

import os
import time

from tests.cloud import base

SYNC_INTERVAL = int(os.environ.get('VMBEAM_CLOUD_SYNC_POWER_STATE_INTERVAL',
                                   '600'))
RAM_POOL = os.environ.get('VMBEAM_CLOUD_RAM_POOL', '/dev/shm/vmbeam-cloud')


class LifecycleTest(base.CloudTestCase):

    def qemu(self, server_id):
        return base.qemu_pids_by_uuid().get(server_id, [])

    def wait_rebooted(self, server_id, qemu):
        """A new QEMU runs the guest, and its guest is READY again."""
        deadline = time.monotonic() + self.BOOT_TIMEOUT
        while True:
            now = self.qemu(server_id)
            if now and now != qemu and base.READY in self.console(server_id):
                return
            if time.monotonic() > deadline:
                self.fail('guest of %s did not boot again (QEMU %s, then '
                          '%s)' % (server_id, qemu, now))
            time.sleep(2)

    def exercise(self, server, resize_to, label):
        """Every action on ``server``; it stays ACTIVE, once, intact."""
        sid = server.id
        compute = self.conn.compute
        # console log
        self.assertIn(base.READY, self.console(sid), label)
        # soft and hard reboot: the guest boots again
        for hard in (False, True):
            qemu = self.qemu(sid)
            base.openstack_cli('server', 'reboot', '--wait',
                               '--hard' if hard else '--soft', sid)
            self.wait_rebooted(sid, qemu)
            self.assertEqual('ACTIVE', self.server(sid).status, label)
        # stop / start
        compute.stop_server(sid)
        server = self.wait_status(sid, 'SHUTOFF')
        self.assertEqual(4, server.power_state, label)   # SHUTDOWN
        self.assertEqual([], base.qemu_pids_by_uuid().get(sid, []), label)
        compute.start_server(sid)
        self.wait_status(sid, 'ACTIVE')
        self.wait_rebooted(sid, [])
        # pause / unpause: the guest goes on where it was
        compute.pause_server(sid)
        server = self.wait_status(sid, 'PAUSED')
        self.assertEqual(3, server.power_state, label)   # PAUSED
        ticks = self.ticks(self.console(sid))
        compute.unpause_server(sid)
        self.wait_status(sid, 'ACTIVE')
        self.wait_guest_ready(sid, since_ticks=ticks, timeout=120)
        # snapshot: the image lands in Glance
        name = '%s-snapshot' % server.name
        out = base.openstack_json('server', 'image', 'create', '--wait',
                                  '--name', name, sid)
        image = self.conn.image.get_image(out['id'])
        self.addCleanup(self.conn.image.delete_image, image.id,
                        ignore_missing=True)
        self.assertEqual('active', image.status, label)
        self.assertGreater(image.size, 0, label)
        self.assertEqual(sid, image.instance_uuid, label)
        # resize on the same host, confirmed
        base.openstack_cli('server', 'resize', '--wait', '--flavor',
                           resize_to, sid)
        self.assertEqual('VERIFY_RESIZE', self.server(sid).status, label)
        base.openstack_cli('server', 'resize', 'confirm', sid)
        server = self.wait_status(sid, 'ACTIVE')
        self.assertEqual(resize_to, server.flavor['original_name'], label)
        self.assertEqual(self.host, server.compute_host, label)
        self.wait_guest_ready(sid, since_ticks=0)
        self.assert_running_once_intact([sid])

    def create_and_delete(self, name):
        server = self.create_server(name)
        pool_file = os.path.join(RAM_POOL, server.id + '.ram')
        self.assertTrue(os.path.exists(pool_file), pool_file)
        self.delete_server(server.id)
        # Gone, or (to an admin, for a moment) listed as deleted: Nova's
        # API shows an admin a deleted instance until its record goes.
        found = self.conn.compute.find_server(server.id)
        self.assertTrue(found is None or (found.status, found.vm_state) ==
                        ('DELETED', 'deleted'), found)
        self.assertEqual([], base.qemu_pids_by_uuid().get(server.id, []))
        self.assertFalse(os.path.exists(pool_file),
                         'the RAM file outlived its server')

    def test_lifecycle_before_and_after_rejuvenation(self):
        server = self.create_server('lifecycle')
        self.create_and_delete('lifecycle-short-before')
        self.exercise(server, 'vmbeam.medium', 'before')

        generation = self.active_generation()
        run = self.rejuvenate_host()
        self.assertEqual('completed', run['state'])
        self.assertEqual(generation + 1, self.active_generation())
        self.assert_running_once_intact([server.id])
        self.assertIn('vmbeam-rejuvenate', self.actions(server.id))

        self.exercise(self.server(server.id), 'vmbeam.small', 'after')
        self.create_and_delete('lifecycle-short-after')

    def test_power_state_sync_after_rejuvenation_changes_nothing(self):
        if SYNC_INTERVAL > 60:
            self.skipTest('VMBEAM_CLOUD_SYNC_POWER_STATE_INTERVAL is %d s; '
                          'tox -e cloud sets a short one' % SYNC_INTERVAL)
        servers = [self.create_server('sync-vmbeam'),
                   self.create_server('sync-plain', flavor='plain.small')]
        ids = [s.id for s in servers]
        offset = self.log_offset()
        run = self.rejuvenate_host()
        self.assertEqual(['precopy', 'zerocopy'],
                         sorted(g['mover'] for g in run['guests']
                                if g['uuid'] in ids))
        # Let the sync run at least twice on the new generation.
        time.sleep(2.5 * SYNC_INTERVAL)
        log = self.log_since(offset)
        self.assertIn('_sync_power_states', log)
        self.assertNotIn('does not match the vm_power_state', log)
        self.assertNotIn('Instance shutdown by itself', log)
        for sid in ids:
            self.assertEqual(['create', 'vmbeam-rejuvenate'],
                             sorted(self.actions(sid)))
        self.assert_running_once_intact(ids)
