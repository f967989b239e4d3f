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

"""vmbeam-api in the cloud: real Keystone tokens, policy, what it refuses.

Each refusal is checked for its status and message and for what must not
change: the host's generations and run, the servers and their actions.
The requests go to the endpoint the Keystone catalog lists (service type
hypervisor-rejuvenation), as the openstack command finds it.
"""

import os
import time
import uuid

from keystoneauth1.identity import v3
from keystoneauth1 import session as ks_session
import requests

from tests.cloud import base

POLICY_FILE = os.path.join(base.CLOUD_DIR, 'etc', 'vmbeam', 'policy.yaml')
PROJECT = 'vmbeam-api-tests'


class OperatorAPITest(base.CloudTestCase):

    def setUp(self):
        super().setUp()
        self.url = self.conn.endpoint_for('hypervisor-rejuvenation')
        self.assertTrue(self.url, 'vmbeam-api is not in the catalog')
        self.url = self.url.rstrip('/')

    # --- callers -------------------------------------------------------

    def user(self, name, role):
        """A new user of project PROJECT with ``role``; its session.

        A user of its own per test, deleted after it: changing an
        existing user's password would revoke the tokens Keystone issues
        within the same second.
        """
        identity = self.conn.identity
        project = identity.find_project(PROJECT) or identity.create_project(
            name=PROJECT, domain_id='default')
        role_obj = identity.find_role(role) or identity.create_role(name=role)
        name = '%s-%s' % (name, uuid.uuid4().hex[:8])
        password = uuid.uuid4().hex
        user = identity.create_user(name=name, password=password,
                                    domain_id='default')
        self.addCleanup(identity.delete_user, user)
        identity.assign_project_role_to_user(project, user, role_obj)
        auth = v3.Password(
            auth_url=self.conn.auth['auth_url'], username=name,
            password=password, project_name=PROJECT,
            user_domain_name='Default', project_domain_name='Default')
        return ks_session.Session(auth=auth), user

    def admin_session(self):
        return self.conn.session

    def api(self, method, path, session=None, body=None, headers=None):
        """(status, JSON body) of a request; ``session=None``: no token."""
        url = self.url + path
        if session is None:
            response = requests.request(method, url, json=body,
                                        headers=headers, timeout=120)
        else:
            response = session.request(url, method, json=body,
                                       raise_exc=False, headers=headers)
        try:
            doc = response.json()
        except ValueError:
            doc = None
        return response.status_code, doc

    def host_state(self):
        """What must not change: generations and the last run's id."""
        status, doc = self.api('GET', '/v1/hosts/%s' % self.host,
                               self.admin_session())
        self.assertEqual(200, status, doc)
        host = doc['host']
        return (sorted(host['generations']), (host['run'] or {}).get('id'),
                host['active_generation'])

    def grant(self, text):
        """Write vmbeam-api's policy file; the old one comes back after."""
        old = None
        if os.path.exists(POLICY_FILE):
            with open(POLICY_FILE) as f:
                old = f.read()

        def restore():
            if old is None:
                os.unlink(POLICY_FILE)
            else:
                with open(POLICY_FILE, 'w') as f:
                    f.write(old)
        self.addCleanup(restore)
        with open(POLICY_FILE, 'w') as f:
            f.write(text)

    # --- tests ---------------------------------------------------------

    def test_versions_need_no_token(self):
        status, doc = self.api('GET', '/')
        self.assertEqual(200, status)
        self.assertEqual(['v1.0'], [v['id'] for v in doc['versions']])

    def test_no_token_and_forged_identity_are_401(self):
        before = self.host_state()
        path = '/v1/hosts/%s/rejuvenations' % self.host
        self.assertEqual(401, self.api('POST', path, body={})[0])
        # What auth_token would set for a valid admin token, sent by the
        # caller itself: auth_token throws it away.
        forged = {'X-Identity-Status': 'Confirmed', 'X-Roles': 'admin',
                  'X-User-Id': 'forged', 'X-Project-Id': 'forged',
                  'X-Service-Roles': 'service'}
        self.assertEqual(401, self.api('POST', path, body={},
                                       headers=forged)[0])
        self.assertEqual(401, self.api(
            'POST', path, body={},
            headers=dict(forged, **{'X-Auth-Token': 'not-a-token'}))[0])
        self.assertEqual(before, self.host_state())

    def test_member_is_403_on_every_action(self):
        before = self.host_state()
        member, _ = self.user('vmbeam-api-member', 'member')
        for method, path in (
                ('POST', '/v1/hosts/%s/rejuvenations' % self.host),
                ('GET', '/v1/hosts/%s/rejuvenations' % self.host),
                ('GET', '/v1/hosts/%s' % self.host),
                ('POST', '/v1/servers/%s/rejuvenation' % uuid.uuid4())):
            status, doc = self.api(method, path, member,
                                   body={} if method == 'POST' else None)
            self.assertEqual(403, status, (method, path, doc))
            self.assertIn('Policy does not allow', doc['error']['message'])
        self.assertEqual(before, self.host_state())

    def test_unknown_host_and_server_are_404(self):
        admin = self.admin_session()
        status, doc = self.api('POST', '/v1/hosts/no-such-host/'
                               'rejuvenations', admin, body={})
        self.assertEqual(404, status)
        self.assertIn("No compute host 'no-such-host'",
                      doc['error']['message'])
        missing = str(uuid.uuid4())
        status, doc = self.api('POST', '/v1/servers/%s/rejuvenation' %
                               missing, admin, body={})
        self.assertEqual(404, status)
        self.assertIn(missing, doc['error']['message'])
        status, doc = self.api('POST', '/v1/hosts/%s/rejuvenations' %
                               self.host, admin, body={'speed': 'max'})
        self.assertEqual(400, status)
        self.assertIn('Unknown field(s) speed', doc['error']['message'])

    def test_granted_role_and_a_run_already_going(self):
        server = self.create_server('api-granted')
        operator, operator_user = self.user('vmbeam-api-operator',
                                            'rejuvenator')
        path = '/v1/servers/%s/rejuvenation' % server.id
        before = self.host_state()
        self.assertEqual(403, self.api('POST', path, operator, body={})[0])
        self.assertEqual(before, self.host_state())

        # A policy file that grants the role too: no restart of anything.
        self.grant('"vmbeam:server:rejuvenate": "role:rejuvenator or '
                   'rule:vmbeam_admin_api"\n')
        status, doc = self.api('POST', path, operator, body={})
        self.assertEqual(200, status, doc)
        self.assertEqual(('moved', self.host),
                         (doc['rejuvenation']['state'],
                          doc['rejuvenation']['host']))
        # The instance action names the operator, not the service.
        action = [a for a in self.conn.compute.server_actions(server.id)
                  if a.action == 'vmbeam-rejuvenate'][-1]
        self.assertEqual((operator_user.id, 'vmbeam-rejuvenate'),
                         (action.user_id, action.action))
        # Only what the file grants.
        self.assertEqual(403, self.api('GET', '/v1/hosts/%s' % self.host,
                                       operator)[0])

        # A run already going: 409, and the run goes on to its end.
        admin = self.admin_session()
        runs = '/v1/hosts/%s/rejuvenations' % self.host
        status, doc = self.api('POST', runs, admin, body={})
        self.assertEqual(202, status, doc)
        run_id = doc['rejuvenation']['run_id']
        status, doc = self.api('POST', runs, admin, body={})
        self.assertEqual(409, status, doc)
        self.assertIn('already running', doc['error']['message'])
        status, doc = self.api('POST', path, admin, body={})
        self.assertEqual(409, status, doc)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status, doc = self.api('GET', runs + '/' + run_id, admin)
            if status == 200 and doc['rejuvenation']['state'] not in (
                    'running', 'pending'):
                break
            time.sleep(2)
        self.assertEqual('completed', doc['rejuvenation']['state'], doc)
        self.assert_running_once_intact([server.id])
