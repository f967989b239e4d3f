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

"""The aging monitor replaying a trace recorded from real daemons.

tests/unit/traces/libvirtd-steady-then-leak.csv was recorded on this
project's test machine by tools/record-aging-trace.py (see the README
beside it): a colocated libvirtd generation with one running guest, every
probe sampled every 2 s, 90 samples while nothing leaks, then 90 while a
client leaks one libvirt connection per sample.
"""

import csv
import os

from nova_vmbeam.aging import base
from nova_vmbeam.aging import monitor as monitor_mod
from nova_vmbeam.aging import policy as policy_mod
from tests.unit import test_aging

TRACE = os.path.join(os.path.dirname(__file__), 'traces',
                     'libvirtd-steady-then-leak.csv')
DIRECTIONS = {'host_free_memory': base.FALLING,
              'instances_disk_free': base.FALLING,
              'daemon_rss': base.RISING, 'daemon_fds': base.RISING,
              'qemu_overhead': base.RISING, 'libvirt_latency': base.RISING}


def load_trace():
    with open(TRACE) as f:
        return list(csv.DictReader(f))


class ReplayProbe(base.ProbeBase):
    """Plays one column of the recorded trace, row by row."""

    def __init__(self, conf, name, rows, limit=None):
        super().__init__(conf)
        self.name = name
        self.unit = 'as recorded'
        self.direction = DIRECTIONS[name]
        self.rows = rows
        self.limit = limit
        self.index = 0

    def sample(self, context):
        row = self.rows[self.index]
        if not row[self.name + '_value']:
            return None
        return base.Sample(float(row[self.name + '_value']),
                           self.limit or float(row[self.name + '_limit']))


class TestRecordedTrace(test_aging.MonitorHarness):

    def replay(self, rows, probes, **aging):
        # One host that acts on its own file backend, as in MonitorHarness.
        aging.setdefault('action', 'rejuvenate')
        aging.setdefault('single_node', True)
        conf = test_aging.make_conf(self.state, **aging)
        replays = [ReplayProbe(conf, name, rows, limit)
                   for name, limit in probes.items()]
        mon = monitor_mod.AgingMonitor(
            conf, 'host-a', lambda: self.rejuvenations.append(self.clock()),
            probes=replays, clock=self.clock)
        self.addCleanup(mon.stop)
        decisions = []
        for index, row in enumerate(rows):
            for probe in replays:
                probe.index = index
            self.clock.now = test_aging.MONDAY + float(row['t'])
            decisions.append(mon.run_once())
        return mon, decisions

    def test_steady_daemon_triggers_nothing(self):
        rows = [r for r in load_trace() if r['phase'] == 'steady']
        self.assertEqual(90, len(rows))
        mon, decisions = self.replay(
            rows, {name: None for name in DIRECTIONS})
        self.assertEqual([], self.rejuvenations)
        self.assertEqual({policy_mod.NONE}, {d.action for d in decisions})
        probes = mon.status()['probes']
        for name in ('daemon_rss', 'daemon_fds', 'qemu_overhead',
                     'libvirt_latency'):
            self.assertEqual(90, probes[name]['samples'], name)
        # Descriptors stay put while nothing leaks (the monitor's own
        # connections do not leak either).
        self.assertFalse(probes['daemon_fds']['significant'])
        # The freshly started daemon's heap still grows a little (about a
        # MiB an hour in this trace): a real trend, but weeks from its
        # limit, so nothing is due. Whatever trends is that far away.
        for name, probe in probes.items():
            if probe.get('significant'):
                self.assertGreater(probe['eta_s'], 100 * 6 * 3600.0, name)

    def test_leaking_client_triggers_before_exhaustion(self):
        rows = load_trace()
        leak = [i for i, r in enumerate(rows) if r['phase'] == 'leak']
        # The daemon is taken to be exhausted at the descriptor count the
        # trace reaches 70 samples into the leak: a limit the recorded
        # values really cross.
        limit = float(rows[leak[70]]['daemon_fds_value'])
        crossing = next(float(r['t']) for r in rows
                        if float(r['daemon_fds_value']) >= limit)
        # A two-minute window (the leak must fill both of its halves) and
        # a one-minute horizon: the real trace runs minutes, not days.
        mon, decisions = self.replay(rows, {'daemon_fds': limit},
                                     window=60, min_samples=30,
                                     horizon=60.0)
        self.assertEqual(1, len(self.rejuvenations), decisions[-1])
        at = self.rejuvenations[0] - test_aging.MONDAY
        self.assertGreater(at, float(rows[leak[0]]['t']))
        self.assertLess(at, crossing)
        triggered = [d for d in decisions
                     if d.action == policy_mod.REJUVENATE][0]
        self.assertEqual('daemon_fds', triggered.probe)
        # The estimate was honest: the recorded crossing came within
        # the predicted time plus a quarter.
        self.assertLess(crossing - at, triggered.eta_s * 1.25 + 4.0)
