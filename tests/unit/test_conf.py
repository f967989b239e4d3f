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

import testtools

from nova_vmbeam.conf import aging
from nova_vmbeam.conf import driver
from nova_vmbeam.conf import opts
from nova_vmbeam.conf import vmbeam
from nova_vmbeam import siblings
from tests.unit import fakes


class TestOptions(testtools.TestCase):

    def test_every_option_has_help(self):
        groups = {group.name: options for group, options in opts.list_opts()}
        names = [o.name for o in groups['vmbeam']]
        self.assertIn('ram_pool_path', names)
        self.assertIn('default_mover', names)
        for group, options in groups.items():
            for option in options:
                self.assertTrue(option.help and len(option.help) > 20,
                                '%s.%s' % (group, option.name))

    def test_entry_point_lists_all_options(self):
        groups = {group.name: options for group, options in opts.list_opts()}
        self.assertEqual(len(vmbeam.ALL_OPTS) + len(driver.driver_opts),
                         len(groups['vmbeam']))
        self.assertEqual(len(aging.ALL_OPTS), len(groups['vmbeam_aging']))


class TestIsolation(testtools.TestCase):

    def test_overrides_do_not_leak_between_config_objects(self):
        first = fakes.make_conf(sibling_netns='ns-a')
        self.assertEqual('ns-a', first.vmbeam.sibling_netns)
        second = fakes.make_conf()
        self.assertIsNone(second.vmbeam.sibling_netns)


class TestDefaultMover(testtools.TestCase):
    """A request that names no mover: the option, else the kind's."""

    def test_follows_the_sibling_kind_unless_set(self):
        conf = fakes.make_conf()
        self.assertIsNone(conf.vmbeam.default_mover)
        self.assertEqual('zerocopy', siblings.default_mover(conf))
        conf.set_override('sibling_kind', 'nested', 'vmbeam')
        self.assertEqual('nested', siblings.default_mover(conf))
        conf.set_override('default_mover', 'precopy', 'vmbeam')
        self.assertEqual('precopy', siblings.default_mover(conf))
