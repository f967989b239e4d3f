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


"""An L2's kernel and initrd, named in its L1 (the XML side)."""

import xml.etree.ElementTree as ET

import testtools

from nova_vmbeam.nested import bootfiles

UUID = '6f1c2d3e-4f5a-4b6c-8d7e-0123456789ab'
DOMAIN = ('<domain type="qemu"><name>i-1</name><uuid>%s</uuid><os>'
          '<type>hvm</type><kernel>/var/lib/nova/instances/%s/kernel'
          '</kernel><initrd>/var/lib/nova/instances/%s/ramdisk</initrd>'
          '<cmdline>console=ttyS0</cmdline></os><devices/></domain>'
          % (UUID, UUID, UUID))


class TestL1Files(testtools.TestCase):

    def test_the_domain_names_the_l1_copies_and_keeps_the_l0_files(self):
        xml, files = bootfiles.to_l1_files(DOMAIN)
        self.assertEqual(
            {'kernel': '/var/lib/nova/instances/%s/kernel' % UUID,
             'initrd': '/var/lib/nova/instances/%s/ramdisk' % UUID}, files)
        dom = ET.fromstring(xml)
        self.assertEqual('/run/vmbeam-boot/%s/kernel' % UUID,
                         dom.findtext('os/kernel'))
        self.assertEqual('/run/vmbeam-boot/%s/initrd' % UUID,
                         dom.findtext('os/initrd'))
        self.assertEqual('console=ttyS0', dom.findtext('os/cmdline'))
        # A moving guest's XML (from its L1) is kept, and so are its files.
        self.assertEqual((xml, files), bootfiles.to_l1_files(xml))

    def test_a_domain_without_a_kernel_is_left_alone(self):
        plain = ('<domain><uuid>%s</uuid><os><type>hvm</type></os>'
                 '</domain>' % UUID)
        self.assertEqual((plain, {}), bootfiles.to_l1_files(plain))

    def test_a_kernel_the_appliance_carries_is_the_l1_s_own(self):
        own = ('<domain><uuid>%s</uuid><os><kernel>/opt/vmbeam/guest/vmlinux'
               '</kernel></os></domain>' % UUID)
        self.assertEqual((own, {}), bootfiles.to_l1_files(own))

    def test_a_relative_path_is_refused_with_the_fix(self):
        exc = self.assertRaises(
            bootfiles.BootFileError, bootfiles.to_l1_files,
            DOMAIN.replace('/var/lib/nova/instances/%s/kernel' % UUID,
                           'kernel'))
        self.assertIn('not an absolute path', str(exc))
        self.assertIn('absolute path.', str(exc))

    def test_paths_in_the_l1_are_made_from_a_uuid_only(self):
        self.assertRaises(ValueError, bootfiles.l1_path, '; rm -rf /',
                          'kernel')
