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


"""The nested testbed's L2 boot: too slow a machine is a skip, a fault not."""

from unittest import mock

import fixtures
import testtools

from vmbeam_devtools.nested import testbed
from vmbeam_devtools import testbed as base_testbed

BOOTING = ('\n[    0.000000] Linux version 6.1.0-57-amd64\n'
           '[  222.725249] ACPI: Added _OSI(Processor Device)\n')


class FakeConsole(object):

    def __init__(self, text, ready=False, ready_at=None):
        self.text = text
        # ready at once, or at the ready_at-th wait
        self.ready_at = 1 if ready else ready_at
        self.waits = []

    def wait_for(self, regex, timeout, after_offset=None):
        self.waits.append(timeout)
        if self.ready_at is None or len(self.waits) < self.ready_at:
            raise TimeoutError('No ready line within %s s' % timeout)

    def read(self):
        return self.text


class FakeGuest(object):

    def __init__(self, console):
        self.name = 'l2'
        self.console = console


class TestL2Boot(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.tb = object.__new__(testbed.NestedTestbed)
        self.patch(testbed.L2TimeBudget, 'too_slow', None)
        self.base_wait = self.useFixture(fixtures.MockPatchObject(
            base_testbed.Testbed, 'wait_ready')).mock

    def test_a_kernel_still_booting_after_the_budget_skips_every_l2(self):
        console = FakeConsole(BOOTING)
        error = self.assertRaises(testbed.TooSlow, self.tb.wait_ready,
                                  FakeGuest(console))
        self.assertIn('had not booted after 300 s', str(error))
        self.assertIn('[222.725249] ACPI: Added _OSI', str(error))
        self.assertEqual([testbed.L2_BOOT_BUDGET], console.waits)
        # The next L2 gives up without waiting.
        later = FakeConsole(BOOTING, ready=True)
        self.assertRaises(testbed.TooSlow, self.tb.wait_ready,
                          FakeGuest(later))
        self.assertEqual([], later.waits)
        self.base_wait.assert_not_called()

    def test_a_silent_console_is_a_failure_not_a_skip(self):
        # Nothing reached the console (its path, or the L2's start, is
        # broken): the timeout stands, and later L2s still boot.
        console = FakeConsole('')
        self.assertRaises(TimeoutError, self.tb.wait_ready,
                          FakeGuest(console))
        self.assertIsNone(testbed.L2TimeBudget.too_slow)

    def test_a_failed_worker_or_a_panic_is_a_failure_not_a_skip(self):
        # Its /init ran and a worker failed (or the kernel died): not the
        # machine's speed.
        for end in ('VMBEAM-GUEST booted ram_mib=32 dirty_mib_s=1\n'
                    'VMBEAM-GUEST memworker exited rc=1\n',
                    'VMBEAM-GUEST booted ram_mib=32 dirty_mib_s=1\n'
                    'VMBEAM-GUEST ERROR insmod virtio_net failed\n',
                    '[  300.000000] Kernel panic - not syncing: x\n'):
            console = FakeConsole(BOOTING + end)
            self.assertRaises(TimeoutError, self.tb.wait_ready,
                              FakeGuest(console))
        self.assertIsNone(testbed.L2TimeBudget.too_slow)

    def test_a_booted_l2_whose_worker_is_slow_has_more_time(self):
        booted = BOOTING + ('VMBEAM-GUEST booted ram_mib=32 dirty_mib_s=1\n'
                            'VMBEAM-DISK seq=29 ok errors=0\n')
        console = FakeConsole(booted, ready_at=2)
        self.tb.wait_ready(FakeGuest(console))
        self.assertEqual([testbed.L2_BOOT_BUDGET, testbed.L2_READY_GRACE],
                         console.waits)
        self.assertIsNone(testbed.L2TimeBudget.too_slow)
        # Still not ready after the grace: too slow, skipped.
        error = self.assertRaises(testbed.TooSlow, self.tb.wait_ready,
                                  FakeGuest(FakeConsole(booted)))
        self.assertIn('had not booted after 480 s', str(error))
        self.assertIn('memory worker was not ready', str(error))

    def test_a_booted_l2_is_checked_in_the_time_left(self):
        guest = FakeGuest(FakeConsole(BOOTING, ready=True))
        self.tb.wait_ready(guest, timeout=900.0)
        self.base_wait.assert_called_once_with(guest, mock.ANY)
        self.assertGreater(self.base_wait.call_args[0][1], 800.0)


class TestL2TimeBudget(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.patch(testbed.L2TimeBudget, 'spent', 0.0)
        self.patch(testbed.L2TimeBudget, 'longest', 0.0)
        self.now = self.useFixture(fixtures.MockPatch(
            'time.monotonic')).mock

    def _test_took(self, seconds):
        self.now.return_value = 1000.0
        testbed.L2TimeBudget.check()
        self.now.return_value = 1000.0 + seconds
        testbed.L2TimeBudget.record(1000.0)

    def test_tests_run_while_the_next_would_end_within_the_budget(self):
        # An idle host: five tests of about 200 s all run.
        for _ in range(5):
            self._test_took(200.0)
        self.assertEqual(1000.0, testbed.L2TimeBudget.spent)

    def test_a_test_that_would_end_past_the_budget_skips(self):
        # A busy host: each takes 450 s; the third would end at 1350 s.
        self._test_took(450.0)
        self._test_took(300.0)
        error = self.assertRaises(testbed.TooSlow,
                                  testbed.L2TimeBudget.check)
        self.assertIn('took 750 s in this run (the longest 450 s)',
                      str(error))
        self.assertIn('past their 1100 s', str(error))
