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

"""vmbeam-api's WSGI application: statuses, policy, input checks.

The application runs in this process with its real middleware, routes,
policy enforcer and RPC client; the compute host behind the RPC endpoint
(nova_vmbeam.rpc.server over oslo.messaging's in-memory fake:// bus) is
tests.unit.test_osc's ScriptedHost; Nova and Placement are a stub of
api.cloud.Cloud. Keystone itself (the auth_token middleware against a
real Keystone) is in tests/cloud.
"""

import json
import os
import uuid

import fixtures
from oslo_config import cfg
from oslo_config import fixture as config_fixture
from oslo_messaging import conffixture as messaging_conffixture
import testtools
import webob

from nova_vmbeam.api import app
from nova_vmbeam.api import controllers
from nova_vmbeam.api import errors
from nova_vmbeam.api import policies
from nova_vmbeam.api import policy
from nova_vmbeam.api import wsgi as api_wsgi
from nova_vmbeam.conf import api as api_conf
from nova_vmbeam.rpc import api as rpc_api
from nova_vmbeam.rpc import server as rpc_server
from tests.unit import test_osc

HOST = 'compute-1'


class StubCloud:
    """Nova and Placement as api.cloud.Cloud answers for them."""

    def __init__(self):
        self.hosts = {HOST: True, 'plain-1': False}
        self.servers = {}

    def check_vmbeam_host(self, host):
        if host not in self.hosts:
            raise errors.NotFound(reason='No compute host %r in Nova.' % host)
        if not self.hosts[host]:
            raise errors.Conflict(reason='Host %s is not a VMBeam host.' %
                                  host)

    def server(self, server_id):
        if server_id not in self.servers:
            raise errors.NotFound(reason='No server %s.' % server_id)
        return self.servers[server_id]


class APITestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.conf = self.useFixture(
            config_fixture.Config(cfg.ConfigOpts())).conf
        api_conf.register_opts(self.conf)
        self.useFixture(messaging_conffixture.ConfFixture(self.conf))
        self.policy_file = os.path.join(
            self.useFixture(fixtures.TempDir()).path, 'policy.yaml')
        self.conf([], project='vmbeam', default_config_files=[])
        self.conf.set_override('policy_file', self.policy_file,
                               group='oslo_policy')
        policy.reset()
        self.addCleanup(policy.reset)
        policy.get_enforcer(self.conf)

        transport = rpc_api.get_transport(self.conf, url='fake://')
        self.addCleanup(transport.cleanup)
        self.guests = {'instance-00000001': str(uuid.uuid4())}
        self.host = test_osc.ScriptedHost(HOST, self.guests, step=0.05)
        server = rpc_server.start(transport, HOST, self.host)
        self.addCleanup(rpc_server.stop, server)
        self.cloud = StubCloud()
        for uuid_ in self.guests.values():
            self.cloud.servers[uuid_] = ('ACTIVE', HOST)
        rpcapi = rpc_api.VMBeamAPI(transport, timeout=5, monitor_timeout=5)
        self.app = app.build(self.conf, controllers.V1(
            self.cloud, rpcapi, self.conf.vmbeam_api), authenticate=False)

    def request(self, method, path, body=None, roles='admin',
                content_type='application/json'):
        req = webob.Request.blank(path, method=method)
        # What keystonemiddleware's auth_token sets for a valid token.
        req.headers.update({
            'X-Identity-Status': 'Confirmed', 'X-User-Id': 'u-1',
            'X-User-Name': 'alice', 'X-Project-Id': 'p-1',
            'X-Project-Name': 'ops', 'X-Roles': roles})
        if body is not None:
            req.body = (body if isinstance(body, bytes)
                        else json.dumps(body).encode())
            req.content_type = content_type
        response = req.get_response(self.app)
        doc = json.loads(response.body) if response.body else None
        return response.status_int, doc, response

    def assertNothingSent(self, *methods):
        sent = [call[0] for call in self.host.calls]
        for method in methods or ('rejuvenate_host', 'rejuvenate_instance'):
            self.assertNotIn(method, sent)


class TestVersions(APITestCase):

    def test_root_lists_v1_without_a_token(self):
        req = webob.Request.blank('/')
        response = req.get_response(app.build(self.conf, None))
        self.assertEqual(200, response.status_int)
        versions = json.loads(response.body)['versions']
        self.assertEqual(['v1.0'], [v['id'] for v in versions])
        self.assertEqual('CURRENT', versions[0]['status'])
        self.assertTrue(versions[0]['links'][0]['href'].endswith('/v1/'))

    def test_no_token_is_401(self):
        # The real auth_token middleware: no X-Auth-Token, no Keystone
        # needed to refuse.
        self.conf.set_override('www_authenticate_uri', 'http://keystone/v3',
                               group='keystone_authtoken')
        application = app.build(self.conf, controllers.V1(
            self.cloud, None, self.conf.vmbeam_api))
        req = webob.Request.blank('/v1/hosts/%s/rejuvenations' % HOST,
                                  method='POST')
        response = req.get_response(application)
        self.assertEqual(401, response.status_int)
        self.assertIn('http://keystone/v3',
                      response.headers['WWW-Authenticate'])
        self.assertNothingSent()


