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

"""What vmbeam-api asks Nova and Placement, with its own credentials.

The caller is authorized by policy before anything here runs; these
lookups use the service user of [nova], so that a role granted by policy
needs no admin role in Nova too.
"""

from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import loading as ks_loading

from nova_vmbeam.api import errors
from nova_vmbeam import rpc

#: 2.53: hypervisor ids are compute node UUIDs (= resource provider UUIDs)
#: and each hypervisor names its service host
NOVA_MICROVERSION = '2.53'
#: 1.6: resource provider traits
PLACEMENT_MICROVERSION = '1.6'


class Cloud:
    """Nova and Placement adapters on one keystoneauth session."""

    def __init__(self, conf):
        auth = ks_loading.load_auth_from_conf_options(conf, 'nova')
        session = ks_loading.load_session_from_conf_options(
            conf, 'nova', auth=auth)
        self.nova = ks_loading.load_adapter_from_conf_options(
            conf, 'nova', session=session, auth=auth)
        self.placement = ks_loading.load_adapter_from_conf_options(
            conf, 'placement', session=session, auth=auth)

    def _get(self, adapter, path, microversion, what):
        try:
            response = adapter.get(path, raise_exc=False,
                                   microversion=microversion)
        except ks_exceptions.ClientException as exc:
            raise errors.BadGateway(
                reason='%s could not be asked (%s): check the [%s] '
                       'section of vmbeam-api\'s configuration.' % (
                           what, exc, 'nova' if adapter is self.nova
                           else 'placement'))
        if response.status_code in (401, 403):
            raise errors.BadGateway(
                reason='%s refused vmbeam-api\'s service user (HTTP %d): '
                       'give the [nova] user the admin role.' % (
                           what, response.status_code))
        return response

    def hypervisors(self, host):
        """The compute nodes of service host ``host``; 404 if none."""
        response = self._get(self.nova, '/os-hypervisors/detail',
                             NOVA_MICROVERSION, 'Nova')
        if response.status_code != 200:
            raise errors.BadGateway(
                reason='Nova could not list the hypervisors (HTTP %d).' %
                       response.status_code)
        hypervisors = response.json()['hypervisors']
        nodes = [hyp for hyp in hypervisors
                 if (hyp.get('service') or {}).get('host') == host]
        if not nodes:
            raise errors.NotFound(
                reason='No compute host %r in Nova. Give a host as "openstack '
                       'compute service list --service nova-compute" names '
                       'it.' % host)
        return nodes

    def traits(self, provider_uuid):
        response = self._get(
            self.placement, '/resource_providers/%s/traits' % provider_uuid,
            PLACEMENT_MICROVERSION, 'Placement')
        if response.status_code == 404:
            return set()
        if response.status_code != 200:
            raise errors.BadGateway(
                reason='Placement could not list the traits of resource '
                       'provider %s (HTTP %d).' % (provider_uuid,
                                                   response.status_code))
        return set(response.json()['traits'])

    def check_vmbeam_host(self, host):
        """404 for a host Nova does not know, 409 for one not VMBeam."""
        for node in self.hypervisors(host):
            if rpc.HOST_TRAIT not in self.traits(node['id']):
                raise errors.Conflict(
                    reason='Host %s is not a VMBeam host: its compute node '
                           '%s has no %s trait in Placement. Run nova-compute '
                           'there with [DEFAULT] compute_driver = '
                           'vmbeam.VMBeamDriver, or pick a host that does.' %
                           (host, node.get('hypervisor_hostname'),
                            rpc.HOST_TRAIT))

    def server(self, server_id):
        """(status, host) of a server; 404 if Nova has none by that ID."""
        response = self._get(self.nova, '/servers/%s' % server_id,
                             NOVA_MICROVERSION, 'Nova')
        if response.status_code == 404:
            raise errors.NotFound(
                reason='No server %s. Give a server ID as "openstack server '
                       'list --all-projects" shows it.' % server_id)
        if response.status_code != 200:
            raise errors.BadGateway(
                reason='Nova could not show server %s (HTTP %d).' % (
                    server_id, response.status_code))
        server = response.json()['server']
        return server['status'], server.get('OS-EXT-SRV-ATTR:host')
