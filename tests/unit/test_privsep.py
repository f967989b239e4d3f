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


"""The privsep entrypoints refuse what is not theirs to do."""

import os
import resource
from unittest import mock

import fixtures
import testtools

from nova_vmbeam import privsep
from nova_vmbeam.privsep import daemons
from nova_vmbeam.privsep import files
from nova_vmbeam.privsep import network
from nova_vmbeam.privsep import sched
from tests.unit import fakes


class TestContext(testtools.TestCase):

    def test_root_runs_the_helper_itself_without_sudo(self):
        with mock.patch('os.geteuid', return_value=0):
            argv = privsep.vmbeam_pctxt.helper_command('/tmp/x/sock')
        self.assertNotIn('sudo', argv)
        self.assertEqual(['--privsep_context',
                          'nova_vmbeam.privsep.vmbeam_pctxt',
                          '--privsep_sock_path', '/tmp/x/sock'], argv[-4:])

    def test_an_unprivileged_caller_uses_the_helper_command(self):
        self.useFixture(fixtures.MonkeyPatch(
            'oslo_config.cfg.CONF.vmbeam_privsep.helper_command',
            'sudo /venv/bin/privsep-helper --config-file /etc/nova/n.conf'))
        with mock.patch('os.geteuid', return_value=1000):
            argv = privsep.vmbeam_pctxt.helper_command('/tmp/x/sock')
        self.assertEqual(['sudo', '/venv/bin/privsep-helper'], argv[:2])


class TestChecks(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(fakes.InProcessPrivsep())
        self.dir = self.useFixture(fixtures.TempDir()).path

    def test_chown_never_follows_a_link_to_a_file(self):
        target = os.path.join(self.dir, 'secret')
        with open(target, 'w'):
            pass
        link = os.path.join(self.dir, 'disk')
        os.symlink(target, link)
        self.assertRaises(OSError, files.chown, link, 64055, 64055)
        self.assertEqual(os.getuid(), os.stat(target).st_uid)

    def test_chown_takes_absolute_paths_and_ids_only(self):
        self.assertRaises(ValueError, files.chown, 'disk', 1, 1)
        self.assertRaises(ValueError, files.chown, self.dir, -1, 1)
        self.assertRaises(ValueError, files.chown, self.dir, '1', 1)

    def test_binary_writable_by_others_is_refused(self):
        binary = os.path.join(self.dir, 'libvirtd')
        with open(binary, 'w') as f:
            f.write('#!/bin/sh\n')
        os.chmod(binary, 0o777)
        error = self.assertRaises(ValueError, daemons.check_binary, binary)
        self.assertIn('root', str(error))
        self.assertEqual(os.path.realpath('/bin/true'),
                         daemons.check_binary('/bin/true'))

    def test_relative_or_odd_paths_are_refused(self):
        for path in ('usr/sbin/libvirtd', '/usr/sbin/../sbin/libvirtd',
                     '/tmp//x', 5):
            self.assertRaises(ValueError, daemons.check_path, path)

    def test_start_libvirtd_refuses_a_bad_namespace_name(self):
        self.assertRaises(ValueError, daemons.start_libvirtd, self.dir,
                          'gen1-abc', '/bin/true', netns='a b;c')

    def test_storage_daemon_takes_checked_values_only(self):
        start = daemons.start_storage_daemon
        good = dict(group='nested-disks-1', binary='/bin/true',
                    base=self.dir, user='root', address='192.0.2.1',
                    port=10809, client_dn_glob='CN=nova-vmbeam-l1-*-m',
                    timeout=5)
        with mock.patch('nova_vmbeam.lifetime.spawn') as spawn:
            for name, bad in (('address', '0.0.0.0; sh'),
                              ('address', 'example.org'),
                              ('port', 80), ('port', '10809'),
                              ('user', 'no-such-user-here'),
                              ('base', self.dir + ',id=x'),
                              ('base', 'relative'),
                              ('client_dn_glob', 'CN=x,O=y'),
                              ('client_dn_glob', ''),
                              ('client_uid', -1)):
                self.assertRaises((ValueError, KeyError), start,
                                  **dict(good, **{name: bad}))
            spawn.assert_not_called()

    def test_bridge_names_and_addresses_are_checked(self):
        with mock.patch.object(network, '_ip') as ip:
            self.assertRaises(ValueError, network.ensure_bridge,
                              'br0; rm -rf /', '10.0.0.1', 24)
            self.assertRaises(ValueError, network.ensure_bridge,
                              'vmbeam0', 'not-an-address', 24)
            self.assertRaises(ValueError, network.remove_bridge,
                              'a-name-too-long-for-linux')
        ip.assert_not_called()

    def test_thread_ids_and_nice_values_are_checked(self):
        self.assertRaises(ValueError, sched.raise_threads, 'nice', -5,
                          [(0, True)])
        self.assertRaises(ValueError, sched.raise_threads, 'nice', -50,
                          [(os.getpid(), True)])
        self.assertRaises(KeyError, sched.raise_threads, 'chaos', -5,
                          [(os.getpid(), True)])


class TestMaxCore(testtools.TestCase):

    def test_a_limited_daemon_writes_the_limit_it_can_grant(self):
        with mock.patch('resource.getrlimit', return_value=(0, 0)):
            self.assertIn(b'max_core = 0', files._max_core_line(b'# x\n'))
            # The host's own setting stands.
            self.assertEqual(b'', files._max_core_line(
                b'max_core = "unlimited"\n'))
        with mock.patch('resource.getrlimit', return_value=(
                0, resource.RLIM_INFINITY)):
            self.assertEqual(b'', files._max_core_line(b''))
