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

"""Slow waits (nova_vmbeam.waiting)."""

import testtools

from nova_vmbeam import waiting


class Late(Exception):
    pass


class TestUntil(testtools.TestCase):

    def test_returns_the_first_true_result(self):
        results = iter([None, False, 'up'])
        self.assertEqual('up', waiting.until(lambda: next(results), 5,
                                             0.001, self.fail))

    def test_timed_out_after_the_timeout(self):
        def late():
            raise Late()
        self.assertRaises(Late, waiting.until, lambda: False, 0.02, 0.005,
                          late)

    def test_an_error_of_the_check_ends_the_wait_at_once(self):
        calls = []

        def check():
            calls.append(1)
            raise KeyError('gone')
        self.assertRaises(KeyError, waiting.until, check, 5, 0.001,
                          self.fail)
        self.assertEqual(1, len(calls))
