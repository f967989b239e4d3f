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

"""Allocating and releasing one guest's RAM never interleave (pool.guard).

A QEMU maps its RAM file a moment after the file was allocated for it:
libvirt starts it in between. A release in that moment, from another
thread or process, must not free the file.
"""

import mmap
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import testtools

from nova_vmbeam import exception
from nova_vmbeam import pool as pool_mod
from nova_vmbeam.virt import ram
from tests.unit import fakes

GUEST = '5c6a1d52-0d7e-4d4e-9b7e-2f0c1d7b9a11'
SIZE = 1 << 20

# A release in a process of its own; prints what became of it.
_RELEASE = '''
import sys
from nova_vmbeam import exception
from nova_vmbeam import pool
try:
    freed = pool.RamPool(sys.argv[1], lock_dir=sys.argv[2]).release(
        sys.argv[3])
except exception.PoolError as exc:
    print('refused: %s' % exc)
else:
    print('freed' if freed else 'nothing')
'''
# An allocation in a process of its own, which then exits.
_ALLOCATE = '''
import sys
from nova_vmbeam import pool
print(pool.RamPool(sys.argv[1], lock_dir=sys.argv[2]).allocate(
    sys.argv[3], int(sys.argv[4])))
'''


class StartingQemu(threading.Thread):
    """What creating a guest does, in a thread of its own.

    ``allocate`` is called, then the thread waits to be told to map the
    file (libvirt starting the QEMU takes that long), maps it and writes
    to it (the guest runs), then waits to be told to exit.
    """

    def __init__(self, allocate, path):
        super().__init__(daemon=True)
        self.allocate = allocate
        self.path = path
        self.error = None
        self.allocated = threading.Event()
        self.map_now = threading.Event()
        self.mapped = threading.Event()
        self.exit_now = threading.Event()

    def run(self):
        try:
            self.allocate()
        except Exception as exc:
            self.error = exc
            return
        finally:
            self.allocated.set()
        self.map_now.wait(30)
        try:
            with open(self.path, 'r+b') as f:
                ram_map = mmap.mmap(f.fileno(), SIZE, mmap.MAP_SHARED)
        except OSError as exc:
            self.error = exc   # freed under it (what must not happen)
            return
        ram_map[:4] = b'boot'
        self.mapped.set()
        self.exit_now.wait(30)
        ram_map.close()

    def started(self):
        """Start it; return once its RAM is allocated."""
        self.start()
        self.allocated.wait(30)
        if self.error is not None:
            raise self.error
        return self

    def finish(self):
        self.map_now.set()
        self.exit_now.set()
        self.join(30)


class GuardTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        root = tempfile.mkdtemp(prefix='vmbeam-test-', dir='/dev/shm')
        self.addCleanup(shutil.rmtree, root, True)
        self.lock_dir = os.path.join(root, 'locks')
        self.pool = pool_mod.RamPool(os.path.join(root, 'ram'),
                                     lock_dir=self.lock_dir)
        self.pool.ensure()
        self.path = self.pool.file_path(GUEST)

    def starting_qemu(self, allocate=None):
        qemu = StartingQemu(
            allocate or (lambda: self.pool.allocate(GUEST, SIZE)),
            self.path)
        self.addCleanup(qemu.finish)
        return qemu.started()

    def in_a_process(self, script, *args):
        out = subprocess.run(
            [sys.executable, '-c', script, self.pool.path, self.lock_dir,
             GUEST] + [str(a) for a in args],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(0, out.returncode, out.stderr)
        return out.stdout.strip()


class TestReleaseRacingAllocate(GuardTestCase):

    def test_release_never_frees_ram_about_to_be_mapped(self):
        qemu = self.starting_qemu()
        allocated = os.stat(self.path).st_ino
        # Allocated, its QEMU not started yet: another thread's release.
        exc = self.assertRaises(exception.PoolError, self.pool.release,
                                GUEST)
        self.assertIn('has not used it yet', str(exc))
        self.assertEqual(allocated, os.stat(self.path).st_ino)
        # Mapped: the pool's own rule holds it.
        qemu.map_now.set()
        self.assertTrue(qemu.mapped.wait(30))
        exc = self.assertRaises(exception.PoolError, self.pool.release,
                                GUEST)
        self.assertIn('mapped by pid(s) %d' % os.getpid(), str(exc))
        # Its QEMU gone: freed.
        qemu.finish()
        self.assertTrue(self.pool.release(GUEST))
        self.assertFalse(os.path.exists(self.path))

    def test_release_from_another_process_keeps_it_too(self):
        qemu = self.starting_qemu()
        allocated = os.stat(self.path).st_ino
        self.assertIn('has not used it yet',
                      self.in_a_process(_RELEASE))
        self.assertEqual(allocated, os.stat(self.path).st_ino)
        qemu.finish()
        self.assertEqual('freed', self.in_a_process(_RELEASE))

    def test_nova_driver_release_keeps_ram_about_to_be_mapped(self):
        user = pwd.getpwuid(os.getuid()).pw_name
        conf = fakes.make_conf(
            ram_pool_path=self.pool.path, hugepage_pool_path=self.pool.path,
            ram_pool_backend='file', qemu_user=user,
            pagemoverd_socket=os.path.join(self.lock_dir, 'pm.sock'))
        plan = ram.RamPlan(pool=ram.pool_at(conf, self.pool.path),
                           size_bytes=SIZE)
        # _create_guest on one thread, destroy on another (a delete, a
        # cleanup) while the QEMU is being started.
        qemu = self.starting_qemu(lambda: ram.allocate(plan, GUEST))
        ram.release(conf, GUEST)
        self.assertTrue(os.path.exists(self.path))
        qemu.finish()
        ram.release(conf, GUEST)
        self.assertFalse(os.path.exists(self.path))

    def test_a_second_start_of_the_guest_is_refused(self):
        self.starting_qemu()
        exc = self.assertRaises(exception.PoolError, self.pool.allocate,
                                GUEST, SIZE)
        self.assertIn('started once', str(exc))
        self.assertRaises(exception.PoolError, self.pool.reallocate, GUEST,
                          SIZE)


class TestLeaseEnds(GuardTestCase):

    def test_the_allocator_frees_the_ram_of_its_own_failed_start(self):
        self.pool.reallocate(GUEST, SIZE)
        self.assertTrue(self.pool.release(GUEST))
        self.assertFalse(os.path.exists(self.path))

    def test_ram_a_qemu_ran_on_is_freed_once_it_is_gone(self):
        # Spawned on one thread; the guest ran and stopped; deleted on
        # another thread.
        qemu = self.starting_qemu()
        qemu.finish()
        self.assertTrue(self.pool.release(GUEST))

    def test_a_dead_allocator_holds_nothing(self):
        self.assertEqual(self.path, self.in_a_process(_ALLOCATE, SIZE))
        self.assertTrue(os.path.exists(self.path))
        self.assertTrue(self.pool.release(GUEST))

    def test_a_lease_expires(self):
        self.pool.guard.lease_s = 0.2
        self.starting_qemu()
        time.sleep(0.3)
        self.assertTrue(self.pool.release(GUEST))


class TestNoInterleaving(GuardTestCase):

    def test_allocate_and_release_of_one_guest_never_overlap(self):
        inside = []
        overlaps = []

        def one_at_a_time(step):
            def wrapped(*args):
                inside.append(step)
                if len(inside) > 1:
                    overlaps.append(list(inside))
                time.sleep(0.01)
                try:
                    return step(*args)
                finally:
                    inside.remove(step)
            return wrapped
        self.pool._allocate = one_at_a_time(self.pool._allocate)
        self.pool._release = one_at_a_time(self.pool._release)

        def churn(operation):
            for _ in range(10):
                try:
                    operation()
                except exception.PoolError:
                    pass   # another thread's RAM about to be mapped
        threads = [threading.Thread(target=churn, args=(op,)) for op in (
            lambda: self.pool.reallocate(GUEST, SIZE),
            lambda: self.pool.release(GUEST),
            lambda: self.pool.allocate(GUEST, SIZE),
            lambda: self.pool.release(GUEST))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertEqual([], overlaps)
