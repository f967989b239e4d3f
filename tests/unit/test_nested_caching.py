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

"""The choice of the BAR mapping L2 QEMUs use in an L1 (nested/caching)."""

import os
import tempfile

from unittest import mock

import testtools

from nova_vmbeam.nested import caching
from nova_vmbeam.nested import sibling as nested_sibling
from tests.unit import test_nested


class TestRamMapping(testtools.TestCase):

    def test_auto_keeps_l2_ram_write_back_where_a_bar_file_can(self):
        for accel, vendor in (('tcg', caching.INTEL), ('tcg', caching.AMD),
                              ('kvm', caching.INTEL)):
            choice = caching.choose('auto', accel, vendor)
            self.assertEqual('resource2', choice.file, (accel, vendor))
            self.assertTrue(choice.write_back, (accel, vendor))
        self.assertIn('does not emulate page attributes',
                      caching.choose('auto', 'tcg', caching.AMD).reason)
        self.assertIn('EPT', caching.choose('auto', 'kvm',
                                            caching.INTEL).reason)

    def test_auto_on_amd_kvm_takes_device_dax(self):
        for vendor in (caching.AMD, caching.OTHER):
            choice = caching.choose('auto', 'kvm', vendor)
            self.assertEqual(caching.DAX, choice.file)
            self.assertTrue(choice.dax)
            self.assertTrue(choice.write_back)
            self.assertIn('device-DAX is, as the L1 kernel maps it as RAM',
                          choice.reason)
            self.assertEqual(2 << 20, choice.pool_head_bytes)

    def test_a_named_file_is_kept_with_what_it_gives(self):
        choice = caching.choose('resource2', 'kvm', caching.AMD)
        self.assertEqual(('resource2', False), (choice.file,
                                                choice.write_back))
        self.assertIn('set bar_mapping = auto or dax', choice.reason)
        choice = caching.choose('resource2_wc', 'kvm', caching.INTEL)
        self.assertEqual(('resource2_wc', True), (choice.file,
                                                  choice.write_back))
        self.assertEqual(0, choice.pool_head_bytes)

    def test_dax_named_is_dax_under_any_accelerator(self):
        for accel, vendor in (('tcg', caching.INTEL), ('kvm', caching.INTEL),
                              ('kvm', caching.AMD)):
            choice = caching.choose('dax', accel, vendor)
            self.assertEqual((caching.DAX, True, 2 << 20),
                             (choice.file, choice.write_back,
                              choice.pool_head_bytes))

    def test_cpu_vendor(self):
        fd, path = tempfile.mkstemp()
        os.close(fd)
        self.addCleanup(os.unlink, path)
        for text, vendor in (
                ('processor\t: 0\nvendor_id\t: AuthenticAMD\n', caching.AMD),
                ('processor\t: 0\nvendor_id\t: GenuineIntel\n',
                 caching.INTEL),
                ('processor\t: 0\nvendor_id\t: CentaurHauls\n',
                 caching.OTHER),
                ('processor\t: 0\n', caching.OTHER)):
            with open(path, 'w') as f:
                f.write(text)
            self.assertEqual(vendor, caching.cpu_vendor(path))
        # This host's, whatever it is.
        self.assertIn(caching.cpu_vendor(), (caching.INTEL, caching.AMD,
                                             caching.OTHER))


class TestSiblingRamMapping(testtools.TestCase):
    """What a nested sibling's guests map, from its setting and its host."""

    def test_auto_on_the_l1s_accelerator_and_this_cpu(self):
        sibling = nested_sibling.NestedSibling(test_nested.make_conf(), 1)
        self.assertEqual('tcg', sibling.accel)
        self.assertEqual(('resource2', True),
                         (sibling.ram_mapping.file,
                          sibling.ram_mapping.write_back))
        amd_kvm = nested_sibling.NestedSibling(test_nested.make_conf(), 2)
        amd_kvm.accel = 'kvm'
        with mock.patch.object(caching, 'cpu_vendor',
                               return_value=caching.AMD):
            self.assertEqual((caching.DAX, True),
                             (amd_kvm.ram_mapping.file,
                              amd_kvm.ram_mapping.write_back))

    def test_a_named_file_is_used(self):
        sibling = nested_sibling.NestedSibling(
            test_nested.make_conf(bar_mapping='resource2_wc'), 1)
        self.assertEqual('resource2_wc', sibling.ram_mapping.file)
