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

"""The openstack command's VMBeam commands and server migrate --rejuvenate.

The real openstack command (python-openstackclient, openstacksdk,
keystoneauth, cliff) runs in this process against tests.unit.fake_cloud
(Keystone, Nova API, Placement over HTTP), which also serves vmbeam-api's
own WSGI application (nova_vmbeam.api) from its catalog. vmbeam-api asks
the fake Nova and Placement with its service user, and reaches a vmbeam
RPC endpoint (nova_vmbeam.rpc.server, the one nova-compute serves) over
oslo.messaging's in-memory fake:// transport. Behind the endpoint is a
scripted host instead of VMBeamDriver: the driver on real libvirt and
RabbitMQ is tests/nova/functional/test_osc.py, real Keystone is in
tests/cloud.
"""

import io
import json
import os
import threading
import time
import uuid

import fixtures
from oslo_config import cfg
from oslo_messaging import conffixture as messaging_conffixture
import testtools

from nova_vmbeam import exception
from nova_vmbeam.osc.v1 import rejuvenation as osc_rejuvenation
from nova_vmbeam.rpc import api as rpc_api
from nova_vmbeam.rpc import server as rpc_server
from tests.unit import fake_cloud


class ScriptedHost:
    """What a compute host's HostRejuvenation answers over RPC.

    A run moves the guests one after another, ``step`` seconds each;
    guests named in ``fail`` end 'failed'.
    """

    def __init__(self, host, guests, step=0.2, fail=()):
        self.host = host
        self.guests = dict(guests)   # name -> uuid
        self.step = step
        self.fail = set(fail)
        self.calls = []
        self.active = 1
        self.run = None
        self.running = None
        self.last = None
        self.lock = threading.Lock()

    def _guest_figures(self, name, mover):
        return {'mover': mover, 'ok': True, 'total_ms': 120.5,
                'downtime_ms': 12.25, 'prepare_ms': 80.0, 'retire_ms': 1.0,
                'transferred_bytes': 262144, 'cpu_s': 0.1,
                'error': None, 'guest': name}

    def rejuvenate_host(self, context, concurrency=None, mover=None):
        self.calls.append(('rejuvenate_host', context,
                           dict(concurrency=concurrency, mover=mover)))
        with self.lock:
            if self.running:
                raise exception.RejuvenationRunning(pid=4242,
                                                    path='/j.json')
            run_id = str(uuid.uuid4())
            mover = mover or 'zerocopy'
            self.run = {'id': run_id, 'from': self.active,
                        'to': self.active + 1, 'state': 'running',
                        'mover': mover, 'started': time.time(),
                        'finished': None,
                        'guests': {name: {'uuid': u, 'state': 'pending',
                                          'mover': mover}
                                   for name, u in self.guests.items()}}
            self.running = {'kind': 'host', 'run_id': run_id,
                            'generation': self.active + 1,
                            'state': 'running'}
        threading.Thread(target=self._move_all, daemon=True).start()
        return {'run_id': run_id, 'state': 'running',
                'generation': self.active + 1}

    def _move_all(self):
        for name in sorted(self.guests):
            entry = self.run['guests'][name]
            entry['state'] = 'moving'
            time.sleep(self.step)
            if name in self.fail:
                entry.update(state='failed', error='the destination died')
            else:
                entry.update(state='moved', result=self._guest_figures(
                    name, entry['mover']))
        with self.lock:
            failed = any(e['state'] != 'moved'
                         for e in self.run['guests'].values())
            self.run.update(state='incomplete' if failed else 'completed',
                            finished=time.time())
            if not failed:
                self.active += 1
            self.last = dict(self.running, state=self.run['state'],
                             error='not moved' if failed else None)
            self.running = None

    def rejuvenate_instance(self, context, instance_uuid, mover=None):
        self.calls.append(('rejuvenate_instance', context,
                           dict(instance_uuid=instance_uuid, mover=mover)))
        if instance_uuid not in self.guests.values():
            raise exception.InstanceNotFound(uuid=instance_uuid)
        name = [n for n, u in self.guests.items() if u == instance_uuid][0]
        return dict(self._guest_figures(name, mover or 'zerocopy'),
                    instance_uuid=instance_uuid, name=name, state='moved',
                    run_id=str(uuid.uuid4()), generation=self.active + 1)

    def status(self, context=None):
        self.calls.append(('status', context, {}))
        with self.lock:
            return json.loads(json.dumps({
                'host': self.host, 'active_generation': self.active,
                'connection': 'qemu:///system?socket=/gen%d' % self.active,
                'generations': {str(self.active): {'state': 'active'}},
                'run': self.run, 'history': [], 'running': self.running,
                'last_request': self.last,
                'aging': {'enabled': True, 'decision': 'wait',
                          'horizon_s': 86400}}))


