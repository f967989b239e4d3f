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

"""Faults on the nested path, under TCG inside TCG (slow: minutes).

Real processes killed for real: an L1 VM's QEMU at L0 (SIGKILL), or the
qemu-guest-agent inside an L1 (SIGSTOP), while the orchestrator moves an
L2 guest between two L1s. Each test checks where the guest runs
afterwards (once), that its memory is intact, which L1 maps its pool,
and what the journal says.
"""

import os
import signal
import time

from nova_vmbeam.nested import agent
from nova_vmbeam.rejuvenation import orchestrator as orchestrator_mod
from tests.functional import test_nested

# A move whose agent does not answer must end well within this (agent
# calls time out after seconds, not minutes).
AGENT_FAULT_BOUND_S = 180.0


class NestedFaultTestCase(test_nested.NestedTestCase):

    def setUp(self):
        super().setUp()
        self.conf.set_override('sibling_kind', 'nested', 'vmbeam')
        self.conf.set_override('default_mover', 'nested', 'vmbeam')
        self.orchestrator = orchestrator_mod.Orchestrator(self.conf)
        self.tb = self.testbed

    def boot_gen1_guest(self):
        """Generation 1 (an L1) with one L2 guest in it, ready."""
        gen1 = self.orchestrator.init()
        self.tb.siblings.append(gen1)
        host1 = gen1.host()
        self.addCleanup(host1.close)
        guest = self.tb.boot(host1, self.tb.spec('l2', host1))
        return gen1, host1, guest

    def sibling(self, number):
        sibling = self.orchestrator.sibling(number)
        self.tb.siblings.append(sibling)
        return sibling

    def kill_l1(self, sibling):
        """SIGKILL the L1 VM's QEMU at L0; wait until it is gone."""
        pid = sibling.l1_pid()
        self.assertIsNotNone(pid, '%s has no QEMU' % sibling.name)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while sibling.running():
            self.assertLess(time.monotonic(), deadline,
                            'L1 %s still runs after SIGKILL' % sibling.name)
            time.sleep(0.2)
        return pid

    def assert_runs_only_on(self, guest, host, other, sibling):
        """The guest runs once, on ``host``, its pool mapped there only."""
        self.assertEqual(['l2'], host.running_qemus())
        if other is not None:
            self.assertEqual([], other.running_qemus())
        endpoint = host.guest('l2')
        self.assertEqual('running', endpoint.status())
        guest.endpoint = endpoint
        self.assertEqual([sibling.l1_pid()],
                         self.tb.pool.mapped_by(guest.spec.uuid))
        self.assertTrue(self.tb.pool.verify(guest.spec.uuid,
                                            sibling.l1_pid()))
        self.tb.check_integrity(guest, guest.console.offset(), passes=2,
                                timeout=600)


class TestNewL1Killed(NestedFaultTestCase):

    def test_new_l1_killed_mid_move_rolls_back_then_next_run_moves(self):
        gen1, host1, guest = self.boot_gen1_guest()
        self.orchestrator.standby()
        gen2 = self.sibling(2)
        host2 = gen2.host()
        self.addCleanup(host2.close)
        self.assertEqual(['l2'], host2.running_qemus())
        self.assertEqual(sorted([gen1.l1_pid(), gen2.l1_pid()]),
                         sorted(self.tb.pool.mapped_by(guest.spec.uuid)))

        # The guest is "moving" (its prepared destination adopted) when
        # the target L1 dies, before any state crossed.
        original = self.orchestrator.moves.finish_one
        killed = []

        def kill_target_then_finish(mover, name, *args, **kwargs):
            killed.append(self.kill_l1(gen2))
            self.assertEqual('moving', self.orchestrator.guest_entry(
                name).state)
            return original(mover, name, *args, **kwargs)
        self.orchestrator.moves.finish_one = kill_target_then_finish
        run = self.orchestrator.rejuvenate()
        self.orchestrator.moves.finish_one = original

        self.assertEqual(1, len(killed))
        self.assertEqual('incomplete', run.state, run)
        self.assertEqual('failed', run.guests['l2'].state, run)
        self.assertTrue(run.guests['l2'].error)
        state = self.orchestrator.state()
        self.assertEqual(1, state.active)
        self.assertEqual('active', state.generations[1].state)
        self.assertFalse(gen2.running())
        self.assert_runs_only_on(guest, host1, None, gen1)

        # The next run takes the open one up: a new L1 for generation 2
        # boots, and the guest moves into it.
        run = self.orchestrator.rejuvenate()
        self.assertEqual('completed', run.state, run)
        self.assertEqual('moved', run.guests['l2'].state)
        self.assertEqual(2, self.orchestrator.state().active)
        self.assertNotIn(gen2.l1_pid(), killed)
        self.assertFalse(gen1.running())
        host2.close()
        host2 = gen2.host()
        self.addCleanup(host2.close)
        self.assert_runs_only_on(guest, host2, None, gen2)


