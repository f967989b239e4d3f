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

import io
import subprocess
import sys
import unittest

import fixtures
import testtools

from nova_vmbeam import cli
from vmbeam_devtools import bench
from vmbeam_devtools.nested import bench as nested_bench
from vmbeam_devtools.nested import testbed as nested_testbed


def _rec(mover, total, ok=True, ram=1024, dirty=64):
    return {'mover': mover, 'ram_mib': ram, 'dirty_mib_s': dirty,
            'total_ms': total, 'downtime_ms': total / 2,
            'transferred_bytes': 2 ** 20, 'cpu_s': 0.01, 'ok': ok,
            'prepare_ms': 100.0}


class TestSummary(testtools.TestCase):

    def test_medians_and_speedup_against_precopy(self):
        records = [_rec('precopy', 3000), _rec('precopy', 3200),
                   _rec('precopy', 2800), _rec('zerocopy', 10),
                   _rec('zerocopy', 30), _rec('zerocopy', 20),
                   _rec('zerocopy', 999, ok=False)]
        rows = {r['mover']: r for r in bench.summarize(records)}
        self.assertEqual(3000, rows['precopy']['total_ms'])
        self.assertEqual(20, rows['zerocopy']['total_ms'])
        self.assertEqual(3, rows['zerocopy']['ok'])
        self.assertEqual(4, rows['zerocopy']['moves'])
        self.assertEqual(150, rows['zerocopy']['speedup'])
        table = bench.format_table(bench.summarize(records))
        self.assertIn('| zerocopy | 1024 | 64 | 3/4 | 20.0 |', table)
        self.assertIn('150x', table)


class TestHostTable(testtools.TestCase):

    def test_budget_rounds_and_pause_breakdown(self):
        pause = dict(zip(bench.PAUSE_PHASES, (1.0, 2.0, 0.5, 3.0, 0.25, 9.0)))
        row = {'method': 'zerocopy', 'guests': 8, 'rounds': 3, 'moves': 24,
               'standby_ms': 0.0, 'sibling_ready_ms': 7000.0,
               'end_to_end_ms': 8100.0, 'rounds_in_budget': 2,
               'prepare_all_ms': 600.0, 'switch_all_ms': 300.0,
               'old_daemon_stop_ms': 50.0, 'downtime_p50_ms': 15.0,
               'downtime_p99_ms': 31.5, 'pause_p50_ms': pause,
               'slowest_pause_ms': {}, 'transferred_bytes': 1000,
               'ok': True}
        table = bench.format_host_table([row])
        # budget = ready + 100 ms per guest
        self.assertIn('| zerocopy | 8 | 24 | 0 | 7000 | 8100 | 7800 | 600 | '
                      '300 | 2/3 |', table)
        self.assertIn('| zerocopy | 8 | p50 | 1.0 | 2.0 | 0.5 | 3.0 | 0.2 | '
                      '9.0 |', table)
        self.assertNotIn('slowest |', table)


class TestCompareTable(testtools.TestCase):

    def test_one_row_per_method_with_ratios_to_precopy(self):
        def host(method, downtimes, totals, sent):
            return {'method': method, 'standby_ms': 0.0,
                    'sibling_ready_ms': 400.0, 'end_to_end_ms': 500.0,
                    'ok': True, 'per_guest': [
                        {'downtime_ms': d, 'total_ms': t,
                         'transferred_bytes': sent, 'ok': True}
                        for d, t in zip(downtimes, totals)]}
        rows = [host('zerocopy', (3.0, 5.0, 4.0), (10.0, 30.0, 20.0), 100),
                host('libvirt-precopy', (40.0,), (200.0,), 1000),
                {'kind': 'nested', 'method': 'nested', 'l1_boot_ms': 15000.0,
                 'standby_ms': 0.0, 'sibling_ready_ms': 8000.0,
                 'end_to_end_ms': 13000.0, 'total_ms': 220.0,
                 'downtime_ms': 100.0, 'transferred_bytes': 300000,
                 'ok': True},
                {'kind': 'nested', 'method': 'bare (QMP by hand)',
                 'total_ms': 150.0, 'downtime_ms': 80.0,
                 'transferred_bytes': 290000, 'ok': True}]
        table = nested_bench.format_compare_table(rows)
        lines = table.splitlines()
        # Medians over the colocated moves, each with its ratio.
        self.assertIn('| colocated zerocopy | 3 |  | 0 | '
                      '400 (1x) | 500 (1x) | 20.0 (0.1x) | '
                      '4.0 (0.1x) | 100 (0.1x) | True |', lines)
        self.assertIn('| libvirt-precopy | 1 |', table)
        # The L1 boot has no counterpart: no ratio.
        self.assertIn('| nested | 1 | 15000 | 0 | 8000 (20x) | '
                      '13000 (26x) | 220.0 (1.1x) | 100.0 (2.5x) | '
                      '300000 (300x) | True |', lines)
        self.assertIn('| bare (QMP by hand) | 1 |  |  |  |  | 150.0 (0.75x) '
                      '| 80.0 (2x) |', table)


