"""What the VMBeam commands talk to: the vmbeam RPC API, Nova, Placement.

The RPC API (docs/design/rpc.md) rides on Nova's message bus, so the
client needs the bus address (transport URL) that nova.conf holds; the
caller's Keystone session is used to ask Nova and Placement whether the
caller is an admin, where a server runs and whether that host runs
VMBeamDriver, before anything is sent to a host. Every failure becomes an
osc_lib CommandError whose message names the fix; nothing has changed on
any host when one is raised, except where the message says otherwise.
"""

import os
import uuid

from openstack import exceptions as sdk_exceptions
from osc_lib import exceptions
from oslo_config import cfg
from oslo_context import context as oslo_context
import oslo_messaging as messaging
from oslo_messaging import opts as messaging_opts
from oslo_utils import importutils

from nova_vmbeam import exception
from nova_vmbeam.osc import defaults
from nova_vmbeam import rpc
from nova_vmbeam.rpc import api as rpc_api

#: seconds a single move (server migrate --rejuvenate) may take
MOVE_TIMEOUT = rpc_api.DEFAULT_TIMEOUT
#: Nova's exchange on the bus (nova.rpc sets it as the default); a
#: control_exchange in the config file wins
NOVA_EXCHANGE = 'nova'
#: 2.53: hypervisor ids are compute node UUIDs, which are the UUIDs of
#: their resource providers, and each hypervisor names its service host
HYPERVISORS_MICROVERSION = '2.53'
#: 1.6: resource provider traits
PLACEMENT_MICROVERSION = '1.6'

_UNLISTED_OPTS = (('oslo_messaging._metrics.client', 'oslo_messaging_metrics'),
                  ('oslo_messaging._tracing.client', 'oslo_messaging_tracing'))

_HOST_FIX = ('nova-compute with [DEFAULT] compute_driver = '
             'vmbeam.VMBeamDriver must run on %(host)s')


def load_transport(transport_url=None, config_file=None):
    """An RPC transport to Nova's message bus, and where its URL came from.

    The URL is ``transport_url`` if given, else [DEFAULT] transport_url of
    ``config_file`` (default /etc/nova/nova.conf when readable). The
    config file also brings the bus's other settings (TLS, heartbeats in
    [oslo_messaging_rabbit]) and its control_exchange.
    """
    files = []
    if config_file:
        if not os.access(config_file, os.R_OK):
            raise exceptions.CommandError(
                'Cannot read %s (--os-vmbeam-config-file). Give a readable '
                'nova.conf, or the bus address with '
                '--os-vmbeam-transport-url.' % config_file)
        files = [config_file]
    elif not transport_url and os.access(defaults.CONFIG_FILE, os.R_OK):
        files = [defaults.CONFIG_FILE]
    conf = cfg.ConfigOpts()
    # oslo.messaging's [DEFAULT] options (transport_url, control_exchange)
    # are registered before the transport exists: its driver takes the
    # exchange when it is made.
    for group, opts in messaging_opts.list_opts():
        conf.register_opts(opts, group=group)
    # oslo.messaging 18 reads these groups from the transport's conf but
    # registers them on cfg.CONF only, and list_opts() leaves them out; its
    # own ConfFixture registers them for a private conf the same way.
    for module, group in _UNLISTED_OPTS:
        opts = getattr(importutils.try_import(module), group, None)
        if opts is not None:
            conf.register_opts(opts, group=group)
    conf.set_default('control_exchange', NOVA_EXCHANGE)
    try:
        conf(args=[], project='nova', default_config_files=files)
        parsed = messaging.TransportURL.parse(conf, transport_url)
    except (cfg.Error, messaging.InvalidTransportURL) as exc:
        raise exceptions.CommandError(
            'Bad message bus settings (%s): %s. Give Nova\'s [DEFAULT] '
            'transport_url with --os-vmbeam-transport-url.' % (
                transport_url and 'transport URL' or
                ', '.join(files) or 'no config file', exc))
    if not parsed.hosts and parsed.transport != 'fake':
        raise exceptions.CommandError(
            'No message bus address: %s. Give Nova\'s [DEFAULT] '
            'transport_url with --os-vmbeam-transport-url (or '
            'OS_VMBEAM_TRANSPORT_URL), or a nova.conf that has it with '
            '--os-vmbeam-config-file.' % (
                '%s has no [DEFAULT] transport_url' % files[0] if files
                else '%s is not readable' % defaults.CONFIG_FILE))
    source = 'transport URL' if transport_url else files[0]
    return rpc_api.get_transport(conf, url=parsed), source


