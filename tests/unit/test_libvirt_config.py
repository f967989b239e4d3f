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

import xml.etree.ElementTree as ET

import testtools

from nova_vmbeam import guest
from nova_vmbeam.libvirt import config


def _spec(ram):
    return guest.GuestSpec(name='g1', uuid='0f9d5c2e-0000-4000-8000-00000000'
                           '0001', ram_mib=512, ram=ram, kernel='/img/k',
                           initrd='/img/i', cmdline='console=ttyS0',
                           console_log='/logs/g1.log')


class TestDomainXml(testtools.TestCase):

    def test_pool_ram_goes_through_qemu_commandline(self):
        ram = guest.RamBacking('file', '/pool/g1.ram')
        xml = config.domain_xml(_spec(ram), disks=['/d/g1.qcow2'],
                                bridges=[('br0', '52:54:00:00:00:01')],
                                tap_prefix='vb2-')
        dom = ET.fromstring(xml)
        args = [a.get('value') for a in
                dom.findall('{%s}commandline/{%s}arg' %
                            (config.QEMU_NS, config.QEMU_NS))]
        self.assertIn('memory-backend-file,id=vmbeam-ram,size=512M,'
                      'mem-path=/pool/g1.ram,share=on', args)
        self.assertEqual(['-machine', 'memory-backend=vmbeam-ram'],
                         args[-2:])
        self.assertEqual('qemu', dom.get('type'))
        self.assertEqual('/d/g1.qcow2',
                         dom.find('devices/disk/source').get('file'))
        self.assertEqual('vb2-0',
                         dom.find('devices/interface/target').get('dev'))
        self.assertEqual('on', dom.find('devices/serial/source').get(
            'append'))
        self.assertEqual(ram, config.ram_backing(xml))

    def test_anonymous_ram_has_no_commandline(self):
        xml = config.domain_xml(_spec(guest.RamBacking()), accel='kvm')
        self.assertNotIn('commandline', xml)
        self.assertIn("type=\"kvm\"", xml.replace("'", '"'))
        self.assertEqual(guest.RamBacking(), config.ram_backing(xml))

    def test_memfd_is_refused_under_libvirt(self):
        self.assertRaises(ValueError, config.domain_xml,
                          _spec(guest.RamBacking('memfd')))

    def test_incoming_is_added_and_removed(self):
        xml = config.domain_xml(_spec(guest.RamBacking('file', '/p/x')))
        incoming = config.with_incoming(xml, ['defer'])
        self.assertIn('-incoming', incoming)
        self.assertEqual(config.ram_backing(xml),
                         config.ram_backing(incoming))
        back = config.without_incoming(incoming)
        self.assertNotIn('-incoming', back)
        self.assertIn('mem-path=/p/x', back)

    def test_cpr_channels_cannot_go_through_libvirt(self):
        xml = config.domain_xml(_spec(guest.RamBacking('file', '/p/x')))
        self.assertRaises(ValueError, config.with_incoming, xml,
                          [{'channel-type': 'cpr'}])

    def test_guest_spec_read_back_from_xml(self):
        ram = guest.RamBacking('file', '/pool/g1.ram')
        xml = config.domain_xml(_spec(ram))
        spec = config.guest_spec(xml)
        self.assertEqual('g1', spec.name)
        self.assertEqual(512, spec.ram_mib)
        self.assertEqual(ram, spec.ram)
        self.assertEqual('/logs/g1.log', spec.console_log)
        self.assertEqual(xml, spec.domain_xml)
