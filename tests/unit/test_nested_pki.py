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

"""The nested sibling's authenticated channels: keys, files, config."""

import io
import ipaddress
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import types

from cryptography.hazmat.primitives import serialization
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
import fixtures
import testtools

from nova_vmbeam.conf import nested as nested_conf
from nova_vmbeam import guest as guest_mod
from nova_vmbeam.movers import base as mover_base
from nova_vmbeam.nested.appliance import builder
from nova_vmbeam.nested import host as nested_host
from nova_vmbeam.nested import mover as nested_mover
from nova_vmbeam.nested import pki
from nova_vmbeam.nested import sibling as nested_sibling
from tests.unit import fakes


GUEST_UUID = '2f1b5a4e-0000-4000-8000-00000000abcd'


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _load(path):
    with open(path, 'rb') as f:
        return x509.load_pem_x509_certificate(f.read())


class PkiTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.state = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.state)
        self.conf = fakes.make_conf(state_path=self.state)
        nested_conf.register_opts(self.conf)
        # The group object is shared: other tests' overrides outlive them.
        self.conf.set_override('network_cidr', '192.0.2.0/24',
                               'vmbeam_nested')
        self.conf.set_override('bar_mapping', 'resource2', 'vmbeam_nested')


class TestNodeCA(PkiTestCase):

    def test_made_once_owner_only(self):
        cert, _ = pki.node_ca(self.conf)
        again, _ = pki.node_ca(self.conf)
        self.assertEqual(cert, again)
        directory = pki.ca_dir(self.conf)
        self.assertEqual(0o700, _mode(directory))
        self.assertEqual(0o700, _mode(os.path.dirname(directory)))
        self.assertEqual(0o600, _mode(os.path.join(directory, pki.CA_KEY)))
        constraints = cert.extensions.get_extension_for_class(
            x509.BasicConstraints)
        self.assertTrue(constraints.value.ca)
        self.assertTrue(constraints.critical)


class TestClientCredentials(PkiTestCase):

    def test_pkipath_layout_modes_and_name(self):
        sibling = nested_sibling.NestedSibling(self.conf, 4)
        directory = sibling.ensure_client_pki()
        self.assertEqual(sibling.pki_dir, directory)
        self.assertEqual(0o700, _mode(directory))
        self.assertEqual(0o600, _mode(os.path.join(directory,
                                                   pki.CLIENT_KEY)))
        cert = _load(os.path.join(directory, pki.CLIENT_CERT))
        ca, _ = pki.node_ca(self.conf)
        # The name libvirtd in the L1 accepts, signed by the node's CA.
        self.assertEqual(pki.L0_CLIENT_DN, cert.subject.rfc4514_string())
        self.assertEqual(ca.subject, cert.issuer)
        cert.verify_directly_issued_by(ca)
        self.assertEqual([ExtendedKeyUsageOID.CLIENT_AUTH], list(
            cert.extensions.get_extension_for_class(
                x509.ExtendedKeyUsage).value))
        self.assertEqual(ca, _load(os.path.join(directory, pki.CA_CERT)))

    def test_kept_across_restarts(self):
        # A nova-compute started later reaches the same L1 with them.
        first = nested_sibling.NestedSibling(self.conf, 4)
        first.ensure_client_pki()
        path = os.path.join(first.pki_dir, pki.CLIENT_CERT)
        before = _load(path)
        nested_sibling.NestedSibling(self.conf, 4).ensure_client_pki()
        self.assertEqual(before, _load(path))

    def test_a_partial_set_is_made_again_as_a_pair(self):
        # An interrupted first run left a certificate without its CA.
        sibling = nested_sibling.NestedSibling(self.conf, 4)
        os.makedirs(sibling.pki_dir)
        ca_cert, ca_key = pki.node_ca(self.conf)
        stale, _ = pki.issue(ca_cert, ca_key, pki.L0_CLIENT_CN, client=True)
        with open(os.path.join(sibling.pki_dir, pki.CLIENT_CERT), 'wb') as f:
            f.write(pki.cert_pem(stale))
        sibling.ensure_client_pki()
        cert = _load(os.path.join(sibling.pki_dir, pki.CLIENT_CERT))
        with open(os.path.join(sibling.pki_dir, pki.CLIENT_KEY), 'rb') as f:
            key = serialization.load_pem_private_key(f.read(), None)
        self.assertNotEqual(stale, cert)
        self.assertEqual(key.public_key(), cert.public_key())

    def test_uri_is_tls_with_this_generations_credentials(self):
        sibling = nested_sibling.NestedSibling(self.conf, 4)
        self.assertEqual('qemu+tls://%s/system?pkipath=%s' % (
            sibling.address, os.path.join(self.state, 'nested', 'gen4',
                                          'pki')), sibling.uri)


