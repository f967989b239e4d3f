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

"""Host.launch where systemd-machined refuses a machine name.

No libvirt daemon and no machined run here: FakeDaemon hands out domain
ids and registers machine names the way libvirt 11.3 does (an id is
allocated before the machine is registered and is not given back when
the start fails; a refused registration leaves no domain), and
FakeMachined refuses a name that is registered, as machined does.
"""

import logging
from unittest import mock
import xml.etree.ElementTree as ET

import fixtures
import libvirt
import testtools

from nova_vmbeam import exception
from nova_vmbeam.libvirt import host as host_mod

UUID = '6a8e6f44-39c4-4bd7-a5f3-1f4a5e1e6d01'

DOMAIN = '''<domain type='qemu'><name>g1</name><uuid>%s</uuid>
<memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64'>hvm</type></os><devices/></domain>''' % UUID


def libvirt_error(code, domain, message, str1=None):
    """A libvirtError as the client library raises it for a daemon's error.

    libvirtError reads the thread's last libvirt error when it is made;
    the fields are set here instead, in virGetLastError's order.
    """
    exc = libvirt.libvirtError(message)
    exc.args = (message,)
    exc.err = (code, domain, message, libvirt.VIR_ERR_ERROR, str1, None,
               None, 0, 0)
    return exc


def bare_error(message):
    """A libvirtError that no libvirt error stands behind (err is None)."""
    exc = libvirt.libvirtError(message)
    exc.args = (message,)
    exc.err = None
    return exc


def machine_exists_error(machine):
    # What virGDBusCallMethod makes of machined's reply: GLib's message of
    # a remote error, with the D-Bus error name as str1.
    return libvirt_error(
        libvirt.VIR_ERR_DBUS_SERVICE, libvirt.VIR_FROM_DBUS,
        'GDBus.Error:org.freedesktop.machine1.MachineExists: '
        "Machine '%s' already exists" % machine,
        str1='org.freedesktop.machine1.MachineExists')


class FakeMachined:
    """systemd-machined's machines, by name, shared by all daemons."""

    def __init__(self, *names):
        self.names = set(names)

    def register(self, machine):
        if machine in self.names:
            raise machine_exists_error(machine)
        self.names.add(machine)


class FakeDom:

    def __init__(self, name, uuid, domain_id):
        self._name = name
        self._uuid = uuid
        self._id = domain_id

    def name(self):
        return self._name

    def UUIDString(self):
        return self._uuid

    def ID(self):
        return self._id

    def isActive(self):
        return True


class FakeDaemon:
    """One libvirtd's createXML, with ids counted from 1.

    ``half_created`` are errors that createXML raises after it started
    the domain all the same (a lost reply, a late step that failed).
    """

    def __init__(self, machined):
        self.machined = machined
        self.last_id = 0
        self.ids_used = []
        self.domains = {}
        self.half_created = []
        self.destroy_fails = False

    def isAlive(self):
        return True

    def createXML(self, xml, flags):
        domain = ET.fromstring(xml)
        name = domain.findtext('name')
        # qemuProcessInit: qemuDriverAllocateID, before anything can fail.
        self.last_id += 1
        self.ids_used.append(self.last_id)
        # qemuProcessLaunch -> virCgroupNewMachine -> CreateMachine. On a
        # refusal libvirt stops the start and removes the transient
        # domain (qemuDomainCreateXML): nothing is left here.
        self.machined.register('qemu-%d-%s' % (self.last_id, name))
        dom = FakeDom(name, domain.findtext('uuid'), self.last_id)
        self.domains[name] = dom
        if self.half_created:
            raise self.half_created.pop(0)
        return dom

    def lookupByName(self, name):
        if name not in self.domains:
            raise libvirt_error(libvirt.VIR_ERR_NO_DOMAIN,
                                libvirt.VIR_FROM_QEMU,
                                "Domain not found: no domain with matching "
                                "name '%s'" % name)
        return self.domains[name]

    def destroy(self, dom):
        if self.destroy_fails:
            raise exception.VMBeamError('cannot destroy %s' % dom.name())
        del self.domains[dom.name()]
        self.machined.names.discard('qemu-%d-%s' % (dom.ID(), dom.name()))


class FakeGuest:

    def __init__(self, host, dom, spec):
        self.host = host
        self.dom = dom
        self.spec = spec

    def destroy(self):
        self.host.conn.destroy(self.dom)


class FakeHost(host_mod.Host):
    guest_class = FakeGuest


class TestMachineExists(testtools.TestCase):

    def test_machineds_refusal_is_machine_exists(self):
        self.assertTrue(host_mod.machine_exists(
            machine_exists_error('qemu-1-g1')))

    def test_other_errors_are_not(self):
        for exc in (
                # Another answer of machined, passed on the same way.
                libvirt_error(libvirt.VIR_ERR_DBUS_SERVICE,
                              libvirt.VIR_FROM_DBUS,
                              'GDBus.Error:org.freedesktop.DBus.Error.'
                              'AccessDenied: no',
                              str1='org.freedesktop.DBus.Error.AccessDenied'),
                # No answer at all (virGDBusCallMethod reports it itself,
                # without a D-Bus error name).
                libvirt_error(libvirt.VIR_ERR_DBUS_SERVICE,
                              libvirt.VIR_FROM_DBUS, 'Timeout was reached'),
                # The name, but not from the D-Bus call.
                libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR,
                              libvirt.VIR_FROM_QEMU,
                              'org.freedesktop.machine1.MachineExists',
                              str1='org.freedesktop.machine1.MachineExists'),
                libvirt_error(libvirt.VIR_ERR_DBUS_SERVICE,
                              libvirt.VIR_FROM_SYSTEMD, 'MachineExists',
                              str1='org.freedesktop.machine1.MachineExists'),
                # An error made without a daemon's error behind it.
                bare_error('reply lost')):
            self.assertFalse(host_mod.machine_exists(exc), exc)


