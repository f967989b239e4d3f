"""The vmbeam command's handling of its own input."""

import contextlib
import io

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