class TestHosts(APITestCase):

    def test_admin_starts_a_rejuvenation(self):
        status, doc, response = self.request(
            'POST', '/v1/hosts/%s/rejuvenations' % HOST,
            {'mover': 'zerocopy', 'concurrency': 2})
        self.assertEqual(202, status)
        run = doc['rejuvenation']
        self.assertEqual(HOST, run['host'])
        self.assertEqual('running', run['state'])
        self.assertTrue(response.location.endswith(
            '/v1/hosts/%s/rejuvenations/%s' % (HOST, run['run_id'])))
        method, context, args = self.host.calls[-1]
        self.assertEqual('rejuvenate_host', method)
        self.assertEqual({'mover': 'zerocopy', 'concurrency': 2}, args)
        # The caller travels in the request context.
        self.assertEqual('u-1', context['user'])
        self.assertEqual('u-1', context['user_id'])
        self.assertEqual('p-1', context['project_id'])
        self.assertEqual('alice', context['user_name'])

        status, doc, _ = self.request(
            'GET', '/v1/hosts/%s/rejuvenations/%s' % (HOST, run['run_id']))
        self.assertEqual(200, status)
        self.assertEqual(run['run_id'], doc['rejuvenation']['id'])
        status, doc, _ = self.request('GET',
                                      '/v1/hosts/%s/rejuvenations' % HOST)
        self.assertEqual([run['run_id']],
                         [r['id'] for r in doc['rejuvenations']])

    def test_member_is_403_and_nothing_is_sent(self):
        status, doc, _ = self.request(
            'POST', '/v1/hosts/%s/rejuvenations' % HOST, {}, roles='member')
        self.assertEqual(403, status)
        self.assertIn(policies.HOST_REJUVENATE, doc['error']['message'])
        self.assertIn('policy_file', doc['error']['message'])
        self.assertNothingSent()
        for path in ('/v1/hosts/%s' % HOST,
                     '/v1/hosts/%s/rejuvenations' % HOST):
            self.assertEqual(403, self.request('GET', path,
                                               roles='member')[0])
        self.assertEqual([], self.host.calls)

    def test_policy_file_grants_a_role_without_a_restart(self):
        path = '/v1/hosts/%s/rejuvenations' % HOST
        self.assertEqual(403, self.request('POST', path, {},
                                           roles='rejuvenator')[0])
        with open(self.policy_file, 'w') as f:
            f.write('"vmbeam:host:rejuvenate": "role:rejuvenator"\n')
        self.assertEqual(202, self.request('POST', path, {},
                                           roles='rejuvenator')[0])
        # Only what the file grants: the rest stays an admin's.
        self.assertEqual(403, self.request('GET', path,
                                           roles='rejuvenator')[0])

    def test_unknown_host_is_404(self):
        status, doc, _ = self.request('POST',
                                      '/v1/hosts/nowhere/rejuvenations', {})
        self.assertEqual(404, status)
        self.assertIn('nowhere', doc['error']['message'])
        self.assertNothingSent()

    def test_host_without_vmbeam_is_409(self):
        status, doc, _ = self.request('POST',
                                      '/v1/hosts/plain-1/rejuvenations', {})
        self.assertEqual(409, status)
        self.assertNothingSent()

    def test_a_run_already_going_is_409(self):
        self.host.step = 1
        path = '/v1/hosts/%s/rejuvenations' % HOST
        self.assertEqual(202, self.request('POST', path, {})[0])
        status, doc, _ = self.request('POST', path, {})
        self.assertEqual(409, status)
        self.assertIn('already running', doc['error']['message'])
        self.assertIn('GET /v1/hosts/%s/rejuvenations' % HOST,
                      doc['error']['message'])

    def test_unknown_run_is_404(self):
        status, _doc, _ = self.request(
            'GET', '/v1/hosts/%s/rejuvenations/nope' % HOST)
        self.assertEqual(404, status)

    def test_status(self):
        status, doc, _ = self.request('GET', '/v1/hosts/%s' % HOST)
        self.assertEqual(200, status)
        self.assertEqual(HOST, doc['host']['host'])
        self.assertEqual(1, doc['host']['active_generation'])


