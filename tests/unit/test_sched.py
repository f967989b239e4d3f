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

"""Switchover boosts change real thread priorities, then restore them."""

import os
import subprocess
import threading
import time

import fixtures
import testtools

from nova_vmbeam.qemu import sched


class TestBoost(testtools.TestCase):

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest('changing priorities needs CAP_SYS_NICE')
        self.stop = threading.Event()
        ready = threading.Event()
        self.tid = None

        def worker():
            self.tid = threading.get_native_id()
            ready.set()
            self.stop.wait()
        thread = threading.Thread(target=worker)
        thread.start()
        self.addCleanup(thread.join)
        self.addCleanup(self.stop.set)
        ready.wait()

    def test_realtime_boost_is_shared_and_restored(self):
        self.assertEqual(os.SCHED_OTHER, os.sched_getscheduler(self.tid))
        outer = sched.Boost([os.getpid()], 'realtime')
        inner = sched.Boost([os.getpid()], 'realtime')
        with outer:
            self.assertEqual(os.SCHED_FIFO | os.SCHED_RESET_ON_FORK,
                             os.sched_getscheduler(self.tid))
            with inner:
                self.assertEqual(os.SCHED_FIFO | os.SCHED_RESET_ON_FORK,
                                 os.sched_getscheduler(self.tid))
            # Still held by the outer move.
            self.assertEqual(os.SCHED_FIFO | os.SCHED_RESET_ON_FORK,
                             os.sched_getscheduler(self.tid))
        self.assertEqual(os.SCHED_OTHER, os.sched_getscheduler(self.tid))
        self.assertEqual(0, os.sched_getparam(self.tid).sched_priority)

    def test_nice_boost_is_restored(self):
        before = os.getpriority(os.PRIO_PROCESS, self.tid)
        with sched.Boost([os.getpid()], 'nice', -5):
            self.assertEqual(-5, os.getpriority(os.PRIO_PROCESS, self.tid))
        self.assertEqual(before, os.getpriority(os.PRIO_PROCESS, self.tid))

    def test_off_changes_nothing(self):
        with sched.Boost([os.getpid()], 'off', -5):
            self.assertEqual(os.SCHED_OTHER, os.sched_getscheduler(self.tid))
            self.assertEqual(0, os.getpriority(os.PRIO_PROCESS, self.tid))

    def test_what_boosted_threads_start_is_not_boosted(self):
        for policy in ('nice', 'realtime'):
            stop = threading.Event()
            born = []
            with sched.Boost([os.getpid()], policy, -5):
                # A thread (as QEMU starts workers) ...
                thread = threading.Thread(target=lambda: (
                    born.append(threading.get_native_id()), stop.wait()))
                thread.start()
                while not born:
                    time.sleep(0.001)
                # ... and a process (as libvirtd starts a QEMU).
                child = subprocess.run(
                    ['python3', '-c', 'import os; print('
                     'os.sched_getscheduler(0), os.nice(0))'],
                    capture_output=True, text=True).stdout.split()
            try:
                self.assertEqual(os.SCHED_OTHER,
                                 os.sched_getscheduler(born[0]), policy)
                self.assertEqual(0, os.getpriority(os.PRIO_PROCESS, born[0]))
                self.assertEqual(['0', '0'], child, policy)
            finally:
                stop.set()
                thread.join()

    def test_inherit_passes_the_boost_on_and_takes_it_back(self):
        for policy in ('nice', 'realtime'):
            stop = threading.Event()
            born = []
            with sched.Boost([os.getpid()], policy, -5,
                             inherit_pids=[os.getpid()]):
                # As QEMU starts its migration thread during the boost.
                thread = threading.Thread(target=lambda: (
                    born.append(threading.get_native_id()), stop.wait()))
                thread.start()
                while not born:
                    time.sleep(0.001)
                if policy == 'nice':
                    self.assertEqual(
                        -5, os.getpriority(os.PRIO_PROCESS, born[0]))
                else:
                    self.assertEqual(os.SCHED_FIFO,
                                     os.sched_getscheduler(born[0]))
            try:
                # The boost ended: the thread it started keeps none of it.
                self.assertEqual(os.SCHED_OTHER,
                                 os.sched_getscheduler(born[0]), policy)
                self.assertEqual(0, os.getpriority(os.PRIO_PROCESS, born[0]))
                self.assertEqual(0, os.getpriority(os.PRIO_PROCESS, self.tid))
            finally:
                stop.set()
                thread.join()

    def test_vcpus_boosts_the_vcpu_threads_alone(self):
        # A thread named as QEMU names its vCPU threads.
        with open('/proc/self/task/%d/comm' % self.tid, 'w') as f:
            f.write('CPU 0/TCG')
        main = threading.get_native_id()
        with sched.Boost([os.getpid()], 'nice', -6, vcpus=True):
            self.assertEqual(-6, os.getpriority(os.PRIO_PROCESS, self.tid))
            self.assertEqual(0, os.getpriority(os.PRIO_PROCESS, main))
        self.assertEqual(0, os.getpriority(os.PRIO_PROCESS, self.tid))


