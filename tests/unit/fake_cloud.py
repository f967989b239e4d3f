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

"""A small stand-in for Keystone, Nova's API and Placement, over HTTP.

The openstack command (python-openstackclient, openstacksdk, keystoneauth)
talks to it exactly as to a cloud: token, catalog, version discovery, and
the few calls the VMBeam commands and ``server migrate`` make. Keystone,
the Nova API and Placement cannot reasonably run on the test machine;
this serves what they would answer, and records every request so a test
can tell, e.g., whether a Nova migration was asked for.

Users: ``admin`` (role admin) and ``demo`` (role member), password
``secret``. start_api() mounts vmbeam-api's own WSGI application under
/rejuvenation, in the catalog as service type hypervisor-rejuvenation,
behind what keystonemiddleware's auth_token does: no valid token, 401;
else the caller's identity in X-User-Id, X-Roles etc. Nova's default
policy is modelled where the commands depend on it: hypervisors are
admin-only, and a server's host (OS-EXT-SRV-ATTR:host) is shown to admins
only.
"""

import http.server
import json
import os
import re
import threading
import urllib.parse
import uuid

import fixtures
from keystoneauth1 import loading as ks_loading
import webob

PASSWORD = 'secret'
USERS = {'admin': ['admin', 'member', 'reader'], 'demo': ['member', 'reader']}
PROJECT = {'id': 'b1c2d3e4f5a6478899aabbccddeeff00', 'name': 'admin',
           'domain': {'id': 'default', 'name': 'Default'}}