class TestBadInput(APITestCase):

    path = '/v1/hosts/%s/rejuvenations' % HOST

    def assertBadRequest(self, body, needle, content_type='application/json',
                         code=400):
        status, doc, _ = self.request('POST', self.path, body,
                                      content_type=content_type)
        self.assertEqual(code, status, doc)
        self.assertIn(needle, doc['error']['message'])
        self.assertNothingSent()

    def test_unknown_field(self):
        self.assertBadRequest({'movr': 'zerocopy'}, 'Allowed: mover')

    def test_bad_concurrency(self):
        for value in (0, -1, 'two', True, 1.5):
            self.assertBadRequest({'concurrency': value}, '1 or more')

    def test_bad_mover_type(self):
        self.assertBadRequest({'mover': 7}, 'name of a mover')

    def test_not_an_object(self):
        self.assertBadRequest([1], 'JSON object')

    def test_not_json(self):
        self.assertBadRequest(b'{mover', 'not valid JSON')

    def test_not_declared_json(self):
        self.assertBadRequest(b'mover=zerocopy', 'Content-Type',
                              content_type='text/plain', code=415)

    def test_unknown_path_and_method(self):
        status, doc, _ = self.request('GET', '/v1/nothing')
        self.assertEqual(404, status)
        status, doc, _ = self.request(
            'DELETE', '/v1/hosts/%s/rejuvenations' % HOST)
        self.assertEqual(405, status)
        self.assertIn('GET, POST', doc['error']['message'])


class TestServers(APITestCase):

    def test_admin_rejuvenates_a_server(self):
        server_id = list(self.guests.values())[0]
        status, doc, _ = self.request(
            'POST', '/v1/servers/%s/rejuvenation' % server_id, {})
        self.assertEqual(200, status)
        self.assertEqual('moved', doc['rejuvenation']['state'])
        self.assertEqual(HOST, doc['rejuvenation']['host'])
        method, context, args = self.host.calls[-1]
        self.assertEqual(('rejuvenate_instance', server_id),
                         (method, args['instance_uuid']))
        self.assertEqual('alice', context['user_name'])

    def test_server_not_active_is_409(self):
        server_id = str(uuid.uuid4())
        self.cloud.servers[server_id] = ('SHUTOFF', HOST)
        status, doc, _ = self.request(
            'POST', '/v1/servers/%s/rejuvenation' % server_id, {})
        self.assertEqual(409, status)
        self.assertIn('SHUTOFF', doc['error']['message'])
        self.assertNothingSent()

    def test_unknown_server_is_404(self):
        status, _doc, _ = self.request(
            'POST', '/v1/servers/%s/rejuvenation' % uuid.uuid4(), {})
        self.assertEqual(404, status)
        self.assertNothingSent()

    def test_member_is_403(self):
        server_id = list(self.guests.values())[0]
        status, _doc, _ = self.request(
            'POST', '/v1/servers/%s/rejuvenation' % server_id, {},
            roles='member')
        self.assertEqual(403, status)
        self.assertNothingSent()


class TestRPCVersionCap(testtools.TestCase):

    def test_cap_limits_what_is_sent(self):
        conf = cfg.ConfigOpts()
        self.useFixture(messaging_conffixture.ConfFixture(conf))
        transport = rpc_api.get_transport(conf, url='fake://')
        self.addCleanup(transport.cleanup)
        capped = rpc_api.VMBeamAPI(transport, version_cap='1.0')
        self.assertTrue(capped.can_send_version('1.0'))
        self.assertFalse(capped.can_send_version('1.1'))
        uncapped = rpc_api.VMBeamAPI(transport)
        self.assertTrue(uncapped.can_send_version('1.0'))

    def test_the_option_reaches_the_client(self):
        conf = self.useFixture(config_fixture.Config(cfg.ConfigOpts())).conf
        api_conf.register_opts(conf)
        self.useFixture(messaging_conffixture.ConfFixture(conf))
        conf([], default_config_files=[])
        conf.set_override('vmbeam', '1.0', group='upgrade_levels')
        self.addCleanup(policy.reset)
        transport = rpc_api.get_transport(conf, url='fake://')
        self.addCleanup(transport.cleanup)
        made = []
        real = rpc_api.VMBeamAPI
        self.useFixture(fixtures.MonkeyPatch(
            'nova_vmbeam.rpc.api.VMBeamAPI',
            lambda *a, **kw: made.append(real(*a, **kw)) or made[-1]))
        api_wsgi.build_application(conf, transport=transport)
        self.assertEqual(['1.0'], [api.version_cap for api in made])
        self.assertFalse(made[0].can_send_version('1.1'))
