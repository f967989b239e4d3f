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

"""The runtime package never imports the dev tools."""

import ast
import os

import testtools

import nova_vmbeam

RUNTIME = os.path.dirname(os.path.abspath(nova_vmbeam.__file__))
DEV_PACKAGE = 'vmbeam_devtools'


def imported_modules(path):
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


class TestLayering(testtools.TestCase):

    def test_runtime_imports_no_dev_tooling(self):
        offending = []
        for dirpath, _dirnames, filenames in os.walk(RUNTIME):
            for name in filenames:
                if not name.endswith('.py'):
                    continue
                path = os.path.join(dirpath, name)
                for module in imported_modules(path):
                    if module.split('.')[0] == DEV_PACKAGE:
                        offending.append('%s: %s' % (
                            os.path.relpath(path, RUNTIME), module))
        self.assertEqual([], offending)
