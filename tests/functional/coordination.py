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

"""A private redis server for tests: Debian's redis-server.

Its own port on 127.0.0.1, its own directory (working directory, log),
no persistence and no unix socket, so it neither meets nor disturbs a
redis of the machine. Stopped at cleanup. The tests reach it as tooz's
redis backend, the way compute hosts reach a shared one.
"""

import os
import shutil
import socket
import subprocess
import tempfile

from tests.functional import servers

SERVER = '/usr/bin/redis-server'


def installed():
    return os.access(SERVER, os.X_OK)


class RedisServer(servers.PrivateServer):
    """``url`` is the tooz backend URL of the started server.

    ``lock_timeout`` (seconds) is the lease of every tooz lock taken
    through ``url``: a holder that stops heartbeating loses its lock that
    long after its last beat.
    """

    NAME = 'redis-server'

    def __init__(self, lock_timeout=30):
        super().__init__()
        self.lock_timeout = lock_timeout

    def _setUp(self):
        self.base = tempfile.mkdtemp(prefix='vmbeam-redis-')
        self.addCleanup(shutil.rmtree, self.base, True)
        self.port = servers.free_port()
        self.log_path = os.path.join(self.base, 'redis.log')
        # Options as command-line arguments: no config file of the machine
        # is read. No RDB snapshots, no AOF: nothing outlives the test.
        argv = [SERVER, '--port', str(self.port), '--bind', '127.0.0.1',
                '--dir', self.base, '--logfile', self.log_path,
                '--daemonize', 'no', '--save', '', '--appendonly', 'no',
                '--protected-mode', 'yes', '--databases', '1']
        self.process = subprocess.Popen(
            argv, cwd=self.base, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self.addCleanup(self._stop)
        self._wait_ready(self.ping)
        self.url = 'redis://127.0.0.1:%d?lock_timeout=%d' % (
            self.port, self.lock_timeout)

    def ping(self):
        """True when the server answers PING (RESP, no client library)."""
        try:
            with socket.create_connection(('127.0.0.1', self.port), 1) as s:
                s.sendall(b'PING\r\n')
                return s.recv(64).startswith(b'+PONG')
        except OSError:
            return False
