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

"""The vmbeam command's handling of its own input."""

import contextlib
import io
import os

import fixtures
import testtools

from nova_vmbeam import cli
from nova_vmbeam.conf import CONF


class TestConfigFiles(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.addCleanup(CONF.reset)
        self.addCleanup(CONF.clear)

    def test_missing_config_file_is_one_line_and_exit_2(self):
        path = self.useFixture(fixtures.TempDir()).join('missing.conf')
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = cli.main(['--config-file', path, 'status'])
        self.assertEqual(2, rc)
        lines = err.getvalue().splitlines()
        self.assertEqual(1, len(lines), err.getvalue())
        self.assertIn(path, lines[0])
        self.assertIn('--config-file', lines[0])
        self.assertNotIn('Traceback', err.getvalue())


class TestDevCommands(testtools.TestCase):
    """demo, bench and image come from the dev tools' entry points."""

    def test_dev_commands_are_offered(self):
        parser = cli.build_parser()
        for argv in (['bench', '--sizes', '512', '--json'],
                     ['demo', '--guests', '2'], ['image']):
            args = parser.parse_args(argv)
            self.assertEqual('vmbeam_devtools.cli',
                             args.func.__module__, argv)

    def test_runtime_without_the_dev_tools(self):
        self.useFixture(fixtures.MockPatch(
            'stevedore.extension.ExtensionManager.list_entry_points',
            return_value=[]))
        parser = cli.build_parser()
        self.assertEqual('status', parser.parse_args(['status']).command)
        with contextlib.redirect_stderr(io.StringIO()):
            self.assertRaises(SystemExit, parser.parse_args, ['bench'])

    def test_a_missing_dev_package_is_no_command(self):
        self.assertIsNone(cli._skip_missing(
            None, None, ModuleNotFoundError("No module named "
                                            "'vmbeam_devtools'")))
        self.assertRaises(ValueError, cli._skip_missing, None, None,
                          ValueError('broken'))


class TestStateOwner(testtools.TestCase):
    """Root on a state_path that an unprivileged nova-compute owns."""

    def setUp(self):
        super().setUp()
        self.addCleanup(CONF.reset)
        self.addCleanup(CONF.clear)
        self.state = self.useFixture(fixtures.TempDir()).path
        self.conf_file = os.path.join(self.state, 'vmbeam.conf')
        with open(self.conf_file, 'w') as f:
            f.write('[vmbeam]\nstate_path = %s\n' % self.state)

    def run_status(self):
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = cli.main(['--config-file', self.conf_file, 'status'])
        return rc, err.getvalue()

    def test_root_is_refused_on_nova_state_and_changes_nothing(self):
        if os.geteuid() != 0:
            self.skipTest('the refusal is for root')
        os.chown(self.state, 65534, 65534)
        before = sorted(os.listdir(self.state))
        rc, err = self.run_status()
        self.assertEqual(2, rc)
        self.assertIn('belongs to', err)
        self.assertIn('sudo -u', err)
        self.assertEqual(before, sorted(os.listdir(self.state)))
