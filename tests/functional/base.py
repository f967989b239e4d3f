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

"""Functional tests boot real QEMU guests (TCG where KVM cannot boot them)."""

import os
import shutil
import tempfile

import testtools

from nova_vmbeam.pool import daemon as pool_daemon
from nova_vmbeam.qemu import procfs
from tests.unit import fakes
from vmbeam_devtools import guestimage
from vmbeam_devtools import testbed as testbed_mod

_IMAGE = None


def image():
    global _IMAGE
    if _IMAGE is None:
        _IMAGE = guestimage.build()
    return _IMAGE


class PrivateStateTestCase(testtools.TestCase):
    """A state directory and a RAM pool of the test's own (self.conf)."""

    REQUIRED = ('qemu-system-x86_64',)

    def setUp(self):
        super().setUp()
        for tool in self.REQUIRED:
            if not shutil.which(tool) and not os.path.exists(tool):
                self.skipTest('%s is not installed; run tools/install.sh'
                              % tool)
        state = tempfile.mkdtemp(prefix='vmbeam-ft-')
        self.addCleanup(shutil.rmtree, state, True)
        pool_parent = tempfile.mkdtemp(prefix='vmbeam-ft-pool-',
                                       dir='/dev/shm')
        os.chmod(pool_parent, 0o711)
        self.addCleanup(shutil.rmtree, pool_parent, True)
        # The pool itself is created owned by [vmbeam] qemu_user.
        self.conf = fakes.make_conf(
            state_path=state, ram_pool_path=os.path.join(pool_parent, 'ram'),
            migration_timeout=60.0,
            # The test's own pool daemon, its socket, pid file and log in
            # the test's state directory; stopped before the pool
            # directory is removed.
            pagemoverd_socket=os.path.join(state, 'pagemoverd.sock'))
        self.addCleanup(pool_daemon.stop, self.conf)

    def qemu_pids(self, *markers):
        """Pids of the QEMU processes started from this test's state."""
        return procfs.qemu_pids(self.conf.vmbeam.state_path, *markers)


class GuestTestCase(PrivateStateTestCase):
    """Two hypervisor generations of plain QEMU processes."""

    RAM_MIB = 256
    WORK_MIB = 64
    DIRTY_MIB_S = 32

    def setUp(self):
        super().setUp()
        self.testbed = testbed_mod.Testbed(self.conf, name='ft',
                                           image=image())
        self.addCleanup(self.testbed.cleanup)
        self.gen1 = self.testbed.new_hypervisor()
        self.gen2 = self.testbed.new_hypervisor()

    def boot(self, ram_kind, name='g1', dirty=None):
        spec = self.testbed.spec(
            name, self.RAM_MIB, ram_kind, self.WORK_MIB,
            self.DIRTY_MIB_S if dirty is None else dirty)
        return self.testbed.boot(self.gen1, spec)

    def assert_runs_intact(self, guest, since):
        """The guest runs and two full memory checks after ``since`` pass."""
        self.assertTrue(guest.endpoint.alive())
        self.assertEqual('running', guest.endpoint.status())
        status = self.testbed.check_integrity(guest, since, passes=2)
        self.assertEqual(0, status['errors'])
        self.assertGreaterEqual(status['new_passes'], 2)
        return status
