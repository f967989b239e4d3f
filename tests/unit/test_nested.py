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

"""The nested sibling's pieces that need no VM: lock file, addresses, XML."""

import os
import tempfile
import xml.etree.ElementTree as ET

import fixtures
import testtools

from nova_vmbeam.conf import nested as nested_conf
from nova_vmbeam.conf import opts
from nova_vmbeam import exception
from nova_vmbeam import guest as guest_mod
from nova_vmbeam.libvirt import config as libvirt_config
from nova_vmbeam.movers import base as mover_base
from nova_vmbeam.nested.appliance import builder
from nova_vmbeam.nested import mover as nested_mover
from nova_vmbeam.nested import network
from nova_vmbeam.nested import sibling as nested_sibling
from tests.unit import fakes


def make_conf(**nested):
    conf = fakes.make_conf(state_path='/var/lib/test-vmbeam')
    nested_conf.register_opts(conf)
    for name, value in nested.items():
        conf.set_override(name, value, 'vmbeam_nested')
    return conf


class TestLockFile(testtools.TestCase):

    def _lock(self, text):
        fd, path = tempfile.mkstemp()
        self.addCleanup(os.unlink, path)
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        return path

    def test_pins_read_without_comments(self):
        path = self._lock('# head\nqemu-system-x86=1:10.0.2+ds-2\n\n'
                          'linux-image-6.1.0-56-amd64=6.1.192-2  # kernel\n')
        self.assertEqual([('qemu-system-x86', '1:10.0.2+ds-2'),
                          ('linux-image-6.1.0-56-amd64', '6.1.192-2')],
                         builder.read_lock(path))

    def test_bad_line_names_the_fix(self):
        path = self._lock('qemu-system-x86\n')
        exc = self.assertRaises(builder.ApplianceError, builder.read_lock,
                                path)
        self.assertIn('line 1', str(exc))
        self.assertIn('vmbeam appliance lock', str(exc))

    def test_lock_without_kernel_is_refused(self):
        path = self._lock('qemu-system-x86=1:10.0.2+ds-2\n')
        self.assertRaises(builder.ApplianceError, builder.read_lock, path)

    def test_shipped_lock_pins_qemu_10_and_libvirt_11(self):
        pins = dict(builder.read_lock())
        self.assertTrue(pins['qemu-system-x86'].startswith('1:10.'))
        self.assertTrue(pins['libvirt-daemon'].startswith('11.'))
        for name in builder.ROOT_PACKAGES:
            self.assertIn(name, pins)

    def test_deb_file_name_escapes_the_epoch(self):
        self.assertEqual('qemu-system-x86_1%3a10.0.2_',
                         builder._deb_name('qemu-system-x86', '1:10.0.2'))


class TestNetwork(testtools.TestCase):

    def test_addresses(self):
        conf = make_conf(network_cidr='10.9.8.0/24')
        self.assertEqual(('10.9.8.1', 24), network.host_address(conf))
        self.assertEqual(('10.9.8.11', 24), network.l1_address(conf, 1))
        # Generations wrap around inside the network.
        self.assertEqual(network.l1_address(conf, 1),
                         network.l1_address(conf, 1 + 256 - 12))

    def test_bad_cidr_names_the_option(self):
        conf = make_conf(network_cidr='10.9.8.0/30')
        exc = self.assertRaises(network.NetworkError, network.l1_address,
                                conf, 1)
        self.assertIn('network_cidr', str(exc))


class TestL1Domain(testtools.TestCase):

    def test_domain_xml(self):
        conf = make_conf(bridge='br-test', l1_memory_mib=2048, l1_vcpus=2,
                         network_cidr='10.9.8.0/24')
        sibling = nested_sibling.NestedSibling(conf, 3, domain_uuid='u-3')
        domain = ET.fromstring(sibling.domain_xml('/k', '/i'))
        self.assertEqual('vmbeam-l1-gen3', domain.findtext('name'))
        self.assertEqual('2048', domain.findtext('memory'))
        self.assertEqual('2', domain.findtext('vcpu'))
        self.assertIn('vmbeam.ip=10.9.8.13/24', domain.findtext('os/cmdline'))
        self.assertEqual('br-test', domain.find(
            'devices/interface/source').get('bridge'))
        self.assertEqual('org.qemu.guest_agent.0', domain.find(
            'devices/channel/target').get('name'))
        args = libvirt_config.commandline_args(domain)
        self.assertIn('chardev=vmbeam-qmp,mode=control', args)
        self.assertIn(sibling.qmp_socket, ' '.join(args))
        self.assertEqual('qemu+tcp://10.9.8.13/system', sibling.uri)
        self.assertEqual(
            {'kind': 'nested', 'generation': 3, 'domain_uuid': 'u-3',
             'uri': sibling.uri, 'address': '10.9.8.13',
             'base': '/var/lib/test-vmbeam/nested/gen3'}, sibling.record())
        again = nested_sibling.NestedSibling.from_record(conf,
                                                         sibling.record())
        self.assertEqual(sibling.record(), again.record())

    def test_generation_of_domain_name(self):
        sibling = nested_sibling.NestedSibling(make_conf(), 12)
        self.assertEqual(12, nested_sibling.generation_of(
            sibling.domain_name))
        self.assertIsNone(nested_sibling.generation_of('vmbeam-l1-genx'))
        self.assertIsNone(nested_sibling.generation_of('guest1'))

    def test_missing_appliance_dir_names_the_fix(self):
        conf = make_conf(appliance_dir='/nonexistent')
        exc = self.assertRaises(builder.ApplianceError,
                                nested_sibling.appliance, conf)
        self.assertIn('vmbeam appliance build', str(exc))


