import os
import socket

import fixtures
import testtools

from nova_vmbeam.qemu import procfs


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
