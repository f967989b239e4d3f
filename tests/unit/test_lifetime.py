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

"""Daemons started outside their starter's cgroup (nova_vmbeam.lifetime).

No cgroup is written here: the hierarchies are directories of the test's
own, as procfs would report them.
"""

import errno
import os
import time
from unittest import mock

import fixtures
import testtools

from nova_vmbeam.libvirt import daemon as libvirt_daemon
from nova_vmbeam import lifetime
from nova_vmbeam.pool import daemon as pool_daemon
from nova_vmbeam.privsep import cgroups
from nova_vmbeam.qemu import procfs
from tests.unit import fakes

# This machine's kind: cgroup v1 with the unified hierarchy beside it.
MOUNTINFO = '''\
29 23 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
30 29 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
31 29 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
34 29 0:31 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
35 29 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 29 0:33 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
40 23 0:21 / /proc rw,nosuid - proc proc rw
'''

SELF_CGROUP = '''\
9:name=systemd:/
8:pids:/nova-compute
6:cpu,cpuacct:/
4:memory:/limited/x
0::/nova-compute
'''


class TestProcfsCgroups(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, 'w') as f:
            f.write(text)
        return path

    def test_cgroups_by_hierarchy(self):
        found = procfs.cgroups(path=self.write('cgroup', SELF_CGROUP))
        self.assertEqual({'name=systemd': '/', 'pids': '/nova-compute',
                          'cpu,cpuacct': '/', 'memory': '/limited/x',
                          '': '/nova-compute'}, found)

    def test_a_gone_process_has_none(self):
        self.assertEqual({}, procfs.cgroups(2 ** 22 + 1))

    def test_own_cgroups_are_read(self):
        self.assertNotEqual({}, procfs.cgroups())

    def test_cgroup_mounts(self):
        mounts = procfs.cgroup_mounts(self.write('mountinfo', MOUNTINFO))
        self.assertEqual(['/sys/fs/cgroup/unified', '/sys/fs/cgroup/systemd',
                          '/sys/fs/cgroup/pids', '/sys/fs/cgroup/memory',
                          '/sys/fs/cgroup/cpu,cpuacct'],
                         [m.mount_point for m in mounts])
        self.assertEqual('cgroup2', mounts[0].fstype)
        self.assertIn('name=systemd', mounts[1].options)
        self.assertEqual({'rw', 'cpu', 'cpuacct'}, mounts[4].options)


class CgroupTreeTestCase(testtools.TestCase):
    """Hierarchies mounted under a temporary directory, as procfs says."""

    def setUp(self):
        super().setUp()
        self.useFixture(fakes.InProcessPrivsep())
        self.root = self.useFixture(fixtures.TempDir()).path
        self.mounts = [
            procfs.CgroupMount('cgroup2', frozenset({'rw'}), '/',
                               os.path.join(self.root, 'unified')),
            procfs.CgroupMount('cgroup', frozenset({'rw', 'name=systemd'}),
                               '/', os.path.join(self.root, 'systemd')),
            procfs.CgroupMount('cgroup', frozenset({'rw', 'pids'}), '/',
                               os.path.join(self.root, 'pids')),
            procfs.CgroupMount('cgroup', frozenset({'rw', 'memory'}), '/',
                               os.path.join(self.root, 'memory'))]
        for mount in self.mounts:
            os.makedirs(mount.mount_point)
        self.useFixture(fixtures.MockPatch(
            'nova_vmbeam.qemu.procfs.cgroup_mounts',
            return_value=self.mounts))
        self.placement = {'self': {'': '/nova-compute', 'name=systemd': '/',
                                   'pids': '/nova-compute',
                                   'memory': '/limited'}}
        self.useFixture(fixtures.MockPatch(
            'nova_vmbeam.qemu.procfs.cgroups',
            side_effect=lambda pid='self': self.placement.get(pid, {})))
        self.booted = self.useFixture(fixtures.MockPatch(
            'nova_vmbeam.lifetime.systemd_booted',
            return_value=False)).mock

    def procs(self, hierarchy, group):
        path = os.path.join(self.root, hierarchy, lifetime.PARENT, group,
                            'cgroup.procs')
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return f.read()


