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

"""The fleet limit on a real coordination backend: Debian's redis-server.

Each compute host is a process of its own (tests/functional/fleet_host.py)
with its own host name (its tooz member id) and state directory, running
the real AgingMonitor with an injected leak, so every host is due for a
rejuvenation at about the same time; the rejuvenation is a stub that
records when it holds its slot. The test reads those records:

* never more than max_concurrent hosts rejuvenate at once, and every host
  gets its turn;
* hosts that each count only themselves (the former default: a file
  backend per host) do overrun the limit: what the refusal at start is
  for, and proof that the measurement sees an overrun;
* a host SIGKILLed while holding a slot loses it when its lease runs out,
  and not before: a live holder keeps renewing it.

No QEMU and no libvirt.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import testtools
from testtools import content

from tests.functional import coordination

HOSTS = 5
K = 2
HOLD = 1.5          # seconds each stub rejuvenation holds its slot
LEASE = 4           # seconds: lock_timeout of the redis locks
PROCESS_TIMEOUT = 180.0


def max_concurrency(intervals):
    """Most intervals ([start, end]) open at one instant."""
    # At equal times an end is counted before a start: touching
    # intervals did not overlap.
    events = sorted([(start, 1) for start, _end in intervals] +
                    [(end, -1) for _start, end in intervals])
    open_now = highest = 0
    for _t, step in events:
        open_now += step
        highest = max(highest, open_now)
    return highest


class FleetTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        if not coordination.installed():
            self.skipTest('%s is not installed; run tools/install.sh' %
                          coordination.SERVER)
        self.dir = tempfile.mkdtemp(prefix='vmbeam-fleet-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.redis = self.useFixture(
            coordination.RedisServer(lock_timeout=LEASE))

    def record_path(self, host):
        return os.path.join(self.dir, '%s.records' % host)

    def start_host(self, host, max_concurrent, hold=HOLD, backend_url=None,
                   single_node=False):
        state = os.path.join(self.dir, host)
        os.mkdir(state)
        argv = [sys.executable, '-m', 'tests.functional.fleet_host',
                '--host', host, '--state', state,
                '--record', self.record_path(host),
                '--max-concurrent', str(max_concurrent),
                '--hold', str(hold)]
        if backend_url:
            argv += ['--backend-url', backend_url]
        if single_node:
            argv.append('--single-node')
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.addCleanup(self._reap, proc)
        line = proc.stdout.readline().strip()
        if line != 'ready':
            proc.kill()
            self.fail('host %s did not start: %r\n%s' % (
                host, line, proc.stderr.read()))
        return proc

    @staticmethod
    def _reap(proc):
        if proc.poll() is None:
            proc.kill()
        proc.communicate()

    @staticmethod
    def go(*procs):
        for proc in procs:
            proc.stdin.write('go\n')
            proc.stdin.flush()

    def finish(self, host, proc):
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
        self.assertEqual(0, proc.returncode, '%s: %s\n%s' % (host, out, err))
        return json.loads(out.strip().splitlines()[-1])

    def records(self, host):
        try:
            with open(self.record_path(host)) as f:
                return [json.loads(line) for line in f]
        except FileNotFoundError:
            return []

    def rejuvenations(self, host):
        """(start, end) of each stub rejuvenation of ``host``."""
        events = self.records(host)
        starts = [e['t'] for e in events if e['event'] == 'start']
        ends = [e['t'] for e in events if e['event'] == 'end']
        self.assertEqual(len(starts), len(ends), events)
        return list(zip(starts, ends))

    def run_fleet(self, **host_args):
        """HOSTS hosts, released together; {host: summary}, intervals."""
        hosts = ['compute-%d' % i for i in range(HOSTS)]
        procs = {h: self.start_host(h, K, **host_args) for h in hosts}
        self.go(*procs.values())
        summaries = {h: self.finish(h, p) for h, p in procs.items()}
        intervals = {h: self.rejuvenations(h) for h in hosts}
        return summaries, intervals

    def note(self, name, value):
        self.addDetail(name, content.text_content(str(value)))


class TestFleetLimit(FleetTestCase):

    def test_never_more_than_k_at_once_and_every_host_gets_its_turn(self):
        summaries, intervals = self.run_fleet(backend_url=self.redis.url)
        # Every host rejuvenated, exactly once.
        self.assertEqual({h: 1 for h in intervals},
                         {h: len(i) for h, i in intervals.items()})
        highest = max_concurrency([i for per_host in intervals.values()
                                   for i in per_host])
        self.note('max_concurrency', highest)
        self.note('summaries', summaries)
        self.assertLessEqual(highest, K)
        # The limit was what held them back: K ran together, and the
        # others were told the slots were taken until one was free.
        self.assertEqual(K, highest)
        waited = [h for h, s in summaries.items() if s['waits_for_slot']]
        self.assertGreaterEqual(len(waited), HOSTS - K, summaries)

    def test_hosts_that_count_only_themselves_overrun_the_limit(self):
        # The former default: every host its own file backend (and here
        # single_node, which says exactly that, falsely).
        _summaries, intervals = self.run_fleet(single_node=True)
        highest = max_concurrency([i for per_host in intervals.values()
                                   for i in per_host])
        self.note('max_concurrency', highest)
        self.assertGreater(highest, K)


class TestDeadHolder(FleetTestCase):

    def wait_for_start(self, host, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            starts = [e['t'] for e in self.records(host)
                      if e['event'] == 'start']
            if starts:
                return starts[0]
            time.sleep(0.02)
        return None

    def test_a_killed_holder_loses_its_slot_within_the_lease(self):
        holder = self.start_host('compute-a', 1, hold=3600.0,
                                 backend_url=self.redis.url)
        self.go(holder)
        self.assertIsNotNone(self.wait_for_start('compute-a', 60))
        waiter = self.start_host('compute-b', 1, hold=0.2,
                                 backend_url=self.redis.url)
        self.go(waiter)
        # While the holder lives its heartbeat renews the lease: longer
        # than one lease later, the slot is still its own.
        self.assertIsNone(self.wait_for_start('compute-b', 2.0 * LEASE))
        os.kill(holder.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        holder.wait()
        taken_at = self.wait_for_start('compute-b', LEASE + 30)
        self.assertIsNotNone(taken_at, 'compute-b never got the slot')
        takeover = taken_at - killed_at
        self.note('takeover_s', '%.3f' % takeover)
        self.assertGreater(takeover, 0.0)
        # The lease ran out at most LEASE after the holder's last beat;
        # the waiter asks again every round (50 ms plus the round), and
        # two busy cores may delay a round more.
        self.assertLessEqual(takeover, LEASE + 2.0)
        summary = self.finish('compute-b', waiter)
        self.assertEqual('completed', summary['result'])
        self.assertGreater(summary['waits_for_slot'], 0)
