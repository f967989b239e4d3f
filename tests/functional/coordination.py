"""A private redis server for tests: Debian's redis-server.

Its own port on 127.0.0.1, its own directory (working directory, log),
no persistence and no unix socket, so it neither meets nor disturbs a
redis of the machine. Stopped at cleanup. The tests reach it as tooz's
redis backend, the way compute hosts reach a shared one.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import fixtures

SERVER = '/usr/bin/redis-server'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def installed():
    return os.access(SERVER, os.X_OK)


class RedisServer(fixtures.Fixture):
    """``url`` is the tooz backend URL of the started server.

    ``lock_timeout`` (seconds) is the lease of every tooz lock taken
    through ``url``: a holder that stops heartbeating loses its lock that
    long after its last beat.
    """

    START_TIMEOUT = 30.0

    def __init__(self, lock_timeout=30):
        super().__init__()
        self.lock_timeout = lock_timeout

    def _setUp(self):
        self.base = tempfile.mkdtemp(prefix='vmbeam-redis-')
        self.addCleanup(shutil.rmtree, self.base, True)
        self.port = free_port()
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
        self._wait_ready()
        self.url = 'redis://127.0.0.1:%d?lock_timeout=%d' % (
            self.port, self.lock_timeout)

    def _tail(self):
        try:
            with open(self.log_path, 'rb') as f:
                return f.read()[-2000:].decode(errors='replace')
        except OSError:
            return '(no log)'

    def ping(self):
        """True when the server answers PING (RESP, no client library)."""
        try:
            with socket.create_connection(('127.0.0.1', self.port), 1) as s:
                s.sendall(b'PING\r\n')
                return s.recv(64).startswith(b'+PONG')
        except OSError:
            return False

    def _wait_ready(self):
        deadline = time.monotonic() + self.START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError('redis-server exited with %s:\n%s' %
                                   (self.process.returncode, self._tail()))
            if self.ping():
                return
            time.sleep(0.05)
        raise RuntimeError('redis-server not ready within %.0f s:\n%s' %
                           (self.START_TIMEOUT, self._tail()))

    def _stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