class TestRamPath(testtools.TestCase):

    def test_with_ram_replaces_only_the_ram_backend(self):
        spec = guest_mod.GuestSpec(
            name='g', uuid='u', ram_mib=128,
            ram=guest_mod.RamBacking(guest_mod.RAM_FILE,
                                     '/sys/bus/pci/devices/0000:00:05.0/'
                                     'resource2'))
        xml = libvirt_config.domain_xml(spec)
        domain = ET.fromstring(xml)
        libvirt_config.add_commandline_args(domain, ['-incoming', 'defer'])
        xml = ET.tostring(domain, encoding='unicode')
        bar = '/sys/bus/pci/devices/0000:00:07.0/resource2_wc'
        moved = libvirt_config.with_ram(
            xml, guest_mod.RamBacking(guest_mod.RAM_FILE, bar), 128)
        self.assertEqual(bar, libvirt_config.ram_backing(moved).path)
        args = libvirt_config.commandline_args(ET.fromstring(moved))
        self.assertEqual(1, sum(1 for a in args if 'vmbeam-ram' in a
                                and a.startswith('memory-backend-file')))
        self.assertIn('-incoming', args)
        self.assertNotIn('0000:00:05.0', moved)


class TestNestedMover(testtools.TestCase):

    def test_port_is_in_range_and_stable(self):
        conf = make_conf(migration_port_base=50000)
        mover = nested_mover.NestedMover(conf)
        spec = guest_mod.GuestSpec(name='g', uuid='2f1b5a4e-0000-4000-8000-'
                                   '00000000abcd', ram_mib=128)
        port = mover.port(spec)
        self.assertTrue(50000 <= port < 50000 + nested_mover.PORTS)
        self.assertEqual(port, mover.port(spec))

    def test_refuses_hosts_that_are_not_l1s(self):
        conf = make_conf()
        mover = nested_mover.NestedMover(conf)

        class Plain:
            name = 'gen1'
        ctx = mover_base.MoveContext(None, Plain())
        exc = self.assertRaises(exception.InvalidInput, mover._l1,
                                ctx.target, 'target')
        self.assertIn('nested', str(exc))

    def test_adopt_refuses_a_target_that_is_not_an_l1(self):
        mover = nested_mover.NestedMover(make_conf())

        class Source:
            spec = guest_mod.GuestSpec(
                name='g', uuid='u', ram_mib=128,
                ram=guest_mod.RamBacking(guest_mod.RAM_FILE, '/bar'))

        class Plain:
            name = 'gen2'
        self.assertRaises(exception.InvalidInput, mover.adopt, Source(),
                          Plain(), None)


class TestOptions(testtools.TestCase):

    def test_group_listed_for_the_sample(self):
        groups = {group.name: group_opts for group, group_opts in
                  opts.list_opts()}
        names = [o.name for o in groups['vmbeam_nested']]
        for name in ('l1_memory_mib', 'bar_mapping', 'bridge',
                     'network_cidr', 'appliance_dir'):
            self.assertIn(name, names)


class TestApplianceExtraFiles(testtools.TestCase):
    """The production appliance has no test payload; callers add files."""

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.payload = os.path.join(self.tmp, 'payload')
        with open(self.payload, 'wb') as f:
            f.write(b'PAYLOAD-BYTES')
        self.useFixture(fixtures.MockPatch(
            'nova_vmbeam.imagekit.find_busybox', return_value=self.payload))
        self.useFixture(fixtures.MockPatch(
            'nova_vmbeam.imagekit.busybox_applets', return_value=[]))

    def _initrd(self, extra_files):
        root = os.path.join(self.tmp, 'root')
        os.makedirs(root, exist_ok=True)
        dest = os.path.join(self.tmp, 'initrd.img')
        builder._write_initrd(root, [], extra_files, dest)
        with open(dest, 'rb') as f:
            return f.read()

    def test_without_extra_files_no_test_payload(self):
        data = self._initrd(())
        self.assertNotIn(b'opt/vmbeam', data)
        self.assertNotIn(b'vmbeam-bwprobe', data)

    def test_extra_files_and_their_directories_are_added(self):
        data = self._initrd([builder.ExtraFile('opt/vmbeam/guest/vmlinux',
                                               self.payload)])
        for name in (b'opt/vmbeam\0', b'opt/vmbeam/guest\0',
                     b'opt/vmbeam/guest/vmlinux\0'):
            self.assertIn(name, data)
        self.assertEqual(2, data.count(b'PAYLOAD-BYTES'))  # + "busybox"

    def test_extra_files_are_part_of_the_cache_key(self):
        pins = [('linux-image-amd64', '1')]
        self.useFixture(fixtures.MockPatch('nova_vmbeam.imagekit.BUSYBOX',
                                           self.payload))
        plain = builder._cache_key(pins, ())
        extra = builder.ExtraFile('usr/bin/x', self.payload, 0o755)
        self.assertNotEqual(plain, builder._cache_key(pins, (extra,)))
        self.assertEqual(builder._cache_key(pins, (extra,)),
                         builder._cache_key(pins, (extra,)))
