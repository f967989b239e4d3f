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


"""Guests' disks of a nested sibling as L0's NBD exports (the XML side)."""

import xml.etree.ElementTree as ET

import testtools

from nova_vmbeam.nested import disks
from tests.unit import fakes

UUID = '6f1c2d3e-4f5a-4b6c-8d7e-0123456789ab'


def domain(*disk_xml):
    return ('<domain type="qemu"><name>i-1</name><uuid>%s</uuid><devices>'
            '%s<interface type="bridge"/></devices></domain>' %
            (UUID, ''.join(disk_xml)))


QCOW2 = ("<disk type='file' device='disk'>"
         "<driver name='qemu' type='qcow2' cache='none' io='native'/>"
         "<source file='/var/lib/nova/instances/%s/disk'/>"
         "<backingStore type='file'><format type='raw'/>"
         "<source file='/var/lib/nova/instances/_base/abc'/></backingStore>"
         "<target dev='vda' bus='virtio'/><serial>s1</serial></disk>" % UUID)
VOLUME = ("<disk type='block' device='disk'>"
          "<driver name='qemu' type='raw' cache='none'/>"
          "<source dev='/dev/disk/by-path/ip-10.0.0.5:3260-lun-1'/>"
          "<target dev='vdb' bus='virtio'/></disk>")
CONFIG_DRIVE = ("<disk type='file' device='cdrom'>"
                "<driver name='qemu' type='raw'/>"
                "<source file='/var/lib/nova/instances/%s/disk.config'/>"
                "<target dev='sda' bus='sata'/><readonly/></disk>" % UUID)


