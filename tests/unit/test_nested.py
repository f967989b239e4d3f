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
import time
from unittest import mock
import xml.etree.ElementTree as ET

import fixtures
import libvirt
import testtools

from nova_vmbeam.conf import nested as nested_conf
from nova_vmbeam.conf import opts
from nova_vmbeam import exception
from nova_vmbeam import guest as guest_mod
from nova_vmbeam.libvirt import config as libvirt_config
from nova_vmbeam.movers import base as mover_base
from nova_vmbeam.nested import agent
from nova_vmbeam.nested.appliance import builder
from nova_vmbeam.nested import caching
from nova_vmbeam.nested import host as nested_host
from nova_vmbeam.nested import mover as nested_mover
from nova_vmbeam.nested import network
from nova_vmbeam.nested import sibling as nested_sibling
from nova_vmbeam.nested import uplinks
from nova_vmbeam.pool import base as pool_base
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
        self.assertEqual('qemu+tls://10.9.8.13/system?pkipath='
                         '/var/lib/test-vmbeam/nested/gen3/pki', sibling.uri)
        self.assertEqual(
            {'kind': 'nested', 'generation': 3, 'domain_uuid': 'u-3',
             'uri': sibling.uri, 'address': '10.9.8.13',
             'base': '/var/lib/test-vmbeam/nested/gen3'}, sibling.record())
        again = nested_sibling.NestedSibling.from_record(conf,
                                                         sibling.record())
        self.assertEqual(sibling.record(), again.record())
        # No memory-device slots: the pools are ivshmem BARs.
        self.assertIsNone(domain.find('maxMemory'))

    def test_domain_xml_with_device_dax_has_memory_device_slots(self):
        conf = make_conf(l1_memory_mib=2048, l1_vcpus=2, bar_mapping='dax',
                         dax_slots=16)
        sibling = nested_sibling.NestedSibling(conf, 3, domain_uuid='u-3')
        with mock.patch.object(nested_sibling, 'host_memory_mib',
                               return_value=24000):
            domain = ET.fromstring(sibling.domain_xml('/k', '/i'))
        self.assertEqual(('16', 'MiB', str(2048 + 24000)),
                         (domain.find('maxMemory').get('slots'),
                          domain.find('maxMemory').get('unit'),
                          domain.findtext('maxMemory')))
        # libvirt enables memory slots only with a NUMA cell: one, whole.
        cells = domain.findall('cpu/numa/cell')
        self.assertEqual([('0', '0-1', '2048')],
                         [(c.get('id'), c.get('cpus'), c.get('memory'))
                          for c in cells])
        self.assertEqual('2048', domain.findtext('memory'))

    def test_host_memory_mib(self):
        fd, path = tempfile.mkstemp()
        os.close(fd)
        self.addCleanup(os.unlink, path)
        with open(path, 'w') as f:
            f.write('MemTotal:       24574320 kB\nMemFree: 1 kB\n')
        self.assertEqual(23998, nested_sibling.host_memory_mib(path))

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


class _L1Endpoint:
    """A QEMU in an L1, as L0 sees its events.

    Stamped by the L1's clock (an hour behind ours here) and by their
    arrival on L0 ('received').
    """

    def __init__(self, events, status='active'):
        self._events = events
        self.status_asked = 0
        self._status = status
        self.queries = 0

    def events(self):
        return list(self._events)

    def execute(self, command, **arguments):
        assert command == 'query-migrate', command
        self.queries += 1
        return {'status': self._status}

    def status(self):
        self.status_asked += 1
        return 'paused'


def _event(name, received, status=None):
    l1_clock = received - 3600.0
    return {'event': name, 'data': {'status': status} if status else {},
            'timestamp': {'seconds': int(l1_clock),
                          'microseconds': int(l1_clock % 1 * 1e6)},
            'received': received}