class TestCli(testtools.TestCase):

    def _vmbeam(self, *args):
        return subprocess.run([sys.executable, '-m', 'nova_vmbeam.cli'] +
                              list(args), capture_output=True, text=True,
                              timeout=60)

    def test_unknown_mover_fails_before_booting_anything(self):
        proc = self._vmbeam('bench', '--movers', 'teleport')
        self.assertEqual(2, proc.returncode)
        self.assertIn("Unknown mover 'teleport'", proc.stderr)
        self.assertIn('cpr, nested, precopy, zerocopy', proc.stderr)

    def test_l2_too_slow_to_boot_is_one_line_not_a_traceback(self):
        args = cli.build_parser().parse_args(['bench', '--nested'])
        self.useFixture(fixtures.MockPatch(
            'vmbeam_devtools.nested.bench.run_nested',
            side_effect=nested_testbed.TooSlow(
                'L2 bn1 had not booted after 300 s')))
        stderr = self.useFixture(fixtures.MockPatch(
            'sys.stderr', new_callable=io.StringIO)).mock
        try:
            status = args.func(args)
        except unittest.SkipTest as exc:   # would skip this test, not fail
            self.fail('TooSlow reached the command line: %s' % exc)
        self.assertEqual(1, status)
        self.assertIn('no nested figures on this machine: L2 bn1 had not '
                      'booted after 300 s', stderr.getvalue())
        self.assertIn('faster or less loaded machine', stderr.getvalue())

    def test_movers_lists_plugins(self):
        proc = self._vmbeam('movers')
        self.assertEqual(0, proc.returncode, proc.stderr)
        self.assertIn('zerocopy', proc.stdout)
        self.assertIn('memfd', proc.stdout)


class TestNestedTable(testtools.TestCase):

    def test_disk_size_and_errors_have_columns(self):
        table = nested_bench.format_nested_table([
            {'method': 'nested', 'disk_mib': 64, 'l1_boot_ms': 17000.0,
             'standby_ms': 0.0, 'sibling_ready_ms': 9000.0,
             'end_to_end_ms': 20000.0, 'total_ms': 600.0,
             'downtime_ms': 130.0, 'transferred_bytes': 330000,
             'disk_errors': 0, 'ok': True},
            {'method': 'bare (QMP by hand)', 'downtime_ms': 120.0}])
        lines = table.splitlines()
        self.assertEqual('method | disk MiB | L1 boot ms | standby ms | '
                         'L1 ready ms (run) | end-to-end ms | total ms | '
                         'downtime ms | bytes | disk errors | ok', lines[0])
        self.assertEqual('nested | 64 | 17000.0 | 0.0 | 9000.0 | 20000.0 | '
                         '600.0 | 130.0 | 330000 | 0 | True', lines[2])
        # What a row does not have stays empty, not "None".
        self.assertEqual('bare (QMP by hand) |  |  |  |  |  |  | 120.0 |  '
                         '|  | ', lines[3])
