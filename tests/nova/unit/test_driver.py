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

"""VMBeamDriver on Nova's fake libvirt: RAM opt-in, XML hook, pool files."""

import os
from unittest import mock

import fixtures

from lxml import etree
from nova.api.validation.extra_specs import validators
from nova import exception as nova_exception
from nova import objects
from nova.virt import fake
from nova.virt.libvirt import blockinfo
from nova.virt.libvirt import config as vconfig

from nova_vmbeam import exception
from nova_vmbeam import guest as guest_mod
from nova_vmbeam.libvirt import config as engine_config
from nova_vmbeam.nested import consoles as nested_consoles
from nova_vmbeam.nested import disks as nested_disks
from nova_vmbeam.nested import sibling as nested_sibling
from nova_vmbeam import records
from nova_vmbeam.siblings import colocated
from nova_vmbeam.virt import config as vmbeam_config
from nova_vmbeam.virt import driver as driver_mod
from nova_vmbeam.virt import extra_specs
from nova_vmbeam.virt import host as vmbeam_host
from nova_vmbeam.virt import ram
from tests.nova.unit import base

QEMU = '{%s}' % vmbeam_config.QEMU_NS


def numa(cells, pagesize=None, policy=None):
    return objects.InstanceNUMATopology(cells=[
        objects.InstanceNUMACell(id=i, cpuset=set([i]), pcpuset=set(),
                                 memory=512, pagesize=pagesize,
                                 cpu_policy=policy)
        for i in range(cells)])


class TestRamPolicy(base.DriverTestCase):

    RAM_DEFAULT = False

    def test_extra_spec_wins_over_image_property_over_default(self):
        instance = self.make_instance()
        self.assertIsNone(ram.plan(instance, base.CONF))
        instance.system_metadata['image_vmbeam_ram'] = 'true'
        self.assertEqual((True, 'image'),
                         ram.requested(instance, base.CONF))
        instance.flavor.extra_specs = {'vmbeam:ram': 'false'}
        self.assertIsNone(ram.plan(instance, base.CONF))
        instance.flavor.extra_specs = {'vmbeam:ram': 'true'}
        plan = ram.plan(instance, base.CONF)
        self.assertEqual(self.pool_file(instance), plan.path(instance.uuid))
        self.assertEqual(instance.flavor.memory_mb << 20, plan.size_bytes)

    def test_bad_flag_is_refused_with_its_fix(self):
        instance = self.make_instance(extra_specs={'vmbeam:ram': 'maybe'})
        exc = self.assertRaises(exception.InvalidInput, ram.plan, instance,
                                base.CONF)
        self.assertIn('vmbeam:ram', str(exc))
        self.assertIn('true or false', str(exc))

    def test_instance_without_vmbeam_ram_keeps_plain_libvirt_ram(self):
        instance = self.make_instance()
        self.spawn(instance)
        self.assertTrue(self.connection.instance_exists(instance))
        self.assertFalse(os.path.exists(self.pool_file(instance)))
        xml = self.connection._host.get_guest(instance).get_xml_desc()
        self.assertEqual(guest_mod.RAM_ANONYMOUS,
                         engine_config.guest_spec(xml).ram.kind)

    def test_numa_topologies_that_one_backend_cannot_hold(self):
        instance = self.make_instance(extra_specs={'vmbeam:ram': 'true'})
        instance.numa_topology = numa(2)
        exc = self.assertRaises(exception.RamConflict, ram.plan, instance,
                                base.CONF)
        self.assertIn('2 guest NUMA nodes', str(exc))
        self.assertIn('vmbeam:ram=false', str(exc))
        instance.numa_topology = numa(1, policy='dedicated')
        self.assertRaises(exception.RamConflict, ram.plan, instance,
                          base.CONF)
        # Asked for by the default only: plain RAM instead of a failure.
        self.flags(ram_default=True, group='vmbeam')
        instance.flavor.extra_specs = {}
        self.assertIsNone(ram.plan(instance, base.CONF))

    def test_flavor_huge_pages_use_the_hugetlbfs_pool(self):
        self.flags(hugepage_pool_path='/dev/hugepages/x', group='vmbeam')
        instance = self.make_instance(extra_specs={'vmbeam:ram': 'true'})
        instance.numa_topology = numa(1, pagesize=2048)
        plan = ram.plan(instance, base.CONF)
        self.assertTrue(plan.hugepages)
        self.assertEqual('/dev/hugepages/x/%s.ram' % instance.uuid,
                         plan.path(instance.uuid))


