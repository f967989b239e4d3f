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


"""Guests' console logs of a nested sibling (the XML side)."""

import xml.etree.ElementTree as ET

import testtools

from nova_vmbeam.nested import consoles

UUID = '6f1c2d3e-4f5a-4b6c-8d7e-0123456789ab'
LOG = '/var/lib/nova/instances/%s/console.log' % UUID


def domain(devices, metadata=''):
    return ('<domain type="qemu"><name>i-1</name><uuid>%s</uuid>%s'
            '<devices>%s</devices></domain>' % (UUID, metadata, devices))


# What Nova's libvirt driver writes with virtlogd.
NOVA_SERIAL = ("<serial type='pty'><log file='%s' append='off'/>"
               "<target type='isa-serial' port='0'/></serial>"
               "<console type='pty'><target type='serial' port='0'/>"
               "</console>" % LOG)


class TestL1Console(testtools.TestCase):

    def test_nova_s_log_becomes_the_guest_s_port_in_the_l1(self):
        xml, path = consoles.to_l1_console(domain(
            NOVA_SERIAL, "<metadata><nova:instance xmlns:nova='http://"
            "openstack.org/xmlns/libvirt/nova/1.1'/></metadata>"))
        self.assertEqual(LOG, path)
        dom = ET.fromstring(xml)
        serial = dom.find('devices/serial')
        self.assertEqual('pipe', serial.get('type'))
        self.assertEqual({'path': '/dev/virtio-ports/vmbeam.console.'
                                  '6f1c2d3e4f5a4b6c'},
                         serial.find('source').attrib)
        self.assertIsNone(serial.find('log'))
        self.assertEqual('isa-serial', serial.find('target').get('type'))
        # libvirt makes the serial console again from the serial port.
        self.assertEqual([], dom.findall('devices/console'))
        # Nova's metadata is kept, and the L0 path kept beside it.
        self.assertEqual(2, len(dom.find('metadata')))
        self.assertEqual(LOG, consoles.log_path(xml))
        # A moving guest's XML is left as it is, and still says where.
        self.assertEqual((xml, LOG), consoles.to_l1_console(xml))

    def test_a_file_serial_is_a_log_too(self):
        xml, path = consoles.to_l1_console(domain(
            "<serial type='file'><source path='%s'/><target port='0'/>"
            "</serial>" % LOG))
        self.assertEqual(LOG, path)
        self.assertIn('vmbeam.console.', xml)

    def test_consoles_without_a_log_here_are_left_alone(self):
        for devices in ('', "<serial type='pty'><target port='0'/></serial>",
                        "<serial type='tcp'><source mode='connect' "
                        "host='192.0.2.1' service='4555'/></serial>"):
            xml = domain(devices)
            self.assertEqual((xml, None), consoles.to_l1_console(xml))

    def test_port_names_fit_a_virtio_serial_port(self):
        self.assertEqual('vmbeam.console.6f1c2d3e4f5a4b6c',
                         consoles.port_name(UUID))
