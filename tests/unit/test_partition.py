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

"""Per-generation resource partitions (nova_vmbeam.libvirt.partition).

No cgroup is written here: the hierarchies are directories of the test's
own, described as procfs.cgroup_mounts would describe them.
"""

import os
from unittest import mock
import xml.etree.ElementTree as ET

import fixtures
import testtools

from nova_vmbeam.libvirt import daemon as libvirt_daemon
from nova_vmbeam.libvirt import host as host_mod
from nova_vmbeam.libvirt import partition
from nova_vmbeam import lifetime
from nova_vmbeam.privsep import cgroups
from nova_vmbeam.qemu import procfs
from nova_vmbeam.rejuvenation import generations as generations_mod
from tests.unit import fakes

PARTITION = '/machine/vmbeam-gen2-1a2b3c4d'

DOMAIN = '''<domain type='qemu'><name>g1</name>
<uuid>6a8e6f44-39c4-4bd7-a5f3-1f4a5e1e6d01</uuid>
<memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64'>hvm</type></os>%s<devices/></domain>'''


class TestNames(testtools.TestCase):

    def test_generation_group_names_its_partition(self):
        self.assertEqual(PARTITION, partition.name_for('gen2-1a2b3c4d'))

    def test_cgroup_without_systemd_has_libvirts_suffix(self):
        self.assertEqual('/machine/vmbeam-gen2-1a2b3c4d.partition',
                         partition.cgroup_path(PARTITION))

    def test_systemd_slice_escapes_the_dashes_of_a_part(self):
        self.assertEqual('machine-vmbeam\\x2dgen2\\x2d1a2b3c4d.slice',
                         partition.slice_name(PARTITION))

    def test_other_names_are_refused(self):
        for bad in ('/machine', '/machine/other', '/machine/vmbeam-../x',
                    'machine/vmbeam-gen1', '/machine/vmbeam-Gen1',
                    '/system/vmbeam-gen1', None):
            self.assertRaises(ValueError, partition.cgroup_path, bad)
        self.assertRaises(ValueError, partition.name_for, '../gen1')
        self.assertRaises(ValueError, partition.name_for, 'gen1/x')

    def test_daemons_of_two_generations_have_two_partitions(self):
        conf = fakes.make_conf(state_path='/srv/state')
        gen1 = libvirt_daemon.PrivateLibvirtd(conf, '/srv/state/gen1',
                                              'uuid-1', 'gen1', 1)
        gen2 = libvirt_daemon.PrivateLibvirtd(conf, '/srv/state/gen2',
                                              'uuid-2', 'gen2', 2)
        self.assertEqual('/machine/vmbeam-%s' % gen1.group, gen1.partition)
        self.assertNotEqual(gen1.partition, gen2.partition)
        self.assertEqual(gen2.partition, gen2.host().partition)


class TestDomainXML(testtools.TestCase):

    def test_partition_added(self):
        xml = partition.with_partition(DOMAIN % '', PARTITION)
        self.assertEqual(PARTITION, partition.partition_of(xml))
        self.assertEqual(1, len(ET.fromstring(xml).findall('resource')))

    def test_another_generations_partition_replaced(self):
        other = '<resource><partition>/machine/vmbeam-gen1-00000000' \
                '</partition><fibrechannel appid="app"/></resource>'
        xml = partition.with_partition(DOMAIN % other, PARTITION)
        domain = ET.fromstring(xml)
        self.assertEqual([PARTITION], [p.text for p in domain.iter(
            'partition')])
        # Other resource settings stay.
        self.assertEqual('app', domain.find(
            'resource/fibrechannel').get('appid'))

    def test_leaving_guest_has_no_partition(self):
        xml = partition.without_partition(
            partition.with_partition(DOMAIN % '', PARTITION))
        self.assertIsNone(partition.partition_of(xml))
        self.assertIsNone(ET.fromstring(xml).find('resource'))
        kept = '<resource><partition>%s</partition><fibrechannel ' \
               'appid="app"/></resource>' % PARTITION
        xml = partition.without_partition(DOMAIN % kept)
        self.assertIsNone(partition.partition_of(xml))
        self.assertIsNotNone(ET.fromstring(xml).find('resource/fibrechannel'))
        self.assertEqual(DOMAIN % '', partition.without_partition(
            DOMAIN % ''))


class FakeConn:
    def __init__(self):
        self.created = []

    def isAlive(self):
        return True

    def createXML(self, xml, flags):
        self.created.append(xml)
        return mock.Mock()


class TestLaunch(testtools.TestCase):
    """Every guest a generation's Host starts goes to its partition."""

    def _launch(self, host, xml):
        conn = FakeConn()
        host._conn = conn
        self.useFixture(fixtures.MockPatchObject(
            host, 'lookup', return_value=None))
        spec = mock.Mock(domain_xml=xml)
        spec.name = 'g1'
        host.launch(spec, incoming=['defer'], paused=True)
        return conn.created[0]

    def test_destination_goes_to_the_targets_partition(self):
        host = host_mod.Host('gen2', 'qemu:///system', '/tmp',
                             partition=PARTITION)
        source_xml = partition.with_partition(
            DOMAIN % '', '/machine/vmbeam-gen1-00000000')
        self.assertEqual(PARTITION, partition.partition_of(
            self._launch(host, source_xml)))

    def test_host_without_partition_leaves_the_xml_alone(self):
        host = host_mod.Host('system', 'qemu:///system', '/tmp')
        self.assertIsNone(partition.partition_of(
            self._launch(host, DOMAIN % '')))


