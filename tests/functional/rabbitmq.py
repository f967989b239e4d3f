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

"""A private RabbitMQ broker for tests: Debian's rabbitmq-server.

Its own node name, ports (AMQP, Erlang distribution and epmd), Erlang
cookie, mnesia and log directories, so it neither meets nor disturbs a
broker of the machine. Stopped (with its epmd) at cleanup.
"""

import os
import shutil
import socket
import subprocess
import tempfile

from tests.functional import servers

SERVER = '/usr/lib/rabbitmq/bin/rabbitmq-server'


def installed():
    return os.access(SERVER, os.X_OK) and bool(shutil.which('epmd'))


class RabbitMQ(servers.PrivateServer):
    """``url`` is the oslo.messaging transport URL of the started broker."""

    NAME = 'rabbitmq-server'
    START_TIMEOUT = 120.0

    def _setUp(self):
        self.base = tempfile.mkdtemp(prefix='vmbeam-rabbit-')
        self.addCleanup(shutil.rmtree, self.base, True)
        self.port = servers.free_port()
        self.epmd_port = servers.free_port()
        node = 'vmbeam%d@localhost' % os.getpid()
        with open(os.path.join(self.base, '.erlang.cookie'), 'w') as f:
            f.write('VMBEAMTEST%d' % os.getpid())
        os.chmod(os.path.join(self.base, '.erlang.cookie'), 0o400)
        plugins = os.path.join(self.base, 'enabled_plugins')
        with open(plugins, 'w') as f:
            f.write('[].\n')
        self.env = dict(
            os.environ, HOME=self.base, RABBITMQ_NODENAME=node,
            RABBITMQ_NODE_IP_ADDRESS='127.0.0.1',
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(servers.free_port()),
            RABBITMQ_MNESIA_BASE=os.path.join(self.base, 'mnesia'),
            RABBITMQ_LOG_BASE=os.path.join(self.base, 'log'),
            RABBITMQ_PID_FILE=os.path.join(self.base, 'rabbit.pid'),
            RABBITMQ_ENABLED_PLUGINS_FILE=plugins,
            RABBITMQ_CONF_ENV_FILE=os.path.join(self.base, 'none.conf'),
            RABBITMQ_CONFIG_FILE=os.path.join(self.base, 'rabbitmq'),
            ERL_EPMD_PORT=str(self.epmd_port))
        self.log_path = os.path.join(self.base, 'server.out')
        self.log = open(self.log_path, 'wb')
        self.addCleanup(self.log.close)
        self.process = subprocess.Popen(
            [SERVER], env=self.env, cwd=self.base, stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.addCleanup(self._stop)
        self._wait_ready(self._broker_up, interval=0.2)
        self.url = 'rabbit://guest:guest@127.0.0.1:%d/' % self.port

    def _broker_up(self):
        try:
            with socket.create_connection(('127.0.0.1', self.port), 1):
                pass
        except OSError:
            return False
        # The port opens before the broker takes logins.
        with open(self.log_path, 'rb') as f:
            return b'Starting broker... completed' in f.read()

    def _stop(self):
        super()._stop()
        # The broker's own epmd (on its private port) outlives it.
        subprocess.run(['epmd', '-port', str(self.epmd_port), '-kill'],
                       env=self.env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
