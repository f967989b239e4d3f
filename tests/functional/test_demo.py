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

"""The README's main job, ``vmbeam demo``, as its command runs it."""

import argparse
import io

import fixtures

from tests.functional import base
from vmbeam_devtools import cli as devtools_cli


class TestDemo(base.PrivateStateTestCase):

    def test_demo_rejuvenates_its_guests_and_exits_zero(self):
        self.useFixture(fixtures.MonkeyPatch(
            'vmbeam_devtools.cli.CONF', self.conf))
        out = io.StringIO()
        self.useFixture(fixtures.MonkeyPatch('sys.stdout', out))
        args = argparse.Namespace(guests=1, ram_mib=128, dirty_mib_s=8,
                                  mover=None, concurrency=None)
        rc = devtools_cli.cmd_demo(args)
        text = out.getvalue()
        self.assertEqual(0, rc, text)
        self.assertIn('run completed', text)
        self.assertIn('Generation 1 is retired; generation 2 is active.',
                      text)
        self.assertIn('on generation 2', text)
        self.assertIn(', 0 errors', text)
