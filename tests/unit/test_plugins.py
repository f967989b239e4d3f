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

"""The one plugin loader (nova_vmbeam.plugins) and the one error root."""

from unittest import mock

import testtools

from nova_vmbeam import exception
from nova_vmbeam import hypervisor
from nova_vmbeam.nested import host as nested_host
from nova_vmbeam import plugins
from nova_vmbeam import pool
from nova_vmbeam.pool import base as pool_base
from nova_vmbeam.pool import pagemoverd
from tests.unit import fakes

KINDS = (plugins.SIBLINGS, plugins.MOVERS, plugins.POOLS, plugins.PROBES)


class TestLoader(testtools.TestCase):

    def test_every_installed_plugin_derives_from_its_base(self):
        for kind in KINDS:
            names = plugins.available(kind)
            self.assertTrue(names, kind.namespace)
            for name in names:
                plugins.plugin_class(kind, name)

    def test_unknown_name_names_the_kind_and_lists_the_installed(self):
        for kind in KINDS:
            exc = self.assertRaises(exception.UnknownPlugin,
                                    plugins.plugin_class, kind, 'warp')
            self.assertIsInstance(exc, exception.InvalidInput)
            self.assertIn("Unknown %s 'warp'" % kind.noun, str(exc))
            self.assertIn(', '.join(plugins.available(kind)), str(exc))
            self.assertIn(kind.fix, str(exc))

    def test_load_all_refuses_before_making_any(self):
        made = []
        with mock.patch.object(plugins, 'load',
                               side_effect=lambda *a: made.append(a)):
            self.assertRaises(exception.UnknownPlugin, plugins.load_all,
                              plugins.MOVERS, ['zerocopy', 'warp'],
                              fakes.make_conf())
        self.assertEqual([], made)

    def test_a_class_of_another_kind_is_refused(self):
        manager = mock.Mock(driver=dict)
        with mock.patch('stevedore.driver.DriverManager',
                        return_value=manager):
            exc = self.assertRaises(exception.InvalidInput,
                                    plugins.plugin_class, plugins.MOVERS,
                                    'zerocopy')
        self.assertIn('MoverBase', str(exc))


class TestErrorRoot(testtools.TestCase):

    def test_every_error_derives_from_vmbeam_error(self):
        errors = [obj for obj in vars(exception).values()
                  if isinstance(obj, type) and issubclass(obj, Exception)]
        self.assertIn(exception.MigrationFailed, errors)
        for error in errors:
            self.assertTrue(issubclass(error, exception.VMBeamError), error)


class TestDeclaredCapabilities(testtools.TestCase):

    def test_the_nested_movers_needs_are_declared_by_who_meets_them(self):
        self.assertTrue(issubclass(nested_host.NestedHost,
                                   hypervisor.PoolAttachingHypervisor))
        self.assertTrue(issubclass(pagemoverd.PagemoverdPool,
                                   pool_base.AttachablePool))
        self.assertFalse(issubclass(pool.RamPool, pool_base.AttachablePool))
        self.assertIsNone(pool.RamPool('/dev/shm/x').daemon_info())