class TestHierarchies(CgroupTreeTestCase):

    def test_unified_and_the_v1_hierarchies_of_interest(self):
        found = {h.key: h for h in lifetime.hierarchies()}
        # memory is not one of them: see the module's docstring.
        self.assertEqual({'', 'name=systemd', 'pids'}, set(found))
        self.assertFalse(found[''].at_root)
        self.assertTrue(found['name=systemd'].at_root)
        self.assertEqual(os.path.join(self.root, 'unified', 'nova-compute'),
                         found[''].directory())
        self.assertEqual(os.path.join(self.root, 'pids', 'vmbeam', 'gen1-x'),
                         found['pids'].group_directory('gen1-x'))

    def test_a_bind_mounted_subtree_is_relative_to_its_root(self):
        self.mounts[0] = self.mounts[0]._replace(root='/nova-compute')
        found = {h.key: h for h in lifetime.hierarchies()}
        self.assertTrue(found[''].at_root)
        self.mounts[0] = self.mounts[0]._replace(root='/elsewhere')
        self.assertNotIn('', {h.key for h in lifetime.hierarchies()})

    def test_holds(self):
        h = lifetime.Hierarchy('', '/m', '/a/b')
        self.assertTrue(h.holds('/a/b'))
        self.assertTrue(h.holds('/a/b/c'))
        self.assertFalse(h.holds('/a/bc'))
        self.assertFalse(h.holds('/machine/qemu-1-g.libvirt-qemu'))
        self.assertTrue(lifetime.Hierarchy('', '/m', '/').holds('/x'))


class TestCgroupWrites(CgroupTreeTestCase):

    def test_move_into_makes_the_group_and_writes_the_pid(self):
        moved = cgroups.move_into(4242, 'gen2-0123abcd', ['', 'pids'])
        self.assertEqual(
            [os.path.join(self.root, 'unified', 'vmbeam', 'gen2-0123abcd'),
             os.path.join(self.root, 'pids', 'vmbeam', 'gen2-0123abcd')],
            moved)
        self.assertEqual('4242\n', self.procs('unified', 'gen2-0123abcd'))
        self.assertEqual('4242\n', self.procs('pids', 'gen2-0123abcd'))
        self.assertIsNone(self.procs('memory', 'gen2-0123abcd'))

    def test_move_into_takes_typed_arguments_only(self):
        for pid in ('4242', 0, -1, True, 1.5):
            self.assertRaises(ValueError, cgroups.move_into, pid, 'gen1-a',
                              [''])
        for group in ('../x', 'a/b', '', 'Gen1', 'x' * 64, None, 'a b'):
            self.assertRaises(ValueError, cgroups.move_into, 1, group, [''])
        self.assertRaises(ValueError, cgroups.move_into, 1, 'gen1-a',
                          ['freezer'])
        self.assertEqual([], os.listdir(os.path.join(self.root, 'unified')))

    def test_remove_group_where_empty(self):
        cgroups.move_into(4242, 'gen1-a', ['', 'pids'])
        for hierarchy in ('unified', 'pids'):
            # What the kernel shows of an empty cgroup: rmdir takes it.
            os.unlink(os.path.join(self.root, hierarchy, 'vmbeam', 'gen1-a',
                                   'cgroup.procs'))
        self.assertTrue(cgroups.remove_group('gen1-a'))
        self.assertEqual([], os.listdir(os.path.join(self.root, 'unified',
                                                     'vmbeam')))
        # Nothing to remove is no error.
        self.assertTrue(cgroups.remove_group('gen1-a'))

    def test_remove_group_leaves_one_that_holds_a_process(self):
        busy = OSError(errno.EBUSY, 'Device or resource busy')
        with mock.patch('os.rmdir', side_effect=busy):
            self.assertFalse(cgroups.remove_group('gen1-a'))
        other = OSError(errno.EACCES, 'Permission denied')
        with mock.patch('os.rmdir', side_effect=other):
            self.assertRaises(OSError, cgroups.remove_group, 'gen1-a')


