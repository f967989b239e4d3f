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

"""Scripted stand-ins for QEMU endpoints, to test mover control flow."""

import fixtures
from oslo_config import cfg

from nova_vmbeam.conf import driver
from nova_vmbeam.conf import vmbeam
from nova_vmbeam import hypervisor
from nova_vmbeam.privsep import vmbeam_pctxt


def make_conf(**overrides):
    conf = cfg.ConfigOpts()
    vmbeam.register_opts(conf)
    driver.register_opts(conf)
    conf([])
    for name, value in overrides.items():
        conf.set_override(name, value, 'vmbeam')
    return conf


class FakeEndpoint(hypervisor.GuestEndpoint):
    """A QEMU whose monitor answers from a script; records what it did."""

    def __init__(self, spec, role, journal, pid=1000):
        self.spec = spec
        self.role = role
        self.journal = journal
        self._pid = pid
        self.state = 'running'
        self.migration = None
        self.migrate_result = 'completed'
        self.fail = {}          # command -> exception to raise
        self.is_alive = True

    @property
    def pid(self):
        return self._pid

    def connect(self, timeout=None):
        self.journal.append((self.role, 'connect'))

    def execute(self, command, timeout=None, **arguments):
        self.journal.append((self.role, command))
        if command in self.fail:
            raise self.fail[command]
        if command == 'query-status':
            return {'status': self.state}
        if command == 'query-migrate':
            return {'status': self.migration} if self.migration else {}
        if command == 'migrate':
            self.migration = self.migrate_result
            if self.migrate_result == 'completed':
                self.state = 'postmigrate'
        if command == 'migrate-incoming':
            self.migration = 'completed'
        if command == 'cont':
            self.state = 'running'
        return {}

    def events(self):
        return []

    def wait_event(self, name, timeout, since=0.0):
        return {'event': name, 'timestamp': {'seconds': int(since),
                                             'microseconds': 0}}

    def alive(self):
        return self.is_alive

    def resume(self):
        self.execute('cont')

    def destroy(self):
        self.journal.append((self.role, 'destroy'))
        self.is_alive = False

    def retire(self):
        self.journal.append((self.role, 'retire'))
        if 'retire' in self.fail:
            raise self.fail['retire']
        self.is_alive = False

    def cpu_seconds(self, thread_prefix=None):
        return 0.0


class FakeHypervisor(hypervisor.Hypervisor):
    name = 'fake'

    def __init__(self, run_dir, journal):
        self._run_dir = run_dir
        self.journal = journal
        self.launched = []
        self.on_launch = None

    @property
    def run_dir(self):
        return self._run_dir

    def launch(self, spec, incoming=(), paused=False):
        self.journal.append(('target', 'launch'))
        dest = FakeEndpoint(spec, 'dest', self.journal, pid=2000)
        dest.state = 'paused' if paused else 'running'
        self.launched.append(dest)
        if self.on_launch:
            self.on_launch(dest)
        return dest


class InProcessPrivsep(fixtures.Fixture):
    """Run privsep entrypoints in the test's own process.

    As Nova's PrivsepFixture: what a unit test fakes (cgroup mounts, /proc,
    os calls) is then what the entrypoints see. Functional tests go
    through the real privsep daemon.
    """

    def _setUp(self):
        vmbeam_pctxt.set_client_mode(False)
        self.addCleanup(vmbeam_pctxt.set_client_mode, True)
