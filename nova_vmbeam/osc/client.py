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

"""What the VMBeam commands talk to: vmbeam-api, on the Keystone session.

The commands authenticate as every openstack command does (clouds.yaml,
OS_* variables) and find vmbeam-api in the Keystone catalog under service
type hypervisor-rejuvenation. vmbeam-api authorizes each request by policy,
checks the host or server with Nova and Placement, and reaches the compute
host itself; no message bus or nova.conf is needed here. Every failure
becomes an osc_lib CommandError that carries the API's message (which
names the fix).
"""

from keystoneauth1 import adapter
from keystoneauth1 import exceptions as ks_exceptions
from openstack import exceptions as sdk_exceptions
from osc_lib import exceptions
from oslo_utils import uuidutils

#: vmbeam-api's service type in the Keystone catalog
SERVICE_TYPE = 'hypervisor-rejuvenation'


class VMBeamClient:
    """The VMBeam commands' client (``client_manager.vmbeam``)."""

    def __init__(self, session, compute=None, interface=None,
                 region_name=None, endpoint_override=None):
        self.api = adapter.Adapter(
            session, service_type=SERVICE_TYPE, interface=interface,
            region_name=region_name, endpoint_override=endpoint_override)
        self._compute = compute

    def _request(self, method, path, body=None):
        try:
            response = self.api.request(
                path, method, json=body, raise_exc=False,
                headers={'Accept': 'application/json'})
        except ks_exceptions.EndpointNotFound:
            raise exceptions.CommandError(
                'The Keystone catalog has no %s endpoint: vmbeam-api must be '
                'deployed and registered there (see "openstack endpoint '
                'list --service %s").' % (SERVICE_TYPE, SERVICE_TYPE))
        except ks_exceptions.ConnectFailure as exc:
            raise exceptions.CommandError(
                'vmbeam-api does not answer (%s): check that it runs and '
                'that its endpoint in the catalog is right.' % exc)
        if response.status_code >= 400:
            raise exceptions.CommandError('%s (HTTP %d)' % (
                _error_message(response), response.status_code))
        return response.json()

    def rejuvenate_host(self, host, concurrency=None, mover=None):
        body = {key: value for key, value in (
            ('concurrency', concurrency), ('mover', mover))
            if value is not None}
        return self._request('POST', '/v1/hosts/%s/rejuvenations' % host,
                             body)['rejuvenation']

    def status(self, host):
        return self._request('GET', '/v1/hosts/%s' % host)['host']

    def rejuvenate_server(self, server_id, mover=None):
        body = {'mover': mover} if mover else {}
        return self._request('POST', '/v1/servers/%s/rejuvenation' %
                             server_id, body)['rejuvenation']

    def server_id(self, name_or_id):
        """A server's ID; a name is looked up in Nova as the caller.

        An ID goes to vmbeam-api as it is: vmbeam-api finds the server
        with its own service user, so an operator whose role the policy
        grants needs no right to see other projects' servers in Nova.
        """
        if uuidutils.is_uuid_like(name_or_id):
            return name_or_id
        try:
            return self._compute().find_server(
                name_or_id, ignore_missing=False, all_projects=True).id
        except sdk_exceptions.ResourceNotFound:
            raise exceptions.CommandError(
                'No server with a name or ID of %r exists. Check it with '
                '"openstack server list --all-projects".' % name_or_id)
        except sdk_exceptions.DuplicateResource:
            raise exceptions.CommandError(
                'More than one server is named %r. Give its ID.' %
                name_or_id)


def _error_message(response):
    """vmbeam-api's (or keystonemiddleware's) message of an error reply."""
    try:
        error = response.json().get('error') or {}
    except ValueError:
        error = {}
    if isinstance(error, dict) and error.get('message'):
        return error['message']
    return response.text[:200] or response.reason
