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


"""The L1's root PCI bus: what libvirt plugs leaves room for the pools.

An L1 VM holds hot-plugged devices of two hands: libvirt's (uplink NICs,
the boot files' disk), at the addresses free_pci_slot() gives, and
vmbeam-pagemoverd's (the guests' RAM pools, ivshmem), which QEMU
addresses. A plain QEMU stands for the L1 here (paused, no guest OS):
what is checked is QEMU's rule for hot-plugging, and the slot chosen.
"""

import os
import subprocess
from unittest import mock

from nova_vmbeam.conf import nested as nested_conf
from nova_vmbeam.nested import sibling as nested_sibling
from nova_vmbeam.qemu import monitor as monitor_mod
from nova_vmbeam import waiting
from tests.functional import base


class TestPoolsAfterUplinks(base.PrivateStateTestCase):

    def setUp(self):
        super().setUp()
        nested_conf.register_opts(self.conf)
        self.state = self.conf.vmbeam.state_path
        socket = os.path.join(self.state, 'l1.qmp')
        qemu = subprocess.Popen(
            ['qemu-system-x86_64', '-machine', 'pc,accel=tcg', '-nodefaults',
             '-display', 'none', '-S', '-m', '64',
             '-qmp', 'unix:%s,server=on,wait=off' % socket])
        self.addCleanup(qemu.wait, 10)
        self.addCleanup(qemu.kill)
        self.assertTrue(waiting.until(lambda: os.path.exists(socket), 30,
                                      0.05, lambda: qemu.poll() is not None),
                        'QEMU did not start')
        self.mon = monitor_mod.Monitor(socket, 'l1')
        self.mon.connect()
        self.addCleanup(self.mon.close)

    def used_slots(self):
        return {dev['slot'] for bus in self.mon.execute('query-pci')
                for dev in bus['devices'] if bus['bus'] == 0}

    def plug_pool(self, name):
        """As vmbeam-pagemoverd plugs a pool: QEMU picks the address."""
        path = os.path.join(self.state, name)
        with open(path, 'wb') as f:
            f.truncate(4 << 20)
        self.mon.execute('object-add', **{
            'qom-type': 'memory-backend-file', 'id': name + '-mem',
            'mem-path': path, 'size': 4 << 20, 'share': True})
        self.mon.execute('device_add', driver='ivshmem-plain', id=name,
                         memdev=name + '-mem')

    def test_pools_plug_beside_devices_in_the_slots_libvirt_is_given(self):
        sibling = nested_sibling.NestedSibling(self.conf, 1)
        with mock.patch.object(sibling, 'used_pci_slots', self.used_slots):
            self.plug_pool('pool-a')
            for name in ('uplink-a', 'uplink-b'):
                slot = sibling.free_pci_slot('an uplink')
                self.mon.execute('device_add', driver='virtio-net-pci',
                                 id=name, addr='0x%x' % slot)
            # A guest started after the uplinks: its pool still plugs.
            self.plug_pool('pool-b')
        by_id = {dev['qdev_id']: dev['slot']
                 for bus in self.mon.execute('query-pci')
                 for dev in bus['devices']}
        self.assertEqual(nested_sibling.LAST_PCI_SLOT, by_id['uplink-a'])
        self.assertEqual(nested_sibling.LAST_PCI_SLOT - 1, by_id['uplink-b'])
        self.assertLess(by_id['pool-b'], nested_sibling.FIRST_PCI_SLOT)