class TestL1Files(PkiTestCase):

    def test_server_certificates_name_the_l1_address(self):
        files = pki.l1_files(self.conf, '192.0.2.14', 'gen4')
        ca, _ = pki.node_ca(self.conf)
        for path, purposes in (
                (pki.L1_SERVER_CERT, [ExtendedKeyUsageOID.SERVER_AUTH]),
                (pki.L1_MIGRATION_DIR + '/server-cert.pem',
                 [ExtendedKeyUsageOID.SERVER_AUTH,
                  ExtendedKeyUsageOID.CLIENT_AUTH])):
            cert = x509.load_pem_x509_certificate(files[path])
            cert.verify_directly_issued_by(ca)
            names = cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value
            self.assertEqual([ipaddress.ip_address('192.0.2.14')],
                             names.get_values_for_type(x509.IPAddress))
            self.assertEqual(purposes, list(
                cert.extensions.get_extension_for_class(
                    x509.ExtendedKeyUsage).value))
            # Never L0's name: an L1 cannot open another L1's libvirtd.
            self.assertNotEqual(pki.L0_CLIENT_DN,
                                cert.subject.rfc4514_string())

    def test_fresh_keys_each_time_and_none_kept_on_l0(self):
        first = pki.l1_files(self.conf, '192.0.2.14', 'gen4')
        second = pki.l1_files(self.conf, '192.0.2.14', 'gen4')
        self.assertNotEqual(first[pki.L1_SERVER_KEY],
                            second[pki.L1_SERVER_KEY])
        kept = []
        for dirpath, _, filenames in os.walk(self.state):
            kept += filenames
        self.assertEqual(sorted([pki.CA_CERT, pki.CA_KEY, '.lock']),
                         sorted(kept))

    def test_tar_holds_the_files(self):
        files = pki.l1_files(self.conf, '192.0.2.14', 'gen4')
        with tarfile.open(fileobj=io.BytesIO(pki.tar_of(files))) as tar:
            self.assertEqual(sorted(files), sorted(tar.getnames()))
            self.assertEqual(files[pki.L1_SERVER_KEY], tar.extractfile(
                pki.L1_SERVER_KEY).read())