class TestGenerationFoundRunning(testtools.TestCase):

    def test_running_generation_gets_its_partition_made(self):
        # One an earlier version started runs without a partition.
        sibling = mock.Mock(running=mock.Mock(return_value=True))
        generations = generations_mod.Generations(fakes.make_conf(), None)
        generations.ensure_running(sibling)
        sibling.ensure_partition.assert_called_once_with()
        sibling.start.assert_not_called()


# This machine's kind: cgroup v1 per controller, the unified one beside.
def _mounts(root):
    def mount(fstype, options, name):
        path = os.path.join(root, name)
        os.makedirs(path, exist_ok=True)
        return procfs.CgroupMount(fstype, frozenset(options), '/', path)
    return [mount('cgroup2', ('rw',), 'unified'),
            mount('cgroup', ('rw', 'xattr', 'name=systemd'), 'systemd'),
            mount('cgroup', ('rw', 'cpuset'), 'cpuset'),
            mount('cgroup', ('rw', 'cpu', 'cpuacct'), 'cpu,cpuacct')]


class TestCgroups(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.root = self.useFixture(fixtures.TempDir()).path
        self.mounts = _mounts(self.root)
        for name, value in (('cpuset.cpus', '0-1'), ('cpuset.mems', '0')):
            with open(os.path.join(self.root, 'cpuset', name), 'w') as f:
                f.write(value + '\n')
        with open(os.path.join(self.root, 'unified',
                               'cgroup.controllers'), 'w') as f:
            f.write('cpu memory\n')

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def test_made_in_each_hierarchy_with_controllers(self):
        made = cgroups.make_partition_in(PARTITION, self.mounts)
        leaf = 'vmbeam-gen2-1a2b3c4d.partition'
        for hierarchy in ('unified', 'cpuset', 'cpu,cpuacct'):
            self.assertIn(self.path(hierarchy, 'machine'), made)
            self.assertIn(self.path(hierarchy, 'machine', leaf), made)
        # Never in systemd's named hierarchy (libvirt makes none there).
        self.assertFalse(os.path.exists(self.path('systemd', 'machine')))
        # A new cpuset takes its parent's CPUs and memory nodes.
        with open(self.path('cpuset', 'machine', leaf, 'cpuset.cpus')) as f:
            self.assertEqual('0-1', f.read())
        # v2: the root hands its controllers down to /machine.
        with open(self.path('unified', 'cgroup.subtree_control')) as f:
            self.assertEqual('+memory', f.read())   # the last one written

    def test_made_again_changes_nothing(self):
        cgroups.make_partition_in(PARTITION, self.mounts)
        self.assertEqual([], cgroups.make_partition_in(PARTITION, self.mounts))

    def test_existing_machine_cgroup_is_kept(self):
        os.mkdir(self.path('cpuset', 'machine'))
        for name, value in (('cpuset.cpus', '1'), ('cpuset.mems', '0')):
            with open(self.path('cpuset', 'machine', name), 'w') as f:
                f.write(value)
        made = cgroups.make_partition_in(PARTITION, self.mounts)
        self.assertNotIn(self.path('cpuset', 'machine'), made)
        with open(self.path('cpuset', 'machine',
                            'vmbeam-gen2-1a2b3c4d.partition',
                            'cpuset.cpus')) as f:
            self.assertEqual('1', f.read())

    def test_removed_where_no_process_is_left(self):
        cgroups.make_partition_in(PARTITION, self.mounts)
        leaf = 'vmbeam-gen2-1a2b3c4d.partition'
        # Empty cgroups of a guest whose QEMU died while its daemon was
        # down go along.
        os.makedirs(self.path('unified', 'machine', leaf,
                              'qemu-1-g0.libvirt-qemu', 'emulator'))
        # A file stands for a process: cgroupfs refuses rmdir (EBUSY)
        # where one is left, and that cgroup stays.
        for hierarchy in ('unified', 'cpu,cpuacct'):
            directory = self.path(hierarchy, 'machine', leaf)
            for name in os.listdir(directory):
                if not name.startswith('qemu-'):
                    os.unlink(os.path.join(directory, name))
        self.assertFalse(cgroups.remove_partition_in(PARTITION, self.mounts))
        self.assertFalse(os.path.exists(self.path('unified', 'machine',
                                                  leaf)))
        self.assertFalse(os.path.exists(self.path('cpu,cpuacct', 'machine',
                                                  leaf)))
        self.assertTrue(os.path.exists(self.path('cpuset', 'machine', leaf)))
        # /machine stays: other guests live there.
        self.assertTrue(os.path.exists(self.path('unified', 'machine')))

    def test_daemon_makes_its_partition_unless_systemd_is_pid_1(self):
        conf = fakes.make_conf(state_path=self.root)
        daemon = libvirt_daemon.PrivateLibvirtd(conf, self.path('gen1'),
                                                'uuid-1', 'gen1', 1)
        make = self.useFixture(fixtures.MockPatchObject(
            cgroups, 'make_partition')).mock
        self.useFixture(fixtures.MockPatchObject(
            lifetime, 'systemd_booted', return_value=True))
        daemon.make_partition()
        make.assert_not_called()
        lifetime.systemd_booted.return_value = False
        daemon.make_partition()
        make.assert_called_once_with(daemon.partition)
