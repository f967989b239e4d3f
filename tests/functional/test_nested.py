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

"""The nested sibling end to end, under TCG inside TCG (slow: minutes).

L0 (this host) runs the L1 appliance VMs under an L0 libvirt daemon of
the test's own; one 128 MiB L2 test guest (memworker keeps verifying its
memory) runs inside L1-A with its RAM in an L0 pool mapped through an
ivshmem BAR, and moves to L1-B with the nested mover. Everything is real:
the appliance built from Debian packages, both L1 kernels, libvirtd in
each L1, the pool daemon's hotplug, the migration over the L1 network.
"""

import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET

import libvirt

from nova_vmbeam.conf import nested as nested_conf
from nova_vmbeam import exception
from nova_vmbeam.nested import agent
from nova_vmbeam.nested.appliance import builder
from nova_vmbeam.nested import consoles
from nova_vmbeam.nested import disks
from nova_vmbeam.nested import mover as nested_mover
from nova_vmbeam.nested import network
from nova_vmbeam.nested import pki
from nova_vmbeam.nested import sibling as nested_sibling
from nova_vmbeam.rejuvenation import orchestrator as orchestrator_mod
from tests.functional import base
from vmbeam_devtools.nested import testbed as nested_testbed


class NestedTestCase(base.PrivateStateTestCase):

    REQUIRED = ('qemu-system-x86_64', 'unshare', '/usr/sbin/libvirtd',
                'ip')
    #: the test boots an L2 guest (TCG inside TCG)
    BOOTS_L2 = True

    def setUp(self):
        super().setUp()
        if self.BOOTS_L2:
            # Known from earlier tests of this run: spare the L1 boot.
            nested_testbed.L2TimeBudget.check()
            # Added first, so it runs last: the test's own cleanups count.
            self.addCleanup(nested_testbed.L2TimeBudget.record,
                            time.monotonic())
        nested_conf.register_opts(self.conf)
        tag = os.getpid() % 40
        # A bridge and network of the test's own (others may run theirs).
        self.conf.set_override('bridge', 'vmbnt%d' % os.getpid(),
                               'vmbeam_nested')
        self.conf.set_override('network_cidr', '192.168.%d.0/24' %
                               (200 + tag), 'vmbeam_nested')
        self.conf.set_override('l1_memory_mib', 1024, 'vmbeam_nested')
        self.conf.set_override('migration_timeout', 300.0, 'vmbeam')
        self.addCleanup(network.remove_bridge, self.conf)
        self.addCleanup(self._stop_l0)
        self.testbed = nested_testbed.NestedTestbed(self.conf)
        self.addCleanup(self.testbed.cleanup)

    def _stop_l0(self):
        nested_sibling.stop_all(self.conf)
        # QEMUs of this test left behind by a failure (by pid).
        for pid in self.qemu_pids():
            os.kill(pid, 9)

    def _guest_network(self):
        """A bridge of this host with an address; (name, a guest's IP)."""
        bridge = 'vmbg%d' % os.getpid()
        net = '10.%d.%d' % (240 + os.getpid() % 10, os.getpid() % 250)
        subprocess.run(['ip', 'link', 'add', bridge, 'type', 'bridge'],
                       check=True)
        self.addCleanup(subprocess.run, ['ip', 'link', 'del', bridge])
        subprocess.run(['ip', 'addr', 'add', net + '.1/24', 'dev', bridge],
                       check=True)
        subprocess.run(['ip', 'link', 'set', bridge, 'up'], check=True)
        return bridge, net + '.11'

    @staticmethod
    def _guest_says(address, port=7777, timeout=300):
        """The guest's TCP responder's line (it may still be booting)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((address, port), 10) as s:
                    # Each connection starts a responder process in the
                    # guest: give a slow L2 time to answer rather than
                    # pile up more of them.
                    s.settimeout(60)
                    return s.makefile().readline().strip()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)


class TestNestedSibling(NestedTestCase):

    def test_l2_moves_between_l1s_and_old_l1_retires(self):
        tb = self.testbed
        gen1 = tb.start_sibling(1)
        health = gen1.health()
        self.assertTrue(health.running)
        self.assertTrue(health.libvirt_alive)
        self.assertEqual('l1', health.daemon.name)
        self.assertEqual({}, health.guests)
        self.assertTrue(gen1.uri.startswith('qemu+tls://'))
        self._assert_refuses_the_unauthenticated(gen1)

        host1 = gen1.host()
        self.addCleanup(host1.close)
        # A guest NIC on a bridge of this host, as Nova plugs a VIF.
        bridge, guest_ip = self._guest_network()
        # And a qcow2 disk on this host, as Nova makes an instance's, and
        # a console log on this host as Nova's libvirt driver asks for it
        # (every console line the test reads comes through it).
        guest = tb.boot(host1, tb.spec('l2', host1, bridge=bridge,
                                       ip=guest_ip + '/24', disk_mib=64,
                                       console_port=True))
        port = consoles.port_name(guest.spec.uuid)
        self.assertIn("name='%s'" % port, gen1.l1_domain().XMLDesc().replace(
            '"', "'"))
        self.assertEqual(['l2'], host1.running_qemus())
        before = self._guest_says(guest_ip)
        self.assertTrue(before.startswith('vmbeam-guest l2'), before)
        # Its disk is L0's NBD export, in TLS, which it writes and reads
        # back from inside L1-A.
        export = disks.export_name(guest.spec.uuid, 'vda')
        source = ET.fromstring(guest.endpoint.dom.XMLDesc()).find(
            "devices/disk[@device='disk']/source")
        self.assertEqual(('nbd', export, 'yes', network.host_address(
            self.conf)[0]), (source.get('protocol'), source.get('name'),
                             source.get('tls'), source.find('host').get(
                                 'name')))
        guest.console.wait_for_disk_ok(2, 900)
        # The L1 takes no part on the guests' bridge, and its libvirtd
        # listens on its own network's address only.
        self.assertEqual('', agent.sh(gen1.l1_domain(),
                                      'ip -4 addr show dev %s' % bridge))
        self.assertEqual(['8', '1'], agent.sh(gen1.l1_domain(), (
            'cat /proc/sys/net/ipv4/conf/%s/arp_ignore '
            '/proc/sys/net/ipv4/conf/%s/rp_filter') % (bridge, bridge)
        ).split())
        listening = agent.sh(gen1.l1_domain(), 'netstat -ltn')
        self.assertIn('%s:16514 ' % gen1.address, listening)
        self.assertNotIn('0.0.0.0:16514', listening)
        # Inside the L1, the guest's QEMU is not root.
        pid = host1.guest_qemu_pid('l2')
        uids = agent.sh(gen1.l1_domain(),
                        "awk '/^Uid:/ {print $2, $3}' /proc/%d/status" % pid)
        self.assertEqual([str(builder.QEMU_UID)] * 2, uids.split())
        # Never retire an L1 with a guest in it.
        self.assertRaises(exception.SiblingStartFailed, gen1.retire)
        self.assertTrue(gen1.running())

        gen2 = tb.start_sibling(2)
        host2 = gen2.host()
        self.addCleanup(host2.close)
        mover = nested_mover.NestedMover(self.conf)
        result = tb.move(guest, mover, host2)
        self.assertTrue(result.ok, result.error)
        # Only device state crossed the network, not the 128 MiB.
        self.assertLess(result.transferred_bytes, 4 << 20)
        self.assertGreater(result.downtime_ms, 0)
        # The stream came in over TLS, with the server's credentials, from
        # L1-A's certificate only.
        parameters = result.destination.execute('query-migrate-parameters')
        self.assertEqual(nested_mover.TLS_INCOMING,
                         parameters.get('tls-creds'))
        self.assertEqual(nested_mover.TLS_AUTHZ, parameters.get('tls-authz'))

        status = tb.check_integrity(guest, guest.moved_at, passes=2,
                                    timeout=600)
        self.assertGreaterEqual(status['new_passes'], 2)
        self.assertEqual(['l2'], host2.running_qemus())
        self.assertEqual([], host1.running_qemus())
        # The guest answers on its address from inside L1-B.
        after = self._guest_says(guest_ip)
        self.assertTrue(after.startswith('vmbeam-guest l2'), after)
        self.assertNotEqual(before, after)   # its uptime went on
        # Its console port moved with it: L1-B has one, L1-A none.
        self.assertIn("name='%s'" % port, gen2.l1_domain().XMLDesc().replace(
            '"', "'"))
        self.assertNotIn(port, gen1.l1_domain().XMLDesc())
        # Its disk too, from inside L1-B, through the same export.
        guest.console.wait_for_disk_ok(2, 900, guest.moved_at)
        disk = guest.console.disk_status()
        self.assertEqual((0, 0), (disk['errors'], disk['guest_errors']),
                         disk['error_lines'])
        storage = disks.StorageDaemon(self.conf)
        self.assertEqual([export], storage.exports())
        # L0's disk server killed under the running guest: started again
        # (as the next launch would), it serves the same export, and the
        # guest's NBD client reconnects without an I/O error.
        os.kill(storage.process().pid, signal.SIGKILL)
        offset = guest.console.offset()
        storage.ensure()
        guest.console.wait_for_disk_ok(2, 900, offset)
        disk = guest.console.disk_status(offset)
        self.assertEqual((0, 0), (disk['errors'], disk['guest_errors']),
                         disk['error_lines'])
        # The pool is mapped by L1-B's QEMU only now.
        self.assertEqual([gen2.l1_pid()],
                         tb.pool.mapped_by(guest.spec.uuid))

        gen1.retire()
        self.assertFalse(gen1.running())
        self.assertEqual(['l2'], sorted(gen2.health().guests))
        tb.check_integrity(guest, guest.console.offset(), passes=1,
                           timeout=600)

    def _assert_served_nothing(self, address, cafile, cert=None):
        """A TLS client to the L1's libvirtd that it must not serve.

        Its handshake may fail, or complete (TLS 1.3 verifies the client
        certificate after the client's side finished): then libvirtd must
        close the connection, not wait for the rest of the RPC packet.
        """
        context = ssl.create_default_context(cafile=cafile)
        context.check_hostname = False
        if cert:
            context.load_cert_chain(*cert)
        with socket.create_connection((address, 16514), timeout=20) as raw:
            try:
                with context.wrap_socket(raw) as tls:
                    tls.sendall(b'\0\0\0\x1c')
                    self.assertEqual(b'', tls.recv(4))
            except (ssl.SSLError, ConnectionError):
                pass   # refused in the handshake

    def _write_client(self, issuer, name, ca_cert):
        directory = tempfile.mkdtemp(dir=self.conf.vmbeam.state_path)
        cert, key = pki.issue(issuer[0], issuer[1], name, client=True)
        for file_name, data in ((pki.CA_CERT, pki.cert_pem(ca_cert)),
                                (pki.CLIENT_CERT, pki.cert_pem(cert)),
                                (pki.CLIENT_KEY, pki.key_pem(key))):
            with open(os.path.join(directory, file_name), 'wb') as f:
                f.write(data)
        return directory

    def _assert_refuses_the_unauthenticated(self, sibling):
        """Only L0's client certificate opens the L1's libvirtd."""
        # No TCP listener: libvirtd's plain port is closed.
        self.assertRaises(libvirt.libvirtError, libvirt.open,
                          'qemu+tcp://%s/system' % sibling.address)
        cafile = os.path.join(sibling.pki_dir, pki.CA_CERT)
        # TLS without a client certificate.
        self._assert_served_nothing(sibling.address, cafile)
        # A client certificate of another CA, with L0's name.
        ca_cert, ca_key = pki.node_ca(self.conf)
        other = self._write_client(pki.new_ca('not this node'),
                                   pki.L0_CLIENT_CN, ca_cert)
        self._assert_served_nothing(
            sibling.address, cafile,
            cert=(os.path.join(other, pki.CLIENT_CERT),
                  os.path.join(other, pki.CLIENT_KEY)))
        # One of this node's CA with another name (an L1's): refused by
        # name (libvirt's own client, which accepts its certificate).
        wrong_name = self._write_client((ca_cert, ca_key),
                                        'nova-vmbeam-l1-gen9', ca_cert)
        self.assertRaises(
            libvirt.libvirtError, libvirt.open,
            'qemu+tls://%s/system?pkipath=%s' % (sibling.address,
                                                 wrong_name))
        # And L0's own opens it.
        conn = libvirt.open(sibling.uri)
        try:
            self.assertEqual(0, conn.numOfDomains())
        finally:
            conn.close()


class TestNestedRejuvenation(NestedTestCase):
    """The orchestrator with sibling_kind nested: standby, then rejuvenate."""

    def test_standby_l1_then_rejuvenate_switches_only(self):
        self.conf.set_override('sibling_kind', 'nested', 'vmbeam')
        self.conf.set_override('default_mover', 'nested', 'vmbeam')
        orchestrator = orchestrator_mod.Orchestrator(self.conf)
        tb = self.testbed
        gen1 = orchestrator.init()
        tb.siblings.append(gen1)
        host1 = gen1.host()
        self.addCleanup(host1.close)
        bridge, guest_ip = self._guest_network()
        guest = tb.boot(host1, tb.spec('l2', host1, bridge=bridge,
                                       ip=guest_ip + '/24'))
        before = self._guest_says(guest_ip)

        record = orchestrator.standby()
        self.assertEqual('standby', record.state)
        self.assertEqual('ready', record.prepared['l2'].state)
        gen2 = orchestrator.sibling(2)
        tb.siblings.append(gen2)
        # The destination waits in the pre-warmed L1, paused.
        host2 = gen2.host()
        self.addCleanup(host2.close)
        self.assertEqual(['l2'], host2.running_qemus())
        self.assertEqual('inmigrate', host2.guest('l2').status())
        parameters = host2.guest('l2').execute('query-migrate-parameters')
        self.assertEqual(nested_mover.TLS_INCOMING,
                         parameters.get('tls-creds'))
        self.assertEqual(nested_mover.TLS_AUTHZ, parameters.get('tls-authz'))

        run = orchestrator.rejuvenate()
        self.assertEqual('completed', run.state, run)
        # The hypervisor's kernel is a new one: gen2's L1 booted its own.
        before, after = run.aging_before.kernel, run.aging_after.kernel
        self.assertIsNotNone(before, run.aging_before)
        self.assertIsNotNone(after, run.aging_after)
        self.assertNotEqual(before.boot_id, after.boot_id)
        self.assertGreater(after.mem_available_kib, 0)
        self.assertLess(after.mem_available_kib, after.mem_total_kib)
        figures = run.guests['l2'].result
        self.assertTrue(figures.standby)
        self.assertLess(figures.transferred_bytes, 4 << 20)
        self.assertFalse(gen1.running())
        self.assertEqual(2, orchestrator.state().active)
        guest.endpoint = host2.guest('l2')
        self.assertEqual('running', guest.endpoint.status())
        tb.check_integrity(guest, guest.console.offset(), passes=2,
                           timeout=600)
        # Its NIC's bridge was made in the standby L1 with its
        # destination: the guest answers from there.
        after = self._guest_says(guest_ip)
        self.assertTrue(after.startswith('vmbeam-guest l2'), after)
        self.assertNotEqual(before, after)