class TestNestedPause(testtools.TestCase):
    """The pause of a nested move judges events by their arrival on L0."""

    def setUp(self):
        super().setUp()
        self.mover = nested_mover.NestedMover(make_conf())
        self.since = time.time()

    def test_a_finished_event_after_the_start_ends_the_wait_at_once(self):
        source = _L1Endpoint([
            _event('MIGRATION', self.since - 5, 'completed'),   # older
            _event('STOP', self.since + 0.001),
            _event('MIGRATION', self.since + 0.002, 'completed')])
        info = self.mover._wait_finished(source, self.since, 5.0)
        self.assertEqual({'status': 'completed', 'event': True}, info)
        # No query-migrate round trip while the guest is paused.
        self.assertEqual(0, source.queries)

    def test_an_older_finished_event_is_not_taken_for_this_one(self):
        # By the L1's clock every event is older than the move's start;
        # by its arrival only the first one is.
        source = _L1Endpoint([_event('MIGRATION', self.since - 5,
                                     'completed')], status='active')
        info = self.mover._wait_finished(source, self.since, 0.12)
        self.assertEqual('active', info['status'])
        self.assertGreater(source.queries, 0)

    def test_an_event_without_arrival_time_is_never_new(self):
        event = _event('MIGRATION', self.since + 1, 'completed')
        del event['received']
        self.assertFalse(self.mover._is_new(event, self.since))

    def test_source_resumed_from_events_alone(self):
        ctx = mock.Mock(wall_start=self.since)
        ctx.source = _L1Endpoint([_event('STOP', self.since + 0.001)])
        self.assertFalse(self.mover._source_resumed(ctx))
        self.assertEqual(0, ctx.source.status_asked)
        ctx.source = _L1Endpoint([_event('STOP', self.since + 0.001),
                                  _event('RESUME', self.since + 0.002)])
        self.assertTrue(self.mover._source_resumed(ctx))


class FakeL1:
    """The parts of a NestedSibling that NestedHost.attach_pool uses."""

    name = 'gen2'
    uri = 'qemu+tls://192.0.2.2/system'
    qmp_socket = '/nonexistent/qmp.sock'

    def __init__(self, enable_error=None, mapping='resource2_wc'):
        self.devices = {}
        self.enable_error = enable_error
        self.ram_mapping = caching.choose(mapping, 'tcg', caching.INTEL)

    def find_device(self, device):
        return self.devices.get(device)

    def enable_bar(self, bdf):
        if self.enable_error:
            raise self.enable_error
        return '/sys/bus/pci/devices/%s/resource2_wc' % bdf

    def dax_device(self, bdf):
        if self.enable_error:
            raise self.enable_error
        return '/dev/dax0.0'


class FakeAttachablePool:

    IVSHMEM, PMEM = pool_base.AttachablePool.IVSHMEM, \
        pool_base.AttachablePool.PMEM

    def __init__(self, l1):
        self.l1 = l1
        self.calls = []

    def attach(self, guest_uuid, qmp_socket, device, model=IVSHMEM):
        self.calls.append(('attach', device) if model == self.IVSHMEM
                          else ('attach', device, model))
        self.l1.devices[device] = '0000:00:05.0'

    def detach(self, guest_uuid, qmp_socket, device, timeout=None):
        self.calls.append(('detach', device))
        del self.l1.devices[device]


