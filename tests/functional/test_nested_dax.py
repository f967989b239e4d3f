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


"""Guests' pools as device-DAX in real L1s (bar_mapping = dax).

Two L1 appliance VMs, no L2 (the L1 boots are seconds, an L2's minutes):
a pool is plugged into the first as virtio-pmem, the L1 kernel makes it a
dax device, and a QEMU in that L1 (the one that would run the L2) maps
it: what it writes reaches the pool at its 2 MiB, and what L0 wrote
there it reads. The second L1 finds the same dax device in the same pool
(not made anew) with the first one's data. The pool cannot leave an L1
before it stops: its RAM is not freed while any L1 maps it, the first
one killed (and retired at once) or not.
"""

import os
import signal
import uuid
import xml.etree.ElementTree as ET

from nova_vmbeam import exception
from nova_vmbeam.nested import agent
from nova_vmbeam.nested.appliance import builder
from nova_vmbeam.nested import caching
from nova_vmbeam.nested import host as nested_host
from nova_vmbeam import waiting
from tests.functional import test_nested

RAM_MIB = 64
#: guest-physical addresses of the markers (plain RAM in a pc machine)
FROM_L0, FROM_L1 = 0x300000, 0x200000


class TestDeviceDax(test_nested.NestedTestCase):

    BOOTS_L2 = False

    def setUp(self):
        super().setUp()
        self.conf.set_override('bar_mapping', 'dax', 'vmbeam_nested')
        self.conf.set_override('dax_slots', 4, 'vmbeam_nested')

    def _l1_qemu(self, sibling, dax, script):
        """Run an L2's QEMU (paused) in ``sibling`` on ``dax``, with HMP.

        As the L2's would map it (nova_vmbeam/qemu/cmdline.py), as root.
        """
        return agent.sh(sibling.l1_domain(), (
            "printf '%s\\nquit\\n' | qemu-system-x86_64 -machine "
            'pc,accel=tcg,memory-backend=ram -nodefaults -display none -S '
            '-m %dM -object memory-backend-file,id=ram,mem-path=%s,size=%dM,'
            'share=on,align=2M %s -monitor stdio >/dev/null' % (
                script['hmp'], RAM_MIB, dax, RAM_MIB, script['args'])),
            timeout=120)

    def _l1_read(self, sibling, path, size):
        return bytes.fromhex(agent.sh(
            sibling.l1_domain(),
            'od -An -tx1 -N%d %s | tr -d " \\n"' % (size, path)))

    def test_pool_as_device_dax_shared_by_two_l1s(self):
        tb = self.testbed
        gen1 = tb.start_sibling(1)
        self.assertTrue(gen1.ram_mapping.dax)
        domain = ET.fromstring(gen1.l1_domain().XMLDesc())
        self.assertEqual('4', domain.find('maxMemory').get('slots'))
        host1 = gen1.host()
        self.addCleanup(host1.close)

        guest_uuid = str(uuid.uuid4())
        tb.pool.ensure()
        head = caching.DAX_HEAD_BYTES
        path = tb.pool.allocate(guest_uuid, (RAM_MIB << 20) + head)
        with open(path, 'r+b') as f:
            f.seek(head + FROM_L0)
            f.write(b'vmbeam-from-L0!!')
        dax = host1.attach_pool(tb.pool, guest_uuid)
        self.assertTrue(dax.startswith('/dev/dax'), dax)
        # Its own once made: plugging is idempotent.
        self.assertEqual(dax, host1.attach_pool(tb.pool, guest_uuid))
        name = os.path.basename(dax)
        uuid1, size, owner = agent.sh(gen1.l1_domain(), (
            'cat /sys/bus/dax/devices/%s/../uuid /sys/bus/dax/devices/%s/size'
            '; stat -c %%U %s') % (name, name, dax)).split()
        # The L2's RAM exactly, given to the QEMU user (not root).
        self.assertEqual((RAM_MIB << 20, builder.QEMU_USER),
                         (int(size), owner))
        self.assertTrue(tb.pool.verify(guest_uuid, gen1.l1_pid()))

        # A QEMU in the L1 maps it as its RAM: it reads L0's bytes at the
        # guest-physical address they were written for, and writes its
        # own (the generic loader, at reset) where L0 finds them.
        self._l1_qemu(gen1, dax, {
            'hmp': 'pmemsave 0x%x 16 "/tmp/seen"' % FROM_L0,
            'args': '-device loader,addr=0x%x,data=0x78616476,data-len=4'
                    % FROM_L1})
        self.assertEqual(b'vmbeam-from-L0!!',
                         self._l1_read(gen1, '/tmp/seen', 16))
        with open(path, 'rb') as f:
            f.seek(head + FROM_L1)
            self.assertEqual(b'vdax', f.read(4))

        # It cannot leave this L1, which keeps mapping it: its RAM is not
        # freed while mapped.
        host1.detach_pool(tb.pool, guest_uuid)
        self.assertIsNotNone(gen1.find_device(
            nested_host.pool_device(guest_uuid)))
        self.assertRaises(exception.VMBeamError, tb.pool.release,
                          guest_uuid)
        self.assertTrue(os.path.exists(path))

        # The next L1 finds the same dax device in the pool (the first
        # one's record in its head, not a new one) and its data.
        gen2 = tb.start_sibling(2)
        host2 = gen2.host()
        self.addCleanup(host2.close)
        dax2 = host2.attach_pool(tb.pool, guest_uuid)
        name2 = os.path.basename(dax2)
        self.assertEqual(uuid1, agent.sh(
            gen2.l1_domain(),
            'cat /sys/bus/dax/devices/%s/../uuid' % name2).strip())
        self._l1_qemu(gen2, dax2, {
            'hmp': 'pmemsave 0x%x 4 "/tmp/seen"' % FROM_L1, 'args': ''})
        self.assertEqual(b'vdax', self._l1_read(gen2, '/tmp/seen', 4))
        self.assertEqual(sorted([gen1.l1_pid(), gen2.l1_pid()]),
                         sorted(tb.pool.mapped_by(guest_uuid)))

        # The first L1 killed (its QEMU, at L0) and retired at once, as a
        # run would retire it, while libvirt may still list it: retired
        # as ended, not refused. The second still maps the pool, which is
        # not freed; once no L1 maps it, it is.
        pid1 = gen1.l1_pid()
        os.kill(pid1, signal.SIGKILL)
        gen1.retire()
        self.assertFalse(gen1.running())
        self.assertTrue(waiting.until(
            lambda: not gen1.running() and
            pid1 not in tb.pool.mapped_by(guest_uuid), 30, 0.1,
            lambda: False), 'the killed L1 still runs or maps the pool')
        self.assertEqual([gen2.l1_pid()], tb.pool.mapped_by(guest_uuid))
        self.assertRaises(exception.VMBeamError, tb.pool.release,
                          guest_uuid)
        gen2.retire()
        self.assertTrue(tb.pool.release(guest_uuid))
        self.assertFalse(os.path.exists(path))
