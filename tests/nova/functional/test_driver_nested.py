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


"""VMBeamDriver on a nested host: Nova's instance is an L2 in an L1 VM.

As test_driver's test, with [vmbeam] sibling_kind = nested: nova-compute
(unprivileged) boots the instance from Nova's own files on this host (its
kernel and initrd images, its qcow2 root disk, its console log) inside the
L1 of generation 1, rejuvenates the host over RPC (a new L1, with a new
kernel), snapshots the instance running (copied at L0 as it writes its
disk), stops, snapshots, starts and deletes it there.

TCG inside TCG is slow: the L2 boots count against the nested tests' time
budget (vmbeam_devtools/nested/testbed.py); an L2 too slow to boot on this
machine skips the test, with the reason.
"""

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import xml.etree.ElementTree as ET

import fixtures
from nova.compute import power_state
from nova.network import model as network_model
from nova import objects
import os_vif
from oslo_utils import uuidutils
import testtools.content

from nova_vmbeam import conf as vmbeam_conf
from nova_vmbeam.libvirt import config as engine_config
from nova_vmbeam.nested import disks
from nova_vmbeam.nested import host as nested_host
from nova_vmbeam.nested import network
from nova_vmbeam.nested import sibling as nested_sibling
from nova_vmbeam.nested import uplinks
from tests.nova.functional import test_driver
from vmbeam_devtools.nested import appliance as devappliance
from vmbeam_devtools.nested import testbed as nested_testbed

CONF = vmbeam_conf.CONF
HOST = test_driver.HOST
#: the guest's disk worker (vmbeam_devtools/guestimage/diskworker.c): a
#: record per 4 KiB slot of its disk's first MiB, headed by its magic,
#: sequence number, slot and checksum
DISK_RECORD = 4096
DISK_MAGIC = 0x4b444d4145424d56


