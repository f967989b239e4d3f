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

"""Each mover moves a real guest under load; its memory stays intact."""

import os
import shutil
import signal
import threading

from nova_vmbeam import exception
from nova_vmbeam import guest as guest_mod
from nova_vmbeam import movers
from nova_vmbeam.movers import zerocopy
from tests.functional import base
from vmbeam_devtools import bench

MIB = 1 << 20


class TestMoves(base.GuestTestCase):

    def _move_and_check(self, name):
        mover = movers.load(name, self.conf)
        guest = self.boot(mover.ram_backing)
        source_pid = guest.endpoint.pid
        result = self.testbed.move(guest, mover, self.gen2)
        self.assertTrue(result.ok)
        self.assertIs(self.gen2, guest.hypervisor)
        self.assertNotEqual(source_pid, guest.endpoint.pid)
        # The source is gone: the guest runs exactly once.
        self.assertEqual([guest.endpoint.pid], self.qemu_pids())
        self.assertGreater(result.downtime_ms, 0)
        if result.pause_ms:
            # The breakdown runs from the same STOP to the same RESUME.
            self.assertEqual(list(bench.PAUSE_PHASES), list(result.pause_ms))
            self.assertAlmostEqual(result.downtime_ms,
                                   sum(result.pause_ms.values()), delta=0.01)
        self.assert_runs_intact(guest, guest.moved_at)
        # And it can move again, back to the first generation.
        again = self.testbed.move(guest, mover, self.gen1)
        self.assertTrue(again.ok)
        self.assert_runs_intact(guest, guest.moved_at)
        return result

    def test_zerocopy_sends_no_ram(self):
        result = self._move_and_check('zerocopy')
        self.assertTrue(result.pause_ms)
        self.assertLess(result.transferred_bytes, 1 * MIB)

    def test_cpr_sends_no_ram(self):
        result = self._move_and_check('cpr')
        self.assertLess(result.transferred_bytes, 1 * MIB)

    def test_precopy_copies_the_working_set(self):
        result = self._move_and_check('precopy')
        self.assertGreater(result.transferred_bytes, self.WORK_MIB * MIB)


class TestFaults(base.GuestTestCase):

    def _kill_destination_mid_move(self, name):
        mover = movers.load(name, self.conf)
        guest = self.boot(mover.ram_backing)
        source = guest.endpoint
        killed = []
        original = mover.transfer

        def transfer_and_kill(ctx):
            # A stopped destination reads nothing, so the move is surely
            # still under way when it is killed half a second later.
            os.kill(ctx.destination.pid, signal.SIGSTOP)

            def kill():
                killed.append(ctx.destination.pid)
                os.kill(ctx.destination.pid, signal.SIGKILL)
            timer = threading.Timer(0.5, kill)
            timer.start()
            try:
                original(ctx)
            finally:
                timer.join()
        mover.transfer = transfer_and_kill

        exc = self.assertRaises(exception.MoveFailed, self.testbed.move,
                                guest, mover, self.gen2)
        self.assertEqual(1, len(killed))
        self.assertIn('rolled back', str(exc))
        self.assertIs(source, guest.endpoint)
        self.assertEqual([source.pid], self.qemu_pids())
        self.assert_runs_intact(guest, guest.console.offset())
        # The guest is still movable afterwards.
        result = self.testbed.move(guest, movers.load(name, self.conf),
                                   self.gen2)
        self.assertTrue(result.ok)
        self.assert_runs_intact(guest, guest.moved_at)

    def test_kill_destination_mid_zerocopy(self):
        self._kill_destination_mid_move('zerocopy')

    def test_kill_destination_mid_cpr(self):
        self._kill_destination_mid_move('cpr')

    def test_kill_destination_mid_precopy(self):
        self._kill_destination_mid_move('precopy')

    def test_destination_mapping_other_ram_is_refused(self):
        guest = self.boot(guest_mod.RAM_FILE)
        source = guest.endpoint
        # The dangerous case: a stale copy of the guest's RAM. QEMU loads
        # the device state happily; only the RAM identity check stops it.
        other = self.testbed.pool.allocate('stale-copy', self.RAM_MIB * MIB)
        self.addCleanup(self.testbed.pool.release, 'stale-copy')

        class StaleCopy(zerocopy.ZeroCopyMover):
            def destination_spec(self, ctx):
                shutil.copyfile(ctx.source.spec.ram.path, other)
                return ctx.source.spec.with_ram(
                    guest_mod.RamBacking(guest_mod.RAM_FILE, other))

        exc = self.assertRaises(exception.MoveFailed, self.testbed.move,
                                guest, StaleCopy(self.conf), self.gen2)
        # Found while the destination is prepared, before the guest pauses.
        self.assertIn('prepare', str(exc))
        self.assertIn('does not map the RAM file', str(exc))
        self.assertEqual([source.pid], self.qemu_pids())
        self.assert_runs_intact(guest, guest.console.offset())

    def test_destination_that_fails_to_start_reports_qemu_error(self):
        class BadDestination(zerocopy.ZeroCopyMover):
            def destination_spec(self, ctx):
                return ctx.source.spec.with_ram(guest_mod.RamBacking(
                    guest_mod.RAM_FILE, '/nonexistent/vmbeam.ram'))

        guest = self.boot(guest_mod.RAM_FILE)
        exc = self.assertRaises(exception.MoveFailed, self.testbed.move,
                                guest, BadDestination(self.conf), self.gen2)
        self.assertIn('prepare', str(exc))
        # QEMU's own words reach the operator.
        self.assertIn('/nonexistent/vmbeam.ram', str(exc))
        self.assertEqual([guest.endpoint.pid], self.qemu_pids())
        self.assert_runs_intact(guest, guest.console.offset())

    def test_unshareable_ram_is_refused_and_nothing_started(self):
        guest = self.boot(guest_mod.RAM_ANONYMOUS, dirty=0)
        exc = self.assertRaises(exception.RamNotShareable, self.testbed.move,
                                guest, movers.load('zerocopy', self.conf),
                                self.gen2)
        self.assertIn('precopy', str(exc))
        self.assertFalse(os.path.exists(self.gen2.run_dir))
        self.assertEqual([guest.endpoint.pid], self.qemu_pids())
