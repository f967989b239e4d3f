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

"""The aging monitor on synthetic traces: trend, policy, windows, slots.

Synthetic traces are replayed by a probe of the test's own against a test
clock, so hours of sampling run in a second; everything else (pymannkendall,
the policy, the monitor, tooz's file backend) is the real thing.
"""

import datetime
from importlib import metadata
import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from unittest import mock

import fixtures
import testtools

from nova_vmbeam import aging as aging_mod
from nova_vmbeam.aging import base
from nova_vmbeam.aging import monitor as monitor_mod
from nova_vmbeam.aging import policy as policy_mod
from nova_vmbeam.aging import slots as slots_mod
from nova_vmbeam.aging import trend as trend_mod
from nova_vmbeam.aging import window as window_mod
from nova_vmbeam.conf import aging as aging_conf
from nova_vmbeam.conf import nested as nested_conf
from nova_vmbeam import exception
from nova_vmbeam.nested import agent as nested_agent
from nova_vmbeam.nested import kernel as nested_kernel
from nova_vmbeam.nested import sibling as nested_sibling
from nova_vmbeam import records
from tests.unit import fakes

STEP = 60.0     # seconds between samples
# A Monday, 2026-11-23 00:00 UTC: the test clock's origin.
MONDAY = datetime.datetime(2026, 11, 23,
                           tzinfo=datetime.timezone.utc).timestamp()


def make_conf(state_path, **aging):
    conf = fakes.make_conf(state_path=state_path)
    aging_conf.register_opts(conf)
    for name, value in aging.items():
        conf.set_override(name, value, 'vmbeam_aging')
    return conf


class Clock:
    def __init__(self, start=MONDAY):
        self.now = start

    def __call__(self):
        return self.now


class TraceProbe(base.ProbeBase):
    """Replays ``trace(seconds since the last cure)``.

    A rejuvenation cures the leak, as it does on a real host.
    """

    name = 'trace'
    unit = 'MiB'

    def __init__(self, conf, clock, trace, limit, direction=base.RISING):
        super().__init__(conf)
        self.clock = clock
        self.trace = trace
        self.limit = limit
        self.direction = direction
        self.cured_at = clock()

    def value(self):
        return self.trace(self.clock() - self.cured_at)

    def sample(self, context):
        return base.Sample(self.value(), self.limit)


def leak(rate_per_min, noise, start=200.0, seed=1):
    rng = random.Random(seed)
    return lambda t: start + rate_per_min * t / 60.0 + rng.gauss(0, noise)


def flat(level, noise, seed=2):
    rng = random.Random(seed)
    return lambda t: level + rng.gauss(0, noise)


