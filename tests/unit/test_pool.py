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

import mmap
import os
import shutil
import tempfile

import testtools

from nova_vmbeam import exception
from nova_vmbeam import pool as pool_mod
from nova_vmbeam.qemu import procfs


class TestRamPool(testtools.TestCase):

    def setUp(self):
        super().setUp()
        # /dev/shm is tmpfs on every Linux host this runs on.
        self.root = tempfile.mkdtemp(prefix='vmbeam-test-', dir='/dev/shm')
        self.addCleanup(shutil.rmtree, self.root, True)
        self.pool = pool_mod.RamPool(os.path.join(self.root, 'ram'),
                                     lock_dir=os.path.join(self.root, 'lk'))

    def test_missing_directory_names_fix_and_creates_nothing(self):
        exc = self.assertRaises(exception.PoolError, self.pool.allocate,
                                'u1', 1 << 20)
        self.assertIn('does not exist', str(exc))
        self.assertIn('vmbeam pool init', str(exc))
        self.assertFalse(os.path.exists(self.pool.path))

    def test_allocate_sizes_file_0600_and_reuses_it(self):
        self.assertEqual('tmpfs', self.pool.ensure())
        path = self.pool.allocate('u1', 4 << 20)
        st = os.stat(path)
        self.assertEqual(4 << 20, st.st_size)
        self.assertEqual(0o600, st.st_mode & 0o777)
        self.assertEqual(os.getuid(), st.st_uid)
        self.assertEqual(path, self.pool.allocate('u1', 4 << 20))

    def test_size_mismatch_is_refused_and_file_kept(self):
        self.pool.ensure()
        path = self.pool.allocate('u1', 4 << 20)
        exc = self.assertRaises(exception.PoolError, self.pool.allocate,
                                'u1', 8 << 20)
        self.assertIn('Release it first', str(exc))
        self.assertEqual(4 << 20, os.stat(path).st_size)

    def test_too_small_names_fix(self):
        self.pool.ensure()
        pool = pool_mod.RamPool(self.pool.path, reserve_mib=1 << 30,
                                lock_dir=self.pool.guard.lock_dir)
        exc = self.assertRaises(exception.PoolError, pool.allocate, 'u1',
                                1 << 20)
        self.assertIn('too small', str(exc))
        self.assertIn('ram_pool_reserve_mib', str(exc))
        self.assertEqual([], os.listdir(self.pool.path))

    def test_not_tmpfs_is_refused(self):
        disk_dir = tempfile.mkdtemp(dir=os.path.dirname(__file__))
        self.addCleanup(shutil.rmtree, disk_dir, True)
        fstype = pool_mod._mount_of(disk_dir)[1]
        if fstype in (pool_mod.TMPFS, pool_mod.HUGETLBFS):
            self.skipTest('source tree is on %s' % fstype)
        exc = self.assertRaises(exception.PoolError,
                                pool_mod.RamPool(disk_dir).check)
        self.assertIn('not tmpfs', str(exc))
        self.assertIn('mount -t tmpfs', str(exc))

    def test_wrong_owner_is_refused(self):
        self.pool.ensure()
        os.chown(self.pool.path, 65534, 65534)
        exc = self.assertRaises(exception.PoolError, self.pool.allocate,
                                'u1', 1 << 20)
        self.assertIn('chown', str(exc))
        self.assertEqual([], os.listdir(self.pool.path))

    def test_unknown_owner_is_refused(self):
        pool = pool_mod.RamPool(self.root, owner='no-such-user-vmbeam',
                                lock_dir=self.pool.guard.lock_dir)
        exc = self.assertRaises(exception.PoolError, pool.check)
        self.assertIn('qemu_user', str(exc))

    def test_bad_uuid_cannot_escape_pool(self):
        self.pool.ensure()
        self.assertRaises(exception.InvalidInput, self.pool.allocate,
                          '../etc', 1 << 20)

    def test_release_refused_while_mapped(self):
        self.pool.ensure()
        path = self.pool.allocate('u1', 1 << 20)
        with open(path, 'r+b') as f:
            ram = mmap.mmap(f.fileno(), 1 << 20, mmap.MAP_SHARED)
        self.assertIn(os.getpid(), self.pool.mapped_by('u1'))
        exc = self.assertRaises(exception.PoolError, self.pool.release, 'u1')
        self.assertIn(str(os.getpid()), str(exc))
        self.assertTrue(os.path.exists(path))
        ram.close()
        self.assertTrue(self.pool.release('u1'))
        self.assertFalse(os.path.exists(path))
        self.assertFalse(self.pool.release('u1'))


class TestMaps(testtools.TestCase):

    def test_shared_file_mapping_is_identified(self):
        fd, path = tempfile.mkstemp(dir='/dev/shm')
        self.addCleanup(os.unlink, path)
        os.ftruncate(fd, 2 << 20)
        ram = mmap.mmap(fd, 2 << 20, mmap.MAP_SHARED)
        self.addCleanup(ram.close)
        os.close(fd)
        identity = procfs.file_identity(path)
        self.assertTrue(procfs.maps_identity(os.getpid(), identity, 2 << 20))
        self.assertFalse(procfs.maps_identity(os.getpid(), identity,
                                              4 << 20))
        self.assertIn(identity, procfs.shared_ram(os.getpid(), 1 << 20))