class TestGuestXml(base.DriverTestCase):

    def guest_xml(self, instance):
        image_meta = objects.ImageMeta.from_dict({'disk_format': 'raw'})
        disk_info = blockinfo.get_disk_info('qemu', instance, image_meta)
        return self.connection._get_guest_xml(self.ctxt, instance, [],
                                              disk_info, image_meta)

    def test_domain_keeps_ram_in_the_instance_pool_file(self):
        instance = self.make_instance()
        xml = self.guest_xml(instance)
        root = etree.fromstring(xml)
        self.assertEqual(vmbeam_config.QEMU_NS, root.nsmap['qemu'])
        args = [a.get('value') for a in root.iter(QEMU + 'arg')]
        backend = args[args.index('-object') + 1]
        self.assertIn('mem-path=%s' % self.pool_file(instance), backend)
        self.assertIn('size=%dM' % instance.flavor.memory_mb, backend)
        self.assertIn('share=on', backend)
        self.assertEqual('memory-backend=vmbeam-ram',
                         args[args.index('-machine') + 1])
        # The engine reads the same backing back: the guest is movable.
        spec = engine_config.guest_spec(xml)
        self.assertEqual(guest_mod.RamBacking(guest_mod.RAM_FILE,
                                              self.pool_file(instance)),
                         spec.ram)
        # Nova reads the XML back without tripping over the extension.
        parsed = vconfig.LibvirtConfigGuest()
        parsed.parse_str(xml)
        self.assertEqual(instance.uuid, parsed.uuid)

    def test_numa_cells_and_nova_hugepages_are_dropped(self):
        guest = vconfig.LibvirtConfigGuest()
        guest.virt_type = 'kvm'
        guest.memory = 1024 * 1024
        guest.cpu = vconfig.LibvirtConfigGuestCPU()
        guest.cpu.numa = vconfig.LibvirtConfigGuestCPUNUMA()
        guest.numatune = vconfig.LibvirtConfigGuestNUMATune()
        guest.membacking = vconfig.LibvirtConfigGuestMemoryBacking()
        guest.membacking.hugepages = [
            vconfig.LibvirtConfigGuestMemoryBackingPage()]
        guest.membacking.locked = True
        vmbeam_config.use_pool_ram(guest, '/dev/hugepages/p/u.ram')
        self.assertIsNone(guest.cpu.numa)
        self.assertIsNone(guest.numatune)
        self.assertEqual([], guest.membacking.hugepages)
        self.assertTrue(guest.membacking.locked)
        xml = guest.to_xml()
        self.assertNotIn('<hugepages', xml)
        self.assertIn('size=1024M,mem-path=/dev/hugepages/p/u.ram', xml)


class TestPoolLifecycle(base.DriverTestCase):

    def test_spawn_allocates_reboot_renews_destroy_releases(self):
        instance = self.make_instance()
        network_info = self.spawn(instance)
        path = self.pool_file(instance)
        self.assertEqual(instance.flavor.memory_mb << 20,
                         os.stat(path).st_size)
        # The domain the fake daemon got names that very file.
        xml = self.connection._host.get_guest(instance).get_xml_desc()
        with open(path, 'wb') as f:
            f.truncate(instance.flavor.memory_mb << 20)
            f.write(b'old contents')
        self.connection.reboot(self.ctxt, instance, network_info, 'HARD')
        with open(path, 'rb') as f:
            self.assertEqual(b'\0' * 12, f.read(12))   # a fresh file
        self.assertTrue(xml)
        self.connection.destroy(self.ctxt, instance, network_info)
        self.assertFalse(os.path.exists(path))

    def test_mapped_ram_is_never_released(self):
        instance = self.make_instance()
        network_info = self.spawn(instance)
        with mock.patch('nova_vmbeam.pool.RamPool.mapped_by',
                        return_value=[4242]):
            self.connection.destroy(self.ctxt, instance, network_info)
        self.assertTrue(os.path.exists(self.pool_file(instance)))

    def test_no_release_while_the_instance_moves(self):
        instance = self.make_instance()
        self.spawn(instance)
        self.connection._host.begin_move(instance.uuid)
        self.connection._destroy(instance)
        self.assertTrue(os.path.exists(self.pool_file(instance)))
        self.connection._host.end_move(instance.uuid, moved=False)
        self.connection._destroy(instance)
        self.assertFalse(os.path.exists(self.pool_file(instance)))

    def test_live_migration_uri_reaches_the_active_generation(self):
        self.flags(live_migration_scheme='ssh', group='libvirt')
        uri = self.connection._live_migration_uri('dest')
        self.assertEqual(
            'qemu+ssh://dest/system?socket=%s/active-libvirt-sock' %
            base.CONF.vmbeam.state_path, uri)
        self.flags(live_migration_uri='qemu+ssh://%s/x', group='libvirt')
        self.assertEqual('qemu+ssh://dest/x',
                         self.connection._live_migration_uri('dest'))