class TestDetach(CgroupTreeTestCase):

    def test_moved_where_the_starter_is_not_at_the_root(self):
        moved = lifetime.detach(4242, 'gen1-a')
        self.assertEqual(2, len(moved))
        self.assertEqual('4242\n', self.procs('unified', 'gen1-a'))
        self.assertEqual('4242\n', self.procs('pids', 'gen1-a'))
        self.assertIsNone(self.procs('systemd', 'gen1-a'))
        self.assertIsNone(self.procs('memory', 'gen1-a'))

    def test_nothing_to_do_at_the_root(self):
        self.placement['self'] = {'': '/', 'pids': '/', 'name=systemd': '/'}
        self.assertEqual([], lifetime.detach(4242, 'gen1-a'))
        self.assertEqual([], os.listdir(os.path.join(self.root, 'unified')))

    def test_nothing_to_do_under_systemd(self):
        self.booted.return_value = True
        self.assertEqual([], lifetime.detach(4242, 'gen1-a'))
        self.assertEqual([], os.listdir(os.path.join(self.root, 'unified')))

    def test_a_failed_move_is_logged_not_raised(self):
        logger = self.useFixture(fixtures.FakeLogger())
        with mock.patch('nova_vmbeam.privsep.cgroups.move_into',
                        side_effect=PermissionError(errno.EACCES, 'no')):
            self.assertEqual([], lifetime.detach(4242, 'gen1-a'))
        self.assertIn('will die with it', logger.output)

    def test_keep_out_moves_only_what_is_inside_the_starter(self):
        self.placement[77] = {'': '/machine/qemu-1-l1.libvirt-qemu',
                              'pids': '/nova-compute/sub',
                              'name=systemd': '/'}
        self.assertEqual(
            [os.path.join(self.root, 'pids', 'vmbeam', 'l1-gen1-a')],
            lifetime.keep_out(77, 'l1-gen1-a'))
        self.assertEqual('77\n', self.procs('pids', 'l1-gen1-a'))
        self.assertIsNone(self.procs('unified', 'l1-gen1-a'))
        self.placement[78] = {'': '/machine/qemu-2-l1.libvirt-qemu',
                              'pids': '/vmbeam/nested-l0-a'}
        self.assertEqual([], lifetime.keep_out(78, 'l1-gen2-a'))

    def test_keep_out_only_warns_under_systemd(self):
        self.booted.return_value = True
        logger = self.useFixture(fixtures.FakeLogger())
        self.placement[77] = {'': '/nova-compute'}
        self.assertEqual([], lifetime.keep_out(77, 'l1-gen1-a'))
        self.assertIn('pid 77 runs in the cgroup of its starter',
                      logger.output)


