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

"""vmbeam-pagemoverd for real: pools of running QEMU guests survive."""

import hashlib
import mmap
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

from nova_vmbeam import exception
from nova_vmbeam import guest as guest_mod
from nova_vmbeam import movers
from nova_vmbeam import pool as pool_mod
from nova_vmbeam.pool import daemon
from nova_vmbeam.pool import pagemoverd
from nova_vmbeam.pool import protocol
from nova_vmbeam.qemu import monitor as monitor_mod
from nova_vmbeam.qemu import procfs
from tests.functional import base
from vmbeam_devtools import guestimage

MIB = 1 << 20


def file_digest(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(MIB), b''):
            digest.update(chunk)
    return digest.hexdigest()


def wait_gone(pid, timeout=30.0):
    deadline = time.monotonic() + timeout
    while procfs.alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError('pid %d still runs' % pid)
        time.sleep(0.01)


class TestPoolDaemon(base.PrivateStateTestCase):
    """The pool calls, answered by the daemon (no guest needed)."""

    def setUp(self):
        super().setUp()
        self.pool = pool_mod.load(self.conf)

    def test_pool_calls_through_the_daemon(self):
        self.assertIsInstance(self.pool, pagemoverd.PagemoverdPool)
        exc = self.assertRaises(exception.PoolError, self.pool.allocate,
                                'u1', 4 * MIB)
        self.assertIn('vmbeam pool init', str(exc))
        self.assertFalse(os.path.exists(self.pool.path))
        self.assertEqual('tmpfs', self.pool.ensure())
        path = self.pool.allocate('u1', 4 * MIB)
        self.assertEqual(self.pool.file_path('u1'), path)
        st = os.stat(path)
        self.assertEqual(4 * MIB, st.st_size)
        self.assertEqual(0o600, stat.S_IMODE(st.st_mode))
        self.assertEqual(pwd.getpwnam(self.conf.vmbeam.qemu_user).pw_uid,
                         st.st_uid)
        self.assertEqual(path, self.pool.allocate('u1', 4 * MIB))
        exc = self.assertRaises(exception.PoolError, self.pool.allocate,
                                'u1', 8 * MIB)
        self.assertIn('Release it first', str(exc))
        self.assertEqual(4 * MIB, os.stat(path).st_size)
        self.assertEqual([], self.pool.mapped_by('u1'))
        self.assertTrue(self.pool.release('u1'))
        self.assertFalse(os.path.exists(path))
        self.assertFalse(self.pool.release('u1'))
        self.assertEqual([], self.pool.mapped_by('u1'))

    def test_budget_is_enforced_and_changes_nothing(self):
        self.conf.set_override('ram_pool_budget_mib', 8, 'vmbeam')
        self.pool.ensure()
        self.pool.allocate('u1', 6 * MIB)
        exc = self.assertRaises(exception.DaemonError, self.pool.allocate,
                                'u2', 4 * MIB)
        self.assertEqual(protocol.OVER_BUDGET, exc.code)
        self.assertIn('ram_pool_budget_mib', str(exc))
        self.assertFalse(os.path.exists(self.pool.file_path('u2')))
        self.pool.release('u1')

    def test_wrong_owner_is_refused(self):
        self.pool.ensure()
        os.chown(self.pool.path, 65534, 65534)
        exc = self.assertRaises(exception.DaemonError, self.pool.allocate,
                                'u1', MIB)
        self.assertEqual(protocol.WRONG_OWNER, exc.code)
        self.assertIn('chown', str(exc))
        self.assertEqual(['.pagemoverd'], os.listdir(self.pool.path))

    def test_release_racing_an_allocation_keeps_the_pool(self):
        self.pool.ensure()
        # Allocated on another thread (nova-compute creating the guest),
        # whose QEMU has not mapped it yet.
        allocator = threading.Thread(target=self.pool.allocate,
                                     args=('u1', 4 * MIB))
        allocator.start()
        allocator.join()
        path = self.pool.file_path('u1')
        exc = self.assertRaises(exception.PoolError, self.pool.release,
                                'u1')
        self.assertIn('has not used it yet', str(exc))
        self.assertTrue(os.path.exists(path))
        self.assertEqual(1, self.pool.daemon_info()['pools'])
        # Its QEMU maps it, runs, and is gone: then it is freed.
        with open(path, 'r+b') as f:
            ram = mmap.mmap(f.fileno(), 4 * MIB, mmap.MAP_SHARED)
        ram[:4] = b'boot'
        ram.close()
        self.assertTrue(self.pool.release('u1'))
        self.assertFalse(os.path.exists(path))
        self.assertEqual(0, self.pool.daemon_info()['pools'])

    def test_daemon_runs_apart_from_whoever_started_it(self):
        # Started by a short-lived "orchestrator" in a process group of its
        # own, which is then killed, group and all.
        code = ('import sys\n'
                'from nova_vmbeam.pool import pagemoverd\n'
                'from tests.unit import fakes\n'
                'conf = fakes.make_conf(ram_pool_path=sys.argv[1],\n'
                '                       state_path=sys.argv[2],\n'
                '                       pagemoverd_socket=sys.argv[3])\n'
                'pool = pagemoverd.PagemoverdPool(conf)\n'
                'pool.ensure()\n'
                'print(pool.daemon_info()["pid"], flush=True)\n'
                'import time; time.sleep(60)\n')
        starter = subprocess.Popen(
            [sys.executable, '-c', code, self.conf.vmbeam.ram_pool_path,
             self.conf.vmbeam.state_path,
             self.conf.vmbeam.pagemoverd_socket], stdout=subprocess.PIPE,
            text=True, start_new_session=True,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                os.path.abspath(__file__)))))
        pid = int(starter.stdout.readline())
        os.killpg(starter.pid, signal.SIGKILL)
        starter.wait()
        self.assertTrue(procfs.alive(pid))
        self.assertNotEqual(os.getsid(0), os.getsid(pid))
        self.assertNotEqual(os.getpgid(0), os.getpgid(pid))
        # Not in some sibling's mount namespace: in the host's (ours).
        self.assertEqual(os.readlink('/proc/self/ns/mnt'),
                         os.readlink('/proc/%d/ns/mnt' % pid))
        self.assertEqual(pid, self.pool.daemon_info()['pid'])

    def test_malformed_messages_leave_the_daemon_running(self):
        self.pool.ensure()
        info = self.pool.daemon_info()
        for junk in (b'\x00' * 12,
                     b'VBPM\x01\x00\x00\x00\x00\x00\x00\x05{"op"',
                     b'VBPM\x09\x00\x00\x00\x00\x00\x00\x02{}',
                     os.urandom(4096)):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(5)
                sock.connect(self.pool.socket)
                sock.sendall(junk)
                sock.shutdown(socket.SHUT_WR)
                sock.recv(65536)
        exc = self.assertRaises(exception.DaemonError, protocol.call,
                                self.pool.socket, {'op': 'allocate',
                                                   'uuid': 'u1',
                                                   'size': 'big'})
        self.assertEqual(protocol.BAD_ARGUMENT, exc.code)
        self.assertEqual(info['pid'], self.pool.daemon_info()['pid'])