class TestExtraSpecValidation(base.DriverTestCase):

    def test_nova_api_validates_vmbeam_ram(self):
        for validator in extra_specs.register():
            validators.VALIDATORS[validator.name] = validator
        self.addCleanup(validators.VALIDATORS.pop, ram.EXTRA_SPEC)
        validators.validate('vmbeam:ram', 'true')
        self.assertRaises(nova_exception.ValidationError,
                          validators.validate, 'vmbeam:ram', 'maybe')


_START_GENERATIONS = driver_mod.VMBeamDriver._start_generations


class TestStartGenerations(base.DriverTestCase):
    """Which daemons nova-compute talks to when it starts."""

    def journal(self, run_state):
        orchestrator = self.connection._rejuvenation.orchestrator
        generations = {
            n: orchestrator.generations.record(
                colocated.ColocatedSibling(base.CONF, n), state)
            for n, state in ((1, 'active'), (2, 'ready'))}
        run = records.Run(id='r', source=1, target=2, state=run_state,
                          mover='zerocopy') if run_state else None
        orchestrator.journal.save(records.JournalState(
            active=1, generations=generations, run=run))
        self.useFixture(base.fixtures.MockPatchObject(orchestrator, 'init'))
        self.useFixture(base.fixtures.MockPatchObject(orchestrator,
                                                      'recover'))
        return {n: colocated.ColocatedSibling(base.CONF, n).uri
                for n in (1, 2)}

    def test_an_open_run_is_followed_on_both_generations(self):
        uris = self.journal('incomplete')
        self.assertEqual((uris[2], [uris[1]]),
                         _START_GENERATIONS(self.connection))

    def test_otherwise_the_active_generation_alone(self):
        uris = self.journal(None)
        self.assertEqual((uris[1], []), _START_GENERATIONS(self.connection))


class TestGenerationPartitions(base.DriverTestCase):
    """Nova's guests go to the partition of the generation they start on."""

    def journal(self):
        orchestrator = self.connection._rejuvenation.orchestrator
        siblings = {n: colocated.ColocatedSibling(base.CONF, n)
                    for n in (1, 2)}
        orchestrator.journal.save(records.JournalState(
            active=1, generations={
                n: orchestrator.generations.record(sibling, 'active')
                for n, sibling in siblings.items()}))
        return siblings

    def test_partition_of_the_primary_generation(self):
        siblings = self.journal()
        self.assertIsNone(self.connection._primary_sibling())
        self.connection._host._uri = siblings[2].uri
        self.assertEqual(siblings[2].partition,
                         self.connection._primary_sibling().partition)
        self.assertNotEqual(siblings[1].partition, siblings[2].partition)

    def test_created_guest_xml_names_the_partition(self):
        created = []
        self.stub_out(
            'nova.virt.libvirt.driver.LibvirtDriver._create_guest',
            lambda driver, context, xml, instance, *a, **k:
            created.append(xml))
        self.stub_out(
            'nova_vmbeam.virt.driver.VMBeamDriver._primary_sibling',
            lambda driver: mock.Mock(partition='/machine/vmbeam-gen2-'
                                     '1a2b3c4d', guests_in_vm=False))
        instance = self.make_instance()
        self.connection._create_guest(
            self.ctxt, '<domain type="qemu"><name>%s</name><memory>65536'
            '</memory></domain>' % instance.name, instance)
        self.assertEqual('/machine/vmbeam-gen2-1a2b3c4d', etree.fromstring(
            created[0]).findtext('resource/partition'))

    def test_guest_leaves_for_another_host_without_partition(self):
        sent = []
        # (Nova's test base replaces Guest.migrate.)
        self.stub_out('nova.virt.libvirt.guest.Guest.migrate',
                      lambda guest, uri, destination_xml=None, **kwargs:
                      sent.append(destination_xml))
        xml = ('<domain><name>g</name><resource><partition>'
               '/machine/vmbeam-gen2-1a2b3c4d</partition></resource>'
               '</domain>')
        driver_mod._LeavingGuest(mock.Mock()).migrate(
            'qemu+ssh://dest/system', destination_xml=xml, flags=0)
        self.assertEqual('g', etree.fromstring(sent[0]).findtext('name'))
        self.assertIsNone(etree.fromstring(sent[0]).find('resource'))