class TestLaunchOnMachined(testtools.TestCase):
    """A destination whose machine name its source has already."""

    def setUp(self):
        super().setUp()
        self.logs = self.useFixture(fixtures.FakeLogger(
            name='nova_vmbeam.libvirt.host', level=logging.INFO))
        # The source of the move: the first guest of the old generation's
        # daemon, registered with machined as qemu-1-g1.
        self.machined = FakeMachined('qemu-1-g1')
        self.daemon = FakeDaemon(self.machined)
        self.host = FakeHost('gen2', 'qemu:///system', '/tmp')
        self.host._conn = self.daemon
        self.spec = mock.Mock(domain_xml=DOMAIN, uuid=UUID)
        self.spec.name = 'g1'

    def launch(self):
        return self.host.launch(self.spec, incoming=['defer'], paused=True)

    def test_refused_name_is_tried_again_with_the_next_id(self):
        guest = self.launch()
        self.assertEqual(2, guest.dom.ID())
        self.assertEqual([1, 2], self.daemon.ids_used)
        self.assertEqual({'qemu-1-g1', 'qemu-2-g1'}, self.machined.names)
        self.assertIn('refused the machine name of g1 on gen2',
                      self.logs.output)
        self.assertIn("Machine 'qemu-1-g1' already exists", self.logs.output)
        self.assertIn('attempt 2 of 3', self.logs.output)

    def test_free_name_is_not_tried_again(self):
        self.machined.names.clear()
        guest = self.launch()
        self.assertEqual(1, guest.dom.ID())
        self.assertEqual([1], self.daemon.ids_used)
        self.assertEqual('', self.logs.output)

    def test_gives_up_after_the_bound(self):
        # Every name this daemon can hand out is taken: something other
        # than the source holds them.
        self.machined.names.update('qemu-%d-g1' % i for i in range(1, 10))
        exc = self.assertRaises(exception.QemuStartFailed, self.launch)
        self.assertEqual([1, 2, 3], self.daemon.ids_used)
        self.assertEqual(host_mod.LAUNCH_ATTEMPTS, len(self.daemon.ids_used))
        self.assertIn('QEMU for g1 failed to start: systemd-machined '
                      'refused its machine name 3 times', str(exc))
        self.assertIn("Machine 'qemu-3-g1' already exists", str(exc))
        self.assertEqual({}, self.daemon.domains)

    def test_other_errors_are_not_tried_again(self):
        for error in (
                libvirt_error(libvirt.VIR_ERR_DBUS_SERVICE,
                              libvirt.VIR_FROM_DBUS,
                              'GDBus.Error:org.freedesktop.DBus.Error.'
                              'NoReply: no reply',
                              str1='org.freedesktop.DBus.Error.NoReply'),
                libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR,
                              libvirt.VIR_FROM_QEMU,
                              'process exited while connecting to monitor'),
                libvirt_error(libvirt.VIR_ERR_OPERATION_FAILED,
                              libvirt.VIR_FROM_QEMU,
                              "Machine 'qemu-1-g1' already exists")):
            daemon = FakeDaemon(FakeMachined())
            self.host._conn = daemon
            with mock.patch.object(daemon.machined, 'register',
                                   side_effect=error):
                exc = self.assertRaises(exception.QemuStartFailed,
                                        self.launch)
            self.assertEqual([1], daemon.ids_used, error)
            self.assertIn(str(error), str(exc))
            self.assertNotIn('refused its machine name', str(exc))

    def test_half_created_domain_is_still_removed(self):
        self.machined.names.clear()
        self.daemon.half_created.append(bare_error('reply lost'))
        exc = self.assertRaises(exception.QemuStartFailed, self.launch)
        self.assertIn('the domain it started (id 1) was destroyed', str(exc))
        self.assertEqual({}, self.daemon.domains)
        self.assertEqual([1], self.daemon.ids_used)

    def test_refused_name_with_a_domain_left_behind_removes_it_first(self):
        self.daemon.half_created.append(machine_exists_error('qemu-1-g1'))
        self.machined.names.clear()
        guest = self.launch()
        # The domain the first call left was destroyed before the second.
        self.assertEqual(2, guest.dom.ID())
        self.assertEqual([1, 2], self.daemon.ids_used)
        self.assertEqual({'g1': guest.dom}, self.daemon.domains)

    def test_refused_name_with_a_domain_left_that_stays_is_not_retried(self):
        self.daemon.half_created.append(machine_exists_error('qemu-1-g1'))
        self.daemon.destroy_fails = True
        self.machined.names.clear()
        exc = self.assertRaises(exception.QemuStartFailed, self.launch)
        self.assertEqual([1], self.daemon.ids_used)
        self.assertIn('could not be destroyed', str(exc))
        self.assertIn('domain 1 of that name still runs on gen2', str(exc))

    def test_refused_name_with_the_daemon_out_of_reach_is_not_retried(self):
        original = self.daemon.lookupByName
        calls = []

        def lookup(name):
            # Asked before the first call, then after the refusal.
            calls.append(name)
            if len(calls) > 2:
                raise libvirt_error(libvirt.VIR_ERR_SYSTEM_ERROR,
                                    libvirt.VIR_FROM_RPC,
                                    'Cannot write data: Broken pipe')
            return original(name)

        self.daemon.lookupByName = lookup
        exc = self.assertRaises(exception.QemuStartFailed, self.launch)
        self.assertEqual([1], self.daemon.ids_used)
        self.assertIn('whether it left a domain behind on gen2 is unknown',
                      str(exc))