class TestOldL1Killed(NestedFaultTestCase):

    def test_old_l1_killed_after_its_guest_moved(self):
        gen1, host1, guest = self.boot_gen1_guest()
        original = self.orchestrator.moves.finish_one
        killed = []

        def finish_then_kill_source(mover, name, *args, **kwargs):
            result = original(mover, name, *args, **kwargs)
            # Moved; the old L1 dies before the run retires it.
            self.assertIsNotNone(result)
            guest.endpoint = result.destination
            killed.append(self.kill_l1(gen1))
            return result
        self.orchestrator.moves.finish_one = finish_then_kill_source
        run = self.orchestrator.rejuvenate()
        self.orchestrator.moves.finish_one = original

        self.assertEqual(1, len(killed))
        self.assertEqual('completed', run.state, run)
        self.assertEqual('moved', run.guests['l2'].state)
        gen2 = self.sibling(2)
        host2 = gen2.host()
        self.addCleanup(host2.close)
        state = self.orchestrator.state()
        self.assertEqual(2, state.active)
        self.assertEqual('retired', state.generations[1].state)
        self.assertFalse(gen1.running())
        # The pool was not freed with the old L1: the new one maps it.
        self.assert_runs_only_on(guest, host2, None, gen2)

        # Recovery has nothing left to settle, and changes nothing.
        self.orchestrator.recover()
        state = self.orchestrator.state()
        self.assertEqual(2, state.active)
        self.assertEqual('retired', state.generations[1].state)
        self.assertEqual('completed', state.run.state)
        self.assertEqual(['l2'], host2.running_qemus())


class TestL1AgentNotAnswering(NestedFaultTestCase):

    def _stop_agent(self, sibling):
        """SIGSTOP qemu-ga inside the L1 (through qemu-ga itself).

        guest-exec answers with the pid before the script runs; the
        script waits a moment so that the agent is stopped after it
        replied, and nothing waits for the script's status.
        """
        dom = sibling.l1_domain()
        agent.command(dom, 'guest-exec', path='/bin/sh', arg=[
            '-c', 'sleep 1; kill -STOP $(cat /run/qemu-ga.pid)'])
        deadline = time.monotonic() + 30
        while agent.ping(dom, timeout=2):
            self.assertLess(time.monotonic(), deadline,
                            'qemu-ga in %s still answers' % sibling.name)
            time.sleep(0.5)

    def test_target_agent_not_answering_fails_the_move_in_bounded_time(self):
        gen1, host1, guest = self.boot_gen1_guest()
        # A standby L1 without a prepared destination (as standby() leaves
        # one whose prepare failed): the move has to attach the pool and
        # enable its BAR inside it, by its agent.
        gen2, _ms = self.orchestrator.generations.start(
            self.orchestrator.state(), 2, orchestrator_mod.STANDBY)
        self.tb.siblings.append(gen2)
        host2 = gen2.host()
        self.addCleanup(host2.close)
        self.assertEqual([], host2.running_qemus())
        self._stop_agent(gen2)

        started = time.monotonic()
        run = self.orchestrator.rejuvenate()
        elapsed = time.monotonic() - started
        self.assertLess(elapsed, AGENT_FAULT_BOUND_S)
        self.assertEqual('incomplete', run.state, run)
        self.assertEqual('failed', run.guests['l2'].state, run)
        self.assertIn('Guest agent of %s' % gen2.domain_name,
                      run.guests['l2'].error)
        self.assertEqual(1, self.orchestrator.state().active)
        self.assertTrue(gen2.running())
        self.assert_runs_only_on(guest, host1, host2, gen1)

        # The health report of the L1 still comes, without its kernel.
        started = time.monotonic()
        health = gen2.health()
        self.assertLess(time.monotonic() - started, 60)
        self.assertTrue(health.running)
        self.assertTrue(health.libvirt_alive)
        self.assertEqual({}, health.guests)
        self.assertIsNone(health.kernel)
        self.assertIsNotNone(gen1.health().kernel)
