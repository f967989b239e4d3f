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

"""Hypervisors outlive nova-compute's cgroup (issue 16, part 2).

The stand-in for nova-compute is a process of its own in a cgroup of its
own (cgroup v2), which starts generation 1 and the pool daemon through the
orchestrator, as nova-compute does; then everything in that cgroup is
killed at once with ``cgroup.kill``, as ``systemctl restart nova-compute``
(KillMode=control-group) or a container restart would. Guests must still
run, each exactly once, with their memory intact, and the next
orchestrator must adopt the generation and settle.
"""

import os
import signal
import subprocess
import sys
import time
import uuid

from testtools import content

from nova_vmbeam import lifetime
from nova_vmbeam import pool as pool_mod
from nova_vmbeam.qemu import procfs
from nova_vmbeam.rejuvenation import journal as journal_mod
from tests.functional import base
from tests.functional import test_rejuvenation
from vmbeam_devtools import testbed as testbed_mod

TREE = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# The nova-compute stand-in: waits until it is in its cgroup, starts
# generation 1 and the pool daemon, says so, waits again, then runs what
# the test gives it (a rejuvenation) or idles until killed.
_CHILD = '''
import os, sys, time
from tests.unit import fakes
from nova_vmbeam import pool
from nova_vmbeam.rejuvenation import orchestrator
conf = fakes.make_conf(state_path=%(state)r, ram_pool_path=%(pool)r,
                       pagemoverd_socket=%(socket)r, migration_timeout=60.0)
sys.stdin.readline()
orchestrator.Orchestrator(conf).init()
ram = pool.load(conf)
ram.ensure()
ram.daemon_info()
open(%(ready)r, 'w').close()
sys.stdin.readline()
%(then)s
'''

_IDLE = 'time.sleep(3600)'
_REJUVENATE_UNTIL_SWITCHOVER = '''
import signal
from nova_vmbeam.rejuvenation import journal
mark = journal.Journal.mark_switching
def mark_and_stop(self, name):
    mark(self, name)
    os.kill(os.getpid(), signal.SIGSTOP)
journal.Journal.mark_switching = mark_and_stop
orchestrator.Orchestrator(conf).rejuvenate()
'''


def _unified_mount():
    for mount in procfs.cgroup_mounts():
        if mount.fstype == 'cgroup2' and mount.root == '/':
            return mount.mount_point
    return None