class TestPoolsOfRunningGuests(base.GuestTestCase):
    """Guest RAM owned by the daemon outlives QEMU and the daemon."""

    def setUp(self):
        super().setUp()
        self.pool = self.testbed.pool
        self.assertIsInstance(self.pool, pagemoverd.PagemoverdPool)

    def test_verify_fd_and_residency_of_a_running_guest(self):
        guest = self.boot(guest_mod.RAM_FILE)
        uuid, pid = guest.spec.uuid, guest.endpoint.pid
        self.assertTrue(self.pool.verify(uuid, pid))
        self.assertFalse(self.pool.verify(uuid, os.getpid()))
        self.assertEqual([pid], self.pool.mapped_by(uuid))
        residency = self.pool.residency(uuid)
        self.assertEqual(self.RAM_MIB * MIB, residency['size'])
        # The guest touched at least its working set.
        self.assertGreater(residency['resident_bytes'], self.WORK_MIB * MIB)
        # The descriptor handed over is the very RAM QEMU maps.
        fd = self.pool.fd(uuid)
        try:
            st = os.fstat(fd)
            self.assertEqual(procfs.file_identity(guest.spec.ram.path),
                             procfs.RamIdentity(st.st_dev, st.st_ino))
            self.assertTrue(procfs.maps_identity(
                pid, procfs.RamIdentity(st.st_dev, st.st_ino),
                guest.spec.ram_bytes))
        finally:
            os.close(fd)
        exc = self.assertRaises(exception.PoolError, self.pool.release,
                                uuid)
        self.assertIn('still mapped by pid(s) %d' % pid, str(exc))
        self.assertTrue(os.path.exists(guest.spec.ram.path))

    def test_killed_qemu_and_unlinked_name_keep_the_ram(self):
        guest = self.boot(guest_mod.RAM_FILE)
        path, pid = guest.spec.ram.path, guest.endpoint.pid
        os.kill(pid, signal.SIGSTOP)
        before = file_digest(path)
        # An accidental unlink, then the QEMU dies: nothing maps the RAM
        # and it has no name; only the daemon keeps it.
        os.unlink(path)
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid)
        self.assertEqual([], procfs.pids_mapping(
            procfs.RamIdentity(*self._identity(guest.spec.uuid))))
        # Asking for the pool links its name again: same RAM, same bytes.
        self.assertEqual(path, self.pool.allocate(guest.spec.uuid,
                                                  guest.spec.ram_bytes))
        self.assertEqual(before, file_digest(path))
        # It is the guest's RAM, not a fresh empty file.
        zeros = hashlib.sha256()
        for _ in range(guest.spec.ram_bytes // MIB):
            zeros.update(bytes(MIB))
        self.assertNotEqual(zeros.hexdigest(), before)

    def _identity(self, uuid):
        fd = self.pool.fd(uuid)
        try:
            st = os.fstat(fd)
            return st.st_dev, st.st_ino
        finally:
            os.close(fd)

    def test_killed_daemon_restarts_and_recovers_pools_in_use(self):
        guest = self.boot(guest_mod.RAM_FILE)
        uuid, pid = guest.spec.uuid, guest.endpoint.pid
        old = self.pool.daemon_info()
        os.kill(old['pid'], signal.SIGKILL)
        wait_gone(old['pid'])
        # The guest does not notice; its RAM is its pool file.
        mark = guest.console.offset()
        self.assert_runs_intact(guest, mark)
        # The next call starts a new daemon, which recovers the pool.
        self.assertTrue(self.pool.verify(uuid, pid))
        new = self.pool.daemon_info()
        self.assertNotEqual(old['pid'], new['pid'])
        self.assertGreaterEqual(new['recovered'], 1)
        self.assertGreaterEqual(new['in_use'], 1)
        self.assertRaises(exception.PoolError, self.pool.release, uuid)
        # And the guest still moves on its recovered pool.
        result = self.testbed.move(guest, movers.load('zerocopy', self.conf),
                                   self.gen2)
        self.assertTrue(result.ok)
        self.assertLess(result.transferred_bytes, MIB)
        self.assert_runs_intact(guest, guest.moved_at)
        self.assertTrue(self.pool.verify(uuid, guest.endpoint.pid))
        self.assertEqual(daemon.socket_path(self.conf), self.pool.socket)


class TestIvshmemAttach(base.PrivateStateTestCase):
    """A pool attached to a hypervisor VM (nested sibling) and detached."""

    POOL_MIB = 16

    def _hypervisor_vm(self):
        """A small VM booted from the test image, with two QMP sockets.

        The daemon attaches through one; the test watches through the
        other (a QMP socket serves one client at a time).
        """
        image = base.image()
        run = os.path.join(self.conf.vmbeam.state_path, 'l1')
        os.makedirs(run)
        self.daemon_qmp = os.path.join(run, 'qmp-daemon.sock')
        self.test_qmp = os.path.join(run, 'qmp-test.sock')
        console = os.path.join(run, 'console.log')
        argv = [self.conf.vmbeam.qemu_binary, '-machine', 'pc',
                '-accel', 'tcg', '-m', '160', '-nodefaults',
                '-display', 'none', '-no-user-config',
                '-qmp', 'unix:%s,server=on,wait=off' % self.daemon_qmp,
                '-qmp', 'unix:%s,server=on,wait=off' % self.test_qmp,
                '-kernel', image.kernel, '-initrd', image.initrd,
                '-append', guestimage.kernel_cmdline(
                    8, 0, report_ms=2000, verify_mib_s=8, hostname='l1'),
                '-chardev', 'file,id=serial0,path=%s' % console,
                '-serial', 'chardev:serial0']
        vm = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE,
                              start_new_session=True)
        self.addCleanup(vm.wait)
        self.addCleanup(vm.kill)
        # Its guest must be up to eject the device on detach.
        guestimage.ConsoleLog(console).wait_for(
            guestimage.console.READY_RE, 300.0)
        self.monitor = monitor_mod.Monitor(self.test_qmp, 'l1')
        self.monitor.connect()
        self.addCleanup(self.monitor.close)
        return vm

    def _ivshmem_devices(self):
        found = {}
        for bus in self.monitor.execute('query-pci'):
            for dev in bus['devices']:
                if dev.get('qdev_id', '').startswith('pool'):
                    bars = {r['bar']: r['size'] for r in dev['regions']}
                    found[dev['qdev_id']] = bars
        return found

    def test_attach_shows_the_pool_as_a_bar_then_detach_removes_it(self):
        pool = pool_mod.load(self.conf)
        pool.ensure()
        path = pool.allocate('l2guest', self.POOL_MIB * MIB)
        with open(path, 'r+b') as f:
            f.write(b'written by L0')
        self._hypervisor_vm()
        self.assertEqual({}, self._ivshmem_devices())

        pool.attach('l2guest', self.daemon_qmp, 'pool0')
        # ivshmem-plain: BAR 2 is the shared memory, exactly the pool.
        self.assertEqual(self.POOL_MIB * MIB,
                         self._ivshmem_devices()['pool0'][2])
        self.assertTrue(self.monitor.execute(
            'qom-get', path='/objects/pool0-mem', property='share'))
        self.assertEqual(path, self.monitor.execute(
            'qom-get', path='/objects/pool0-mem', property='mem-path'))
        # The hypervisor VM maps the pool: it cannot be released now.
        self.assertRaises(exception.PoolError, pool.release, 'l2guest')

        # Bad requests change nothing.
        exc = self.assertRaises(exception.DaemonError, pool.attach,
                                'l2guest', self.daemon_qmp, 'pool0')
        self.assertEqual(protocol.QMP_ERROR, exc.code)
        exc = self.assertRaises(exception.DaemonError, pool.attach,
                                'l2guest', '/nonexistent.sock', 'pool1')
        self.assertIn('cannot connect', str(exc))
        exc = self.assertRaises(exception.DaemonError, pool.attach,
                                'nope', self.daemon_qmp, 'pool1')
        self.assertEqual(protocol.UNKNOWN_POOL, exc.code)
        # Only the two devices a pool can be, never a driver name passed
        # through to QEMU.
        exc = self.assertRaises(exception.DaemonError, pool.attach,
                                'l2guest', self.daemon_qmp, 'pool1',
                                model='ivshmem-doorbell')
        self.assertEqual(protocol.BAD_ARGUMENT, exc.code)
        # virtio-pmem needs memory-device slots, which this VM has not:
        # QEMU's refusal, and the backend made for it is gone again.
        exc = self.assertRaises(exception.DaemonError, pool.attach,
                                'l2guest', self.daemon_qmp, 'pool1',
                                model=pool.PMEM)
        self.assertEqual(protocol.QMP_ERROR, exc.code)
        self.assertIn('device_add virtio-pmem-pci failed', str(exc))
        self.assertNotIn('pool1-mem', [o['name'] for o in
                                       self.monitor.execute(
                                           'qom-list', path='/objects')])
        self.assertEqual(['pool0'], list(self._ivshmem_devices()))

        pool.detach('l2guest', self.daemon_qmp, 'pool0', timeout=60)
        self.assertEqual({}, self._ivshmem_devices())
        with open(path, 'rb') as f:
            self.assertEqual(b'written by L0', f.read(13))
        # QEMU unmaps a deleted backend a moment later (RCU); until then
        # the pool stays, then it may go.
        deadline = time.monotonic() + 10
        while pool.mapped_by('l2guest'):
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        self.assertTrue(pool.release('l2guest'))