class TestNestedHostAttachPool(testtools.TestCase):

    GUEST = '2f1b5a4e-0000-4000-8000-00000000abcd'

    def _host(self, l1):
        return nested_host.NestedHost(l1, tempfile.mkdtemp())

    def test_attaches_once_and_returns_the_bar(self):
        l1 = FakeL1()
        pool = FakeAttachablePool(l1)
        host = self._host(l1)
        bar = host.attach_pool(pool, self.GUEST)
        self.assertEqual('/sys/bus/pci/devices/0000:00:05.0/resource2_wc',
                         bar)
        self.assertEqual(bar, host.attach_pool(pool, self.GUEST))
        device = nested_host.pool_device(self.GUEST)
        self.assertEqual([('attach', device)], pool.calls)

    def test_bar_not_enabled_detaches_what_it_attached(self):
        # The L1's agent does not answer: the pool must not stay attached
        # (the L1 would map the guest's RAM after the move failed).
        l1 = FakeL1(enable_error=agent.AgentError(vm='l1', reason='x'))
        pool = FakeAttachablePool(l1)
        self.assertRaises(agent.AgentError, self._host(l1).attach_pool,
                          pool, self.GUEST)
        device = nested_host.pool_device(self.GUEST)
        self.assertEqual([('attach', device), ('detach', device)],
                         pool.calls)
        self.assertEqual({}, l1.devices)

    def test_device_dax_pool_is_plugged_as_pmem_and_stays(self):
        l1 = FakeL1(mapping='dax')
        pool = FakeAttachablePool(l1)
        host = self._host(l1)
        self.assertEqual('/dev/dax0.0', host.attach_pool(pool, self.GUEST))
        device = nested_host.pool_device(self.GUEST)
        self.assertEqual([('attach', device, pool.PMEM)], pool.calls)
        # Found again, not plugged twice.
        self.assertEqual('/dev/dax0.0', host.attach_pool(pool, self.GUEST))
        # A virtio-pmem device cannot be unplugged: no detach is tried,
        # and the L1 keeps it (the pool daemon keeps its RAM meanwhile).
        host.detach_pool(pool, self.GUEST)
        self.assertEqual([('attach', device, pool.PMEM)], pool.calls)
        self.assertIn(device, l1.devices)

    def test_bar_not_enabled_leaves_a_pool_attached_before(self):
        # Attached by someone else (a prepared destination maps it).
        l1 = FakeL1(enable_error=agent.AgentError(vm='l1', reason='x'))
        device = nested_host.pool_device(self.GUEST)
        l1.devices[device] = '0000:00:05.0'
        pool = FakeAttachablePool(l1)
        self.assertRaises(agent.AgentError, self._host(l1).attach_pool,
                          pool, self.GUEST)
        self.assertEqual([], pool.calls)
        self.assertIn(device, l1.devices)


class TestPoolLayout(testtools.TestCase):
    """A guest moves only to an L1 that maps its pool where its RAM is."""

    def _check(self, pool_bytes, mapping):
        mover = nested_mover.NestedMover(make_conf())
        mover._pool = mock.Mock()
        mover._pool.residency.return_value = {'size': pool_bytes}
        l1 = FakeL1(mapping=mapping)
        spec = guest_mod.GuestSpec(name='g', uuid='u', ram_mib=128)
        return mover._check_pool_layout(spec, l1)

    def test_matching_layouts_pass(self):
        self._check(128 << 20, 'resource2')
        self._check((128 << 20) + (2 << 20), 'dax')

    def test_a_pool_of_the_other_mapping_is_refused_with_the_fix(self):
        exc = self.assertRaises(exception.InvalidInput, self._check,
                                128 << 20, 'dax')
        self.assertIn('made under another [vmbeam_nested] bar_mapping',
                      str(exc))
        self.assertIn('Set bar_mapping back', str(exc))
        self.assertRaises(exception.InvalidInput, self._check,
                          (128 << 20) + (2 << 20), 'resource2_wc')


class FakeDeadConnectionDomain:
    """A domain whose L1's libvirtd cannot be reached any more."""

    def destroy(self):
        raise libvirt.libvirtError('internal error: client socket is closed')

    def isActive(self):
        raise libvirt.libvirtError('internal error: client socket is closed')

    def XMLDesc(self, flags=0):
        raise libvirt.libvirtError('internal error: client socket is closed')


class TestRemoteGuestDestroy(testtools.TestCase):

    def _guest(self, l1_running):
        class L1:
            def running(self):
                return l1_running

        class Host:
            name = 'gen2'
            sibling = L1()
        spec = guest_mod.GuestSpec(name='g', uuid='u', ram_mib=128)
        return nested_host.RemoteGuest(Host(), FakeDeadConnectionDomain(),
                                       spec)

    def test_guest_of_a_killed_l1_is_destroyed_with_it(self):
        # Its QEMU died with the L1 VM: a rollback must not fail on it.
        self._guest(l1_running=False).destroy()

    def test_unreachable_guest_of_a_running_l1_is_an_error(self):
        self.assertRaises(libvirt.libvirtError,
                          self._guest(l1_running=True).destroy)