class TestLifetimes(test_rejuvenation.RejuvenationTestCase):

    def setUp(self):
        # Not RejuvenationTestCase.setUp: generation 1 is started by the
        # nova-compute stand-in, not by this process.
        base.PrivateStateTestCase.setUp(self)
        if lifetime.systemd_booted():
            self.skipTest('systemd is PID 1 here: generations are units')
        unified = _unified_mount()
        if unified is None:
            self.skipTest('no cgroup v2 hierarchy here')
        self.unified = unified
        self.cgroup = os.path.join(unified,
                                   'vmbeam-test-%s' % uuid.uuid4().hex[:12])
        os.mkdir(self.cgroup)
        self.addCleanup(self._remove_cgroup)
        # The root has none: a cgroup of its own does (Linux >= 5.14).
        if not os.path.exists(os.path.join(self.cgroup, 'cgroup.kill')):
            self.skipTest('no cgroup.kill here (Linux < 5.14)')
        self.testbed = testbed_mod.LibvirtTestbed(self.conf, name='lt',
                                                  image=base.image())
        self.addCleanup(self.testbed.cleanup)
        self.orchestrator = self.testbed.orchestrator

    # --- the nova-compute stand-in ----------------------------------------

    def start_compute(self, then):
        ready = os.path.join(self.conf.vmbeam.state_path, 'compute-ready')
        script = _CHILD % {'state': self.conf.vmbeam.state_path,
                           'pool': self.conf.vmbeam.ram_pool_path,
                           'socket': self.conf.vmbeam.pagemoverd_socket,
                           'ready': ready, 'then': then}
        log = open(os.path.join(self.conf.vmbeam.state_path,
                                'compute.log'), 'wb')
        self.addCleanup(log.close)
        compute = subprocess.Popen([sys.executable, '-c', script],
                                   stdin=subprocess.PIPE, stdout=log,
                                   stderr=log, cwd=TREE)
        self.addCleanup(compute.wait)
        self.addCleanup(self._kill_cgroup)
        with open(os.path.join(self.cgroup, 'cgroup.procs'), 'w') as f:
            f.write('%d\n' % compute.pid)
        self.assertEqual('/' + os.path.basename(self.cgroup),
                         procfs.cgroups(compute.pid)[''])
        compute.stdin.write(b'go\n')
        compute.stdin.flush()
        deadline = time.monotonic() + 120
        while not os.path.exists(ready):
            self.assertIsNone(compute.poll(), self._compute_log())
            self.assertLess(time.monotonic(), deadline, self._compute_log())
            time.sleep(0.05)
        return compute

    def _compute_log(self):
        with open(os.path.join(self.conf.vmbeam.state_path, 'compute.log'),
                  errors='replace') as f:
            return f.read()[-3000:]

    def go_on(self, compute):
        compute.stdin.write(b'go\n')
        compute.stdin.close()

    # --- the cgroup ---------------------------------------------------------

    def _procs(self):
        try:
            with open(os.path.join(self.cgroup, 'cgroup.procs')) as f:
                return [int(pid) for pid in f.read().split()]
        except FileNotFoundError:
            return []

    def _kill_cgroup(self):
        """Everything in the cgroup, at once; until it is empty."""
        if not os.path.isdir(self.cgroup):
            return
        with open(os.path.join(self.cgroup, 'cgroup.kill'), 'w') as f:
            f.write('1')
        deadline = time.monotonic() + 30
        while self._procs():
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.01)

    def _remove_cgroup(self):
        for pid in self._procs():
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while os.path.isdir(self.cgroup):
            try:
                os.rmdir(self.cgroup)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # --- what runs where ----------------------------------------------------

    def daemons(self, *generations):
        """name -> pid of the generations' daemons and the pool daemon."""
        found = {}
        for number in generations:
            for name, pid in self.orchestrator.sibling(number).pids().items():
                self.assertIsNotNone(pid, 'gen%d %s' % (number, name))
                found['gen%d-%s' % (number, name)] = pid
        found['pagemoverd'] = pool_mod.load(self.conf).daemon_info()['pid']
        return found

    def unified_cgroup(self, pid):
        return procfs.cgroups(pid)['']

    def assert_outside_the_cgroup(self, pids):
        inside = lifetime.Hierarchy('', self.unified,
                                    '/' + os.path.basename(self.cgroup))
        placed = {name: self.unified_cgroup(pid)
                  for name, pid in pids.items()}
        for name, path in placed.items():
            self.assertFalse(inside.holds(path), '%s in %s' % (name, path))
        return placed

    def assert_generation_group(self, number, placed):
        group = self.orchestrator.sibling(number).daemon.group
        for name in ('libvirtd', 'virtlogd'):
            self.assertEqual('/%s/%s' % (lifetime.PARENT, group),
                             placed['gen%d-%s' % (number, name)])
        return os.path.join(self.unified, lifetime.PARENT, group)

    def qemus(self, guests):
        pids = {}
        for guest in guests:
            found = self.qemu_pids('guest=%s,' % guest.name)
            self.assertEqual(1, len(found), guest.name)
            pids['qemu-%s' % guest.name] = found[0]
        return pids

    # --- the tests ----------------------------------------------------------

    def test_killing_compute_and_its_cgroup_with_guests_running(self):
        compute = self.start_compute(_IDLE)
        guests = self.boot_many(2)
        marks = self.marks(guests)
        before = dict(self.daemons(1), **self.qemus(guests))
        placed = self.assert_outside_the_cgroup(before)
        self.addDetail('cgroups', cgroups_detail(placed))
        gen1_group = self.assert_generation_group(1, placed)
        self.assertEqual('/%s/%s' % (lifetime.PARENT, lifetime.group_name(
            'pagemoverd', self.conf.vmbeam.pagemoverd_socket)),
            placed['pagemoverd'])

        self._kill_cgroup()
        self.assertEqual(-signal.SIGKILL, compute.wait(30))

        # Nothing of the hypervisor went with it.
        self.assertEqual(before, dict(self.daemons(1), **self.qemus(guests)))
        self.assert_each_runs_once_intact(guests, marks, 1)
        # nova-compute again: adopts generation 1 as it runs, restarts
        # nothing, finds no run to settle.
        self.orchestrator.init()
        self.orchestrator.recover()
        self.assertEqual(before['gen1-libvirtd'],
                         self.orchestrator.sibling(1).pids()['libvirtd'])
        self.assertEqual(1, self.journal().active)
        # And rejuvenates the host it adopted; the retired generation's
        # cgroup goes with it.
        marks = self.marks(guests)
        run = self.orchestrator.rejuvenate()
        self.assertEqual('completed', run.state)
        self.assert_each_runs_once_intact(guests, marks, 2)
        self.assertFalse(os.path.exists(gen1_group))

    def test_killing_compute_and_its_cgroup_at_the_switchover(self):
        # The worst moment, as in test_rejuvenation: the switchover mark
        # is written, a source is stopped, its destination may be about to
        # run; generation 2 was started by the process being killed.
        compute = self.start_compute(_REJUVENATE_UNTIL_SWITCHOVER)
        guests = self.boot_many(2)
        marks = self.marks(guests)
        self.go_on(compute)
        deadline = time.monotonic() + 120
        while test_rejuvenation._process_state(compute.pid) != 'T':
            self.assertIsNone(compute.poll(), self._compute_log())
            self.assertLess(time.monotonic(), deadline, self._compute_log())
            time.sleep(0.01)
        journal = self.orchestrator.journal
        marked = [g.name for g in guests if journal.is_switching(g.name)]
        self.assertEqual(1, len(marked))
        destination = test_rejuvenation.wait_for_incoming_qemu(
            self.conf.vmbeam.state_path, marked[0])
        before = self.daemons(1, 2)
        placed = self.assert_outside_the_cgroup(dict(
            before, destination=destination))
        self.addDetail('cgroups', cgroups_detail(placed))
        self.assert_generation_group(1, placed)
        self.assert_generation_group(2, placed)

        self._kill_cgroup()
        self.assertEqual(-signal.SIGKILL, compute.wait(30))

        # Both generations and the pool daemon outlived it.
        self.assertEqual(before, self.daemons(1, 2))
        self.assertEqual(journal_mod.MOVING,
                         self.journal().run.guests[marked[0]].state)
        # nova-compute again: settles the run and finishes it. The marked
        # guest goes forward onto its destination; none runs twice.
        run = self.orchestrator.rejuvenate()
        self.assertEqual('completed', run.state)
        self.assertFalse(journal.is_switching(marked[0]))
        self.assertEqual([destination],
                         self.qemu_pids('guest=%s,' % marked[0]))
        self.assertEqual(before['gen2-libvirtd'],
                         self.orchestrator.sibling(2).pids()['libvirtd'])
        self.assertEqual(2, self.journal().active)
        self.assert_each_runs_once_intact(guests, marks, 2)


def cgroups_detail(placed):
    """What ran in which cgroup, for the test's details."""
    return content.text_content('\n'.join(
        '%s: %s' % item for item in sorted(placed.items())))
