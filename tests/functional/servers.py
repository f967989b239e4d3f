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

"""What the tests' private servers (RabbitMQ, redis) have in common.

Each runs in a session of its own on a free port of 127.0.0.1, is waited
for until it answers, and is stopped with its whole process group at
cleanup; a server that exits or does not answer in time fails the test
with the end of its log.
"""

import os
import signal
import socket
import subprocess
import time

import fixtures


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class PrivateServer(fixtures.Fixture):
    """Subclasses start ``self.process`` and set ``log_path``."""

    #: its name in messages
    NAME = 'server'
    START_TIMEOUT = 30.0
    log_path = None
    process = None

    def _tail(self):
        try:
            with open(self.log_path, 'rb') as f:
                return f.read()[-2000:].decode(errors='replace')
        except (OSError, TypeError):
            return '(no log)'

    def _wait_ready(self, ready, interval=0.05):
        """Until ``ready()``; fails if the server exits or times out."""
        deadline = time.monotonic() + self.START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError('%s exited with %s:\n%s' % (
                    self.NAME, self.process.returncode, self._tail()))
            if ready():
                return
            time.sleep(interval)
        raise RuntimeError('%s not ready within %.0f s:\n%s' % (
            self.NAME, self.START_TIMEOUT, self._tail()))

    def _stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