class TestSpawn(CgroupTreeTestCase):

    def test_moved_before_it_runs_anything(self):
        log = os.path.join(self.root, 'daemon.log')
        seen = []

        def detach(pid, group):
            # Still the gate, waiting: the real command has not started.
            # (Popen may return before the child has exec'd the gate: its
            # cmdline is empty or its parent's until then.)
            deadline = time.monotonic() + 10
            cmdline = []
            while 'vmbeam-gate' not in cmdline and \
                    time.monotonic() < deadline:
                with open('/proc/%d/cmdline' % pid) as f:
                    cmdline = f.read().split('\0')
            seen.append((group, cmdline))
            return []
        with mock.patch('nova_vmbeam.lifetime.detach', side_effect=detach):
            spawned = lifetime.spawn('gen1-a', ['echo', 'started'],
                                     log_path=log)
        self.assertEqual(0, spawned.wait(10))
        self.assertEqual('gen1-a', seen[0][0])
        self.assertIn('vmbeam-gate', seen[0][1])
        self.assertIn('echo', seen[0][1])
        self.assertIsNone(spawned.unit)
        with open(log) as f:
            self.assertEqual('started\n', f.read())

    def test_captured_output(self):
        with mock.patch('nova_vmbeam.lifetime.detach', return_value=[]):
            spawned = lifetime.spawn('pagemoverd-a',
                                     ['sh', '-c', 'echo out; echo err >&2; '
                                      'exit 3'])
        out, err = spawned.communicate(timeout=10)
        self.assertEqual((b'out\n', b'err\n'), (out, err))
        self.assertEqual(3, spawned.returncode)
        self.assertTrue(spawned.failed())

    def test_a_gate_closed_without_a_line_runs_nothing(self):
        marker = os.path.join(self.root, 'ran')
        gates = []

        def fail(pid, group):
            gates.append(pid)
            raise RuntimeError('boom')
        with mock.patch('nova_vmbeam.lifetime.detach', side_effect=fail):
            self.assertRaises(RuntimeError, lifetime.spawn, 'gen1-a',
                              ['touch', marker], log_path=os.devnull)
        # The gate saw EOF: it exits without running the command.
        _pid, status = os.waitpid(gates[0], 0)
        self.assertEqual(1, os.waitstatus_to_exitcode(status))
        self.assertFalse(os.path.exists(marker))

    def test_as_a_unit_under_systemd(self):
        self.booted.return_value = True
        log = os.path.join(self.root, 'daemon.log')
        with mock.patch('nova_vmbeam.lifetime.subprocess.Popen') as popen, \
                mock.patch('nova_vmbeam.lifetime.unit_name',
                           return_value='vmbeam-gen1-a-1'):
            popen.return_value.poll.return_value = 0
            spawned = lifetime.spawn('gen1-a', ['unshare', '--', 'x'],
                                     log_path=log)
        self.assertEqual('vmbeam-gen1-a-1', spawned.unit)
        # systemd-run exits 0 once the unit runs: that is no failure.
        self.assertFalse(spawned.failed())
        popen.return_value.poll.return_value = 1
        self.assertTrue(spawned.failed())
        argv = popen.call_args.args[0]
        self.assertEqual(lifetime.systemd_run_argv(
            'vmbeam-gen1-a-1', ['unshare', '--', 'x'], 'simple', log),
            argv)
        self.assertNotIn('vmbeam-gate', argv)
        self.assertEqual([], os.listdir(os.path.join(self.root, 'unified')))

    def test_systemd_run_argv(self):
        self.assertEqual(
            ['systemd-run', '--unit', 'vmbeam-gen2-0123abcd-18c',
             '--description', 'nova-vmbeam vmbeam-gen2-0123abcd-18c',
             '--collect', '--quiet', '--service-type', 'simple',
             '--property', 'KillMode=process',
             '--property', 'StandardOutput=append:/s/daemon.log',
             '--property', 'StandardError=append:/s/daemon.log',
             '--', 'unshare', '--mount', '--', '/bin/sh', '-c', 'x y'],
            lifetime.systemd_run_argv(
                'vmbeam-gen2-0123abcd-18c',
                ['unshare', '--mount', '--', '/bin/sh', '-c', 'x y'],
                log_path='/s/daemon.log'))
        self.assertEqual(
            ['systemd-run', '--unit', 'u', '--description', 'nova-vmbeam u',
             '--collect', '--quiet', '--service-type', 'forking',
             '--property', 'KillMode=process',
             '--property', 'PIDFile=/run/p.pid', '--', 'd', '--daemon'],
            lifetime.systemd_run_argv('u', ['d', '--daemon'], 'forking',
                                      pid_file='/run/p.pid'))

    def test_unit_names(self):
        with mock.patch('time.time_ns', return_value=0x18c * 1000000):
            self.assertEqual('vmbeam-gen2-x-18c', lifetime.unit_name('gen2-x'))
        self.assertRaises(ValueError, lifetime.spawn, '../gen1', ['true'])


class TestGroups(testtools.TestCase):

    def test_one_group_per_daemon_and_state_path(self):
        conf = fakes.make_conf()
        a = libvirt_daemon.PrivateLibvirtd(conf, '/s1/siblings/gen1', 'u',
                                           'gen1', 1)
        b = libvirt_daemon.PrivateLibvirtd(conf, '/s2/siblings/gen1', 'u',
                                           'gen1', 1)
        self.assertTrue(a.group.startswith('gen1-'))
        self.assertNotEqual(a.group, b.group)
        self.assertEqual(a.group, lifetime.group_name('gen1',
                                                      '/s1/siblings/gen1'))
        self.assertRegex(pool_daemon.group('/run/x.sock'),
                         r'^pagemoverd-[0-9a-f]{8}$')