class TestDriverOnNestedHost(test_driver.DriverOnLibvirtTestCase):

    REQUIRED = test_driver.DriverOnLibvirtTestCase.REQUIRED + ('ip',)
    # As the nested tests' L2s: TCG inside TCG verifies slowly.
    RAM_MIB = 128
    # Its disk worker writes and reads back its root disk, Nova's qcow2.
    GUEST_ARGS = dict(ram_mib=32, dirty_mib_s=1, report_ms=1000,
                      verify_mib_s=16, boot_messages=True, disk=True)

    def setUp(self):
        # Known from earlier tests of this run: spare the L1 boot.
        nested_testbed.L2TimeBudget.check()
        self.addCleanup(nested_testbed.L2TimeBudget.record, time.monotonic())
        super().setUp()

    def configure_generations(self):
        tag = os.getpid() % 40
        nested = dict(bridge='vmbnd%d' % os.getpid(),
                      network_cidr='192.168.%d.0/24' % (160 + tag),
                      l1_memory_mib=1024)
        for name, value in nested.items():
            CONF.set_override(name, value, 'vmbeam_nested')
        CONF.set_override('sibling_kind', 'nested', 'vmbeam')
        CONF.set_override('migration_timeout', 300.0, 'vmbeam')
        # nova-compute's user reads the appliance: a copy of the build in
        # the state directory (which becomes that user's), as a node
        # keeps it where nova-compute reads it.
        built = devappliance.use(CONF)
        appliance = os.path.join(CONF.vmbeam.state_path, 'appliance')
        os.makedirs(appliance)
        with open(built.manifest) as f:
            manifest = json.load(f)
        for key in ('kernel', 'initrd'):
            manifest[key] = shutil.copy(manifest[key], appliance)
        with open(os.path.join(appliance, 'manifest.json'), 'w') as f:
            json.dump(manifest, f)
        CONF.set_override('appliance_dir', appliance, 'vmbeam_nested')
        # After the driver's cleanup (added later, run earlier): as root.
        self.addCleanup(self._stop_l1s)

    def _stop_l1s(self):
        with self.user.as_root():
            try:
                disks.StorageDaemon(CONF).stop()
            except Exception as exc:
                self.addDetail('storage-daemon', testtools.content.
                               text_content(str(exc)))
            nested_sibling.stop_all(CONF)
            network.remove_bridge(CONF)

    def wait_ready(self, console, since=0):
        nested_testbed.wait_booted('nova-guest', console, after_offset=since)

    def sibling(self, generation):
        return self.driver._rejuvenation.orchestrator.sibling(generation)

    def in_l1(self, generation, instance):
        """The instance's domain XML in the L1 of ``generation``, or None."""
        host = self.sibling(generation).host()
        try:
            endpoint = host.guest(instance.name)
            return None if endpoint is None else endpoint.dom.XMLDesc()
        finally:
            host.close()

    def assert_runs_in(self, generation, instance):
        xml = self.in_l1(generation, instance)
        self.assertIsNotNone(xml)
        self.assertEqual([generation], self.generation_of(instance))
        # Its RAM: the pool's BAR in the L1, mapped at L0 by that L1's
        # QEMU; its root disk: the NBD export of this host's qcow2.
        self.assertIn('/resource2', engine_config.ram_backing(xml).path)
        self.assertTrue(self.pool.verify(instance.uuid,
                                         self.sibling(generation).l1_pid()))
        self.assertIn("protocol='nbd'", xml)
        self.assertIn(nested_host.pool_device(instance.uuid),
                      self.pool_devices(generation))

    def attach_and_detach_volume_through_l0(self, instance):
        """A block device volume (a loop device) into the running L2.

        Served by L0's disk server to the L1, whose libvirtd plugs the
        export into the guest (its QEMU connects to it then); detached,
        the daemon lets go of the device and its owner is as before.
        """
        device, connection_info, before = self.loop_volume()
        storage = disks.StorageDaemon(CONF)
        export = disks.export_name(instance.uuid, 'vdb')
        self.driver.attach_volume(self.ctxt, connection_info, instance,
                                  '/dev/vdb')
        self.assertEqual(export, self.l1_disk_source(instance, 'vdb'))
        with self.user.as_root():   # the daemon's fds are its user's
            self.assertIn(export, storage.exports())
            pid = storage.process().pid
            opened = {os.path.realpath('/proc/%d/fd/%s' % (pid, fd))
                      for fd in os.listdir('/proc/%d/fd' % pid)}
        self.assertIn(os.path.realpath(device), opened)
        self.wait_guest_drives(instance, 'vdb')
        self.driver.detach_volume(self.ctxt, connection_info, instance,
                                  '/dev/vdb')
        self.assertIsNone(self.l1_disk_source(instance, 'vdb'))
        with self.user.as_root():
            self.assertNotIn(export, storage.exports())
        self.assertEqual((before.st_uid, before.st_gid),
                         (os.stat(device).st_uid, os.stat(device).st_gid))
        self.assertEqual(power_state.RUNNING,
                         self.driver.get_info(instance).state)

    def attach_and_detach_interface_through_an_uplink(self, instance):
        """A NIC on a host bridge plugged into the running L2.

        os-vif's part (the bridge on this host) is done here as root; the
        driver makes the bridge reach the L1 (an uplink NIC hot-plugged
        into the L1 VM, bridged in the L1), then the L1's libvirtd puts
        the guest's new tap on it.
        """
        # An OVS port with the hybrid plug (security groups by iptables):
        # the tap goes on a Linux bridge of its own, qbr<port id>.
        port = uuidutils.generate_uuid()
        bridge = ('qbr' + port)[:14]
        with self.user.as_root():
            subprocess.run(['ip', 'link', 'add', bridge, 'type', 'bridge'],
                           check=True, capture_output=True)
            self.addCleanup(self._remove_link, bridge)
            subprocess.run(['ip', 'link', 'set', bridge, 'up'], check=True)
        vif = network_model.VIF(
            id=port, address='52:54:00:12:34:56',
            type=network_model.VIF_TYPE_OVS, vnic_type='normal',
            devname=('tap' + port)[:14],
            details={network_model.VIF_DETAILS_OVS_HYBRID_PLUG: True,
                     network_model.VIF_DETAILS_PORT_FILTER: True},
            network=network_model.Network(
                id=uuidutils.generate_uuid(), bridge='br-int', label='net',
                subnets=[]))
        # As nova-compute's start does, for Nova's VIF config of the port.
        os_vif.initialize()
        # os-vif's OVS plug and unplug (root, through its own privsep
        # daemon, and an Open vSwitch): the bridge is made above.
        self.driver.vif_driver.plug = lambda instance, vif: None
        self.driver.vif_driver.unplug = lambda instance, vif: None
        # Nova's compute manager puts the port in the instance's network
        # info cache before the driver attaches it, and takes it out once
        # detached.
        instance.info_cache = objects.InstanceInfoCache(
            self.ctxt, instance_uuid=instance.uuid,
            network_info=network_model.NetworkInfo([vif]))
        self.driver.attach_interface(self.ctxt, instance,
                                     instance.image_meta, vif)
        self.assertEqual(bridge, self.l1_nic_bridge(instance, vif['address']))
        uplink = uplinks.mac(2, bridge)
        l1_nics = ET.fromstring(self.sibling(2).l1_domain().XMLDesc(0))
        self.assertIn(uplink, [m.get('address') for m in
                               l1_nics.iterfind('devices/interface/mac')])
        self.driver.detach_interface(self.ctxt, instance, vif)
        instance.info_cache = objects.InstanceInfoCache(
            self.ctxt, instance_uuid=instance.uuid,
            network_info=network_model.NetworkInfo([]))
        self.assertIsNone(self.l1_nic_bridge(instance, vif['address']))
        self.assertEqual(power_state.RUNNING,
                         self.driver.get_info(instance).state)

    def _remove_link(self, name):
        with self.user.as_root():
            subprocess.run(['ip', 'link', 'del', name], capture_output=True)

    def l1_nic_bridge(self, instance, address):
        """The L1 bridge of the guest's NIC ``address``, if it has it."""
        domain = ET.fromstring(
            self.driver._host.get_guest(instance).get_xml_desc())
        for nic in domain.iterfind('devices/interface'):
            if nic.find('mac').get('address') == address:
                return nic.find('source').get('bridge')
        return None

    def l1_disk_source(self, instance, target):
        """The NBD export the L1 runs disk ``target`` of, if it has it."""
        domain = ET.fromstring(
            self.driver._host.get_guest(instance).get_xml_desc())
        for disk in domain.findall('devices/disk'):
            if disk.find('target').get('dev') == target:
                source = disk.find('source')
                self.assertEqual('nbd', source.get('protocol'))
                return source.get('name')
        return None

    def disk_records(self, data):
        """Sequence numbers of the disk worker's records in an image."""
        directory = self.useFixture(fixtures.TempDir()).path
        image, raw = (os.path.join(directory, name) for name in
                      ('image', 'raw'))
        with open(image, 'wb') as f:
            f.write(data)
        subprocess.run(['qemu-img', 'convert', '-O', 'raw', image, raw],
                       check=True, capture_output=True, timeout=120)
        with open(raw, 'rb') as f:
            first_mib = f.read(1 << 20)
        seqs = []
        for slot in range(len(first_mib) // DISK_RECORD):
            magic, seq, number, _check = struct.unpack_from(
                '<4Q', first_mib, slot * DISK_RECORD)
            if magic == DISK_MAGIC and number == slot:
                seqs.append(seq)
        return seqs

    def pool_devices(self, generation):
        sibling = self.sibling(generation)
        return [d for d in (nested_host.pool_device(u) for u in
                            self._instance_uuids)
                if sibling.find_device(d) is not None]

    def test_nova_instance_on_nested_rejuvenated_with_its_kernel(self):
        instance, image_meta = self.make_instance()
        self._instance_uuids = [instance.uuid]
        # init_host booted generation 1, an L1 VM, and Nova's connection
        # is to its libvirtd, over TLS.
        self.assertTrue(self.driver._host.uri.startswith('qemu+tls://'))
        self.assertTrue(self.driver._host.guests_in_vm)
        console = self.spawn(instance, image_meta)
        ram_file = self.pool.file_path(instance.uuid)
        self.assertTrue(os.path.exists(ram_file))
        self.wait_ready(console)
        self.assertEqual(power_state.RUNNING,
                         self.driver.get_info(instance).state)
        self.assert_runs_in(1, instance)
        # Nova's console log, on this host, written through the L1's port.
        self.assertIn('VMBEAM', self.driver.get_console_output(
            self.ctxt, instance).decode(errors='replace'))
        # Nova counts this host's memory, which holds the guests' RAM,
        # not the L1's 1 GiB.
        self.assertGreater(self.driver._host.get_memory_mb_total(), 2048)
        # Its root disk counts in this host's disk over-commit (a qcow2 of
        # 1 GiB, nearly empty), though the L1 names the NBD export.
        self.assertGreater(self.driver._get_disk_over_committed_size_total(),
                           512 << 20)
        kernel_before = self.sibling(1).health().kernel

        mark = console.offset()
        started = self.api.rejuvenate_host(self.ctxt, HOST)
        self.assertEqual(2, started['generation'])
        status = self.wait_idle(timeout=900)
        self.assertEqual('completed', status['last_request']['state'],
                         status)
        self.assertEqual(2, status['active_generation'])
        entry = status['run']['guests'][instance.name]
        self.assertEqual('moved', entry['state'], entry)
        self.addDetail('move', testtools.content.text_content(
            'run: %s\nguest: %s' % (
                {k: v for k, v in status['run'].items()
                 if k.endswith('_ms')}, entry['result'])))
        self.assertLess(entry['result']['transferred_bytes'], 64 << 20)
        self.assert_runs_in(2, instance)
        self.assertFalse(self.sibling(1).running())
        kernel_after = self.sibling(2).health().kernel
        # A kernel booted afresh under the instance.
        self.assertNotEqual(kernel_before.boot_id, kernel_after.boot_id)
        self.addDetail('l1-kernels', testtools.content.text_content(
            'before: %s\nafter: %s' % (kernel_before, kernel_after)))
        self.assertIn('gen2', self.sibling(2).name)
        self.assertEqual(self.sibling(2).uri, self.driver._host.uri)
        self.assertEqual([instance.uuid], self.driver.list_instance_uuids())
        self.assertEqual(power_state.RUNNING,
                         self.driver.get_info(instance).state)
        self.assert_intact(console, mark)
        # The compute node keeps this host's name, not the L1's.
        self.assertEqual(socket.gethostname().split('.')[0],
                         self.driver._host.get_hostname().split('.')[0])

        # L0's disk server killed under the running instance: Nova's
        # periodic resource update starts it again, with the export, and
        # the guest's NBD client carries on without an I/O error.
        storage = disks.StorageDaemon(CONF)
        with self.user.as_root():
            os.kill(storage.process().pid, signal.SIGKILL)
        self.assertFalse(storage.running())
        offset = console.offset()
        resources = self.driver.get_available_resource(
            self.driver._host.get_hostname())
        self.assertTrue(storage.running())
        self.assertGreater(resources['memory_mb'], 2048)
        console.wait_for_disk_ok(2, 300, offset)
        disk = console.disk_status(offset)
        self.assertEqual((0, 0), (disk['errors'], disk['guest_errors']),
                         disk['error_lines'])

        # Nova's operations on the moved instance. A running one's
        # snapshot is copied at L0 while it goes on writing its disk; a
        # stopped one's is taken from its disk on this host.
        snapshot = self.glance.create(self.ctxt, {
            'name': 'snap', 'disk_format': 'qcow2',
            'container_format': 'bare', 'properties': {}})
        seq_before = console.disk_status()['seq']
        offset = console.offset()
        disk_format, data = self.snapshot(instance, snapshot['id'])
        seq_after = console.disk_status()['seq']
        self.assertEqual('qcow2', disk_format)
        # Its records are those the guest had written by then: the disk
        # as it was while the snapshot was taken, not as the image was.
        records = self.disk_records(data)
        self.assertTrue(records, 'no disk worker record in the snapshot')
        self.assertLessEqual(seq_before, max(records))
        self.assertLessEqual(max(records), seq_after + 1)
        # The instance ran on, and its disk with it.
        self.assertEqual(power_state.RUNNING,
                         self.driver.get_info(instance).state)
        console.wait_for_disk_ok(2, 300, offset)
        disk = console.disk_status(offset)
        self.assertEqual((0, 0), (disk['errors'], disk['guest_errors']),
                         disk['error_lines'])
        self.addDetail('live-snapshot', testtools.content.text_content(
            'records up to seq %d; console seq %s before, %s after; %d '
            'bytes' % (max(records), seq_before, seq_after, len(data))))
        self.attach_and_detach_volume_through_l0(instance)
        self.attach_and_detach_interface_through_an_uplink(instance)
        snapshot = self.glance.create(self.ctxt, {
            'name': 'snap-stopped', 'disk_format': 'qcow2',
            'container_format': 'bare', 'properties': {}})
        self.driver.power_off(instance, timeout=0)
        self.assertEqual(power_state.SHUTDOWN,
                         self.driver.get_info(instance).state)
        # The L1 let go of it: pool detached, RAM freed, disks unserved.
        self.assertEqual([], self.pool_devices(2))
        self.assertFalse(os.path.exists(ram_file))
        prefix = disks.export_name(instance.uuid, '')
        with self.user.as_root():   # the daemon's monitor is root's
            exports = disks.StorageDaemon(CONF).exports()
        self.assertEqual([], [e for e in exports if e.startswith(prefix)])
        disk_format, data = self.snapshot(instance, snapshot['id'])
        self.assertEqual('qcow2', disk_format)
        self.assertEqual(b'QFI\xfb', data[:4])

        # Start (Nova's hard reboot path): in the L1 of generation 2.
        mark = console.offset()
        self.driver.power_on(self.ctxt, instance, [])
        self.assertTrue(os.path.exists(ram_file))
        self.wait_ready(console, since=mark)
        self.assert_runs_in(2, instance)

        self.driver.destroy(self.ctxt, instance, [])
        self.assertFalse(self.driver.instance_exists(instance))
        self.assertIsNone(self.in_l1(2, instance))
        self.assertEqual([], self.pool_devices(2))
        self.assertFalse(os.path.exists(ram_file))
