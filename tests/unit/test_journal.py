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

import json
import os
import subprocess
import sys

import fixtures
import testtools

from nova_vmbeam import exception
from nova_vmbeam import records
from nova_vmbeam.rejuvenation import journal as journal_mod


class TestJournal(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.journal = journal_mod.Journal(os.path.join(self.dir, 'j.json'))

    def test_empty_journal_has_no_active_generation(self):
        state = self.journal.load()
        self.assertIsNone(state.active)
        self.assertEqual({}, state.generations)

    def test_switchover_marks_per_guest(self):
        self.assertFalse(self.journal.is_switching('g/1'))
        self.journal.mark_switching('g/1')
        self.journal.mark_switching('g2')
        self.assertTrue(self.journal.is_switching('g/1'))
        # Beside the journal, which itself is not rewritten for a mark.
        self.assertFalse(os.path.exists(self.journal.path))
        self.journal.clear_switching('g/1')
        self.assertFalse(self.journal.is_switching('g/1'))
        self.assertTrue(self.journal.is_switching('g2'))
        self.journal.clear_switching()
        self.assertFalse(self.journal.is_switching('g2'))
        self.journal.clear_switching('never-marked')

    def test_update_saves_atomically_and_leaves_no_temp_files(self):
        with self.journal.update() as state:
            state.active = 3
        self.assertEqual(3, self.journal.load().active)
        self.assertEqual(['j.json'], sorted(os.listdir(self.dir)))
        with open(self.journal.path) as f:
            self.assertEqual(3, json.load(f)['active'])

    def test_failed_update_keeps_the_old_journal(self):
        with self.journal.update() as state:
            state.active = 1

        def fail():
            with self.journal.update() as state:
                state.active = 2
                raise RuntimeError('crash mid-update')
        self.assertRaises(RuntimeError, fail)
        self.assertEqual(1, self.journal.load().active)

    def test_other_version_is_refused(self):
        with open(self.journal.path, 'w') as f:
            json.dump({'version': 99}, f)
        exc = self.assertRaises(exception.VMBeamError, self.journal.load)
        self.assertIn('version 99', str(exc))

    # As version 1 wrote it: a standby generation with a "shell" (now a
    # prepared destination), a run taking one over, health reports in
    # the kind-specific shapes (colocated 'libvirtd', nested 'l1').
    V1_JOURNAL = (
        '{"active": 1, "history": [{"aging_after": {"generation": 2, '
        '"guests": ["l2"], "l1": {"pid": 77, "rss_kib": 5000}, "libvirt": '
        'true, "running": true, "address": "10.0.0.12"}, "from": 1, '
        '"guests": {}, "id": "r0", "state": "completed", "to": 2}], '
        '"run": {"aging_before": {"generation": 1, "guests": {"g0": '
        '{"overhead_kib": 900, "pid": 41}}, "libvirtd": {"fds": 30, "pid": '
        '40, "rss_kib": 20000}, "running": true, "virtlogd": {"fds": 5, '
        '"pid": 39, "rss_kib": 3000}}, "begun": 10.0, "from": 1, '
        '"guests": {"g0": {"shell": {"digest": "ab", "mover": "zerocopy", '
        '"prepare_ms": 200.0, "state": "ready"}, "state": "pending", '
        '"uuid": "u0"}}, "id": "r1", "mover": "zerocopy", '
        '"sibling_ready_ms": 0.0, "standby": true, "started": 11.0, '
        '"state": "running", "to": 3}, "siblings": {"1": {"base": '
        '"/s/siblings/gen1", "generation": 1, "host_uuid": "h1", "kind": '
        '"colocated", "state": "active", "uri": "qemu:///system?socket=x"}, '
        '"3": {"base": "/s/siblings/gen3", "generation": 3, "host_uuid": '
        '"h3", "kind": "colocated", "ready_ms": 300.0, "shells": {"g0": '
        '{"digest": "ab", "mover": "zerocopy", "prepare_ms": 200.0, '
        '"state": "ready"}}, "state": "standby", "uri": "qemu:///y"}}, '
        '"version": 1}')

    def test_version_1_journal_is_migrated_on_load(self):
        for text in (self.V1_JOURNAL,
                     # the first journals had no version key at all
                     self.V1_JOURNAL.replace(', "version": 1', '')):
            with open(self.journal.path, 'w') as f:
                f.write(text)
            state = self.journal.load()
            standby = state.generations[3]
            self.assertEqual(('standby', 'colocated', 300.0, 'qemu:///y'),
                             (standby.state, standby.kind, standby.ready_ms,
                              standby.uri))
            self.assertEqual(
                {'g0': records.PreparedDestination(
                    digest='ab', mover='zerocopy', prepare_ms=200.0,
                    state=records.READY)},
                standby.prepared)
            self.assertEqual('h3', standby.sibling['host_uuid'])
            self.assertNotIn('shells', standby.sibling)
            run = state.run
            self.assertEqual(('r1', 1, 3, 'running', True),
                             (run.id, run.source, run.target, run.state,
                              run.standby))
            entry = run.guests['g0']
            self.assertEqual((records.PENDING, 'u0', records.READY),
                             (entry.state, entry.uuid,
                              entry.prepared.state))
            before = run.aging_before
            self.assertEqual(('libvirtd', 40, 20000, 30),
                             (before.daemon.name, before.daemon.pid,
                              before.daemon.rss_kib, before.daemon.fds))
            self.assertEqual(['virtlogd'],
                             [h.name for h in before.helpers])
            self.assertEqual(900, before.guests['g0'].overhead_kib)
            nested = state.history[0].aging_after
            self.assertEqual(('l1', 77, 5000),
                             (nested.daemon.name, nested.daemon.pid,
                              nested.daemon.rss_kib))
            self.assertEqual(['l2'], sorted(nested.guests))
            self.assertTrue(nested.libvirt_alive)
            # Written back in the new format on the next change.
            with self.journal.update() as st:
                st.active = 3
            with open(self.journal.path) as f:
                written = json.load(f)
            self.assertEqual(journal_mod.VERSION, written['version'])
            self.assertEqual({'1', '3'}, set(written['generations']))
            self.assertEqual('ready', written['generations']['3'][
                'prepared']['g0']['state'])
            self.assertEqual('ready', written['run']['guests']['g0'][
                'prepared']['state'])
            self.assertEqual('libvirtd', written['run']['aging_before'][
                'daemon']['name'])
            # Stable: what is loaded encodes to the very text saved, so
            # update() compares with the file and rewrites only changes.
            with open(self.journal.path) as f:
                self.assertEqual(f.read(),
                                 journal_mod._encode(self.journal.load()))
            mtime = os.stat(self.journal.path).st_mtime_ns
            with self.journal.update():
                pass
            self.assertEqual(mtime, os.stat(self.journal.path).st_mtime_ns)
            self.assertEqual(self.journal.load(), state.__class__(
                active=3, generations=state.generations, run=state.run,
                history=state.history))

    def test_lock_excludes_a_second_orchestrator_and_dies_with_it(self):
        code = ('import sys, time\n'
                'from nova_vmbeam.rejuvenation import journal\n'
                'j = journal.Journal(sys.argv[1])\n'
                'with j.locked():\n'
                '    print("locked", flush=True)\n'
                '    time.sleep(60)\n')
        holder = subprocess.Popen([sys.executable, '-c', code,
                                   self.journal.path],
                                  stdout=subprocess.PIPE, text=True)
        self.addCleanup(holder.wait)
        self.addCleanup(holder.kill)
        self.assertEqual('locked\n', holder.stdout.readline())
        exc = self.assertRaises(journal_mod.AlreadyRunning,
                                self.journal.locked().__enter__)
        self.assertIn(str(holder.pid), str(exc))
        holder.kill()
        holder.wait()
        with self.journal.locked():
            pass
