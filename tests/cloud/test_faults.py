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

"""nova-compute stopped (SIGTERM) and killed (SIGKILL) under VMBeamDriver.

Four situations: servers just running; a rejuvenation under way; right
after a guest's switchover mark (its destination is about to run); and a
standby generation waiting. Each time the guests must keep running, none
twice, their memory intact, and the restarted nova-compute settles the run
and reports the right generation.
"""

import json
import os
import signal
import subprocess
import threading
import time

import testtools.content

from tests.cloud import base

SIGNALS = (signal.SIGTERM, signal.SIGKILL)


class ComputeFaultTest(base.CloudTestCase):

    def setUp(self):
        super().setUp()
        self.servers = [self.create_server('fault-vmbeam-1'),
                        self.create_server('fault-vmbeam-2'),
                        self.create_server('fault-plain',
                                           flavor='plain.small')]
        self.ids = [s.id for s in self.servers]

    def settle_and_check(self, expected_generation=None):
        """Restart nova-compute, check the guests, finish the job.

        A rejuvenation asked for afterwards puts every guest on one new
        generation.
        """
        self.restart_compute()
        self.assert_running_once_intact(self.ids)
        status = self.rejuvenation_status()
        self.assertNotEqual('running', status['run_state'])
        if expected_generation is not None:
            self.assertEqual(expected_generation,
                             int(status['active_generation']))
        before = int(status['active_generation'])
        run = self.rejuvenate_host()
        self.assertEqual('completed', run['state'], run)
        self.assertEqual(sorted(self.ids),
                         sorted(g['uuid'] for g in run['guests']
                                if g['state'] == 'moved'))
        after = self.active_generation()
        self.assertGreater(after, before)
        generations = self.rejuvenation_status()['generations']
        self.assertEqual(['%d:active' % after],
                         [g.strip() for g in generations.split(',')])
        self.assert_running_once_intact(self.ids)

    def test_killed_with_servers_running(self):
        for sig in SIGNALS:
            generation = self.active_generation()
            qemus = self.qemus(self.ids)
            self.kill_compute(sig)
            self.assert_qemus_untouched(qemus)
            self.settle_and_check(expected_generation=generation)

    def start_run(self):
        """Ask for a rejuvenation without waiting; its run id.

        One guest at a time: the run lasts long enough to be caught in the
        middle.
        """
        out = base.openstack_json('hypervisor', 'rejuvenate', self.host,
                                  '--concurrency', '1')
        return out['run_id']

    def test_killed_during_a_rejuvenation(self):
        for sig in SIGNALS:
            run_id = self.start_run()
            # The run has started (the call returns once it has): stop it
            # now, with guests still to move.
            self.kill_compute(sig)
            run = self.journal_run()
            self.assertEqual(run_id, run['id'])
            if sig == signal.SIGKILL:
                # (SIGTERM lets the guest in flight finish: the run may
                # have ended by then.)
                self.assertNotEqual('completed', run['state'],
                                    'the run ended before the fault')
            self.assertNotIn([], self.qemus(self.ids).values())
            self.settle_and_check()

    def test_killed_right_after_the_switchover_mark(self):
        hits = 0
        for sig in SIGNALS:
            pid = self.compute_pid()
            caught = {}

            def stop_at_mark():
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    try:
                        marks = os.listdir(base.SWITCHING_DIR)
                    except FileNotFoundError:
                        marks = []
                    if marks:
                        # Freeze it at once, then see whether the mark is
                        # still there: the destination was about to run.
                        os.kill(pid, signal.SIGSTOP)
                        caught['marks'] = os.listdir(base.SWITCHING_DIR)
                        return
                    time.sleep(0.0005)

            watcher = threading.Thread(target=stop_at_mark)
            watcher.start()
            self.start_run()
            watcher.join()
            self.assertIn('marks', caught, 'no switchover mark appeared')
            hits += bool(caught['marks'])
            os.kill(pid, sig)
            os.kill(pid, signal.SIGCONT)
            self.wait_exit(pid)
            self.assertNotIn([], self.qemus(self.ids).values())
            self.settle_and_check()
        self.addDetail('marks-caught', testtools.content.text_content(
            '%d of %d' % (hits, len(SIGNALS))))

    def wait_exit(self, pid, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open('/proc/%d/stat' % pid) as f:
                    if f.read().split(') ')[1][0] == 'Z':
                        return
            except OSError:
                return
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)

    def test_killed_in_standby(self):
        for sig in SIGNALS:
            generation = self.active_generation()
            # The operator prepares the next generation ahead of time.
            proc = subprocess.run(base.on_node(
                [os.path.join(base.VENV_BIN, 'vmbeam'), '--config-file',
                 base.COMPUTE_CONF, 'standby']),
                capture_output=True, text=True, timeout=300)
            self.assertEqual(0, proc.returncode, proc.stderr)
            status = self.rejuvenation_status()
            self.assertIn('%d:standby' % (generation + 1),
                          status['generations'], json.dumps(status))
            qemus = self.qemus(self.ids)
            self.kill_compute(sig)
            self.assert_qemus_untouched(qemus)
            self.restart_compute()
            self.assert_running_once_intact(self.ids)
            self.assertEqual(generation, self.active_generation())
            # The next rejuvenation switches onto the standby generation.
            run = self.rejuvenate_host()
            self.assertEqual('completed', run['state'], run)
            self.assertEqual(generation + 1, self.active_generation())
            self.assert_running_once_intact(self.ids)