class TestInstallScript(PkiTestCase):
    """The script the L1's agent runs, with busybox in a chroot."""

    def setUp(self):
        super().setUp()
        busybox = shutil.which('busybox')
        if os.geteuid() != 0 or busybox is None:
            self.skipTest('needs root (chroot) and busybox')
        self.root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.root)
        for directory in ('bin', 'etc', 'run'):
            os.makedirs(os.path.join(self.root, directory))
        shutil.copy(busybox, os.path.join(self.root, 'bin', 'busybox'))
        for applet in ('sh', 'tar', 'chown', 'chmod', 'find', 'mkdir',
                       'rm', 'mv', 'touch'):
            os.symlink('busybox', os.path.join(self.root, 'bin', applet))
        with open(os.path.join(self.root, 'etc', 'passwd'), 'w') as f:
            f.write('root:x:0:0::/:/bin/sh\n'
                    'libvirt-qemu:x:64055:64055::/:/bin/false\n')
        with open(os.path.join(self.root, 'etc', 'group'), 'w') as f:
            f.write('root:x:0:\nlibvirt-qemu:x:64055:\n')

    def _install(self, files):
        subprocess.run(['chroot', self.root, '/bin/sh', '-c',
                        pki.INSTALL_SCRIPT], input=pki.tar_of(files),
                       check=True, capture_output=True)

    def test_owners_modes_and_flag(self):
        files = pki.l1_files(self.conf, '192.0.2.14', 'gen4')
        self._install(files)

        def at(rel):
            return os.path.join(self.root, rel)
        self.assertEqual(0o600, _mode(at(pki.L1_SERVER_KEY)))
        self.assertEqual(0o700, _mode(os.path.dirname(
            at(pki.L1_SERVER_KEY))))
        self.assertEqual(0, os.stat(at(pki.L1_SERVER_KEY)).st_uid)
        self.assertEqual(0o644, _mode(at(pki.L1_CA_CERT)))
        # QEMU's user reads its migration credentials, nobody else.
        migration = at(pki.L1_MIGRATION_DIR)
        self.assertEqual(0o755, _mode(os.path.dirname(migration)))
        self.assertEqual(0o700, _mode(migration))
        for name in os.listdir(migration):
            path = os.path.join(migration, name)
            self.assertEqual(64055, os.stat(path).st_uid)
            self.assertEqual(0o600, _mode(path))
        self.assertTrue(os.path.exists(at(pki.L1_READY_FLAG.lstrip('/'))))

    def test_a_second_delivery_changes_nothing(self):
        files = pki.l1_files(self.conf, '192.0.2.14', 'gen4')
        self._install(files)
        self._install(pki.l1_files(self.conf, '192.0.2.14', 'gen4'))
        with open(os.path.join(self.root, pki.L1_SERVER_KEY), 'rb') as f:
            self.assertEqual(files[pki.L1_SERVER_KEY], f.read())


class TestApplianceConfig(testtools.TestCase):

    def _settings(self, text):
        settings = {}
        for line in text.splitlines():
            line = line.split('#', 1)[0].strip()
            if line:
                name, _, value = line.partition('=')
                settings[name.strip()] = value.strip()
        return settings

    def test_libvirtd_listens_on_tls_only_and_checks_the_client(self):
        settings = self._settings(builder.LIBVIRTD_CONF)
        self.assertEqual('0', settings['listen_tcp'])
        self.assertNotIn('auth_tcp', settings)
        self.assertEqual('1', settings['listen_tls'])
        self.assertEqual('0', settings['tls_no_verify_certificate'])
        self.assertEqual('["%s"]' % pki.L0_CLIENT_DN,
                         settings['tls_allowed_dn_list'])
        self.assertEqual('"/%s"' % pki.L1_SERVER_KEY, settings['key_file'])

    def test_qemu_is_not_root(self):
        settings = self._settings(builder.QEMU_CONF)
        self.assertEqual('"libvirt-qemu"', settings['user'])
        self.assertEqual('"libvirt-qemu"', settings['group'])

    def test_init_starts_libvirtd_only_with_its_keys(self):
        with open(builder.INIT_SRC) as f:
            init = f.read()
        self.assertLess(init.index(pki.L1_READY_FLAG),
                        init.index('libvirtd --listen'))
        self.assertLess(init.index('qemu-ga --daemonize'),
                        init.index(pki.L1_READY_FLAG))


class TestBarOwner(PkiTestCase):

    def test_enabled_bar_is_given_to_the_qemu_user(self):
        sibling = nested_sibling.NestedSibling(self.conf, 4)
        scripts = []

        def sh(dom, script, timeout=60):
            scripts.append(script)
            return '1\n'
        self.useFixture(fixtures.MockPatchObject(
            nested_sibling.agent, 'sh', sh))
        self.useFixture(fixtures.MockPatchObject(
            sibling, 'l1_domain', lambda: None))
        bar = sibling.enable_bar('0000:00:05.0')
        self.assertEqual('/sys/bus/pci/devices/0000:00:05.0/resource2', bar)
        self.assertIn('chown libvirt-qemu:libvirt-qemu %s;' % bar,
                      scripts[0])


