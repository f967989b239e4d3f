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

"""The aging monitor's real probes on a real libvirt daemon with a guest.

A leaking client (libvirt connections opened and never closed) makes the
daemon's descriptors grow for real; the monitor sees the trend through its
probes and rejuvenates the host through the real orchestrator, and the new
generation's daemon starts with few descriptors again.
"""

import time

import libvirt

from nova_vmbeam import aging as aging_mod
from nova_vmbeam.aging import base as aging_base
from nova_vmbeam.aging import monitor as monitor_mod
from nova_vmbeam.conf import aging as aging_conf
from nova_vmbeam.qemu import procfs
from tests.functional import test_rejuvenation


class AgingTestCase(test_rejuvenation.RejuvenationTestCase):

    def setUp(self):
        super().setUp()
        aging_conf.register_opts(self.conf)
        self.conf.set_override('instances_path',
                               self.conf.vmbeam.state_path, 'vmbeam_aging')
        self.leaked = []
        self.addCleanup(self._close_leaked)

    def _close_leaked(self):
        for conn in self.leaked:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass

    def leak(self, count):
        """Open ``count`` connections to the active daemon and keep them."""
        uri = self.orchestrator.active().uri
        for _ in range(count):
            self.leaked.append(libvirt.open(uri))

    def sample(self, name):
        context = aging_base.ProbeContext(self.conf, self.orchestrator)
        return aging_mod.load(name, self.conf).sample(context)


class TestProbes(AgingTestCase):

    def test_probes_measure_the_active_daemon_and_its_guest(self):
        self.boot('g1')
        daemon = self.orchestrator.active().pids()['libvirtd']
        rss = self.sample('daemon_rss')
        self.assertGreater(rss.value, 1.0)           # MiB
        self.assertLess(rss.value, rss.limit)
        fds = self.sample('daemon_fds')
        self.assertEqual(float(procfs.open_files_limit(daemon)), fds.limit)
        overhead = self.sample('qemu_overhead')
        # TCG QEMU keeps tens of MiB of its own beyond guest RAM.
        self.assertGreater(overhead.value, 1.0)
        self.assertLess(overhead.value, 512.0)
        latency = self.sample('libvirt_latency')
        self.assertGreater(latency.value, 0.0)
        self.assertLess(latency.value, 1000.0)
        free = self.sample('host_free_memory')
        self.assertGreater(free.value, 256.0)
        self.assertIsNotNone(self.sample('instances_disk_free'))
        # A leaking client shows in the daemon's descriptors: 20 more,
        # give or take a couple that the probes' own short-lived
        # connections held at the first sample.
        self.leak(20)
        self.assertGreaterEqual(self.sample('daemon_fds').value,
                                fds.value + 17)

    def test_sampling_does_not_age_the_daemon(self):
        # The monitor looks at the daemon every interval for months: its
        # own connections must not leak descriptors there.
        self.boot('g1')
        probes = aging_mod.load_all(aging_mod.available(), self.conf)
        before = self.sample('daemon_fds').value
        for _ in range(15):
            context = aging_base.ProbeContext(self.conf, self.orchestrator)
            for probe in probes:
                probe.sample(context)
        self.assertLessEqual(self.sample('daemon_fds').value, before + 2)


class TestMonitorRejuvenates(AgingTestCase):

    def test_descriptor_leak_triggers_rejuvenation_before_exhaustion(self):
        guest = self.boot('g1')
        marks = self.marks([guest])
        baseline = self.sample('daemon_fds').value
        limit = int(baseline) + 120
        # One host acting on its own: its file backend is the fleet.
        for name, value in (('action', 'rejuvenate'), ('single_node', True),
                            ('probes', ['daemon_fds', 'host_free_memory']),
                            ('daemon_fds_limit', limit),
                            ('min_samples', 12), ('horizon', 3600.0),
                            ('min_interval', 3600.0)):
            self.conf.set_override(name, value, 'vmbeam_aging')
        runs = []

        def rejuvenate():
            runs.append(self.orchestrator.rejuvenate())

        monitor = monitor_mod.AgingMonitor(self.conf, 'ft-host', rejuvenate,
                                           orchestrator=self.orchestrator)
        self.addCleanup(monitor.stop)
        seen = []
        for _ in range(40):
            decision = monitor.run_once()
            if runs:
                break
            seen.append(monitor.status()['probes']['daemon_fds']['value'])
            self.leak(4)        # about one Sen step per sample
            time.sleep(0.5)
        self.assertEqual(1, len(runs), decision)
        self.assertEqual('completed', runs[0].state)
        self.assertLess(max(seen), limit)
        self.assertIn('daemon_fds predicts exhaustion', decision.reason)
        self.assertEqual(2, self.journal().active)
        # The new generation's daemon has not inherited the leak, and the
        # monitor's history started afresh with it.
        self.assertLess(self.sample('daemon_fds').value, baseline + 10)
        monitor.run_once()
        status = monitor.status()
        self.assertEqual(2, status['generation'])
        self.assertEqual(1, status['samples'])
        self.assertEqual('completed',
                         status['last_rejuvenation']['result'])
        self.assert_each_runs_once_intact([guest], marks, 2)
        # It does not rejuvenate again within the minimum interval.
        for _ in range(14):
            self.leak(4)
            decision = monitor.run_once()
        self.assertEqual(1, len(runs))
