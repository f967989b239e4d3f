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

import time

import fixtures
import testtools
from unittest import mock

from nova_vmbeam import exception
from nova_vmbeam import guest
from nova_vmbeam import movers
from nova_vmbeam.movers import base
from nova_vmbeam.qemu import version
from tests.unit import fakes


def _spec(kind, path=None):
    return guest.GuestSpec(name='g1', uuid='uuid-1', ram_mib=64,
                           ram=guest.RamBacking(kind, path))


class TestLoading(testtools.TestCase):

    def test_all_movers_are_plugins(self):
        self.assertEqual(['cpr', 'nested', 'precopy', 'zerocopy'],
                         movers.available())
        conf = fakes.make_conf()
        for name in movers.available():
            mover = movers.load(name, conf)
            self.assertIsInstance(mover, base.MoverBase)
            self.assertEqual(name, mover.name)

    def test_unknown_mover_lists_available(self):
        exc = self.assertRaises(exception.UnknownPlugin, movers.load,
                                'teleport', fakes.make_conf())
        self.assertIn("'teleport'", str(exc))
        self.assertIn('cpr, nested, precopy, zerocopy', str(exc))


class TestChecks(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.conf = fakes.make_conf()
        version.qemu_version.cache_clear()
        self.addCleanup(version.qemu_version.cache_clear)

    def test_zerocopy_refuses_unshared_ram_naming_alternatives(self):
        mover = movers.load('zerocopy', self.conf)
        exc = self.assertRaises(exception.RamNotShareable, mover.check,
                                _spec('anonymous'))
        self.assertIn('ram_pool_path', str(exc))
        self.assertIn('precopy', str(exc))
        exc = self.assertRaises(exception.RamNotShareable, mover.check,
                                _spec('memfd'))
        self.assertIn('cpr', str(exc))
        mover.check(_spec('file', '/pool/uuid-1.ram'))

    def test_cpr_needs_memfd(self):
        mover = movers.load('cpr', self.conf)
        with mock.patch.object(version, 'qemu_version',
                               return_value=(10, 0, 2)):
            exc = self.assertRaises(exception.RamNotShareable, mover.check,
                                    _spec('file', '/p/x.ram'))
            self.assertIn('zerocopy', str(exc))
            mover.check(_spec('memfd'))

    def test_cpr_refuses_old_qemu_with_versions(self):
        mover = movers.load('cpr', self.conf)
        with mock.patch.object(version, 'qemu_version',
                               return_value=(7, 2, 0)):
            exc = self.assertRaises(exception.QemuTooOld, mover.check,
                                    _spec('memfd'))
        self.assertIn('10.0.0', str(exc))
        self.assertIn('7.2.0', str(exc))
        self.assertIn('bookworm-backports', str(exc))
        self.assertIn('zerocopy', str(exc))

    def test_qemu_version_of_missing_binary_names_fix(self):
        exc = self.assertRaises(exception.InvalidInput,
                                version.qemu_version, '/nonexistent/qemu')
        self.assertIn('qemu_binary', str(exc))

    def test_precopy_refuses_pool_file_it_would_overwrite(self):
        mover = movers.load('precopy', self.conf)
        exc = self.assertRaises(exception.RamNotShareable, mover.check,
                                _spec('file', '/p/x.ram'))
        self.assertIn('zerocopy', str(exc))
        mover.check(_spec('anonymous'))
        mover.check(_spec('memfd'))


class TestMoveSafety(testtools.TestCase):
    """The order of operations that keeps a guest from running twice."""

    def setUp(self):
        super().setUp()
        self.conf = fakes.make_conf(migration_timeout=2.0, qmp_timeout=2.0)
        self.journal = []
        run_dir = self.useFixture(fixtures.TempDir()).path
        self.source = fakes.FakeEndpoint(_spec('anonymous'), 'source',
                                         self.journal)
        self.target = fakes.FakeHypervisor(run_dir, self.journal)
        self.mover = movers.load('precopy', self.conf)

    def _index(self, entry):
        return self.journal.index(entry)

    def test_successful_move_resumes_destination_before_retiring(self):
        result = self.mover.move(self.source, self.target)
        self.assertTrue(result.ok)
        self.assertIs(self.target.launched[0], result.destination)
        self.assertLess(self._index(('source', 'migrate')),
                        self._index(('dest', 'cont')))
        self.assertLess(self._index(('dest', 'cont')),
                        self._index(('source', 'retire')))
        self.assertNotIn(('source', 'cont'), self.journal)

    def test_failed_migration_kills_destination_then_resumes_source(self):
        self.source.migrate_result = 'failed'
        self.source.state = 'running'

        def migrate_stops_source(dest):
            self.source.state = 'paused'
        self.target.on_launch = migrate_stops_source
        exc = self.assertRaises(exception.MoveFailed, self.mover.move,
                                self.source, self.target)
        self.assertIn('transfer', str(exc))
        self.assertLess(self._index(('dest', 'destroy')),
                        self._index(('source', 'cont')))
        self.assertEqual('running', self.source.state)
        self.assertNotIn(('dest', 'cont'), self.journal)

    def test_destination_that_died_is_refused_before_switchover(self):
        def dies_after_migrate(dest):
            self.source.fail = {}
            original = self.source.execute

            def execute(command, **kw):
                if command == 'migrate':
                    dest.is_alive = False
                return original(command, **kw)
            self.source.execute = execute
        self.target.on_launch = dies_after_migrate
        exc = self.assertRaises(exception.MoveFailed, self.mover.move,
                                self.source, self.target)
        self.assertIn('verify', str(exc))
        self.assertEqual('running', self.source.state)
        self.assertNotIn(('dest', 'cont'), self.journal)

    def test_source_running_again_is_never_switched_over(self):
        def source_resumed_by_someone(dest):
            original = self.source.execute

            def execute(command, **kw):
                result = original(command, **kw)
                if command == 'migrate':
                    self.source.state = 'running'
                return result
            self.source.execute = execute
        self.target.on_launch = source_resumed_by_someone
        self.assertRaises(exception.MoveFailed, self.mover.move,
                          self.source, self.target)
        self.assertNotIn(('dest', 'cont'), self.journal)
        self.assertIn(('dest', 'destroy'), self.journal)

    def test_failed_retire_after_resume_kills_source_not_destination(self):
        self.source.fail = {'retire': RuntimeError('quit hung')}
        result = self.mover.move(self.source, self.target)
        self.assertTrue(result.ok)
        self.assertIn(('source', 'destroy'), self.journal)
        self.assertNotIn(('dest', 'destroy'), self.journal)
        self.assertNotIn(('source', 'cont'), self.journal)

    def test_bad_input_changes_nothing(self):
        mover = movers.load('zerocopy', self.conf)
        self.assertRaises(exception.RamNotShareable, mover.move,
                          self.source, self.target)
        self.assertEqual([], self.journal)

    def test_failed_rollback_is_reported_for_the_operator(self):
        self.source.migrate_result = 'failed'
        self.source.fail = {'cont': RuntimeError('cannot resume')}

        def migrate_stops_source(dest):
            self.source.state = 'paused'
        self.target.on_launch = migrate_stops_source
        exc = self.assertRaises(exception.RollbackFailed, self.mover.move,
                                self.source, self.target)
        self.assertIn('pid 1000', str(exc))

    def test_resume_that_failed_but_ran_moves_forward(self):
        def cont_runs_then_errors(dest):
            original = dest.execute

            def execute(command, **kw):
                result = original(command, **kw)
                if command == 'cont':
                    raise exception.MonitorError('reply lost')
                return result
            dest.execute = execute
        self.target.on_launch = cont_runs_then_errors
        result = self.mover.move(self.source, self.target)
        self.assertTrue(result.ok)
        self.assertEqual('running', result.destination.state)
        self.assertNotIn(('dest', 'destroy'), self.journal)
        self.assertNotIn(('source', 'cont'), self.journal)

    def test_switchover_is_journalled_before_the_resume(self):
        calls = []
        result = self.mover.move(
            self.source, self.target,
            on_switchover=lambda: calls.append(list(self.journal)))
        self.assertTrue(result.ok)
        self.assertEqual(1, len(calls))
        self.assertNotIn(('dest', 'cont'), calls[0])

    def test_destination_is_kept_when_the_source_died(self):
        def source_dies_after_migrate(dest):
            original = self.source.execute

            def execute(command, **kw):
                result = original(command, **kw)
                if command == 'migrate':
                    self.source.is_alive = False
                    self.source.fail = {
                        'query-status': exception.MonitorError('gone')}
                return result
            self.source.execute = execute
        self.target.on_launch = source_dies_after_migrate
        exc = self.assertRaises(exception.RollbackFailed, self.mover.move,
                                self.source, self.target)
        self.assertIn('still there', str(exc))
        self.assertNotIn(('dest', 'destroy'), self.journal)
        self.assertNotIn(('dest', 'cont'), self.journal)

    def _emits_migration_events(self, endpoint, extra=()):
        """``endpoint`` reports a completed migration as QEMU does."""
        def events():
            if endpoint.migration != 'completed':
                return []
            now = time.time()
            stamp = {'seconds': int(now), 'microseconds': int(
                now % 1 * 1e6)}
            return [dict(event='MIGRATION', timestamp=stamp,
                         data={'status': 'completed'})] + [
                dict(event=name, timestamp=stamp, data={})
                for name in extra]
        endpoint.events = events

    def test_pause_asks_nothing_that_events_answered(self):
        self._emits_migration_events(self.source, extra=('STOP',))
        self.target.on_launch = self._emits_migration_events
        result = self.mover.move(self.source, self.target)
        self.assertTrue(result.ok)
        pause = self.journal[self._index(('source', 'migrate')):
                             self._index(('dest', 'cont'))]
        self.assertEqual([], [e for e in pause
                              if e[1] in ('query-migrate', 'query-status')])
        # The figures are asked for once the guest runs again.
        self.assertLess(self._index(('dest', 'cont')),
                        self._index(('source', 'query-migrate')))

    def test_destination_resumed_by_someone_else_owns_the_guest(self):
        self._emits_migration_events(self.source)

        def resumed_behind_our_back(dest):
            self._emits_migration_events(dest, extra=('RESUME',))
            original = dest.execute

            def execute(command, **kw):
                result = original(command, **kw)
                if command == 'migrate-incoming':
                    dest.state = 'running'
                return result
            dest.execute = execute
        self.target.on_launch = resumed_behind_our_back
        result = self.mover.move(self.source, self.target)
        # It may have written the shared RAM: the source is stale and
        # is killed, never resumed; the destination is kept.
        self.assertTrue(result.ok)
        self.assertIn(('source', 'destroy'), self.journal)
        self.assertNotIn(('source', 'cont'), self.journal)
        self.assertNotIn(('dest', 'destroy'), self.journal)