class OpenStackCommandTestCase(testtools.TestCase):
    """Runs ``openstack ...`` in this process; a host per test."""

    def setUp(self):
        super().setUp()
        from openstackclient.common import clientmanager
        self.clientmanager = clientmanager
        self.cloud = self.useFixture(fake_cloud.FakeCloud())
        self.host = 'compute-%s' % uuid.uuid4().hex[:8]
        self.cloud.add_host(self.host)
        self.guests = {'instance-00000001': str(uuid.uuid4()),
                       'instance-00000002': str(uuid.uuid4())}
        for name, server_id in self.guests.items():
            self.cloud.add_server(self.host, name=name, server_id=server_id)
        # The hosts' side of the bus: Nova's exchange, as nova-compute
        # has it.
        conf = cfg.ConfigOpts()
        self.useFixture(messaging_conffixture.ConfFixture(conf))
        conf([], project='nova', default_config_files=[])
        conf.set_override('control_exchange', 'nova')
        self.server_transport = rpc_api.get_transport(conf, url='fake://')
        self.addCleanup(self.server_transport.cleanup)
        self.useFixture(fixtures.MonkeyPatch(
            'nova_vmbeam.osc.v1.rejuvenation.POLL_INTERVAL', 0.05))
        self.api_conf = self.cloud.start_api('fake://', rpc_timeout=5)

    def serve(self, host=None, **kwargs):
        scripted = ScriptedHost(host or self.host, self.guests, **kwargs)
        server = rpc_server.start(self.server_transport, scripted.host,
                                  scripted)
        self.addCleanup(rpc_server.stop, server)
        return scripted

    def _forget_clients(self):
        # openstackclient caches each service's client on the ClientManager
        # class, for the life of the process: a run here is one process.
        for cls in self.clientmanager.ClientManager.__mro__:
            for value in vars(cls).values():
                if hasattr(value, '_handle'):
                    value._handle = None

    def openstack(self, *argv, user='admin', env=None):
        """(exit status, stdout, stderr) of ``openstack argv``."""
        from openstackclient import shell
        environ = dict(self.cloud.env(user))
        environ.update(env or {})
        for key in [k for k in os.environ if k.startswith('OS_')]:
            self.useFixture(fixtures.EnvironmentVariable(key))
        for key, value in environ.items():
            self.useFixture(fixtures.EnvironmentVariable(key, value))
        self._forget_clients()
        out, err = io.StringIO(), io.StringIO()
        with fixtures.MonkeyPatch('sys.stdout', out), \
                fixtures.MonkeyPatch('sys.stderr', err):
            try:
                rc = shell.main(list(argv))
            except SystemExit as exc:   # argparse refused the arguments
                rc = exc.code
        self._forget_clients()
        self.addDetail('openstack %s' % ' '.join(argv),
                       testtools.content.text_content(
                           'rc=%s\nstdout:\n%s\nstderr:\n%s' % (
                               rc, out.getvalue(), err.getvalue())))
        return rc, out.getvalue(), err.getvalue()


