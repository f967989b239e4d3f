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

"""Files replaced atomically (nova_vmbeam.files)."""

import json
import os
import stat
from unittest import mock

import fixtures
import testtools

from nova_vmbeam import files


class TestReplace(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.path = os.path.join(self.dir, 'sub', 'state.json')

    def test_json_written_and_replaced(self):
        files.replace_json(self.path, {'b': 1, 'a': [2]}, sort_keys=True)
        with open(self.path) as f:
            self.assertEqual('{"a": [2], "b": 1}', f.read())
        files.replace_json(self.path, {'c': 3}, indent=1)
        with open(self.path) as f:
            self.assertEqual({'c': 3}, json.load(f))
        self.assertEqual(0o600, stat.S_IMODE(os.stat(self.path).st_mode))
        self.assertEqual(['state.json'], os.listdir(os.path.dirname(
            self.path)))

    def test_durable_waits_for_file_and_directory(self):
        with mock.patch.object(os, 'fsync', wraps=os.fsync) as fsync:
            files.replace(self.path, 'x', durable=True)
        self.assertEqual(2, fsync.call_count)
        with mock.patch.object(os, 'fsync') as fsync:
            files.replace(self.path, 'y')
        fsync.assert_not_called()

    def test_a_failed_rename_leaves_the_old_file_and_no_temporary(self):
        files.replace(self.path, 'old')
        with mock.patch.object(os, 'replace', side_effect=OSError('full')):
            self.assertRaises(OSError, files.replace, self.path, 'new')
        with open(self.path) as f:
            self.assertEqual('old', f.read())
        self.assertEqual(['state.json'], os.listdir(os.path.dirname(
            self.path)))
