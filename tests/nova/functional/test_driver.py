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

"""VMBeamDriver on real libvirt daemons, rejuvenated over a real RabbitMQ.

The driver spawns a TCG guest from Nova objects (the test guest's kernel
and initrd as Glance images, served by Nova's in-process Glance fixture:
there is no Glance here), the host is rejuvenated through the vmbeam RPC
API on a private rabbitmq-server, and the guest is then hard rebooted and
deleted through the driver. Nova's database is its sqlite fixture; the
notifications go through the broker too and are read back from it.

nova-compute is not root here: the test process drops to the compute user
(compute_user.py) before it creates the driver, whose privileged work goes
through its privsep daemons, started with sudo.
"""

import io
import json
import os
import shutil
import subprocess
import threading
import time
import xml.etree.ElementTree as ET

import fixtures
import libvirt_qemu
from nova.compute import power_state
from nova import context as nova_context
from nova import objects
from nova.objects import fields as obj_fields
from nova import privsep
from nova import rpc as nova_rpc
from nova.tests import fixtures as nova_fixtures
from nova import utils as nova_utils
from nova.virt import fake
import oslo_messaging as messaging
from oslo_messaging import conffixture as messaging_conffixture
from oslo_utils import importutils
from oslo_utils import uuidutils
import testtools.content

from nova_vmbeam import conf as vmbeam_conf
from nova_vmbeam import exception
from nova_vmbeam.libvirt import partition as partition_mod
from nova_vmbeam import privsep as vmbeam_privsep
from nova_vmbeam.qemu import procfs
from nova_vmbeam.rpc import api as rpc_api
from nova_vmbeam.virt import notifications
from nova_vmbeam.virt import rejuvenation
from nova_vmbeam import waiting
from tests.functional import base as ft_base
from tests.functional import rabbitmq
from tests.nova.functional import compute_user
from vmbeam_devtools import guestimage
from vmbeam_devtools.guestimage import console as guestimage_console
from vmbeam_devtools import testbed as testbed_mod

CONF = vmbeam_conf.CONF
HOST = 'vmbeam-ft-compute'
RAM_MIB = 256
WORK_MIB = 64
DIRTY_MIB_S = 16


class _Notifications:
    """Versioned notifications, as a consumer on the broker gets them."""

    def __init__(self):
        self.received = []
        self._cond = threading.Condition()

    def _got(self, priority, event_type, payload):
        with self._cond:
            self.received.append((priority, event_type, payload))
            self._cond.notify_all()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self._got('INFO', event_type, payload)

    def error(self, ctxt, publisher_id, event_type, payload, metadata):
        self._got('ERROR', event_type, payload)

    def wait_for(self, event_type, timeout=30.0):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for item in self.received:
                    if item[1] == event_type:
                        return item
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError('no %s notification; got %s' % (
                        event_type, [r[1] for r in self.received]))
                self._cond.wait(left)


class _RootsConsoleLog(guestimage.ConsoleLog):
    """The guest's console log, which virtlogd writes as root's, 0600.

    nova-compute reads it through privsep (get_console_output); the test
    reads all of it, as root, in its own thread only.
    """

    def __init__(self, path, user):
        super().__init__(path)
        self._user = user

    def read(self):
        with self._user.as_root():
            return super().read()

    def offset(self):
        with self._user.as_root():
            return super().offset()


