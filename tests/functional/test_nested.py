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

"""The nested sibling end to end, under TCG inside TCG (slow: minutes).

L0 (this host) runs the L1 appliance VMs under an L0 libvirt daemon of
the test's own; one 128 MiB L2 test guest (memworker keeps verifying its
memory) runs inside L1-A with its RAM in an L0 pool mapped through an
ivshmem BAR, and moves to L1-B with the nested mover. Everything is real:
the appliance built from Debian packages, both L1 kernels, libvirtd in
each L1, the pool daemon's hotplug, the migration over the L1 network.
"""

import os

from nova_vmbeam.conf import nested as nested_conf
from nova_vmbeam import exception
from nova_vmbeam.nested import mover as nested_mover
from nova_vmbeam.nested import network
from nova_vmbeam.nested import sibling as nested_sibling
from nova_vmbeam.rejuvenation import orchestrator as orchestrator_mod
from tests.functional import base
from vmbeam_devtools.nested import testbed as nested_testbed


class NestedTestCase(base.PrivateStateTestCase):

    REQUIRED = ('qemu-system-x86_64', 'unshare', '/usr/sbin/libvirtd',
                'ip')

    def setUp(self):
        super().setUp()
        nested_conf.register_opts(self.conf)
        tag = os.getpid() % 40
        # A bridge and network of the test's own (others may run theirs).
        self.conf.set_override('bridge', 'vmbnt%d' % os.getpid(),
                               'vmbeam_nested')
        self.conf.set_override('network_cidr', '192.168.%d.0/24' %
                               (200 + tag), 'vmbeam_nested')
        self.conf.set_override('l1_memory_mib', 1024, 'vmbeam_nested')
        self.conf.set_override('migration_timeout', 300.0, 'vmbeam')
        self.addCleanup(network.remove_bridge, self.conf)
        self.addCleanup(self._stop_l0)
        self.testbed = nested_testbed.NestedTestbed(self.conf)
        self.addCleanup(self.testbed.cleanup)

    def _stop_l0(self):
        nested_sibling.stop_all(self.conf)
        # QEMUs of this test left behind by a failure (by pid).
        for pid in self.qemu_pids():
            os.kill(pid, 9)


class TestNestedSibling(NestedTestCase):

    def test_l2_moves_between_l1s_and_old_l1_retires(self):
        tb = self.testbed
        gen1 = tb.start_sibling(1)
        health = gen1.health()
        self.assertTrue(health.running)
        self.assertTrue(health.libvirt_alive)
        self.assertEqual('l1', health.daemon.name)
        self.assertEqual({}, health.guests)
        self.assertTrue(gen1.uri.startswith('qemu+tcp://'))

        host1 = gen1.host()
        self.addCleanup(host1.close)
        guest = tb.boot(host1, tb.spec('l2', host1))
        self.assertEqual(['l2'], host1.running_qemus())
        # Never retire an L1 with a guest in it.
        self.assertRaises(exception.SiblingStartFailed, gen1.retire)
        self.assertTrue(gen1.running())

        gen2 = tb.start_sibling(2)
        host2 = gen2.host()
        self.addCleanup(host2.close)
        mover = nested_mover.NestedMover(self.conf)
        result = tb.move(guest, mover, host2)
        self.assertTrue(result.ok, result.error)
        # Only device state crossed the network, not the 128 MiB.
        self.assertLess(result.transferred_bytes, 4 << 20)
        self.assertGreater(result.downtime_ms, 0)

        status = tb.check_integrity(guest, guest.moved_at, passes=2,
                                    timeout=600)
        self.assertGreaterEqual(status['new_passes'], 2)
        self.assertEqual(['l2'], host2.running_qemus())
        self.assertEqual([], host1.running_qemus())
        # The pool is mapped by L1-B's QEMU only now.
        self.assertEqual([gen2.l1_pid()],
                         tb.pool.mapped_by(guest.spec.uuid))

        gen1.retire()
        self.assertFalse(gen1.running())
        self.assertEqual(['l2'], sorted(gen2.health().guests))
        tb.check_integrity(guest, guest.console.offset(), passes=1,
                           timeout=600)


class TestNestedRejuvenation(NestedTestCase):
    """The orchestrator with sibling_kind nested: standby, then rejuvenate."""

    def test_standby_l1_then_rejuvenate_switches_only(self):
        self.conf.set_override('sibling_kind', 'nested', 'vmbeam')
        self.conf.set_override('default_mover', 'nested', 'vmbeam')
        orchestrator = orchestrator_mod.Orchestrator(self.conf)
        tb = self.testbed
        gen1 = orchestrator.init()
        tb.siblings.append(gen1)
        host1 = gen1.host()
        self.addCleanup(host1.close)
        guest = tb.boot(host1, tb.spec('l2', host1))

        record = orchestrator.standby()
        self.assertEqual('standby', record.state)
        self.assertEqual('ready', record.prepared['l2'].state)
        gen2 = orchestrator.sibling(2)
        tb.siblings.append(gen2)
        # The destination waits in the pre-warmed L1, paused.
        host2 = gen2.host()
        self.addCleanup(host2.close)
        self.assertEqual(['l2'], host2.running_qemus())
        self.assertEqual('inmigrate', host2.guest('l2').status())

        run = orchestrator.rejuvenate()
        self.assertEqual('completed', run.state, run)
        figures = run.guests['l2'].result
        self.assertTrue(figures.standby)
        self.assertLess(figures.transferred_bytes, 4 << 20)
        self.assertFalse(gen1.running())
        self.assertEqual(2, orchestrator.state().active)
        guest.endpoint = host2.guest('l2')
        self.assertEqual('running', guest.endpoint.status())
        tb.check_integrity(guest, guest.console.offset(), passes=2,
                           timeout=600)