class TestHypervisorRejuvenate(OpenStackCommandTestCase):

    def test_wait_shows_progress_and_figures(self):
        scripted = self.serve()
        rc, out, err = self.openstack(
            'hypervisor', 'rejuvenate', self.host, '--wait',
            '--concurrency', '2', '--mover', 'zerocopy', '-f', 'json')
        self.assertEqual(0, rc, err)
        shown = json.loads(out)
        self.assertEqual('completed', shown['state'])
        self.assertEqual('2/2', shown['moved'])
        self.assertEqual(2, shown['active_generation'])
        self.assertEqual(sorted(self.guests),
                         [g['name'] for g in shown['guests']])
        for guest in shown['guests']:
            self.assertEqual('moved', guest['state'])
            self.assertEqual(self.guests[guest['name']], guest['uuid'])
            self.assertEqual(12.25, guest['downtime_ms'])
            self.assertEqual(262144, guest['transferred_bytes'])
        # Progress went to stderr, each state change once.
        self.assertIn('instance-00000001 moving (0/2 moved)', err)
        self.assertIn('instance-00000002 moved (2/2 moved)', err)
        self.assertEqual(1, err.count('instance-00000001 moving'))
        # The request carried the caller, not a token.
        name, context, args = scripted.calls[0]
        self.assertEqual('rejuvenate_host', name)
        self.assertEqual({'concurrency': 2, 'mover': 'zerocopy'}, args)
        self.assertEqual('admin-id', context['user'])
        self.assertEqual(fake_cloud.PROJECT['id'], context['project_id'])
        self.assertEqual('admin', context['user_name'])
        self.assertIn('admin', context['roles'])
        self.assertIsNone(context.get('auth_token'))
        self.assertTrue(context['request_id'].startswith('req-'))

    def test_table_output_lists_guests(self):
        self.serve()
        rc, out, err = self.openstack('hypervisor', 'rejuvenate', self.host,
                                      '--wait')
        self.assertEqual(0, rc, err)
        self.assertIn('instance-00000001 %s moved mover=zerocopy '
                      'downtime_ms=12.2' % self.guests['instance-00000001'],
                      out)

    def test_failed_guest_exits_non_zero(self):
        self.serve(fail=['instance-00000002'])
        rc, out, err = self.openstack('hypervisor', 'rejuvenate', self.host,
                                      '--wait', '-f', 'json')
        self.assertEqual(1, rc)
        shown = json.loads(out)
        self.assertEqual('incomplete', shown['state'])
        self.assertEqual('1/2', shown['moved'])
        failed = [g for g in shown['guests'] if g['state'] == 'failed']
        self.assertEqual(['the destination died'],
                         [g['error'] for g in failed])
        self.assertIn('did not move every guest', err)

    def test_without_wait_returns_the_started_run(self):
        scripted = self.serve(step=0.5)
        rc, out, err = self.openstack('hypervisor', 'rejuvenate', self.host,
                                      '-f', 'json')
        self.assertEqual(0, rc, err)
        shown = json.loads(out)
        self.assertEqual({'host': self.host, 'run_id': scripted.run['id'],
                          'state': 'running', 'generation': 2}, shown)
        self.assertEqual(['rejuvenate_host'],
                         [c[0] for c in scripted.calls])

    def test_already_running(self):
        scripted = self.serve(step=2.0)
        self.assertEqual(0, self.openstack('hypervisor', 'rejuvenate',
                                           self.host)[0])
        rc, out, err = self.openstack('hypervisor', 'rejuvenate', self.host)
        self.assertEqual(1, rc)
        self.assertIn('A rejuvenation is already running on this host', err)
        self.assertIn('openstack hypervisor rejuvenation show %s' %
                      self.host, err)
        self.assertNotIn('Traceback', err)
        self.assertEqual(2, len(scripted.calls))

    def test_not_admin(self):
        scripted = self.serve()
        rc, out, err = self.openstack('hypervisor', 'rejuvenate', self.host,
                                      user='demo')
        self.assertEqual(1, rc)
        self.assertIn('Policy does not allow vmbeam:host:rejuvenate', err)
        self.assertIn('(HTTP 403)', err)
        self.assertEqual([], scripted.calls)

    def test_not_a_vmbeam_host(self):
        plain = 'plain-%s' % uuid.uuid4().hex[:8]
        self.cloud.add_host(plain, vmbeam=False)
        scripted = self.serve(host=plain)
        rc, out, err = self.openstack('hypervisor', 'rejuvenate', plain)
        self.assertEqual(1, rc)
        self.assertIn('Host %s is not a VMBeam host' % plain, err)
        self.assertIn('compute_driver = vmbeam.VMBeamDriver', err)
        self.assertEqual([], scripted.calls)

    def test_unknown_host(self):
        rc, out, err = self.openstack('hypervisor', 'rejuvenate', 'nohost')
        self.assertEqual(1, rc)
        self.assertIn("No compute host 'nohost' in Nova.", err)
        self.assertIn('(HTTP 404)', err)

    def test_host_not_answering(self):
        # The host is in Nova and has the trait, but nothing serves it.
        started = time.monotonic()
        self.api_conf.set_override('rpc_timeout', 1, group='vmbeam_api')
        rc, out, err = self.openstack('hypervisor', 'rejuvenate', self.host)
        self.assertEqual(1, rc)
        self.assertLess(time.monotonic() - started, 30)
        self.assertIn('Host %s did not answer in time' % self.host, err)
        self.assertIn('nova-compute log', err)
        self.assertIn('(HTTP 504)', err)

    def test_bad_concurrency_is_refused_before_anything(self):
        scripted = self.serve()
        rc, out, err = self.openstack('hypervisor', 'rejuvenate', self.host,
                                      '--concurrency', '0')
        self.assertEqual(2, rc)
        self.assertIn('must be a whole number, 1 or more', err)
        self.assertEqual([], scripted.calls)