class DriverOnLibvirtTestCase(ft_base.PrivateStateTestCase):

    REQUIRED = ('qemu-system-x86_64', 'unshare', '/usr/sbin/libvirtd',
                'qemu-img')

    def stub_out(self, target, value):
        self.useFixture(fixtures.MonkeyPatch(target, value))

    def setUp(self):
        super().setUp()
        if not rabbitmq.installed():
            self.skipTest('rabbitmq-server is not installed (it is in '
                          'bindep.txt; run tools/install.sh)')
        self.broker = self.useFixture(rabbitmq.RabbitMQ())
        self.user = self.useFixture(compute_user.ComputeUser())
        state = self.conf.vmbeam.state_path
        os.chmod(state, 0o711)
        self.useFixture(nova_fixtures.ConfFixture(CONF))
        self.useFixture(nova_fixtures.Database())
        self.useFixture(nova_fixtures.Database(database='api'))
        self.glance = self.useFixture(nova_fixtures.GlanceFixture(self))
        nova_state = os.path.join(state, 'nova')
        instances = os.path.join(nova_state, 'instances')
        os.makedirs(instances)
        os.chmod(nova_state, 0o711)
        os.chmod(instances, 0o711)
        flags = {
            None: dict(host=HOST, state_path=nova_state,
                       instances_path=instances,
                       transport_url=self.broker.url,
                       compute_driver='vmbeam.VMBeamDriver'),
            'libvirt': dict(virt_type='qemu'),
            'vnc': dict(enabled=False),
            'oslo_messaging_notifications': dict(driver=['messaging']),
            'notifications': dict(notification_format='versioned'),
            'vmbeam': dict(state_path=state,
                           ram_pool_path=self.conf.vmbeam.ram_pool_path,
                           # The test's own pagemover daemon, the one
                           # that owns this pool.
                           pagemoverd_socket=(
                               self.conf.vmbeam.pagemoverd_socket),
                           ram_default=False, migration_timeout=60.0,
                           plain_ram_policy='refuse'),
            'oslo_concurrency': dict(lock_path=os.path.join(state, 'locks')),
        }
        # As on a node where nova-compute is not root: each privsep daemon
        # it needs is started through sudo (the test's rule names this
        # environment's privsep-helper).
        for context in ('nova_sys_admin', 'vmbeam_privsep'):
            flags[context] = dict(helper_command=self.user.helper_command)
        # oslo.messaging's options (transport_url, notifications).
        self.useFixture(messaging_conffixture.ConfFixture(CONF))
        for group, values in flags.items():
            for name, value in values.items():
                CONF.set_override(name, value, group)
        self.addCleanup(CONF.reset)
        self.configure_generations()
        # A daemon an earlier test started for root is not reused: this
        # test's are started for the compute user.
        for context in (privsep.sys_admin_pctxt,
                        vmbeam_privsep.vmbeam_pctxt):
            context.stop()
            self.addCleanup(context.stop)
        nova_rpc.init(CONF)
        self.addCleanup(nova_rpc.cleanup)
        self.ctxt = nova_context.get_admin_context()
        self.notifications = _Notifications()
        self.client_transport = rpc_api.get_transport(CONF)
        self.addCleanup(self.client_transport.cleanup)
        listener = messaging.get_notification_listener(
            nova_rpc.NOTIFICATION_TRANSPORT,
            [messaging.Target(topic='versioned_notifications')],
            [self.notifications])
        listener.start()
        self.addCleanup(listener.wait)
        self.addCleanup(listener.stop)
        self.api = rpc_api.VMBeamAPI(self.client_transport, timeout=120)
        self.image = self._images()
        self.pool = testbed_mod.Testbed(self.conf, name='ft-driver',
                                        image=ft_base.image()).pool
        self.addCleanup(self._kill_strays)
        self.addCleanup(self._retire_generations)
        # From here on the process is nova-compute's user (root again for
        # the clean-ups above, after the driver's own).
        self.user.give(state)
        self.user.become()
        # The pool daemon, started for the compute user (--client-uid).
        self.pool.ensure()
        # As nova-compute loads it: compute_driver = vmbeam.VMBeamDriver.
        self.driver = importutils.import_object(
            'nova.virt.%s' % CONF.compute_driver, fake.FakeVirtAPI())
        self.driver.init_host(HOST)
        self.addCleanup(self.driver.cleanup_host, HOST)

    # --- set-up helpers ------------------------------------------------------

    #: the test guest's memory worker, as its kernel command line sets it
    GUEST_ARGS = dict(ram_mib=WORK_MIB, dirty_mib_s=DIRTY_MIB_S,
                      report_ms=500, verify_mib_s=2 * WORK_MIB)
    RAM_MIB = RAM_MIB

    def configure_generations(self):
        """Options of the generations' kind (colocated: the defaults).

        Set as root, before the driver is made.
        """

    def _images(self):
        """The test guest as Glance images: kernel, initrd, a tiny disk."""
        built = ft_base.image()
        ids = {}
        for key, path, fmt in (('kernel', built.kernel, 'aki'),
                               ('ramdisk', built.initrd, 'ari')):
            with open(path, 'rb') as f:
                data = f.read()
            ids[key] = self.glance.create(None, {
                'name': key, 'disk_format': fmt, 'container_format': fmt,
                'size': len(data), 'properties': {}},
                data=io.BytesIO(data))['id']
        disk = b'\0' * (1 << 20)
        ids['root'] = self.glance.create(None, {
            'name': 'vmbeam-test-guest', 'disk_format': 'raw',
            'container_format': 'bare', 'size': len(disk),
            'properties': {
                'kernel_id': ids['kernel'], 'ramdisk_id': ids['ramdisk'],
                'os_command_line': guestimage.kernel_cmdline(
                    hostname='nova-guest', **self.GUEST_ARGS)}},
            data=io.BytesIO(disk))['id']
        return ids

    def _retire_generations(self):
        orchestrator = self.driver._rejuvenation.orchestrator
        state = orchestrator.state()
        for number in state.generations:
            sibling = orchestrator.sibling(number, state)
            if not sibling.running():
                continue
            host = sibling.host()
            try:
                for endpoint in host.guests():
                    endpoint.destroy()
            except exception.VMBeamError:
                pass   # retired meanwhile
            finally:
                host.close()
            try:
                sibling.retire()
            except Exception as exc:   # the others must still go
                self.addDetail('retire-%s' % number,
                               testtools.content.text_content(str(exc)))

    def _kill_strays(self):
        with self.user.as_root():   # QEMU's user's processes
            for pid in self.qemu_pids():
                os.kill(pid, 9)

    def make_instance(self, vmbeam_ram=True):
        flavor = objects.Flavor(
            id=1, flavorid='vmbeam-ft', name='vmbeam-ft',
            memory_mb=self.RAM_MIB,
            vcpus=1, root_gb=1, ephemeral_gb=0, swap=0, rxtx_factor=1.0,
            vcpu_weight=None, disabled=False, is_public=True,
            extra_specs={'vmbeam:ram': 'true' if vmbeam_ram else 'false'},
            description=None)
        image = self.glance.show(self.ctxt, self.image['root'])
        instance = objects.Instance(
            context=self.ctxt, uuid=uuidutils.generate_uuid(),
            project_id='p', user_id='u', host=HOST,
            image_ref=self.image['root'], kernel_id=self.image['kernel'],
            ramdisk_id=self.image['ramdisk'], memory_mb=self.RAM_MIB,
            vcpus=1,
            root_gb=1, ephemeral_gb=0, flavor=flavor, old_flavor=None,
            new_flavor=None, instance_type_id=1,
            vm_state='building', power_state=power_state.NOSTATE,
            # As the compute manager keeps them: the image properties that
            # hard reboot and start rebuild the guest from.
            system_metadata=nova_utils.get_system_metadata_from_image(
                image, flavor),
            os_type=None, config_drive='',
            numa_topology=None, pci_requests=None, resources=None,
            ephemeral_key_uuid=None, launched_at=None, trusted_certs=None,
            root_device_name=None, key_data=None, user_data=None,
            architecture=obj_fields.Architecture.X86_64, hidden=False)
        instance.create()
        image_meta = objects.ImageMeta.from_dict(image)
        return instance, image_meta

    def spawn(self, instance, image_meta):
        self.driver.spawn(self.ctxt, instance, image_meta, [], 'pw', {},
                          network_info=[])
        return _RootsConsoleLog(os.path.join(
            CONF.instances_path, instance.uuid, 'console.log'), self.user)

    def wait_ready(self, console, since=0):
        console.wait_for(guestimage_console.READY_RE, 300,
                         after_offset=since)

    def assert_intact(self, console, since):
        """Two full memory checks begun after ``since``, no bad page."""
        guest = type('G', (), {'name': 'nova-guest', 'console': console})
        status = testbed_mod.Testbed.check_integrity(None, guest, since,
                                                     passes=2)
        self.assertEqual(0, status['errors'])

    def snapshot(self, instance, image_id):
        """Nova's snapshot of ``instance``: (disk format, data uploaded)."""
        uploaded = {}
        glance_update = self.glance.update

        def update(context, image_id, metadata, data=None, **kwargs):
            if data is not None:   # Nova's fixture drops the data
                uploaded[image_id] = (metadata.get('disk_format'),
                                      data.read())
            return glance_update(context, image_id, metadata, **kwargs)
        self.glance.update = update
        self.driver.snapshot(self.ctxt, instance, image_id,
                             lambda *args, **kwargs: None)
        return uploaded[image_id]

    def wait_idle(self, timeout=300):
        deadline = time.monotonic() + timeout
        while True:
            status = self.api.status(self.ctxt, HOST)
            if status['running'] is None:
                return status
            if time.monotonic() > deadline:
                self.fail('rejuvenation still running: %s' % status)
            time.sleep(0.5)

    def loop_volume(self):
        """A block device volume: (device, connection_info, its stat).

        os-brick's part, as root; the driver's part (giving the device
        to QEMU and back) is the compute user's, through privsep.
        """
        if not shutil.which('losetup'):
            self.skipTest('losetup is not installed')
        image = os.path.join(self.conf.vmbeam.state_path, 'volume.img')
        with open(image, 'wb') as f:
            f.truncate(16 << 20)
        with self.user.as_root():
            device = subprocess.run(['losetup', '--find', '--show', image],
                                    capture_output=True, text=True,
                                    check=True).stdout.strip()
        self.addCleanup(self._detach_loop, device)
        connection_info = {'driver_volume_type': 'local',
                           'serial': uuidutils.generate_uuid(),
                           'data': {'device_path': device}}
        return device, connection_info, os.stat(device)

    def wait_guest_drives(self, instance, target, timeout=300):
        """Until the guest's kernel drives disk ``target`` (DRIVER_OK).

        Asked of the guest's QEMU. The volume reached the guest, not only
        its QEMU; and a detach requested while the guest still probes the
        device it was just given can cross its hot-add (TCG inside TCG is
        slow enough for that): Nova's retries would then wait in vain.
        """
        guest = self.driver._host.get_guest(instance)
        aliases = [disk.find('alias').get('name') for disk in
                   ET.fromstring(guest.get_xml_desc()).iterfind(
                       'devices/disk')
                   if disk.find('target').get('dev') == target]
        self.assertEqual(1, len(aliases), aliases)
        query = json.dumps({
            'execute': 'x-query-virtio-status',
            'arguments': {'path': '/machine/peripheral/%s/virtio-backend'
                          % aliases[0]}})
        seen = []

        def driver_ok():
            reply = json.loads(libvirt_qemu.qemuMonitorCommand(
                guest._domain, query, 0))
            seen[:] = reply['return']['status']['statuses']
            return any(status.startswith('VIRTIO_CONFIG_S_DRIVER_OK')
                       for status in seen)
        waiting.until(driver_ok, timeout, 1.0, lambda: self.fail(
            'the guest does not drive %s after %d s: %s' % (
                target, timeout, seen)))

    def attach_and_detach_volume(self, instance):
        """A block device volume (a loop device) into the running guest."""
        device, connection_info, before = self.loop_volume()
        self.driver.attach_volume(self.ctxt, connection_info, instance,
                                  '/dev/vdb')
        xml = self.driver._host.get_guest(instance).get_xml_desc()
        self.assertIn("<source dev='%s'" % device, xml)
        qemu, = self.qemus_of(instance)
        with self.user.as_root():   # QEMU's fds are its user's to list
            opened = {os.path.realpath('/proc/%d/fd/%s' % (qemu, fd))
                      for fd in os.listdir('/proc/%d/fd' % qemu)}
        self.assertIn(device, opened)
        self.wait_guest_drives(instance, 'vdb')
        self.driver.detach_volume(self.ctxt, connection_info, instance,
                                  '/dev/vdb')
        xml = self.driver._host.get_guest(instance).get_xml_desc()
        self.assertNotIn(device, xml)
        # Its owner is back to what it was before the attach.
        self.assertEqual((before.st_uid, before.st_gid),
                         (os.stat(device).st_uid, os.stat(device).st_gid))

    def _detach_loop(self, device):
        with self.user.as_root():
            subprocess.run(['losetup', '-d', device])

    def qemus_of(self, instance):
        return self.qemu_pids('guest=%s,' % instance.name)

    def assert_in_partition_of(self, generation, instance):
        """The instance's QEMU runs in ``generation``'s partition."""
        [pid] = self.qemus_of(instance)
        partition = self.driver._rejuvenation.orchestrator.sibling(
            generation).partition
        cgroup = procfs.cpu_cgroup(pid)
        self.assertTrue(cgroup.startswith(
            partition_mod.cgroup_path(partition) + '/'), cgroup)

    def generation_of(self, instance):
        """The generation whose daemon holds the instance's domain."""
        orchestrator = self.driver._rejuvenation.orchestrator
        state = orchestrator.state()
        found = []
        for number, generation in state.generations.items():
            sibling = orchestrator.sibling(number, state)
            if generation.state in ('retired', 'failed') or \
                    not sibling.running():
                continue
            host = sibling.host()
            try:
                if host.guest(instance.name) is not None:
                    found.append(number)
            finally:
                host.close()
        return found


