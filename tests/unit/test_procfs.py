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

import os
import signal
import socket

import fixtures
import testtools

from nova_vmbeam.qemu import procfs
from tests.unit import processes


class TestListening(testtools.TestCase):

    def test_bound_is_not_yet_listening(self):
        path = os.path.join(self.useFixture(fixtures.TempDir()).path, 's')
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.bind(path)
        self.assertFalse(procfs.listening(os.getpid(), path))
        sock.listen(1)
        self.assertTrue(procfs.listening(os.getpid(), path))
        self.assertFalse(procfs.listening(os.getpid(), path + 'x'))

    def test_dead_process_has_nothing(self):
        self.assertFalse(procfs.listening(2 ** 22 + 1, '/nowhere'))
        self.assertFalse(procfs.alive(2 ** 22 + 1))
        self.assertTrue(procfs.alive(os.getpid()))


class TestProcessIdentity(testtools.TestCase):

    def test_a_process_that_reused_the_pid_is_not_the_one_recorded(self):
        sleep = processes.stranger(self)
        now = procfs.ProcessIdentity.of(sleep.pid)
        self.assertTrue(now.alive())
        # What was recorded of the process that had this pid before.
        earlier = procfs.ProcessIdentity(sleep.pid, now.start_ticks - 1)
        self.assertFalse(earlier.alive())
        self.assertFalse(earlier.signal(signal.SIGKILL))
        self.assertIsNone(sleep.poll())
        self.assertTrue(now.signal(signal.SIGTERM))
        sleep.wait()
        self.assertFalse(now.alive())
        self.assertFalse(now.signal(signal.SIGTERM))
        self.assertIsNone(procfs.ProcessIdentity.of(sleep.pid))


class TestPidFiles(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                                 'daemon.pid')

    def test_a_pid_file_naming_a_process_that_does_not_hold_it(self):
        sleep = processes.stranger(self)
        with open(self.path, 'w') as f:
            f.write('%d\n' % sleep.pid)
        self.assertEqual(sleep.pid, procfs.pidfile_pid(self.path))
        self.assertIsNone(procfs.pidfile_process(self.path))

    def test_the_process_holding_its_pid_file_until_it_exits(self):
        daemon = processes.pidfile_holder(self, self.path)
        self.assertEqual(procfs.ProcessIdentity.of(daemon.pid),
                         procfs.pidfile_process(self.path))
        daemon.kill()
        daemon.wait()
        # The file stays behind, naming a pid anyone may get next.
        self.assertEqual(daemon.pid, procfs.pidfile_pid(self.path))
        self.assertIsNone(procfs.pidfile_process(self.path))

    def test_no_or_garbled_pid_file(self):
        self.assertIsNone(procfs.pidfile_process(self.path))
        with open(self.path, 'w') as f:
            f.write('not a pid')
        self.assertIsNone(procfs.pidfile_pid(self.path))
        self.assertIsNone(procfs.pidfile_process(self.path))


class TestStatus(testtools.TestCase):

    def test_sizes_and_descriptors_of_this_process(self):
        self.assertGreater(procfs.status_kib(os.getpid(), 'VmRSS'), 0)
        self.assertGreater(procfs.open_fds(os.getpid()), 2)

    def test_a_gone_process_or_missing_field_counts_zero(self):
        sleep = processes.stranger(self)
        sleep.kill()
        sleep.wait()
        self.assertEqual(0, procfs.status_kib(sleep.pid, 'VmRSS'))
        self.assertEqual(0, procfs.open_fds(sleep.pid))
        self.assertEqual(0, procfs.status_kib(os.getpid(), 'NoSuchField'))


class TestIdentityPidFiles(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                                 'service.pid')

    def test_written_and_read_back(self):
        me = procfs.ProcessIdentity.current()
        me.write_pidfile(self.path)
        self.assertEqual(me, procfs.ProcessIdentity.from_pidfile(self.path))
        self.assertEqual(me.pid, procfs.pidfile_pid(self.path))

    def test_missing_or_bare_pid_file_is_no_identity(self):
        self.assertIsNone(procfs.ProcessIdentity.from_pidfile(self.path))
        with open(self.path, 'w') as f:
            f.write('%d\n' % os.getpid())
        self.assertIsNone(procfs.ProcessIdentity.from_pidfile(self.path))