class TestRejuvenationShow(OpenStackCommandTestCase):

    def test_show_after_a_run(self):
        self.serve()
        self.assertEqual(0, self.openstack('hypervisor', 'rejuvenate',
                                           self.host, '--wait')[0])
        rc, out, err = self.openstack('hypervisor', 'rejuvenation', 'show',
                                      self.host, '-f', 'json')
        self.assertEqual(0, rc, err)
        shown = json.loads(out)
        self.assertEqual(2, shown['active_generation'])
        self.assertEqual('completed', shown['run_state'])
        self.assertEqual('2/2', shown['run_moved'])
        self.assertEqual(1, shown['run_from_generation'])
        self.assertEqual({'mover', 'downtime_ms', 'total_ms', 'state',
                          'transferred_bytes'},
                         {'mover', 'downtime_ms', 'total_ms', 'state',
                          'transferred_bytes'} &
                         set(shown['run_guests'][0]))
        self.assertEqual('wait', shown['aging']['decision'])
        self.assertIsNone(shown['running'])

    def test_clouds_yaml_is_all_it_needs(self):
        self.serve()
        env = self.cloud.env()
        path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                            'clouds.yaml')
        with open(path, 'w') as f:
            json.dump({'clouds': {'vmbeamtest': {
                'auth_type': 'v3password',
                'auth': {'auth_url': env['OS_AUTH_URL'],
                         'username': 'admin',
                         'password': fake_cloud.PASSWORD,
                         'project_name': env['OS_PROJECT_NAME'],
                         'user_domain_name': 'Default',
                         'project_domain_name': 'Default'},
                'region_name': 'RegionOne'}}}, f)
        # Only the cloud's entry: no OS_* credentials, no bus, no nova.conf.
        env = {key: '' for key in env}
        env.update(OS_CLIENT_CONFIG_FILE=path)
        rc, out, err = self.openstack(
            '--os-cloud', 'vmbeamtest', 'hypervisor', 'rejuvenation', 'show',
            self.host, '-f', 'value', '-c', 'active_generation', env=env)
        self.assertEqual(0, rc, err)
        self.assertEqual('1', out.strip())

    def test_no_api_in_the_catalog(self):
        self.serve()
        self.cloud.api = None
        rc, out, err = self.openstack('hypervisor', 'rejuvenation', 'show',
                                      self.host)
        self.assertEqual(1, rc)
        self.assertIn('The Keystone catalog has no hypervisor-rejuvenation '
                      'endpoint: vmbeam-api must be deployed', err)

    def test_show_before_any_run(self):
        self.serve()
        rc, out, err = self.openstack('hypervisor', 'rejuvenation', 'show',
                                      self.host, '-f', 'value', '-c',
                                      'active_generation')
        self.assertEqual(0, rc, err)
        self.assertEqual('1', out.strip())