class TestNestedHostRunningQemus(testtools.TestCase):

    def _host(self, l1_running):
        l1 = FakeL1()
        l1.running = lambda: l1_running
        host = nested_host.NestedHost(l1, tempfile.mkdtemp())

        def unreachable():
            raise exception.VMBeamError('cannot connect to libvirt at %s: '
                                        'No route to host' % l1.uri)
        host.domains = unreachable
        return host

    def test_killed_l1_runs_no_guests(self):
        # A run whose source L1 died after its guests moved completes.
        self.assertEqual([], self._host(l1_running=False).running_qemus())

    def test_unreachable_running_l1_is_an_error(self):
        # It may still hold guests: never taken for empty.
        self.assertRaises(exception.VMBeamError,
                          self._host(l1_running=True).running_qemus)


class TestRetireWithoutLibvirt(testtools.TestCase):
    """An L1 whose libvirtd does not answer is never taken for empty."""

    def setUp(self):
        super().setUp()
        self.sibling = nested_sibling.NestedSibling(make_conf(), 3)
        self.dom = mock.Mock()
        self.dom.isActive.return_value = True
        host = mock.Mock()
        host.alive.return_value = False   # libvirtd in the L1 is gone
        for name, value in (('l1_domain', self.dom), ('host', host)):
            self.useFixture(fixtures.MockPatchObject(
                self.sibling, name, return_value=value))
        self.stop = self.useFixture(fixtures.MockPatch(
            'nova_vmbeam.nested.sibling.stop_l1')).mock
        self.useFixture(fixtures.MockPatch(
            'nova_vmbeam.privsep.cgroups.remove_group'))

    def _agent_says(self, **kwargs):
        return self.useFixture(fixtures.MockPatch(
            'nova_vmbeam.nested.agent.sh', **kwargs)).mock

    def test_guests_found_by_the_agent_keep_it(self):
        self._agent_says(return_value='812 777\n')
        exc = self.assertRaises(exception.SiblingStartFailed,
                                self.sibling.retire)
        self.assertIn('guests still run in it: QEMU pid 812, QEMU pid 777',
                      str(exc))
        self.stop.assert_not_called()

    def test_no_answer_from_the_agent_either_keeps_it(self):
        self.useFixture(fixtures.MockPatchObject(
            nested_sibling, 'DYING_L1_SECONDS', 0.5))
        self._agent_says(side_effect=agent.AgentError(vm='l1',
                                                      reason='timed out'))
        exc = self.assertRaises(exception.SiblingStartFailed,
                                self.sibling.retire)
        self.assertIn('neither its libvirtd nor its guest agent answers',
                      str(exc))
        self.assertIn('virsh destroy', str(exc))
        self.stop.assert_not_called()

    def test_l1_ending_while_its_agent_is_gone_is_retired(self):
        # Killed at L0: its agent is gone before libvirt marks it off (or,
        # as it is transient, forgets it).
        gone = libvirt.libvirtError('no domain')
        self.useFixture(fixtures.MockPatchObject(
            libvirt.libvirtError, 'get_error_code',
            return_value=libvirt.VIR_ERR_NO_DOMAIN))
        self.dom.isActive.side_effect = [True, True, gone]
        self._agent_says(side_effect=agent.AgentError(vm='l1',
                                                      reason='not connected'))
        self.sibling.retire()
        self.assertEqual(3, self.dom.isActive.call_count)
        # What libvirt and this host still hold of it goes too.
        self.stop.assert_called_once_with(self.dom, self.sibling.address)

    def test_empty_by_the_agent_is_stopped(self):
        sh = self._agent_says(return_value='\n')
        self.sibling.retire()
        sh.assert_called_once_with(self.dom, 'pidof qemu-system-x86_64 || '
                                   'true', timeout=30)
        self.stop.assert_called_once_with(self.dom, self.sibling.address)