class TestDriverRejuvenation(DriverOnLibvirtTestCase):

    def test_spawn_rejuvenate_over_rpc_reboot_delete(self):
        instance, image_meta = self.make_instance()
        console = self.spawn(instance, image_meta)
        ram_file = self.pool.file_path(instance.uuid)
        self.assertTrue(os.path.exists(ram_file))
        self.wait_ready(console)
        self.assertEqual(power_state.RUNNING,
                         self.driver.get_info(instance).state)
        self.assertEqual([1], self.generation_of(instance))
        self.assertEqual(1, len(self.qemus_of(instance)))
        # Nova created it in its generation's partition.
        self.assert_in_partition_of(1, instance)
        # nova-compute ran as its own user, without capabilities: the
        # instance's directory is that user's.
        self.assertEqual(0, compute_user.effective_capabilities())
        self.assertEqual(self.user.uid, os.stat(os.path.join(
            CONF.instances_path, instance.uuid)).st_uid)
        # Its root daemons were started for it: privsep's (through sudo:
        # this process could not have made them root), the pool daemon
        # with its uid as --client-uid (the socket is its).
        for context in ('nova.privsep.sys_admin_pctxt',
                        'nova_vmbeam.privsep.vmbeam_pctxt'):
            self.assertEqual([0], compute_user.privsep_daemon_uids(context))
        self.assertEqual(self.user.uid, os.stat(
            self.conf.vmbeam.pagemoverd_socket).st_uid)
        before = self.api.status(self.ctxt, HOST)
        self.assertEqual(1, before['active_generation'])

        # Bad input over RPC: clear errors, nothing changes.
        self.assertRaises(exception.InstanceNotFound,
                          self.api.rejuvenate_instance, self.ctxt, HOST,
                          uuidutils.generate_uuid())
        self.assertRaises(exception.UnknownPlugin, self.api.rejuvenate_host,
                          self.ctxt, HOST, mover='warp')

        # An instance without VMBeam-ready RAM, with plain_ram_policy =
        # refuse: it cannot be moved alone, nor can the host be
        # rejuvenated while it runs; nothing changes.
        plain, plain_meta = self.make_instance(vmbeam_ram=False)
        self.spawn(plain, plain_meta)
        self.assertFalse(os.path.exists(self.pool.file_path(plain.uuid)))
        exc = self.assertRaises(exception.NotVMBeamReady,
                                self.api.rejuvenate_instance, self.ctxt,
                                HOST, plain.uuid)
        self.assertIn(plain.uuid, str(exc))
        exc = self.assertRaises(exception.RamNotShareable,
                                self.api.rejuvenate_host, self.ctxt, HOST)
        self.assertIn(plain.name, str(exc))
        self.assertEqual(before['generations'].keys(), self.api.status(
            self.ctxt, HOST)['generations'].keys())
        self.assertIsNone(self.api.status(self.ctxt, HOST)['run'])
        self.driver.destroy(self.ctxt, plain, [])

        mark = console.offset()
        started = self.api.rejuvenate_host(self.ctxt, HOST)
        self.assertEqual('running', started['state'])
        self.assertEqual(2, started['generation'])
        # One at a time: a second request while it runs is refused.
        try:
            self.api.rejuvenate_host(self.ctxt, HOST)
        except exception.RejuvenationRunning:
            pass
        status = self.wait_idle()
        self.assertEqual('completed', status['last_request']['state'],
                         status)
        self.assertEqual(2, status['active_generation'])
        entry = status['run']['guests'][instance.name]
        self.assertEqual('moved', entry['state'])
        self.assertEqual(instance.uuid, entry['uuid'])
        self.assertEqual('zerocopy', entry['result']['mover'])
        self.assertGreater(entry['result']['downtime_ms'], 0)
        self.assertLess(entry['result']['transferred_bytes'], 64 << 20)

        # The guest runs once, on generation 2, with its memory intact;
        # the driver followed it without restarting.
        self.assertEqual([2], self.generation_of(instance))
        self.assertEqual(1, len(self.qemus_of(instance)))
        self.assert_in_partition_of(2, instance)
        self.assertIn('gen2', self.driver._host.uri)
        self.assertEqual([], self.driver._host.secondary_uris())
        self.assertEqual(power_state.RUNNING,
                         self.driver.get_info(instance).state)
        self.assertEqual([instance.uuid], self.driver.list_instance_uuids())
        self.assert_intact(console, mark)
        self.assertIn('VMBEAM', self.driver.get_console_output(
            self.ctxt, instance).decode(errors='replace'))

        # openstack server event list shows the move.
        actions = objects.InstanceActionList.get_by_instance_uuid(
            self.ctxt, instance.uuid)
        action = [a for a in actions if a.action == rejuvenation.ACTION][0]
        events = objects.InstanceActionEventList.get_by_action(
            self.ctxt, action.id)
        self.assertEqual([(rejuvenation.EVENT, 'Success')],
                         [(e.event, e.result) for e in events])
        # The notifications went through the broker.
        self.notifications.wait_for(notifications.START)
        _prio, _type, payload = self.notifications.wait_for(
            notifications.END)
        guests = payload['nova_object.data']['guests']
        self.assertEqual(instance.uuid,
                         guests[0]['nova_object.data']['instance_uuid'])

        # Nova's own operations on the moved guest, through the driver:
        # volume attach and detach, snapshot, stop (the RAM is freed),
        # start, hard reboot, delete.
        self.attach_and_detach_volume(instance)
        snapshot = self.glance.create(self.ctxt, {
            'name': 'snap', 'disk_format': 'qcow2',
            'container_format': 'bare', 'properties': {}})
        disk_format, data = self.snapshot(instance, snapshot['id'])
        self.assertEqual('qcow2', disk_format)
        self.assertEqual(b'QFI\xfb', data[:4])   # a live qcow2 snapshot
        self.assertEqual(power_state.RUNNING,
                         self.driver.get_info(instance).state)
        self.driver.power_off(instance, timeout=0)
        self.assertEqual(power_state.SHUTDOWN,
                         self.driver.get_info(instance).state)
        self.assertEqual([], self.qemus_of(instance))
        self.assertFalse(os.path.exists(ram_file))
        # Each start rewrites the console log (Nova's append='off'): the
        # new QEMU has truncated it by the time the driver returns.
        self.driver.power_on(self.ctxt, instance, [])
        self.wait_ready(console)
        self.assertTrue(os.path.exists(ram_file))
        self.driver.reboot(self.ctxt, instance, [], 'HARD')
        self.wait_ready(console)
        self.assert_intact(console, 0)
        self.assertEqual([2], self.generation_of(instance))
        self.assertEqual(1, len(self.qemus_of(instance)))
        self.assertTrue(os.path.exists(ram_file))
        self.driver.destroy(self.ctxt, instance, [])
        self.assertEqual([], self.qemus_of(instance))
        self.assertFalse(self.driver.instance_exists(instance))
        self.assertFalse(os.path.exists(ram_file))
        self.assertEqual([], self.generation_of(instance))