class RefusedConfigTestCase(base.DriverTestCase):

    def _init_host_refused(self):
        """init_host of a new driver, as a restarted nova-compute's.

        It must refuse (InvalidConfiguration, its message returned) before
        it starts or adopts a generation, or runs an RPC server or monitor.
        """
        started = []
        self.stub_out(
            'nova_vmbeam.virt.driver.VMBeamDriver._start_generations',
            lambda driver: started.append(driver) or (base.PRIMARY, []))
        driver = driver_mod.VMBeamDriver(fake.FakeVirtAPI())
        exc = self.assertRaises(nova_exception.InvalidConfiguration,
                                driver.init_host, 'myhostname')
        self.assertEqual([], started)
        self.assertIsNone(driver._rpc_server)
        self.assertIsNone(driver._aging_monitor)
        return str(exc)


class TestSiblingKind(RefusedConfigTestCase):
    """nova-compute does not start on generations instances cannot use."""

    def test_a_kind_without_nova_instances_is_refused_with_the_fix(self):
        self.flags(sibling_kind='nested', group='vmbeam')
        self.stub_out('nova_vmbeam.nested.sibling.NestedSibling.'
                      'runs_nova_instances', False)
        message = self._init_host_refused()
        self.assertNotIn('\n', message)
        self.assertIn('[vmbeam] sibling_kind = nested: VMBeamDriver cannot '
                      'run Nova instances on nested generations', message)
        self.assertIn('Set [vmbeam] sibling_kind = colocated', message)

    def test_nested_may_start_and_counts_this_hosts_memory(self):
        self.flags(sibling_kind='nested', group='vmbeam')
        self.assertIs(nested_sibling.NestedSibling,
                      self.connection._check_sibling_kind())
        host = self.connection._host
        self.assertFalse(host.guests_in_vm)
        with open('/proc/meminfo') as f:
            total_kib = int(f.readline().split()[1])
        host.guests_in_vm = True
        self.assertEqual(total_kib // 1024, host.get_memory_mb_total())

    def test_nested_with_device_dax_ram_is_refused_with_the_fix(self):
        # Nova frees and remakes an instance's RAM; a virtio-pmem pool
        # cannot leave its L1.
        self.flags(sibling_kind='nested', group='vmbeam')
        self.flags(bar_mapping='dax', group='vmbeam_nested')
        message = self._init_host_refused()
        self.assertIn('[vmbeam_nested] bar_mapping = dax gives device-DAX '
                      'RAM, which VMBeamDriver does not support', message)
        self.assertIn('Set [vmbeam_nested] bar_mapping = resource2_wc',
                      message)
        self.flags(bar_mapping='resource2_wc', group='vmbeam_nested')
        self.connection._check_sibling_kind()

    def test_switching_kinds_under_running_generations_is_refused(self):
        # This host runs colocated generation 1.
        orchestrator = self.connection._rejuvenation.orchestrator
        orchestrator.journal.save(records.JournalState(
            active=1, generations={1: orchestrator.generations.record(
                colocated.ColocatedSibling(base.CONF, 1), 'active')}))
        self.flags(sibling_kind='nested', group='vmbeam')
        message = self._init_host_refused()
        self.assertIn('[vmbeam] sibling_kind = nested, but this host runs '
                      'colocated generations (gen1)', message)
        self.assertIn('Set [vmbeam] sibling_kind = colocated again', message)

    def test_an_unknown_kind_is_refused_naming_the_installed_ones(self):
        self.flags(sibling_kind='warp', group='vmbeam')
        message = self._init_host_refused()
        self.assertIn("Unknown sibling kind 'warp'", message)
        self.assertIn('colocated, nested', message)

    def test_colocated_may_start(self):
        self.assertEqual('colocated', base.CONF.vmbeam.sibling_kind)
        self.connection._check_sibling_kind()


class TestAgingConfig(RefusedConfigTestCase):
    """nova-compute does not start on an aging config unsafe for a fleet."""

    def test_the_default_monitor_runs_and_only_reports(self):
        self.assertEqual('report', base.CONF.vmbeam_aging.action)
        self.assertTrue(self.connection._aging_monitor.running())

    def test_rejuvenate_without_a_fleet_limit_fails_before_anything(self):
        self.flags(action='rejuvenate', group='vmbeam_aging')
        message = self._init_host_refused()
        self.assertNotIn('\n', message)
        self.assertIn('[vmbeam_aging] action = rejuvenate, but '
                      '[vmbeam_aging] backend_url is unset', message)
        self.assertIn('single_node = true', message)

    def test_rejuvenate_with_a_shared_backend_or_alone_may_start(self):
        for opts in ({'backend_url': 'redis://ctl:6379'},
                     {'single_node': True}):
            self.flags(action='rejuvenate', group='vmbeam_aging', **opts)
            self.connection._check_aging_config()
            self.flags(backend_url=None, single_node=False,
                       group='vmbeam_aging')


class _FakeL1(object):
    """NestedHost's part in a Nova operation, recorded."""

    BAR = '/sys/bus/pci/devices/0000:00:05.0/resource2'

    def __init__(self, calls, pool_path):
        self.calls = calls
        self.pool_path = pool_path

    def with_attached_ram(self, xml, pool, guest_uuid, ram_mib):
        self.calls.append(('attach', guest_uuid, ram_mib))
        return xml.replace(self.pool_path, self.BAR)

    def prepare(self, guest_uuid, xml):
        self.calls.append(('prepare', guest_uuid))
        return nested_consoles.to_l1_console(xml)[0]

    def forget(self, guest_uuid, pool, console_log):
        self.calls.append(('forget', guest_uuid, console_log,
                           os.path.exists(pool.file_path(guest_uuid))))

    def guest(self, name):
        self.calls.append(('guest', name))
        return object()

    def reach_bridges(self, bridges):
        self.calls.append(('reach', bridges))

    def close(self):
        self.calls.append(('close',))


class TestNestedGenerations(base.DriverTestCase):
    """What the driver does around Nova's operations on a nested L1."""

    def setUp(self):
        super().setUp()
        self.calls = []
        self.l1 = _FakeL1(self.calls, self.pool)
        sibling = mock.Mock(partition=None, guests_in_vm=True,
                            kind='nested', host=lambda: self.l1)
        self.stub_out(
            'nova_vmbeam.virt.driver.VMBeamDriver._primary_sibling',
            lambda driver: sibling)
        self.stub_out(
            'nova_vmbeam.virt.driver.VMBeamDriver._running_vm_hosts',
            lambda driver: [self.l1])
        # The unit tests' pool is a directory of files, as attachable.
        self.stub_out('nova_vmbeam.pool.base.AttachablePool',
                      type(ram.pool_at(base.CONF,
                                       base.CONF.vmbeam.ram_pool_path)))
        self.unexported = []
        self.stub_out('nova_vmbeam.nested.disks.StorageDaemon.unexport',
                      lambda daemon, uuid: self.unexported.append(uuid))
        self.connection._host.guests_in_vm = True
        # What Nova defines in the L1 (the fake daemon's XMLDesc is canned).
        self.defined = []
        create = driver_mod.libvirt_driver.LibvirtDriver._create_guest

        def created(driver, context, xml, *args, **kwargs):
            self.defined.append(xml)
            return create(driver, context, xml, *args, **kwargs)
        self.stub_out(
            'nova.virt.libvirt.driver.LibvirtDriver._create_guest', created)

    def test_spawn_attaches_the_pool_then_prepares_the_l1(self):
        instance = self.make_instance()
        self.spawn(instance)
        self.assertEqual([('attach', instance.uuid, instance.flavor.memory_mb),
                          ('prepare', instance.uuid), ('close',)],
                         self.calls)
        xml, = self.defined
        # The L1's QEMU maps the pool's BAR, not the file on this host.
        self.assertIn('mem-path=%s' % _FakeL1.BAR, xml)
        self.assertNotIn(self.pool_file(instance), xml)
        self.assertTrue(os.path.exists(self.pool_file(instance)))

    def test_destroy_lets_the_l1_go_before_the_ram_is_freed(self):
        instance = self.make_instance()
        network_info = self.spawn(instance)
        del self.calls[:]
        self.connection.destroy(self.ctxt, instance, network_info)
        console_log = os.path.join(base.CONF.instances_path, instance.uuid,
                                   'console.log')
        # The pool was detached while its file still existed; then freed.
        self.assertIn(('forget', instance.uuid, console_log, True),
                      self.calls)
        self.assertFalse(os.path.exists(self.pool_file(instance)))
        self.assertIn(instance.uuid, self.unexported)

    def test_a_failed_detach_keeps_the_ram(self):
        instance = self.make_instance()
        network_info = self.spawn(instance)

        def refuse(*args):
            raise exception.VMBeamError('the L1 did not release the pool')
        self.l1.forget = refuse
        self.assertRaises(exception.VMBeamError, self.connection.destroy,
                          self.ctxt, instance, network_info)
        self.assertTrue(os.path.exists(self.pool_file(instance)))

    def test_console_output_is_read_from_this_hosts_log(self):
        instance = self.make_instance()
        self.spawn(instance)
        xml, = self.defined
        self.stub_out('nova.virt.libvirt.guest.Guest.get_xml_desc',
                      lambda guest, *a, **k: xml)
        console_log = nested_consoles.log_path(xml)
        self.assertEqual(os.path.join(base.CONF.instances_path,
                                      instance.uuid, 'console.log'),
                         console_log)
        with open(console_log, 'wb') as f:
            f.write(b'written through the L1 port')
        self.stub_out('nova.privsep.path.last_bytes',
                      lambda path, n: (open(path, 'rb').read(), 0))
        self.assertEqual(b'written through the L1 port',
                         self.connection.get_console_output(self.ctxt,
                                                            instance))

    def test_huge_pages_are_refused_before_the_l1_is_touched(self):
        instance = self.make_instance()
        plan = ram.plan(instance, base.CONF)
        self.stub_out('nova_vmbeam.virt.ram.plan',
                      lambda *a: ram.RamPlan(pool=plan.pool,
                                             size_bytes=plan.size_bytes,
                                             hugepages=True,
                                             page_size_kib=2048))
        self.stub_out('nova_vmbeam.virt.ram.allocate', lambda *a: None)
        xml = ('<domain type="qemu"><name>%s</name><uuid>%s</uuid>'
               '<memory>65536</memory></domain>' % (instance.name,
                                                    instance.uuid))
        xml = engine_config.with_ram(xml, guest_mod.RamBacking(
            guest_mod.RAM_FILE, plan.path(instance.uuid)), 64)
        exc = self.assertRaises(exception.PoolError,
                                self.connection._create_guest, self.ctxt,
                                xml, instance)
        self.assertIn('no huge pages', str(exc))
        self.assertEqual([], self.calls)

    def test_an_interface_s_bridge_reaches_the_l1_before_the_nic(self):
        instance = self.make_instance()
        network_info = self.spawn(instance)
        del self.calls[:]
        self.stub_out(
            'nova.virt.libvirt.vif.LibvirtGenericVIFDriver.plug',
            lambda driver, instance, vif: self.calls.append(('plug',)))
        self.stub_out(
            'nova.virt.libvirt.driver.LibvirtDriver.attach_interface',
            lambda *a: self.calls.append(('attach',)))
        self.connection.attach_interface(self.ctxt, instance,
                                         instance.image_meta,
                                         network_info[0])
        bridge = network_info[0]['network']['bridge']
        self.assertEqual([('plug',), ('guest', instance.name),
                          ('reach', [bridge]), ('close',), ('attach',)],
                         self.calls)

    def test_a_bridge_that_cannot_reach_the_l1_unplugs_the_vif(self):
        instance = self.make_instance()
        network_info = self.spawn(instance)
        del self.calls[:]
        vif_driver = 'nova.virt.libvirt.vif.LibvirtGenericVIFDriver.'
        self.stub_out(vif_driver + 'plug',
                      lambda driver, instance, vif: self.calls.append(
                          ('plug',)))
        self.stub_out(vif_driver + 'unplug',
                      lambda driver, instance, vif: self.calls.append(
                          ('unplug',)))

        def refuse(bridges):
            raise exception.VMBeamError('the L1 agent does not answer')
        self.l1.reach_bridges = refuse
        self.stub_out(
            'nova.virt.libvirt.driver.LibvirtDriver.attach_interface',
            lambda *a: self.fail('attached'))
        self.assertRaises(exception.VMBeamError,
                          self.connection.attach_interface, self.ctxt,
                          instance, instance.image_meta, network_info[0])
        self.assertEqual([('plug',), ('guest', instance.name), ('close',),
                          ('unplug',)], self.calls)

    def _running_nested_guest(self, fail=None):
        xml = ('<domain type="qemu"><name>i</name>'
               '<uuid>6f1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e</uuid>'
               '<devices/></domain>')
        domain = mock.Mock()
        domain.XMLDesc.return_value = xml
        domain.UUIDString.return_value = \
            '6f1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e'
        domain.attachDeviceFlags.side_effect = fail
        served, unserved = [], []
        self.stub_out('nova_vmbeam.nested.disks.StorageDaemon.address',
                      '192.0.2.1')
        self.stub_out('nova_vmbeam.nested.disks.StorageDaemon.export',
                      lambda daemon, exports: served.extend(exports))
        self.stub_out('nova_vmbeam.nested.disks.StorageDaemon.unexport',
                      lambda daemon, uuid, path=None: unserved.append(
                          (uuid, path)))
        return vmbeam_host._NestedGuest(domain), domain, served, unserved

    @staticmethod
    def _volume_config():
        conf = vconfig.LibvirtConfigGuestDisk()
        conf.source_type, conf.source_path = 'block', '/dev/sdx'
        conf.driver_name, conf.driver_format = 'qemu', 'raw'
        conf.target_dev, conf.target_bus = 'vdb', 'virtio'
        conf.serial = 'volume-1'
        return conf

    def test_a_volume_attached_to_a_running_guest_is_served_to_its_l1(self):
        guest, domain, served, _unserved = self._running_nested_guest()
        guest.attach_device(self._volume_config(), persistent=True,
                            live=True)
        export, = served
        self.assertEqual(('/dev/sdx', True), (export.path, export.block))
        (disk_xml,), kwargs = domain.attachDeviceFlags.call_args
        self.assertIn('protocol="nbd"', disk_xml)
        self.assertIn('name="%s"' % export.name, disk_xml)
        self.assertIn('<serial>volume-1</serial>', disk_xml)
        self.assertNotIn('/dev/sdx', disk_xml)
        libvirt = driver_mod.libvirt_driver.libvirt
        self.assertEqual(libvirt.VIR_DOMAIN_AFFECT_LIVE |
                         libvirt.VIR_DOMAIN_AFFECT_CONFIG, kwargs['flags'])

    def test_a_failed_plug_stops_serving_the_volume(self):
        guest, _domain, served, unserved = self._running_nested_guest(
            fail=RuntimeError('the L1 refused'))
        self.assertRaises(RuntimeError, guest.attach_device,
                          self._volume_config(), persistent=True, live=True)
        self.assertEqual([('6f1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e',
                           '/dev/sdx')], unserved)

    def test_a_detached_volume_is_served_no_more(self):
        instance = self.make_instance()
        unserved = []
        self.stub_out('nova_vmbeam.nested.disks.StorageDaemon.unexport',
                      lambda daemon, uuid, path=None: unserved.append(
                          (uuid, path)))
        self.stub_out(
            'nova.virt.libvirt.driver.LibvirtDriver._disconnect_volume',
            lambda *a, **k: unserved.append('os-brick'))
        self.connection._disconnect_volume(
            self.ctxt, {'driver_volume_type': 'local',
                        'data': {'device_path': '/dev/sdx'}}, instance)
        # L0's disk server lets go of it before os-brick removes it.
        self.assertEqual([(instance.uuid, '/dev/sdx'), 'os-brick'],
                         unserved)

    def _live_snapshot(self, instance, image_meta):
        """The nested _live_snapshot; what it did, in order."""
        steps = []
        utils = 'nova.virt.libvirt.utils.'
        self.stub_out(utils + 'get_disk_size', lambda path, format: 1 << 30)
        self.stub_out(utils + 'get_disk_backing_file',
                      lambda path, format, basename: '/base/image')
        self.stub_out(utils + 'create_image',
                      lambda path, fmt, size, backing_file: steps.append(
                          ('create', path, fmt, size, backing_file)))
        self.stub_out(utils + 'extract_snapshot',
                      lambda src, src_fmt, out, fmt: steps.append(
                          ('extract', src, src_fmt, out, fmt)))

        def copy(daemon, path, target, started=None):
            steps.append(('copy', path, target))
            started()
        self.stub_out('nova_vmbeam.nested.disks.StorageDaemon.snapshot',
                      copy)
        self.stub_out(
            'nova.virt.libvirt.driver.LibvirtDriver._can_quiesce',
            lambda *a: None)
        self.stub_out('nova.virt.libvirt.driver.LibvirtDriver.quiesce',
                      lambda *a: steps.append(('freeze',)))
        self.stub_out('nova.virt.libvirt.driver.LibvirtDriver.unquiesce',
                      lambda *a: steps.append(('thaw',)))
        self.stub_out(
            'nova.virt.libvirt.driver.LibvirtDriver._live_snapshot',
            lambda *a: self.fail('copied in the L1'))
        out = os.path.join(self.useFixture(fixtures.TempDir()).path, 'snap')
        self.connection._live_snapshot(self.ctxt, instance, None,
                                       '/i/disk', out, 'qcow2', 'raw',
                                       image_meta)
        return out, steps

    def test_a_running_instances_snapshot_is_copied_at_l0(self):
        instance = self.make_instance()
        out, steps = self._live_snapshot(instance, instance.image_meta)
        delta = out + '.delta'
        # Nova's delta, on the disk's backing file, copied by L0's disk
        # server between a freeze and a thaw, then flattened as Nova's.
        self.assertEqual([('create', delta, 'qcow2', 1 << 30, '/base/image'),
                          ('freeze',), ('copy', '/i/disk', delta),
                          ('thaw',),
                          ('extract', delta, 'qcow2', out, 'raw')], steps)

    def test_a_required_quiesce_that_cannot_be_done_stops_the_copy(self):
        instance = self.make_instance()
        image_meta = instance.image_meta
        image_meta.properties.os_require_quiesce = True

        def cannot(*args):
            raise nova_exception.QemuGuestAgentNotEnabled()
        self.stub_out(
            'nova.virt.libvirt.driver.LibvirtDriver._can_quiesce', cannot)
        self.stub_out('nova_vmbeam.nested.disks.StorageDaemon.snapshot',
                      lambda *a, **k: self.fail('copied'))
        utils = 'nova.virt.libvirt.utils.'
        self.stub_out(utils + 'get_disk_size', lambda *a, **k: 1 << 20)
        self.stub_out(utils + 'get_disk_backing_file', lambda *a, **k: None)
        self.stub_out(utils + 'create_image', lambda *a, **k: None)
        out = os.path.join(self.useFixture(fixtures.TempDir()).path, 'snap')
        self.assertRaises(nova_exception.QemuGuestAgentNotEnabled,
                          self.connection._live_snapshot, self.ctxt,
                          instance, None, '/i/disk', out, 'qcow2', 'raw',
                          image_meta)

    @staticmethod
    def _served_domain():
        """A running nested guest's domain, its root disk served."""
        xml = ('<domain type="qemu"><name>i</name>'
               '<uuid>6f1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e</uuid>'
               '<memory>65536</memory><devices>'
               '<disk type="file" device="disk">'
               '<driver name="qemu" type="qcow2"/><source file="/i/disk"/>'
               '<target dev="vda" bus="virtio"/></disk></devices></domain>')
        served, _exports = nested_disks.to_network_disks(xml, '192.0.2.1',
                                                         10809)
        domain = mock.Mock()
        domain.XMLDesc.return_value = served
        domain.isActive.return_value = True
        return domain

    @staticmethod
    def _disk_of(config):
        disk, = [d for d in config.devices
                 if isinstance(d, vconfig.LibvirtConfigGuestDisk)]
        return disk.source_type, disk.source_path, disk.driver_format

    def test_nova_accounts_a_running_instances_disks_as_this_hosts(self):
        domain = self._served_domain()
        self.stub_out('nova_vmbeam.virt.host.VMBeamHost.get_guest',
                      lambda host, instance: vmbeam_host._NestedGuest(domain))
        seen = []
        self.stub_out('nova.virt.libvirt.driver.LibvirtDriver.'
                      '_get_instance_disk_info_from_config',
                      lambda driver, config, info: seen.append(config))
        # What Nova's over-commit count parses from the domain.
        parsed = vconfig.LibvirtConfigGuest()
        parsed.parse_str(domain.XMLDesc())
        self.assertEqual('network', self._disk_of(parsed)[0])
        self.connection._get_instance_disk_info_from_config(parsed, None)
        self.assertEqual(('file', '/i/disk', 'qcow2'),
                         self._disk_of(seen[0]))

    def test_nova_reads_this_hosts_disks_of_a_running_instance(self):
        guest = vmbeam_host._NestedGuest(self._served_domain())
        # The domain the L1 runs names the export; Nova's parsed config
        # names the file here, whose path its snapshot reads.
        self.assertIn('protocol="nbd"', guest.get_xml_desc())
        self.assertEqual(('file', '/i/disk', 'qcow2'),
                         self._disk_of(guest.get_config()))