class MonitorHarness(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.state = tempfile.mkdtemp(prefix='vmbeam-aging-')
        self.addCleanup(lambda: subprocess.run(['rm', '-rf', self.state]))
        self.clock = Clock()
        self.rejuvenations = []

    def monitor(self, trace, limit=1024.0, direction=base.RISING, **aging):
        # One host, its own file backend: the tests below are about when
        # to rejuvenate, not about the fleet (TestFleetDefaults is).
        aging.setdefault('action', 'rejuvenate')
        aging.setdefault('single_node', True)
        aging.setdefault('min_samples', 30)
        aging.setdefault('window', 360)
        aging.setdefault('horizon', 3600.0)
        aging.setdefault('min_interval', 6 * 3600.0)
        conf = make_conf(self.state, **aging)
        self.probe = TraceProbe(conf, self.clock, trace, limit, direction)

        def rejuvenate():
            self.rejuvenations.append((self.clock(), self.probe.value()))
            self.probe.cured_at = self.clock()

        mon = monitor_mod.AgingMonitor(conf, 'host-a', rejuvenate,
                                       probes=[self.probe], clock=self.clock)
        self.addCleanup(mon.stop)
        return mon

    def run_for(self, mon, hours):
        decisions = []
        for _ in range(int(hours * 3600 / STEP)):
            self.clock.now += STEP
            decisions.append(mon.run_once())
        return decisions


class TestTrend(testtools.TestCase):

    times = [i * STEP for i in range(120)]

    def test_leak_with_noise_is_significant_and_eta_is_right(self):
        rng = random.Random(1)
        values = [1000 + 2.0 * i + rng.gauss(0, 20) for i in range(120)]
        t = trend_mod.analyse(self.times, values, 2000.0, base.RISING)
        self.assertTrue(t.significant, t.reason)
        self.assertEqual('increasing', t.trend)
        # 2 MiB a minute; the true line is at 1238 MiB at the end:
        # 762 MiB left = 22860 s.
        self.assertAlmostEqual(2.0 / 60, t.slope_per_s, delta=0.2 / 60)
        self.assertAlmostEqual(22860, t.eta_s, delta=0.1 * 22860)

    def test_flat_noise_is_rarely_a_trend(self):
        # At alpha 0.01, and with the latest half tested as well, white
        # noise passes for a trend in well under 1 case in 100.
        for method in trend_mod.TESTS:
            flagged = 0
            for seed in range(100):
                rng = random.Random(seed)
                values = [1000 + rng.gauss(0, 50) for _ in range(120)]
                flagged += trend_mod.analyse(self.times, values, 2000.0,
                                             base.RISING,
                                             method=method).significant
            self.assertLessEqual(flagged, 2, method)

    def test_autocorrelated_wander_fools_the_plain_test_more(self):
        # An AR(1) wander around a flat level: the plain test sees trends
        # in it far more often than the Hamed-Rao corrected one.
        flagged = {m: 0 for m in trend_mod.TESTS}
        for seed in range(60):
            rng = random.Random(seed)
            x = [0.0]
            for _ in range(119):
                x.append(0.95 * x[-1] + rng.gauss(0, 5))
            for method in trend_mod.TESTS:
                t = trend_mod.analyse(self.times, [1000 + v for v in x],
                                      2000.0, base.RISING, method=method)
                flagged[method] += t.significant
        self.assertLess(flagged['hamed_rao'], flagged['original'])
        self.assertLessEqual(flagged['hamed_rao'], 3)

    def test_a_step_is_not_a_drift(self):
        rng = random.Random(3)
        values = [1000 + (300 if i >= 60 else 0) + rng.gauss(0, 20)
                  for i in range(120)]
        for method in trend_mod.TESTS:
            t = trend_mod.analyse(self.times, values, 2000.0, base.RISING,
                                  method=method)
            self.assertFalse(t.significant, (method, t))

    def test_trend_away_from_the_limit_does_not_count(self):
        values = [5000 + 10.0 * i for i in range(120)]   # free memory grows
        t = trend_mod.analyse(self.times, values, 512.0, base.FALLING)
        self.assertFalse(t.significant)
        self.assertIsNone(t.eta_s)

    def test_falling_resource(self):
        values = [5000 - 10.0 * i for i in range(120)]
        t = trend_mod.analyse(self.times, values, 512.0, base.FALLING)
        self.assertTrue(t.significant)
        # the line is at 3810 at the last sample, 10 MiB a minute
        self.assertAlmostEqual((3810 - 512) * 6.0, t.eta_s, places=3)

    def test_too_few_samples(self):
        t = trend_mod.analyse(self.times[:5], [1, 2, 3, 4, 5], 10.0,
                              base.RISING)
        self.assertFalse(t.significant)
        self.assertIn('5 of 30 samples', t.reason)


class TestMonitorOnTraces(MonitorHarness):

    def test_injected_leak_rejuvenates_before_exhaustion(self):
        # 5 MiB a minute from 200 MiB: exhausted at 1024 MiB after 9888 s.
        mon = self.monitor(leak(5.0, 10.0))
        decisions = self.run_for(mon, 4)
        self.assertEqual(1, len(self.rejuvenations), decisions[-1])
        at, value = self.rejuvenations[0]
        elapsed = at - MONDAY
        self.assertLess(elapsed, 9888)
        self.assertLess(value, 1024.0)
        # Not long before either: the horizon is one hour.
        self.assertGreater(elapsed, 9888 - 3600 - 1200)
        status = mon.status()
        self.assertEqual('completed', status['last_rejuvenation']['result'])

    def test_flat_noisy_trace_never_rejuvenates(self):
        mon = self.monitor(flat(600.0, 60.0))
        decisions = self.run_for(mon, 12)
        self.assertEqual([], self.rejuvenations)
        self.assertEqual({policy_mod.NONE}, {d.action for d in decisions})

    def test_step_change_does_not_rejuvenate(self):
        noise = random.Random(4)
        mon = self.monitor(
            lambda t: 300 + (400 if t > 3 * 3600 else 0) +
            noise.gauss(0, 20), horizon=6 * 3600.0)
        # 12 hours: the step passes through every place in the 6-hour
        # window, and leaves it.
        self.run_for(mon, 12)
        self.assertEqual([], self.rejuvenations)

    def test_min_interval_between_rejuvenations(self):
        # 20 MiB a minute leaks to the limit in 41 min, always
        # "due"; rejuvenations come no more often than every two hours.
        mon = self.monitor(leak(20.0, 5.0), min_samples=10,
                           min_interval=2 * 3600.0, horizon=6 * 3600.0)
        self.run_for(mon, 9)
        times = [at for at, _ in self.rejuvenations]
        self.assertGreaterEqual(len(times), 3)
        for earlier, later in zip(times, times[1:]):
            self.assertGreaterEqual(later - earlier, 2 * 3600.0)

    def test_rejuvenation_waits_for_the_maintenance_window(self):
        # Due from about 01:00 on Monday; the window opens at 03:00.
        mon = self.monitor(leak(2.0, 5.0), min_samples=30,
                           horizon=8 * 3600.0,
                           maintenance_windows=['Mon 03:00-04:00'])
        decisions = self.run_for(mon, 5)
        self.assertEqual(1, len(self.rejuvenations))
        at = datetime.datetime.fromtimestamp(self.rejuvenations[0][0],
                                             datetime.timezone.utc)
        self.assertEqual((0, 3), (at.weekday(), at.hour))
        waits = [d for d in decisions if d.action == policy_mod.WAIT]
        self.assertTrue(waits)
        self.assertIn('no maintenance window is open', waits[0].reason)

    def test_emergency_does_not_wait_for_a_window(self):
        mon = self.monitor(leak(20.0, 5.0), min_samples=10,
                           horizon=6 * 3600.0, emergency_horizon=1800.0,
                           maintenance_windows=['Sat 02:00-04:00'])
        self.run_for(mon, 1)
        self.assertEqual(1, len(self.rejuvenations))
        self.assertLess(self.rejuvenations[0][1], 1024.0)

    def test_report_action_never_rejuvenates(self):
        mon = self.monitor(leak(20.0, 5.0), min_samples=10,
                           action='report')
        decisions = self.run_for(mon, 2)
        self.assertEqual([], self.rejuvenations)
        self.assertTrue(any(d.reason.startswith('report only')
                            for d in decisions))

    def test_failed_rejuvenation_counts_for_min_interval(self):
        mon = self.monitor(leak(20.0, 5.0), min_samples=10)
        calls = []

        def failing():
            calls.append(self.clock())
            raise RuntimeError('sibling would not start')
        mon._rejuvenate = failing
        self.run_for(mon, 3)
        self.assertEqual(1, len(calls))
        self.assertIn('failed: sibling would not start',
                      mon.status()['last_rejuvenation']['result'])

    def test_history_survives_a_restart(self):
        mon = self.monitor(leak(5.0, 10.0))
        self.run_for(mon, 1)
        again = monitor_mod.AgingMonitor(mon.conf, 'host-a', None,
                                         probes=[self.probe],
                                         clock=self.clock)
        self.assertEqual(60, again.status()['samples'])
        saved = monitor_mod.read_status(mon.conf)
        self.assertEqual(60, saved['samples'])
        self.assertIn('trace', saved['probes'])

    def test_thread_starts_samples_and_stops(self):
        mon = self.monitor(flat(600.0, 1.0), interval=1.0)
        mon.start()
        self.assertTrue(mon.running())
        deadline = time.monotonic() + 10
        while not mon.status()['samples'] and time.monotonic() < deadline:
            time.sleep(0.05)    # the thread samples at once
        mon.stop(timeout=10)
        self.assertFalse(mon.running())
        self.assertGreaterEqual(mon.status()['samples'], 1)

    def test_disabled_monitor_starts_no_thread(self):
        mon = self.monitor(flat(600.0, 1.0), enabled=False)
        mon.start()
        self.assertFalse(mon.running())


class TestWindows(testtools.TestCase):

    def at(self, day, hour, minute=0):
        return MONDAY + day * 86400 + hour * 3600 + minute * 60

    def test_day_and_range_and_midnight(self):
        sched = window_mod.Schedule(['Sat 23:00-01:00', 'Mon-Fri 12:00-13:00'])
        self.assertTrue(sched.open_at(self.at(5, 23, 30)))      # Sat
        self.assertTrue(sched.open_at(self.at(6, 0, 30)))       # Sun early
        self.assertFalse(sched.open_at(self.at(6, 1, 0)))
        self.assertTrue(sched.open_at(self.at(4, 12, 59)))      # Fri
        self.assertFalse(sched.open_at(self.at(5, 12, 30)))     # Sat
        self.assertEqual(self.at(0, 12), sched.next_opening(self.at(0, 1)))
        self.assertEqual(self.at(5, 23), sched.next_opening(self.at(4, 13)))

    def test_wrapping_day_range_and_every_day(self):
        sched = window_mod.Schedule(['Fri-Mon 02:00-03:00'])
        self.assertTrue(sched.open_at(self.at(0, 2, 10)))       # Mon
        self.assertFalse(sched.open_at(self.at(1, 2, 10)))      # Tue
        self.assertTrue(sched.open_at(self.at(6, 2, 10)))       # Sun
        self.assertTrue(window_mod.Schedule(['* 00:00-24:00']).open_at(
            self.at(2, 17)))
        self.assertTrue(window_mod.Schedule([]).open_at(self.at(2, 17)))

    def test_bad_windows_name_the_fix(self):
        for text in ('Sat', 'Caturday 01:00-02:00', 'Sat 25:00-26:00',
                     'Sat 01:00-01:61'):
            exc = self.assertRaises(window_mod.InvalidWindow,
                                    window_mod.Schedule, [text])
            self.assertIn('DAYS HH:MM-HH:MM', str(exc))

    def test_monitor_refuses_bad_window_before_starting(self):
        state = tempfile.mkdtemp(prefix='vmbeam-aging-')
        self.addCleanup(lambda: subprocess.run(['rm', '-rf', state]))
        conf = make_conf(state, maintenance_windows=['sometimes'])
        self.assertRaises(window_mod.InvalidWindow, monitor_mod.AgingMonitor,
                          conf, 'h', None)


class TestProbePlugins(testtools.TestCase):

    def test_every_probe_is_a_plugin(self):
        self.assertEqual(
            ['daemon_fds', 'daemon_rss', 'host_free_memory',
             'hypervisor_kernel_free_memory', 'hypervisor_kernel_slab',
             'instances_disk_free', 'libvirt_latency', 'qemu_overhead'],
            aging_mod.available())
        # Every one is sampled by default.
        self.assertEqual(aging_mod.available(),
                         sorted(make_conf('/nonexistent').vmbeam_aging.probes))
        conf = make_conf('/nonexistent')
        for probe in aging_mod.load_all(aging_mod.available(), conf):
            self.assertIn(probe.direction, (base.RISING, base.FALLING))

    def test_unknown_probe_names_the_fix(self):
        state = tempfile.mkdtemp(prefix='vmbeam-aging-')
        self.addCleanup(lambda: subprocess.run(['rm', '-rf', state]))
        conf = make_conf(state, probes=['host_free_memory', 'daemon_leaks'])
        exc = self.assertRaises(exception.UnknownPlugin,
                                monitor_mod.AgingMonitor, conf, 'h', None)
        self.assertIn('daemon_leaks', str(exc))
        self.assertIn('[vmbeam_aging] probes', str(exc))

    def test_host_probes_measure_this_host(self):
        state = tempfile.mkdtemp(prefix='vmbeam-aging-')
        self.addCleanup(lambda: subprocess.run(['rm', '-rf', state]))
        conf = make_conf(state, instances_path=state)
        context = base.ProbeContext(conf)
        free = aging_mod.load('host_free_memory', conf).sample(context)
        self.assertGreater(free.value, 0)
        self.assertLess(free.value, os.sysconf('SC_PHYS_PAGES') *
                        os.sysconf('SC_PAGE_SIZE') / 2.0 ** 20)
        disk = aging_mod.load('instances_disk_free', conf).sample(context)
        self.assertGreater(disk.value, 0)
        self.assertEqual(1024.0, disk.limit)
        # No generation is active in this state dir: nothing to measure.
        for name in ('daemon_rss', 'daemon_fds', 'qemu_overhead',
                     'libvirt_latency', 'hypervisor_kernel_free_memory',
                     'hypervisor_kernel_slab'):
            self.assertIsNone(aging_mod.load(name, conf).sample(context))

    def test_daemon_probes_measure_the_l1_of_a_nested_node(self):
        # The nested sibling's health report has the one shape: the L1
        # VM is the daemon that hosts the guests, as libvirtd is
        # colocated. Stand-ins: this process as the L1's QEMU, an L1
        # libvirt that runs one L2 guest.
        state = tempfile.mkdtemp(prefix='vmbeam-aging-')
        self.addCleanup(lambda: subprocess.run(['rm', '-rf', state]))
        conf = make_conf(state)
        nested_conf.register_opts(conf)
        l1 = nested_sibling.NestedSibling(conf, 2)
        l1_host = mock.Mock()
        l1_host.alive.return_value = True
        l1_host.running_qemus.return_value = ['l2']
        self.useFixture(fixtures.MockPatchObject(
            l1, 'l1_pid', return_value=os.getpid()))
        self.useFixture(fixtures.MockPatchObject(
            l1, 'running', return_value=True))
        self.useFixture(fixtures.MockPatchObject(
            l1, 'host', return_value=l1_host))
        # The L1's kernel, as its guest agent's cat prints it.
        l1_dom = mock.Mock()
        l1_dom.name.return_value = 'vmbeam-nested-gen2'
        self.useFixture(fixtures.MockPatchObject(
            l1, 'l1_domain', return_value=l1_dom))
        agent_sh = self.useFixture(fixtures.MockPatch(
            'nova_vmbeam.nested.agent.sh', return_value=L1_KERNEL)).mock
        report = l1.health()
        agent_sh.assert_called_once_with(l1_dom, nested_kernel.SCRIPT,
                                         timeout=10)
        self.assertEqual('5f8c9a52-2b1e-4c43-9d53-0b8f7f6b2a11',
                         report.kernel.boot_id)
        self.assertIn('its kernel: boot 5f8c9a52', report.describe())
        self.assertEqual('l1', report.daemon.name)
        self.assertEqual(['l2'], sorted(report.guests))
        context = base.ProbeContext(conf, orchestrator=mock.Mock())
        context.__dict__['health'] = report   # the round's cached report
        rss = aging_mod.load('daemon_rss', conf).sample(context)
        self.assertGreater(rss.value, 0)
        self.assertAlmostEqual(report.daemon.rss_kib / 1024.0, rss.value)
        fds = aging_mod.load('daemon_fds', conf).sample(context)
        self.assertEqual(float(report.daemon.fds), fds.value)
        self.assertGreater(fds.value, 0)
        self.assertGreater(fds.limit, 0)
        # L2 QEMUs run inside the L1: nothing to measure from here.
        self.assertIsNone(
            aging_mod.load('qemu_overhead', conf).sample(context))
        # The L1's own kernel is.
        free = aging_mod.load('hypervisor_kernel_free_memory',
                              conf).sample(context)
        self.assertEqual((1100000 / 1024.0, 128.0), free)
        slab = aging_mod.load('hypervisor_kernel_slab', conf).sample(context)
        self.assertEqual((40000 / 1024.0, 1500000 / 1024.0 * 0.25), slab)
        # An agent that does not answer: the daemon figures, no kernel.
        agent_sh.side_effect = nested_agent.AgentError(
            vm='l1', reason='timed out')
        report = l1.health()
        self.assertIsNone(report.kernel)
        self.assertEqual('l1', report.daemon.name)
        context.__dict__['health'] = report
        self.assertIsNone(aging_mod.load('hypervisor_kernel_free_memory',
                                         conf).sample(context))


L1_KERNEL = (
    '5f8c9a52-2b1e-4c43-9d53-0b8f7f6b2a11\n'
    '4242.17 4100.02\n'
    'MemTotal:        1500000 kB\n'
    'MemFree:          900000 kB\n'
    'MemAvailable:    1100000 kB\n'
    'Slab:              60000 kB\n'
    'SReclaimable:      20000 kB\n'
    'SUnreclaim:        40000 kB\n')


class TestNestedKernel(testtools.TestCase):
    """The L1's kernel figures, from its agent's output."""

    def test_parse(self):
        kernel = nested_kernel.parse(L1_KERNEL)
        self.assertEqual(records.KernelHealth(
            boot_id='5f8c9a52-2b1e-4c43-9d53-0b8f7f6b2a11', uptime_s=4242.17,
            mem_total_kib=1500000, mem_available_kib=1100000,
            slab_unreclaimable_kib=40000), kernel)

    def test_parse_refuses_what_is_not_that(self):
        for text in ('', 'boot\n1.0 1.0\n',
                     L1_KERNEL.replace('SUnreclaim', 'Other'),
                     L1_KERNEL.replace('4242.17', 'soon')):
            self.assertRaises(ValueError, nested_kernel.parse, text)

    def test_the_journal_keeps_it_and_reads_reports_without_it(self):
        report = records.HealthReport(
            generation=3, running=True,
            daemon=records.DaemonHealth(name='l1', pid=7),
            kernel=nested_kernel.parse(L1_KERNEL))
        data = json.loads(json.dumps(report.to_dict()))
        self.assertEqual(report, records.HealthReport.from_dict(data))
        del data['kernel']   # written before there was one
        self.assertIsNone(records.HealthReport.from_dict(data).kernel)


_HOLDER = textwrap.dedent('''
    import sys, time
    from nova_vmbeam.aging import slots
    s = slots.Slots(sys.argv[1], 'holder', int(sys.argv[2]))
    lock = s.try_acquire()
    print('held' if lock else 'none', flush=True)
    sys.stdin.read()
    ''')


class TestSlots(testtools.TestCase):
    """The cluster limit on tooz's real file backend."""

    def test_importing_the_monitor_does_not_import_tooz(self):
        # tooz (through futurist) must load only when the monitor starts.
        code = ('import sys; import nova_vmbeam.aging.monitor; '
                'print(sorted(m for m in ("tooz", "futurist") '
                'if m in sys.modules))')
        out = subprocess.run([sys.executable, '-c', code],
                             capture_output=True, text=True, check=True)
        self.assertEqual('[]', out.stdout.strip())

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix='vmbeam-slots-')
        self.addCleanup(lambda: subprocess.run(['rm', '-rf', self.dir]))
        self.url = 'file://' + self.dir

    def slots(self, member, count):
        s = slots_mod.Slots(self.url, member, count)
        self.addCleanup(s.stop)
        return s

    def holder(self, count):
        proc = subprocess.Popen([sys.executable, '-c', _HOLDER, self.url,
                                 str(count)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        self.addCleanup(proc.wait)
        self.addCleanup(proc.stdin.close)
        self.assertEqual('held', proc.stdout.readline().strip())
        return proc

    def test_one_slot_two_coordinators(self):
        a, b = self.slots('a', 1), self.slots('b', 1)
        lock = a.try_acquire()
        self.assertIsNotNone(lock)
        self.assertIsNone(b.try_acquire())
        lock.release()
        again = b.try_acquire()
        self.assertIsNotNone(again)
        again.release()

    def test_k_slots_across_processes(self):
        self.holder(2)          # another host holds slot 0
        mine = self.slots('me', 2).try_acquire()
        self.assertIsNotNone(mine)        # slot 1 is free
        self.holder_none = subprocess.run(
            [sys.executable, '-c', _HOLDER, self.url, '2'],
            input='', capture_output=True, text=True, timeout=60)
        self.assertEqual('none', self.holder_none.stdout.strip())
        mine.release()

    def test_dead_holder_frees_its_slot(self):
        proc = self.holder(1)
        self.assertIsNone(self.slots('me', 1).try_acquire())
        proc.kill()
        proc.wait()
        lock = self.slots('me2', 1).try_acquire()
        self.assertIsNotNone(lock)
        lock.release()

    def test_monitor_waits_while_the_cluster_is_full(self):
        self.holder(1)
        state = tempfile.mkdtemp(prefix='vmbeam-aging-')
        self.addCleanup(lambda: subprocess.run(['rm', '-rf', state]))
        # The file backend stands in for a shared one here: the holder
        # process is the other host.
        conf = make_conf(state, backend_url=self.url, max_concurrent=1,
                         action='rejuvenate', single_node=True,
                         min_samples=10, horizon=6 * 3600.0)
        clock = Clock()
        probe = TraceProbe(conf, clock, leak(20.0, 5.0), 1024.0)
        called = []
        mon = monitor_mod.AgingMonitor(conf, 'host-b',
                                       lambda: called.append(1),
                                       probes=[probe], clock=clock)
        self.addCleanup(mon.stop)
        for _ in range(30):
            clock.now += STEP
            decision = mon.run_once()
        self.assertEqual([], called)
        self.assertEqual(policy_mod.WAIT, decision.action)
        self.assertIn('cluster rejuvenation slots are taken',
                      decision.reason)

    def test_default_backend_is_a_file_under_state_path(self):
        conf = make_conf('/var/lib/x')
        self.assertEqual('file:///var/lib/x/coordination',
                         slots_mod.backend_url(conf))


class TestFleetDefaults(MonitorHarness):
    """Nothing rejuvenates unless asked, and never without a fleet limit."""

    def test_default_action_only_reports(self):
        conf = make_conf(self.state)
        self.assertEqual('report', conf.vmbeam_aging.action)
        self.assertIs(False, conf.vmbeam_aging.single_node)
        mon = self.monitor(leak(20.0, 5.0), min_samples=10, action='report',
                           single_node=False)
        mon.start()         # report needs no backend: it starts
        self.addCleanup(mon.stop)
        self.assertTrue(mon.running())
        mon.stop()
        decisions = self.run_for(mon, 2)
        self.assertEqual([], self.rejuvenations)
        self.assertIn('report only', decisions[-1].reason)

    def assertRefusedAtStart(self, fragment, **aging):
        mon = self.monitor(flat(600.0, 1.0), single_node=False, **aging)
        exc = self.assertRaises(slots_mod.UnsafeFleetConfig, mon.start)
        message = str(exc)
        self.assertNotIn('\n', message)
        self.assertIn(fragment, message)
        for fix in ('Set [vmbeam_aging] backend_url to a tooz backend that '
                    'every compute host reaches', 'single_node = true',
                    'action = report'):
            self.assertIn(fix, message)
        self.assertFalse(mon.running())
        # Refused before anything started: no backend was even created.
        self.assertFalse(os.path.exists(os.path.join(self.state,
                                                     'coordination')))
        return message

    def test_rejuvenate_on_the_default_backend_is_refused_at_start(self):
        message = self.assertRefusedAtStart('backend_url is unset')
        self.assertTrue(message.startswith(
            '[vmbeam_aging] action = rejuvenate, but'), message)
        self.assertIn('max_concurrent = 1 host(s)', message)

    def test_backends_of_this_host_only_are_refused(self):
        self.assertRefusedAtStart('keeps its locks in a directory of this '
                                  'host',
                                  backend_url='file://' + self.state)
        self.assertRefusedAtStart('System V semaphores',
                                  backend_url='ipc://')

    def test_a_single_node_may_rejuvenate_on_its_own_file_backend(self):
        mon = self.monitor(leak(20.0, 5.0), min_samples=10)
        mon.start()
        self.assertTrue(mon.running())
        mon.stop()
        self.run_for(mon, 1)
        self.assertEqual(1, len(self.rejuvenations))

    def test_networked_backends_count_as_shared(self):
        for url in ('redis://ctl:6379', 'etcd3+http://ctl:2379',
                    'zookeeper://ctl:2181', 'memcached://ctl:11211',
                    'mysql://u:p@ctl/tooz', 'postgresql://ctl/tooz'):
            self.assertIsNone(slots_mod.fleet_problem(url, False), url)
        self.assertIsNotNone(slots_mod.fleet_problem(None, False))
        self.assertIsNone(slots_mod.fleet_problem(None, True))

    def test_rounds_without_start_do_not_rejuvenate_either(self):
        # Callers that only run rounds (vmbeam aging watch) never started
        # the monitor: the refusal holds at the moment of acting too.
        mon = self.monitor(leak(20.0, 5.0), min_samples=10,
                           single_node=False)
        decisions = self.run_for(mon, 2)
        self.assertEqual([], self.rejuvenations)
        self.assertIn('not rejuvenating: [vmbeam_aging] backend_url is '
                      'unset', decisions[-1].reason)

    def test_a_backend_whose_library_is_missing_is_refused_at_start(self):
        missing = metadata.EntryPoint(
            name='redis', value='vmbeam_no_such_module:Driver',
            group='tooz.backends')
        self.useFixture(fixtures.MockPatch(
            'nova_vmbeam.aging.slots.metadata.entry_points',
            return_value=[missing]))
        mon = self.monitor(flat(600.0, 1.0), single_node=False,
                           backend_url='redis://ctl:6379')
        exc = self.assertRaises(slots_mod.BackendNotInstalled, mon.start)
        self.assertIn("vmbeam_no_such_module", str(exc))
        self.assertIn('pip install "tooz[redis]"', str(exc))
        self.assertFalse(mon.running())

    def test_an_unknown_backend_is_refused_at_start(self):
        mon = self.monitor(flat(600.0, 1.0), single_node=False,
                           backend_url='redsi://ctl:6379')
        exc = self.assertRaises(slots_mod.BackendNotInstalled, mon.start)
        self.assertIn("tooz has no backend 'redsi'", str(exc))
        self.assertIn('redis', str(exc))

    def test_an_unreachable_backend_waits_instead_of_failing(self):
        # The backend is first asked from the monitor's thread, when a
        # rejuvenation is due; one that does not answer makes that round
        # wait, and neither start() nor the thread fails.
        class Unreachable:
            count = 1
            asked = 0

            def start(self):
                raise AssertionError('start() must not connect')

            def try_acquire(self):
                self.asked += 1
                raise exception.CoordinationUnavailable(
                    url='redis://ctl:6379', reason='Connection refused')

            def stop(self):
                pass

        unreachable = Unreachable()
        mon = self.monitor(leak(20.0, 5.0), min_samples=10,
                           single_node=False,
                           backend_url='redis://ctl:6379')
        mon.slots = unreachable
        mon.start()
        self.assertTrue(mon.running())
        mon.stop()
        decisions = self.run_for(mon, 1)
        self.assertEqual([], self.rejuvenations)
        self.assertGreater(unreachable.asked, 0)
        self.assertEqual(policy_mod.WAIT, decisions[-1].action)
        self.assertIn('coordination backend redis://ctl:6379 unavailable: '
                      'Connection refused', decisions[-1].reason)

    def test_backend_errors_become_coordination_unavailable(self):
        from tooz import coordination

        class Down:
            def start(self, start_heart=False):
                raise coordination.ToozConnectionError('Connection refused')

        self.useFixture(fixtures.MockPatch(
            'tooz.coordination.get_coordinator', return_value=Down()))
        slots = slots_mod.Slots('redis://ctl:6379', 'host-a', 1)
        exc = self.assertRaises(exception.CoordinationUnavailable,
                                slots.try_acquire)
        self.assertIn('Connection refused', str(exc))


class TestCommand(testtools.TestCase):
    """vmbeam aging status|watch, run as the command."""

    def vmbeam(self, *args, aging=''):
        state = self.useFixture(fixtures.TempDir()).path
        conf = os.path.join(state, 'vmbeam.conf')
        with open(conf, 'w') as f:
            f.write('[vmbeam]\nstate_path = %s\n[vmbeam_aging]\n'
                    'instances_path = %s\ninterval = 1\n%s' % (
                        state, state, aging))
        return subprocess.run(
            [sys.executable, '-m', 'nova_vmbeam.cli', '--config-file', conf,
             'aging'] + list(args), capture_output=True, text=True,
            timeout=120)

    def test_status_without_a_monitor_samples_once(self):
        out = self.vmbeam('status', '--json')
        self.assertEqual(0, out.returncode, out.stderr)
        status = json.loads(out.stdout)
        self.assertEqual(1, status['samples'])
        self.assertGreater(status['probes']['host_free_memory']['value'], 0)
        self.assertIn('value', status['probes']['instances_disk_free'])
        self.assertEqual('none', status['decision']['action'])

    def test_watch_reports_every_round(self):
        out = self.vmbeam('watch', '--rounds', '2')
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertEqual(2, out.stdout.count('aging monitor of'))
        self.assertIn('| host_free_memory |', out.stdout)
        self.assertIn('2 samples', out.stdout)

    def test_watch_rejuvenate_is_refused_without_a_fleet_limit(self):
        out = self.vmbeam('watch', '--rejuvenate', '--rounds', '1')
        self.assertEqual(2, out.returncode, out.stderr)
        self.assertEqual('', out.stdout)
        lines = out.stderr.splitlines()
        self.assertEqual(1, len(lines), out.stderr)
        self.assertTrue(lines[0].startswith(
            'vmbeam: error: vmbeam aging watch --rejuvenate, but '
            '[vmbeam_aging] backend_url is unset'), lines[0])
        self.assertIn('single_node = true', lines[0])

    def test_watch_rejuvenate_runs_on_a_single_node(self):
        # Even where the config says report: the flag is the request.
        out = self.vmbeam('watch', '--rejuvenate', '--rounds', '1',
                          aging='single_node = true\naction = report\n')
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertIn('1 samples', out.stdout)
