import json
import os
import subprocess
import sys

import fixtures
import testtools

from nova_vmbeam import exception
from nova_vmbeam.rejuvenation import journal as journal_mod


class TestJournal(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.journal = journal_mod.Journal(os.path.join(self.dir, 'j.json'))

    def test_empty_journal_has_no_active_generation(self):
        state = self.journal.load()
        self.assertIsNone(state['active'])
        self.assertEqual({}, state['siblings'])

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
            state['active'] = 3
        self.assertEqual(3, self.journal.load()['active'])
        self.assertEqual(['j.json'], sorted(os.listdir(self.dir)))
        with open(self.journal.path) as f:
            self.assertEqual(3, json.load(f)['active'])

    def test_failed_update_keeps_the_old_journal(self):
        with self.journal.update() as state:
            state['active'] = 1

        def fail():
            with self.journal.update() as state:
                state['active'] = 2
                raise RuntimeError('crash mid-update')
        self.assertRaises(RuntimeError, fail)
        self.assertEqual(1, self.journal.load()['active'])

    def test_other_version_is_refused(self):
        with open(self.journal.path, 'w') as f:
            json.dump({'version': 99}, f)
        exc = self.assertRaises(exception.VMBeamError, self.journal.load)
        self.assertIn('version 99', str(exc))

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