class FakeEndpoint:

    def __init__(self, status, objects=()):
        self._status = status
        self.objects = list(objects)
        self.calls = []

    def status(self):
        return self._status

    def execute(self, command, **arguments):
        self.calls.append((command, arguments))
        if command == 'qom-list':
            return [{'name': name} for name in self.objects]
        if command == 'object-add':
            self.objects.append(arguments['id'])
        return {}


class TestMigrationTLS(PkiTestCase):

    def _tls(self, endpoint):
        nested_mover.NestedMover(self.conf)._configure(endpoint)
        added = [a for c, a in endpoint.calls if c == 'object-add']
        params = [a for c, a in endpoint.calls
                  if c == 'migrate-set-parameters' and 'tls-creds' in a]
        return added, params

    def test_destination_listens_with_server_credentials(self):
        added, params = self._tls(FakeEndpoint('inmigrate'))
        self.assertEqual([{'qom-type': 'tls-creds-x509',
                           'id': nested_mover.TLS_INCOMING,
                           'dir': '/' + pki.L1_MIGRATION_DIR,
                           'endpoint': 'server', 'verify-peer': True}],
                         added)
        self.assertEqual([{'tls-creds': nested_mover.TLS_INCOMING}],
                         params)

    def test_source_connects_with_client_credentials(self):
        # It came in by a move: it holds the server object already.
        endpoint = FakeEndpoint('running', [nested_mover.TLS_INCOMING])
        added, params = self._tls(endpoint)
        self.assertEqual(['client'], [a['endpoint'] for a in added])
        self.assertTrue(all(a['verify-peer'] for a in added))
        self.assertEqual([{'tls-creds': nested_mover.TLS_OUTGOING}],
                         params)

    def test_credentials_are_added_once(self):
        endpoint = FakeEndpoint('running')
        self._tls(endpoint)
        added, params = self._tls(endpoint)
        self.assertEqual(1, len(added))
        self.assertEqual(2, len(params))

    def test_destination_accepts_only_the_source_l1(self):
        mover = nested_mover.NestedMover(self.conf)
        source = nested_sibling.NestedSibling(self.conf, 4)
        target = nested_sibling.NestedSibling(self.conf, 5)
        destination = FakeEndpoint('inmigrate')
        ctx = mover_base.MoveContext(
            types.SimpleNamespace(host=nested_host.NestedHost(source, '/x'),
                                  spec=guest_mod.GuestSpec(
                                      name='g', uuid=GUEST_UUID,
                                      ram_mib=128)),
            nested_host.NestedHost(target, '/y'))
        ctx.destination = destination
        args = mover.start_incoming(ctx)
        self.assertEqual('tcp:%s:%d' % (target.address, mover.port(
            ctx.source.spec)), args['uri'])
        commands = [c for c, _ in destination.calls]
        self.assertEqual(['object-add', 'migrate-set-parameters',
                          'migrate-incoming'], commands)
        authz = destination.calls[0][1]
        self.assertEqual({'qom-type': 'authz-simple',
                          'id': nested_mover.TLS_AUTHZ,
                          'identity': 'CN=nova-vmbeam-l1-gen4-migration'},
                         authz)
        self.assertEqual({'tls-authz': nested_mover.TLS_AUTHZ},
                         destination.calls[1][1])
        # The very name in gen4's migration certificate.
        files = pki.l1_files(self.conf, source.address, source.name)
        cert = x509.load_pem_x509_certificate(
            files[pki.L1_MIGRATION_DIR + '/client-cert.pem'])
        self.assertEqual(authz['identity'], cert.subject.rfc4514_string())