class TestStopL1(testtools.TestCase):
    """stop_l1: libvirtd in the L1 first, then the VM, then its sockets."""

    def setUp(self):
        super().setUp()
        self.sh = self.useFixture(fixtures.MockPatch(
            'nova_vmbeam.nested.agent.sh')).mock
        self.kill = self.useFixture(fixtures.MockPatch(
            'nova_vmbeam.privsep.network.kill_sockets_to')).mock
        self.dom = mock.Mock()

    def test_running_l1_has_its_libvirtd_stopped_first(self):
        self.dom.isActive.return_value = True
        nested_sibling.stop_l1(self.dom, '192.0.2.3')
        self.assertIn('libvirtd', self.sh.call_args[0][1])
        self.dom.destroy.assert_called_once_with()
        self.kill.assert_called_once_with('192.0.2.3')

    def test_ended_l1_is_not_asked_but_its_sockets_are_reset(self):
        # Not running, or forgotten by libvirt already (a transient one).
        for code in (libvirt.VIR_ERR_OPERATION_INVALID,
                     libvirt.VIR_ERR_NO_DOMAIN):
            self.dom.isActive.side_effect = libvirt.libvirtError('gone')
            self.dom.destroy.side_effect = libvirt.libvirtError('gone')
            with mock.patch.object(libvirt.libvirtError, 'get_error_code',
                                   return_value=code):
                nested_sibling.stop_l1(self.dom, '192.0.2.3')
            self.sh.assert_not_called()
            self.kill.assert_called_with('192.0.2.3')

    def test_another_libvirt_error_is_raised(self):
        self.dom.isActive.return_value = False
        self.dom.destroy.side_effect = libvirt.libvirtError('broken')
        with mock.patch.object(libvirt.libvirtError, 'get_error_code',
                               return_value=libvirt.VIR_ERR_INTERNAL_ERROR):
            self.assertRaises(libvirt.libvirtError, nested_sibling.stop_l1,
                              self.dom, '192.0.2.3')


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