class TestNetworkDisks(testtools.TestCase):

    def rewrite(self, *disk_xml):
        xml, exports = disks.to_network_disks(domain(*disk_xml),
                                              '192.0.2.1', 10809)
        return ET.fromstring(xml), exports

    def test_file_block_and_readonly_disks_become_nbd_in_tls(self):
        dom, exports = self.rewrite(QCOW2, VOLUME, CONFIG_DRIVE)
        self.assertEqual(
            [('v6f1c2d3e4f5a4b6c-vda', 'qcow2', False, True, True),
             ('v6f1c2d3e4f5a4b6c-vdb', 'raw', True, True, True),
             ('v6f1c2d3e4f5a4b6c-sda', 'raw', False, False, False)],
            [(e.name, e.fmt, e.block, e.writable, e.direct)
             for e in exports])
        self.assertEqual('/dev/disk/by-path/ip-10.0.0.5:3260-lun-1',
                         exports[1].path)
        for disk, export in zip(dom.findall('devices/disk'), exports):
            self.assertEqual('network', disk.get('type'))
            self.assertEqual('raw', disk.find('driver').get('type'))
            self.assertIsNone(disk.find('driver').get('io'))
            self.assertIsNone(disk.find('backingStore'))
            source = disk.findall('source')
            self.assertEqual(1, len(source))
            self.assertEqual({'protocol': 'nbd', 'name': export.name,
                              'tls': 'yes'}, source[0].attrib)
            self.assertEqual({'name': '192.0.2.1', 'port': '10809'},
                             source[0].find('host').attrib)
            # A daemon restarted under it is waited for, not an I/O error.
            self.assertEqual(str(disks.RECONNECT_DELAY_S),
                             source[0].find('reconnect').get('delay'))
        # What is not the disk's source is kept.
        self.assertEqual('s1', dom.findtext('devices/disk/serial'))
        self.assertEqual('none', dom.find('devices/disk/driver').get('cache'))
        self.assertIsNotNone(dom.find('devices/disk/readonly'))
        self.assertIsNotNone(dom.find('devices/interface'))

    def test_a_moving_guest_s_xml_is_left_as_it_is(self):
        once = disks.to_network_disks(domain(QCOW2, CONFIG_DRIVE),
                                      '192.0.2.1', 10809)[0]
        again, exports = disks.to_network_disks(once, '192.0.2.1', 10809)
        self.assertEqual([], exports)
        self.assertEqual(once, again)

    def test_the_l0_disks_are_found_again_from_the_xml(self):
        served, _exports = disks.to_network_disks(
            domain(QCOW2, VOLUME, CONFIG_DRIVE), '192.0.2.1', 10809)
        local = ET.fromstring(disks.to_local_disks(served))
        self.assertEqual(
            [('file', 'qcow2', {'file': '/var/lib/nova/instances/%s/disk'
                                % UUID}),
             ('block', 'raw', {'dev': '/dev/disk/by-path/ip-10.0.0.5:'
                                      '3260-lun-1'}),
             ('file', 'raw', {'file': '/var/lib/nova/instances/%s/'
                                      'disk.config' % UUID})],
            [(d.get('type'), d.find('driver').get('type'),
              d.find('source').attrib)
             for d in local.findall('devices/disk')])
        # Nothing of the export is left in them.
        self.assertIsNone(local.find('devices/disk/source/host'))
        # A domain without the metadata is as it was.
        self.assertEqual(domain(QCOW2), disks.to_local_disks(domain(QCOW2)))

    def test_a_volume_plugged_into_a_running_guest_is_one_export(self):
        served, _exports = disks.to_network_disks(domain(QCOW2), '192.0.2.1',
                                                  10809)
        disk_xml, exports = disks.plugged_disk(served, VOLUME, '192.0.2.1',
                                               10809)
        disk = ET.fromstring(disk_xml)
        self.assertEqual('disk', disk.tag)
        self.assertEqual('network', disk.get('type'))
        self.assertEqual({'protocol': 'nbd', 'tls': 'yes',
                          'name': disks.export_name(UUID, 'vdb')},
                         disk.find('source').attrib)
        self.assertEqual('vdb', disk.find('target').get('dev'))
        # Only the new disk is served (the root disk is already).
        self.assertEqual([(disks.export_name(UUID, 'vdb'),
                           '/dev/disk/by-path/ip-10.0.0.5:3260-lun-1', True)],
                         [(e.name, e.path, e.block) for e in exports])
        # What an L1 cannot reach is refused before anything is served.
        self.assertRaises(disks.DiskError, disks.plugged_disk, served,
                          "<disk type='network' device='disk'>"
                          "<source protocol='rbd' name='p/v'/>"
                          "<target dev='vdc'/></disk>", '192.0.2.1', 10809)

    def test_an_empty_cdrom_drive_is_kept(self):
        dom, exports = self.rewrite(
            "<disk type='file' device='cdrom'><target dev='hdc'/></disk>")
        self.assertEqual([], exports)
        self.assertEqual('file', dom.find('devices/disk').get('type'))

    def test_what_an_l1_cannot_reach_is_refused_with_the_fix(self):
        rbd = ("<disk type='network' device='disk'>"
               "<source protocol='rbd' name='vms/x'/>"
               "<target dev='vdc'/></disk>")
        error = self.assertRaises(disks.DiskError, self.rewrite, QCOW2, rbd)
        self.assertIn('vdc', str(error))
        self.assertIn('sibling_kind = colocated', str(error))
        for bad, words in (
                (QCOW2.replace("type='qcow2'", "type='vmdk'"), 'vmdk'),
                (QCOW2.replace("<target dev='vda' bus='virtio'/>", ''),
                 'target'),
                (QCOW2.replace('/var/lib', 'var/lib'), 'absolute'),
                (QCOW2.replace("/disk'", "/di,sk'"), 'comma'),
                (QCOW2 + QCOW2, 'target of its own'),
                (QCOW2.replace("type='file'", "type='volume'", 1),
                 'volume')):
            error = self.assertRaises(disks.DiskError, self.rewrite, bad)
            self.assertIn(words, str(error))

    def test_export_names_are_qemu_node_names(self):
        name = disks.export_name(UUID, 'sdaa')
        self.assertRegex(name, r'^[A-Za-z][A-Za-z0-9_.-]{0,30}$')
        self.assertEqual(name + '-file', disks.Export(
            name, '/x', 'raw', False, True, False).file_node)


class TestWatch(testtools.TestCase):
    """The periodic watchdog: a dead daemon with exports starts again."""

    def daemon(self, running, recorded):
        daemon = disks.StorageDaemon(fakes.make_conf(state_path='/nowhere'))
        started = []
        self.patch(daemon, 'running', lambda: running)
        self.patch(daemon, 'recorded', lambda: recorded)
        self.patch(daemon, 'ensure', lambda: started.append(True))
        return daemon, started

    def test_a_dead_daemon_with_exports_is_started(self):
        daemon, started = self.daemon(False, ['an export'])
        self.assertTrue(daemon.watch())
        self.assertEqual([True], started)

    def test_a_running_or_unneeded_daemon_is_left(self):
        for running, recorded in ((True, ['an export']), (False, [])):
            daemon, started = self.daemon(running, recorded)
            self.assertFalse(daemon.watch())
            self.assertEqual([], started)
