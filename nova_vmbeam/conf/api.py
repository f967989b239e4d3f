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

"""Options of vmbeam-api: [vmbeam_api], and how it reaches Nova and
Placement ([nova], [placement]; keystoneauth's options)."""

from keystoneauth1 import loading as ks_loading
from keystonemiddleware import auth_token
from oslo_config import cfg
from oslo_messaging import opts as messaging_opts
from oslo_policy import opts as policy_opts
from oslo_utils import importutils

from nova_vmbeam.conf import groups

api_group = cfg.OptGroup(
    'vmbeam_api', title='vmbeam-api, the operator API',
    help='The API service behind "openstack hypervisor rejuvenate". It '
         'authenticates requests with Keystone (keystonemiddleware, '
         '[keystone_authtoken]), authorizes them by policy '
         '([oslo_policy]), and reaches the compute hosts over the vmbeam '
         'RPC API on Nova\'s message bus ([DEFAULT] transport_url).')

nova_group = cfg.OptGroup(
    'nova', title='Nova, as vmbeam-api asks it',
    help='vmbeam-api\'s own credentials and endpoint for Nova: it finds '
         'servers and compute hosts there. The user needs Nova\'s admin '
         'role (the hypervisor list and a server\'s host are admin-only).')

placement_group = cfg.OptGroup(
    'placement', title='Placement, as vmbeam-api asks it',
    help='The endpoint of Placement, asked with the [nova] credentials '
         'whether a host reports the CUSTOM_VMBEAM trait.')

upgrade_opts = [
    cfg.StrOpt('vmbeam',
               help='Cap of the vmbeam RPC API version vmbeam-api sends to '
                    'compute hosts, for a rolling upgrade: set it to the '
                    'version of the oldest nova-vmbeam on a compute host '
                    '(e.g. "1.0"), and unset it once every host is '
                    'upgraded. Unset, the newest version is sent.'),
]

api_opts = [
    cfg.IntOpt('rpc_timeout', default=60, min=1,
               help='Seconds a compute host may take to answer a short '
                    'call (its status, the start of a rejuvenation). A '
                    'rejuvenation itself runs on after the answer.'),
    cfg.IntOpt('move_timeout', default=1800, min=1,
               help='Seconds one server\'s move may take in all (it may '
                    'start the next hypervisor generation first). The '
                    'call is watched with heartbeats '
                    '(heartbeat_timeout), so a host that died is noticed '
                    'long before this.'),
    cfg.IntOpt('heartbeat_timeout', default=30, min=5,
               help='Seconds without a heartbeat from the compute host '
                    'after which a long call is given up '
                    '(oslo.messaging\'s call_monitor_timeout).'),
]


_UNLISTED_MESSAGING_OPTS = (
    ('oslo_messaging._metrics.client', 'oslo_messaging_metrics'),
    ('oslo_messaging._tracing.client', 'oslo_messaging_tracing'))


def register_opts(conf):
    # keystonemiddleware's and oslo.policy's own groups, so that the
    # service's configuration is whole before the middleware is made.
    for group, opts in auth_token.list_opts():
        conf.register_opts(opts, group=group)
    policy_opts.set_defaults(conf)
    # The message bus: Nova's ([DEFAULT] transport_url), on Nova's
    # exchange, where the compute hosts serve the vmbeam RPC API.
    for group, opts in messaging_opts.list_opts():
        conf.register_opts(opts, group=group)
    # oslo.messaging 18 reads these groups from the transport's conf but
    # registers them on cfg.CONF only, and list_opts() leaves them out.
    for module, group in _UNLISTED_MESSAGING_OPTS:
        opts = getattr(importutils.try_import(module), group, None)
        if opts is not None:
            conf.register_opts(opts, group=group)
    conf.set_default('control_exchange', 'nova')
    conf.register_group(groups.fresh(api_group))
    conf.register_opts(api_opts, group=api_group.name)
    conf.register_group(groups.fresh(nova_group))
    ks_loading.register_session_conf_options(conf, nova_group.name)
    ks_loading.register_auth_conf_options(conf, nova_group.name)
    ks_loading.register_adapter_conf_options(conf, nova_group.name)
    conf.set_default('service_type', 'compute', group=nova_group.name)
    # [upgrade_levels] is Nova's group for the same purpose; vmbeam-api
    # runs apart from Nova, so it registers its own option there.
    conf.register_opts(upgrade_opts, group='upgrade_levels')
    conf.register_group(groups.fresh(placement_group))
    ks_loading.register_adapter_conf_options(conf, placement_group.name)
    conf.set_default('service_type', 'placement',
                     group=placement_group.name)


def list_opts():
    nova_opts = (ks_loading.get_session_conf_options() +
                 ks_loading.get_auth_common_conf_options() +
                 ks_loading.get_auth_plugin_conf_options('password') +
                 ks_loading.get_adapter_conf_options())
    return [(api_group, api_opts),
            ('upgrade_levels', upgrade_opts),
            (nova_group, nova_opts),
            (placement_group, ks_loading.get_adapter_conf_options())]