class TestUplinks(testtools.TestCase):

    XML = ("<domain><devices>"
           "<interface type='bridge'><source bridge='brq-a'/></interface>"
           "<interface type='network'><source network='default'/>"
           "</interface>"
           "<interface type='bridge'><source bridge='br-b'/></interface>"
           "<interface type='bridge'><source bridge='brq-a'/></interface>"
           "</devices></domain>")

    def setUp(self):
        super().setUp()
        self.sh = self.useFixture(fixtures.MockPatch(
            'nova_vmbeam.nested.agent.sh', return_value='eth1\n')).mock
        self.bridges = {'brq-a', 'br-b'}
        self.useFixture(fixtures.MockPatch(
            'os.path.isdir', side_effect=lambda path: path.split('/')[4]
            in self.bridges and path.endswith('/bridge')))
        self.sibling = nested_sibling.NestedSibling(make_conf(), 4)
        self.dom = mock.Mock()
        self.dom.XMLDesc.return_value = (
            "<domain><devices><interface type='bridge'>"
            "<mac address='52:54:00:be:00:04'/></interface>"
            "</devices></domain>")
        self.useFixture(fixtures.MockPatchObject(
            self.sibling, 'l1_domain', return_value=self.dom))
        self.useFixture(fixtures.MockPatchObject(
            self.sibling, 'used_pci_slots', return_value={0, 1, 2, 3, 4,
                                                          0x1f}))

    def test_bridges_of_a_domain(self):
        self.assertEqual(['brq-a', 'br-b'], uplinks.bridges_of(self.XML))
        self.assertEqual([], uplinks.bridges_of('<domain/>'))

    def test_mac_is_fixed_per_generation_and_bridge(self):
        self.assertEqual(uplinks.mac(4, 'brq-a'), uplinks.mac(4, 'brq-a'))
        self.assertNotEqual(uplinks.mac(4, 'brq-a'), uplinks.mac(5, 'brq-a'))
        self.assertNotEqual(uplinks.mac(4, 'brq-a'), uplinks.mac(4, 'br-b'))
        self.assertTrue(uplinks.mac(4, 'brq-a').startswith('52:54:01:'))

    def test_plugs_each_bridge_once_and_bridges_it_in_the_l1(self):
        uplinks.ensure(self.sibling, ['brq-a', 'br-b'])
        self.assertEqual(2, self.dom.attachDeviceFlags.call_count)
        nic = ET.fromstring(self.dom.attachDeviceFlags.call_args_list[0][0][0])
        self.assertEqual('brq-a', nic.find('source').get('bridge'))
        self.assertEqual(uplinks.mac(4, 'brq-a'), nic.find('mac').get(
            'address'))
        # A slot from the top, not one QEMU gave a RAM pool (or will).
        self.assertEqual('0x1e', nic.find('address').get('slot'))
        self.assertEqual(libvirt.VIR_DOMAIN_AFFECT_LIVE,
                         self.dom.attachDeviceFlags.call_args_list[0][0][1])
        script = self.sh.call_args_list[0][0][1]
        self.assertIn('bridge=brq-a', script)
        self.assertIn('mac=%s' % uplinks.mac(4, 'brq-a'), script)
        self.assertIn('echo 8 > "/proc/sys/net/ipv4/conf/$bridge/arp_ignore"',
                      script)
        self.assertIn('echo 1 > "/proc/sys/net/ipv4/conf/$bridge/rp_filter"',
                      script)
        # Plugged already (the L1 lists its MAC): not plugged again, but
        # still made a port of the bridge in the L1.
        self.dom.attachDeviceFlags.reset_mock()
        self.sh.reset_mock()
        self.dom.XMLDesc.return_value = (
            "<domain><devices><interface type='bridge'><mac address='%s'/>"
            "</interface></devices></domain>" % uplinks.mac(4, 'brq-a'))
        uplinks.ensure(self.sibling, ['brq-a'])
        self.dom.attachDeviceFlags.assert_not_called()
        self.assertEqual(1, self.sh.call_count)

    def test_what_is_not_a_host_bridge_is_refused_before_any_change(self):
        for name, words in (('no-such-br', 'not a bridge of this host'),
                            ('x' * 16, 'not an interface name'),
                            ('br;reboot', 'not an interface name'),
                            ('', 'not an interface name')):
            exc = self.assertRaises(exception.InvalidInput, uplinks.ensure,
                                    self.sibling, ['brq-a', name])
            self.assertIn(words, str(exc))
        self.dom.attachDeviceFlags.assert_not_called()
        self.sh.assert_not_called()

    def test_l1_that_cannot_take_it_says_which(self):
        self.sh.side_effect = agent.AgentError(vm='l1', reason='timed out')
        exc = self.assertRaises(exception.VMBeamError, uplinks.ensure,
                                self.sibling, ['br-b'])
        self.assertIn('did not bridge its uplink on br-b', str(exc))
        self.dom.attachDeviceFlags.side_effect = libvirt.libvirtError('no')
        exc = self.assertRaises(exception.VMBeamError, uplinks.ensure,
                                self.sibling, ['brq-a'])
        self.assertIn('cannot plug an uplink on bridge brq-a', str(exc))

    def test_a_guest_starts_in_an_l1_only_with_its_bridges_there(self):
        host = nested_host.NestedHost(self.sibling, '/nonexistent')
        spec = guest_mod.GuestSpec(name='g', uuid='u', ram_mib=64,
                                   domain_xml=self.XML)
        with mock.patch('nova_vmbeam.libvirt.host.Host.launch') as launch:
            self.bridges.discard('br-b')
            self.assertRaises(exception.InvalidInput, host.launch, spec)
            launch.assert_not_called()
            self.bridges.add('br-b')
            host.launch(spec)
        launch.assert_called_once_with(spec, (), False)
        self.assertEqual(2, self.dom.attachDeviceFlags.call_count)