class FakeEndpoint:
    """A guest whose cgroup weight lives in ``cgroup`` (a shared dict)."""

    def __init__(self, name, cgroup, pid, gone=False):
        self.name = name
        self.cgroup = cgroup
        self.pid = pid
        self.gone = gone

    def cpu_shares(self):
        return self.cgroup.get('shares')

    def set_cpu_shares(self, shares):
        if self.gone:
            raise RuntimeError('domain %s is gone' % self.name)
        self.cgroup['shares'] = shares


class TestCpuSharesBoost(testtools.TestCase):

    def test_factor_follows_the_nice_weight_ratio(self):
        self.assertEqual(9, sched.shares_factor('nice', -10))
        self.assertEqual(87, sched.shares_factor('realtime', 0))
        self.assertEqual(1, sched.shares_factor('off', -10))
        self.assertEqual(1, sched.shares_factor('nice', 0))

    def test_each_cgroup_raised_then_restored(self):
        source, dest = {'shares': 1024}, {'shares': 2048}
        # No process to tell their cgroups by: taken as two cgroups.
        boost = sched.CpuSharesBoost([FakeEndpoint('src', source, None),
                                      FakeEndpoint('dst', dest, None)], 9)
        with boost:
            self.assertEqual(9216, source['shares'])
            self.assertEqual(18432, dest['shares'])
        self.assertEqual(1024, source['shares'])
        self.assertEqual(2048, dest['shares'])

    def test_endpoints_in_two_partitions_each_raised_and_restored(self):
        # Source and destination of a move: QEMUs of two generations, each
        # in its generation's partition (libvirt/partition.py).
        source_group, dest_group = {'shares': 1024}, {'shares': 1024}
        source = FakeEndpoint('src', source_group, 101)
        dest = FakeEndpoint('dst', dest_group, 102)
        cgroups = {
            101: '/machine/vmbeam-gen1-aaaaaaaa.partition/'
                 'qemu-1-g.libvirt-qemu/emulator',
            102: '/machine/vmbeam-gen2-bbbbbbbb.partition/'
                 'qemu-1-g.libvirt-qemu/emulator'}
        self.useFixture(fixtures.MockPatchObject(
            sched.procfs, 'cpu_cgroup', side_effect=cgroups.get))
        with sched.CpuSharesBoost([source, dest], 9):
            self.assertEqual(9216, source_group['shares'])
            self.assertEqual(9216, dest_group['shares'])
            source.gone = True   # retired meanwhile: nothing to restore
        self.assertEqual(9216, source_group['shares'])
        self.assertEqual(1024, dest_group['shares'])

    def test_shared_cgroup_raised_once_and_restored_by_the_survivor(self):
        shared = {'shares': 1024}
        source = FakeEndpoint('src', shared, os.getpid())
        dest = FakeEndpoint('dst', shared, os.getpid())
        with sched.CpuSharesBoost([source, dest], 9):
            self.assertEqual(9216, shared['shares'])
            source.gone = True   # retired meanwhile
        self.assertEqual(1024, shared['shares'])

    def test_guest_without_cgroup_is_left_alone(self):
        nothing = {}
        with sched.CpuSharesBoost([FakeEndpoint('g', nothing, None)], 9):
            self.assertEqual({}, nothing)