def request_context(auth_ref):
    """The caller, as the compute host logs it: user, project, roles.

    No token travels: the host does not act as the caller, it only
    records who asked.
    """
    if auth_ref is None:
        return oslo_context.RequestContext(request_id=_request_id())
    roles = list(auth_ref.role_names or [])
    return oslo_context.RequestContext(
        user_id=auth_ref.user_id, user_name=auth_ref.username,
        project_id=auth_ref.project_id, project_name=auth_ref.project_name,
        user_domain_id=auth_ref.user_domain_id,
        project_domain_id=auth_ref.project_domain_id,
        roles=roles, is_admin='admin' in roles, request_id=_request_id())


def _request_id():
    return 'req-%s' % uuid.uuid4()


def _message(exc):
    """A remote error's own message, without the host's traceback."""
    if exc.args and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc).split('\n', 1)[0]


class VMBeamClient:
    """The VMBeam commands' client (``client_manager.vmbeam``)."""

    def __init__(self, client_manager, transport_url=None, config_file=None,
                 rpc_timeout=defaults.RPC_TIMEOUT):
        self.client_manager = client_manager
        self.transport_url = transport_url
        self.config_file = config_file
        self.rpc_timeout = rpc_timeout
        self._api = None
        self._bus = None
        self._hypervisors = None

    # --- the vmbeam RPC API --------------------------------------------------

    @property
    def api(self):
        if self._api is None:
            transport, self._bus = load_transport(self.transport_url,
                                                  self.config_file)
            self._api = rpc_api.VMBeamAPI(transport, timeout=self.rpc_timeout)
        return self._api

    def context(self):
        return request_context(self.client_manager.auth_ref)

    def _call(self, host, method, *args, **kwargs):
        api = self.api
        try:
            return getattr(api, method)(self.context(), host, *args,
                                        **kwargs)
        except messaging.MessagingTimeout:
            raise exceptions.CommandError(self._not_answering(host, method))
        except exception.RejuvenationRunning as exc:
            raise exceptions.CommandError(
                '%s: %s Follow it with "openstack hypervisor rejuvenation '
                'show %s".' % (host, _message(exc), host))
        except exception.VMBeamError as exc:
            raise exceptions.CommandError('%s: %s' % (host, _message(exc)))
        except messaging.MessagingException as exc:
            raise exceptions.CommandError(
                'The message bus (%s) failed for %s: %s. Check the '
                'transport URL and that the bus runs.' % (
                    self._bus, host, exc))

    def _not_answering(self, host, method):
        seconds = self.api.timeout if method != 'rejuvenate_instance' \
            else MOVE_TIMEOUT
        state = ''
        for hyp in self._hypervisors or ():
            if (hyp.get('service') or {}).get('host') == host:
                state = ' (Nova reports its hypervisor %s as %s, %s)' % (
                    hyp.get('hypervisor_hostname'), hyp.get('state'),
                    hyp.get('status'))
        started = ''
        if method in ('rejuvenate_host', 'rejuvenate_instance'):
            started = (' If it is only slow, the request may still have '
                       'started: see "openstack hypervisor rejuvenation '
                       'show %s".' % host)
        return ('Host %s did not answer the VMBeam RPC call %s within %.0f '
                's over %s%s. %s, connected to this message bus: check '
                '"openstack compute service list --host %s" and its '
                'nova-compute log.%s' % (
                    host, method, seconds, self._bus, state,
                    _HOST_FIX % {'host': host}, host,
                    started))

    def rejuvenate_host(self, host, concurrency=None, mover=None):
        return self._call(host, 'rejuvenate_host', concurrency=concurrency,
                          mover=mover)

    def rejuvenate_instance(self, host, instance_uuid, mover=None):
        return self._call(host, 'rejuvenate_instance', instance_uuid,
                          mover=mover, timeout=MOVE_TIMEOUT)

    def status(self, host):
        return self._call(host, 'status')

    # --- Nova and Placement --------------------------------------------------

    @property
    def compute(self):
        return self.client_manager.compute

    def hypervisors(self):
        """Nova's compute nodes; refuses a caller who is not an admin."""
        if self._hypervisors is None:
            response = self.compute.get(
                '/os-hypervisors/detail', raise_exc=False,
                microversion=HYPERVISORS_MICROVERSION)
            if response.status_code in (401, 403):
                raise exceptions.CommandError(
                    'Only an admin may rejuvenate hypervisors: Nova refused '
                    'to list them for user %s in project %s (HTTP %d). Use '
                    'credentials with the admin role.' % (
                        self._who() + (response.status_code,)))
            if response.status_code != 200:
                raise exceptions.CommandError(
                    'Nova could not list the hypervisors (HTTP %d: %s).' % (
                        response.status_code, response.text[:200]))
            self._hypervisors = response.json()['hypervisors']
        return self._hypervisors

    def _who(self):
        ref = self.client_manager.auth_ref
        if ref is None:
            return ('?', '?')
        return (ref.username or ref.user_id,
                ref.project_name or ref.project_id)

    def _traits(self, provider_uuid):
        placement = self.client_manager.sdk_connection.placement
        response = placement.get(
            '/resource_providers/%s/traits' % provider_uuid,
            raise_exc=False, microversion=PLACEMENT_MICROVERSION)
        if response.status_code == 404:
            return set()
        if response.status_code != 200:
            raise exceptions.CommandError(
                'Placement could not list the traits of resource provider '
                '%s (HTTP %d: %s).' % (provider_uuid, response.status_code,
                                       response.text[:200]))
        return set(response.json()['traits'])

    def check_host(self, host):
        """Make sure ``host`` is a compute host that runs VMBeamDriver.

        The caller must be an admin (listing hypervisors is admin-only in
        Nova's default policy); the host must have a compute node; its
        resource provider must carry the trait that VMBeamDriver reports
        (rpc.HOST_TRAIT). Returns the host's hypervisors.
        """
        nodes = [hyp for hyp in self.hypervisors()
                 if (hyp.get('service') or {}).get('host') == host]
        if not nodes:
            known = sorted({(hyp.get('service') or {}).get('host') or '?'
                            for hyp in self.hypervisors()})
            raise exceptions.CommandError(
                'No compute host %r in Nova (hosts: %s). Give a host as '
                '"openstack compute service list --service nova-compute" '
                'names it.' % (host, ', '.join(known) or 'none'))
        for node in nodes:
            if rpc.HOST_TRAIT not in self._traits(node['id']):
                raise exceptions.CommandError(
                    'Host %s is not a VMBeam host: its compute node %s has '
                    'no %s trait in Placement. Run nova-compute there with '
                    '[DEFAULT] compute_driver = vmbeam.VMBeamDriver (it '
                    'reports the trait), or pick a VMBeam host: "openstack '
                    'resource provider list --required %s" (osc-placement).'
                    % (host, node.get('hypervisor_hostname'),
                       rpc.HOST_TRAIT, rpc.HOST_TRAIT))
        return nodes

    def find_server(self, name_or_id):
        """A server and its host, checked to be on a VMBeam host."""
        self.hypervisors()   # an admin, before a hidden host reads as None
        try:
            server = self.compute.find_server(name_or_id,
                                              ignore_missing=False)
        except sdk_exceptions.ResourceNotFound:
            raise exceptions.CommandError(
                'No server with a name or ID of %r exists. Check it with '
                '"openstack server list --all-projects".' % name_or_id)
        except sdk_exceptions.DuplicateResource:
            raise exceptions.CommandError(
                'More than one server is named %r. Give its ID.' %
                name_or_id)
        if not server.compute_host:
            raise exceptions.CommandError(
                'Server %s is on no compute host (status %s): only a '
                'server running on a VMBeam host can be rejuvenated.' % (
                    server.id, server.status))
        self.check_host(server.compute_host)
        return server