class TestServerMigrateRejuvenate(OpenStackCommandTestCase):

    def setUp(self):
        super().setUp()
        self.server_id = self.guests['instance-00000001']

    def nova_migrations(self):
        return self.cloud.calls('POST', r'/servers/[^/]+/action$')

    def test_rejuvenate_moves_on_the_host_without_nova(self):
        scripted = self.serve()
        rc, out, err = self.openstack('server', 'migrate', '--rejuvenate',
                                      '--rejuvenate-mover', 'cpr',
                                      self.server_id)
        self.assertEqual(0, rc, err)
        self.assertEqual([], self.nova_migrations())
        self.assertEqual([('rejuvenate_instance',
                           {'instance_uuid': self.server_id,
                            'mover': 'cpr'})],
                         [(c[0], c[2]) for c in scripted.calls])
        self.assertIn('Server %s moved on host %s to hypervisor generation '
                      '2 with the cpr mover: downtime 12.2 ms' % (
                          self.server_id, self.host), out)

    def test_by_name(self):
        scripted = self.serve()
        rc, out, err = self.openstack('server', 'migrate', '--rejuvenate',
                                      'instance-00000002')
        self.assertEqual(0, rc, err)
        self.assertEqual(self.guests['instance-00000002'],
                         scripted.calls[0][2]['instance_uuid'])

    def test_without_rejuvenate_is_openstackclients_migrate(self):
        """The same requests, output and status as with no hook at all."""
        scripted = self.serve()
        rc, out, err = self.openstack('server', 'migrate', '--help')
        self.assertIn('--rejuvenate', out)   # the hook is loaded

        def run():
            del self.cloud.requests[:]
            rc, out, err = self.openstack('server', 'migrate', '--wait',
                                          self.server_id)
            return rc, out, [r for r in self.cloud.requests
                             if not r[1].startswith('/identity')]
        with_hook = run()
        with fixtures.MonkeyPatch('cliff.command.Command._load_hooks',
                                  lambda cmd: setattr(cmd, '_hooks', [])):
            self.assertNotIn('--rejuvenate', self.openstack(
                'server', 'migrate', '--help')[1])
            without_hook = run()
        self.assertEqual(without_hook, with_hook)
        self.assertEqual(0, with_hook[0])
        self.assertEqual(
            [('POST', '/compute/v2.1/servers/%s/action' % self.server_id,
              {}, {'migrate': None})], self.nova_migrations())
        self.assertEqual([], scripted.calls)

    def test_nova_options_do_not_go_with_rejuvenate(self):
        scripted = self.serve()
        for extra in (['--live-migration'], ['--host', 'other'],
                      ['--live-migration', '--block-migration']):
            rc, out, err = self.openstack('server', 'migrate',
                                          '--rejuvenate', self.server_id,
                                          *extra)
            self.assertEqual(1, rc, extra)
            self.assertIn('cannot go with it', err)
            for flag in extra:
                if flag.startswith('--'):
                    self.assertIn(flag, err)
        self.assertEqual([], scripted.calls)
        self.assertEqual([], self.nova_migrations())

    def test_mover_without_rejuvenate(self):
        rc, out, err = self.openstack('server', 'migrate',
                                      '--rejuvenate-mover', 'cpr',
                                      self.server_id)
        self.assertEqual(1, rc)
        self.assertIn('--rejuvenate-mover only goes with --rejuvenate', err)
        self.assertEqual([], self.nova_migrations())

    def test_unknown_server(self):
        scripted = self.serve()
        rc, out, err = self.openstack('server', 'migrate', '--rejuvenate',
                                      'no-such-server')
        self.assertEqual(1, rc)
        self.assertIn("No server with a name or ID of 'no-such-server'",
                      err)
        self.assertEqual([], scripted.calls)
        self.assertEqual([], self.nova_migrations())

    def test_unknown_to_the_host(self):
        # Nova has it, the host does not: the host's error, its fix.
        self.serve()
        server_id = self.cloud.add_server(self.host, name='stray')
        rc, out, err = self.openstack('server', 'migrate', '--rejuvenate',
                                      server_id)
        self.assertEqual(1, rc)
        self.assertIn('%s: Instance %s does not exist' % (
            self.host, server_id), err)

    def test_server_not_on_a_vmbeam_host(self):
        plain = 'plain-%s' % uuid.uuid4().hex[:8]
        self.cloud.add_host(plain, vmbeam=False)
        server_id = self.cloud.add_server(plain, name='elsewhere')
        rc, out, err = self.openstack('server', 'migrate', '--rejuvenate',
                                      server_id)
        self.assertEqual(1, rc)
        self.assertIn('Host %s is not a VMBeam host' % plain, err)
        self.assertEqual([], self.nova_migrations())

    def test_not_admin(self):
        scripted = self.serve()
        rc, out, err = self.openstack('server', 'migrate', '--rejuvenate',
                                      self.server_id, user='demo')
        self.assertEqual(1, rc)
        self.assertIn('Policy does not allow vmbeam:server:rejuvenate', err)
        self.assertEqual([], scripted.calls)
        self.assertEqual([], self.nova_migrations())


class TestGuestsColumn(testtools.TestCase):

    def test_guests_of_a_run(self):
        run = {'guests': {'b': {'uuid': 'u2', 'state': 'failed',
                                'error': 'boom', 'mover': 'zerocopy'},
                          'a': {'uuid': 'u1', 'state': 'moved',
                                'result': {'mover': 'cpr',
                                           'downtime_ms': 1.5,
                                           'total_ms': 9.0,
                                           'transferred_bytes': 7}}}}
        rows = osc_rejuvenation.guests_of(run)
        self.assertEqual(['a', 'b'], [r['name'] for r in rows])
        self.assertEqual('1/2', osc_rejuvenation.moved_count(run))
        text = osc_rejuvenation.GuestsColumn(rows).human_readable()
        self.assertEqual(
            'a u1 moved mover=cpr downtime_ms=1.5 total_ms=9.0 bytes=7\n'
            'b u2 failed mover=zerocopy downtime_ms=- total_ms=- bytes=- '
            'error=boom', text)