class FakeCloud(fixtures.Fixture):
    """``url`` is the Keystone v3 auth URL; ``requests`` what was asked."""

    def _setUp(self):
        self.requests = []
        self.servers = {}         # id -> server dict (as Nova shows it)
        self.hypervisors = []     # os-hypervisors/detail at 2.53
        self.traits = {}          # resource provider uuid -> [trait]
        self.tokens = {}          # token -> (user, roles)
        self.api = None           # vmbeam-api's WSGI app, once served
        cloud = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                cloud._handle(self, 'GET')

            def do_POST(self):
                cloud._handle(self, 'POST')

            def do_DELETE(self):
                cloud._handle(self, 'DELETE')

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                                     Handler)
        self.httpd.daemon_threads = True
        self.base = 'http://127.0.0.1:%d' % self.httpd.server_address[1]
        self.url = self.base + '/identity/v3'
        thread = threading.Thread(target=self.httpd.serve_forever,
                                  name='fake-cloud', daemon=True)
        thread.start()
        self.addCleanup(self.httpd.server_close)
        self.addCleanup(self.httpd.shutdown)

    # --- what the cloud holds ------------------------------------------------

    def add_host(self, host, vmbeam=True, node=None):
        """A compute host with one compute node; its provider's traits."""
        node_uuid = str(uuid.uuid4())
        self.hypervisors.append({
            'id': node_uuid, 'hypervisor_hostname': node or host,
            'state': 'up', 'status': 'enabled',
            'service': {'host': host, 'id': str(uuid.uuid4()),
                        'disabled_reason': None}})
        self.traits[node_uuid] = ['COMPUTE_NODE'] + (
            ['CUSTOM_VMBEAM'] if vmbeam else [])
        return node_uuid

    def add_server(self, host, name='vm1', server_id=None):
        server_id = server_id or str(uuid.uuid4())
        self.servers[server_id] = {
            'id': server_id, 'name': name, 'status': 'ACTIVE',
            'tenant_id': PROJECT['id'], 'user_id': 'admin-id',
            'OS-EXT-SRV-ATTR:host': host,
            'OS-EXT-SRV-ATTR:hypervisor_hostname': host,
            'OS-EXT-STS:vm_state': 'active', 'links': [],
            'flavor': {'id': '1', 'links': []},
            'image': {'id': str(uuid.uuid4()), 'links': []},
            'addresses': {}, 'metadata': {}}
        return server_id

    def start_api(self, transport_url, rpc_timeout):
        """vmbeam-api's real application, served at /rejuvenation.

        Its [nova] service user is this cloud's admin, its bus
        ``transport_url``, its policy file a fresh one; returns its conf.
        """
        from oslo_config import cfg
        from oslo_messaging import conffixture as messaging_conffixture

        from nova_vmbeam.api import policy as api_policy
        from nova_vmbeam.api import wsgi as api_wsgi
        from nova_vmbeam.conf import api as api_conf
        from nova_vmbeam.rpc import api as rpc_api

        conf = cfg.ConfigOpts()
        api_conf.register_opts(conf)
        self.useFixture(messaging_conffixture.ConfFixture(conf))
        conf([], project='vmbeam', default_config_files=[])
        conf.set_override('rpc_timeout', rpc_timeout, group='vmbeam_api')
        conf.set_override('policy_file', os.path.join(
            self.useFixture(fixtures.TempDir()).path, 'policy.yaml'),
            group='oslo_policy')
        conf.set_override('auth_type', 'password', group='nova')
        # keystoneauth registers a plugin's options once it is loaded.
        conf.register_opts(ks_loading.get_auth_plugin_conf_options(
            'password'), group='nova')
        conf.set_override('region_name', 'RegionOne', group='nova')
        conf.set_override('region_name', 'RegionOne', group='placement')
        for name, value in (('auth_url', self.url), ('username', 'admin'),
                            ('password', PASSWORD),
                            ('project_name', PROJECT['name']),
                            ('user_domain_name', 'Default'),
                            ('project_domain_name', 'Default')):
            conf.set_override(name, value, group='nova')
        api_policy.reset()
        self.addCleanup(api_policy.reset)
        transport = rpc_api.get_transport(conf, url=transport_url)
        self.addCleanup(transport.cleanup)
        self.api = api_wsgi.build_application(conf, transport=transport,
                                              authenticate=False)
        self.addCleanup(setattr, self, 'api', None)
        return conf

    def calls(self, method, pattern):
        return [r for r in self.requests
                if r[0] == method and re.search(pattern, r[1])]

    def env(self, user='admin'):
        """Environment for the openstack command, as a cloud's openrc."""
        return {'OS_AUTH_TYPE': 'v3password', 'OS_AUTH_URL': self.url,
                'OS_USERNAME': user, 'OS_PASSWORD': PASSWORD,
                'OS_PROJECT_NAME': PROJECT['name'],
                'OS_USER_DOMAIN_NAME': 'Default',
                'OS_PROJECT_DOMAIN_NAME': 'Default',
                'OS_IDENTITY_API_VERSION': '3',
                'OS_REGION_NAME': 'RegionOne', 'OS_INTERFACE': 'public'}

    # --- HTTP ----------------------------------------------------------------

    def _reply(self, handler, status, body=None, headers=None):
        data = json.dumps(body).encode() if body is not None else b''
        handler.send_response(status)
        handler.send_header('Content-Type', 'application/json')
        handler.send_header('Content-Length', str(len(data)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _handle(self, handler, method):
        if self.api is not None and handler.path.startswith('/rejuvenation'):
            return self._handle_api(handler, method)
        parsed = urllib.parse.urlsplit(handler.path)
        path = parsed.path.rstrip('/')
        query = urllib.parse.parse_qs(parsed.query)
        length = int(handler.headers.get('Content-Length') or 0)
        body = json.loads(handler.rfile.read(length) or b'null')
        self.requests.append((method, path, query, body))
        token = self.tokens.get(handler.headers.get('X-Auth-Token'))
        try:
            status, reply, headers = self._route(method, path, query, body,
                                                 token)
        except Exception as exc:   # a bug of the fake shows as a 500
            status, reply, headers = 500, {'error': repr(exc)}, {}
        self._reply(handler, status, reply, headers)

    def _handle_api(self, handler, method):
        """vmbeam-api behind the auth_token middleware's part."""
        length = int(handler.headers.get('Content-Length') or 0)
        body = handler.rfile.read(length)
        path = handler.path[len('/rejuvenation'):] or '/'
        self.requests.append((method, '/rejuvenation' + path, {},
                              json.loads(body or b'null')))
        req = webob.Request.blank(path, method=method)
        req.script_name = '/rejuvenation'
        if body:
            req.body = body
            req.content_type = handler.headers.get('Content-Type')
        token = self.tokens.get(handler.headers.get('X-Auth-Token'))
        if token is None and path.strip('/') not in ('', 'v1'):
            return self._reply(handler, 401, {'error': {
                'code': 401, 'title': 'Unauthorized',
                'message': 'The request you have made requires '
                           'authentication.'}})
        if token is not None:
            user, roles = token
            req.headers.update({
                'X-Identity-Status': 'Confirmed', 'X-User-Id': user + '-id',
                'X-User-Name': user, 'X-Project-Id': PROJECT['id'],
                'X-Project-Name': PROJECT['name'],
                'X-Roles': ','.join(roles)})
        response = req.get_response(self.api)
        handler.send_response(response.status_int)
        for key, value in response.headerlist:
            if key.lower() != 'content-length':
                handler.send_header(key, value)
        handler.send_header('Content-Length', str(len(response.body)))
        handler.end_headers()
        handler.wfile.write(response.body)

    def _version(self, service, path, version, min_version='1.0'):
        link = [{'rel': 'self', 'href': self.base + path + '/'}]
        return {'id': 'v' + version.split('.')[0] + (
                    '.1' if service == 'compute' else '.0'),
                'status': 'CURRENT', 'version': version,
                'max_version': version, 'min_version': min_version,
                'updated': '2025-01-01T00:00:00Z', 'links': link}

    def _route(self, method, path, query, body, token):
        if path.startswith('/identity'):
            return self._identity(method, path, body)
        if token is None:
            return 401, {'error': {'code': 401, 'message': 'no token'}}, {}
        if path.startswith('/compute'):
            return self._compute(method, path[len('/compute'):], query,
                                 body, token)
        if path.startswith('/placement'):
            return self._placement(method, path[len('/placement'):])
        return 404, {'error': 'no such path %s' % path}, {}

    def _identity(self, method, path, body):
        if method == 'GET':
            return 200, {'version': {
                'id': 'v3.14', 'status': 'stable',
                'updated': '2025-01-01T00:00:00Z',
                'links': [{'rel': 'self', 'href': self.url + '/'}],
                'media-types': []}}, {}
        if path != '/identity/v3/auth/tokens':
            return 404, None, {}
        user = body['auth']['identity']['password']['user']
        name = user.get('name')
        if name not in USERS or user.get('password') != PASSWORD:
            return 401, {'error': {'code': 401,
                                   'message': 'bad credentials'}}, {}
        token = uuid.uuid4().hex
        roles = USERS[name]
        self.tokens[token] = (name, roles)
        catalog = [
            {'type': 'identity', 'name': 'keystone', 'id': 'k',
             'endpoints': [self._endpoint(self.url)]},
            {'type': 'compute', 'name': 'nova', 'id': 'n',
             'endpoints': [self._endpoint(self.base + '/compute/v2.1')]},
            {'type': 'placement', 'name': 'placement', 'id': 'p',
             'endpoints': [self._endpoint(self.base + '/placement')]}]
        if self.api is not None:
            catalog.append(
                {'type': 'hypervisor-rejuvenation', 'name': 'vmbeam',
                 'id': 'v', 'endpoints': [
                     self._endpoint(self.base + '/rejuvenation')]})
        return 201, {'token': {
            'methods': ['password'],
            'expires_at': '2099-01-01T00:00:00.000000Z',
            'issued_at': '2025-01-01T00:00:00.000000Z',
            'user': {'id': name + '-id', 'name': name,
                     'domain': {'id': 'default', 'name': 'Default'}},
            'project': PROJECT,
            'roles': [{'id': r + '-id', 'name': r} for r in roles],
            'catalog': catalog}}, {'X-Subject-Token': token}

    @staticmethod
    def _endpoint(url):
        return {'id': uuid.uuid4().hex, 'interface': 'public',
                'region': 'RegionOne', 'region_id': 'RegionOne', 'url': url}

    def _compute(self, method, path, query, body, token):
        user, roles = token
        admin = 'admin' in roles
        if path in ('', '/v2.1'):
            version = self._version('compute', '/compute/v2.1', '2.96',
                                    '2.1')
            if path == '':
                return 200, {'versions': [version]}, {}
            return 200, {'version': version}, {}
        forbidden = (403, {'forbidden': {
            'code': 403, 'message': 'Policy doesn\'t allow this'}}, {})
        if path == '/v2.1/os-hypervisors/detail':
            if not admin:
                return forbidden
            return 200, {'hypervisors': self.hypervisors}, {}
        match = re.fullmatch(r'/v2\.1/servers/([^/]+)(/action)?', path)
        if match and match.group(1) != 'detail':
            server = self.servers.get(match.group(1))
            if server is None:
                return 404, {'itemNotFound': {
                    'code': 404, 'message': 'Instance %s could not be '
                    'found.' % match.group(1)}}, {}
            if match.group(2):
                return 202, None, {}   # recorded in self.requests
            return 200, {'server': self._shown(server, admin)}, {}
        if path in ('/v2.1/servers/detail', '/v2.1/servers'):
            names = query.get('name')
            found = [self._shown(s, admin) for s in self.servers.values()
                     if not names or re.search(names[0], s['name'])]
            return 200, {'servers': found}, {}
        return 404, {'itemNotFound': {'code': 404,
                                      'message': 'no %s' % path}}, {}

    @staticmethod
    def _shown(server, admin):
        if admin:
            return server
        return {k: v for k, v in server.items()
                if not k.startswith('OS-EXT-SRV-ATTR')}

    def _placement(self, method, path):
        if path == '':
            return 200, {'versions': [self._version('placement',
                                                    '/placement', '1.39')]}, {}
        match = re.fullmatch(r'/resource_providers/([^/]+)/traits', path)
        if match:
            if match.group(1) not in self.traits:
                return 404, {'errors': [{'status': 404,
                                         'title': 'Not Found'}]}, {}
            return 200, {'traits': self.traits[match.group(1)],
                         'resource_provider_generation': 1}, {}
        return 404, {'errors': [{'status': 404, 'title': 'Not Found'}]}, {}
