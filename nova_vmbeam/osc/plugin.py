"""OSC plugin module for VMBeam (entry point openstack.cli.extension).

The openstack command loads the commands of the group openstack.vmbeam.v1
and builds ``client_manager.vmbeam`` with make_client(). The options added
here tell the commands how to reach the compute hosts' vmbeam RPC API: on
Nova's own message bus, whose address is a secret kept in nova.conf, not
in the Keystone catalog.
"""

import importlib
import warnings

from osc_lib import utils

from nova_vmbeam.osc import defaults

API_NAME = 'vmbeam'
API_VERSION_OPTION = 'os_vmbeam_api_version'
DEFAULT_API_VERSION = '1'
API_VERSIONS = {'1': 'nova_vmbeam.osc.client.VMBeamClient'}


def _client_module():
    """nova_vmbeam.osc.client, imported when a VMBeam command runs.

    Every openstack command imports this plugin module; the RPC client
    (oslo.messaging) is imported only by the commands that use it. Its
    import pulls in oslo.service, which warns about a concurrency backend
    that nothing here uses (threads only): that warning is not the
    operator's business.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', module=r'oslo_service\.')
        return importlib.import_module('nova_vmbeam.osc.client')


def make_client(instance):
    """The VMBeam client of an openstack command run (a ClientManager)."""
    options = instance._cli_options.config
    client_mod = _client_module()
    return client_mod.VMBeamClient(
        instance,
        transport_url=options.get('vmbeam_transport_url'),
        config_file=options.get('vmbeam_config_file'),
        rpc_timeout=float(options.get('vmbeam_rpc_timeout_s') or
                          defaults.RPC_TIMEOUT))


def build_option_parser(parser):
    """The openstack command's global VMBeam options."""
    parser.add_argument(
        '--os-vmbeam-api-version',
        metavar='<vmbeam-api-version>',
        default=utils.env('OS_VMBEAM_API_VERSION'),
        help='VMBeam API version, default=%s (Env: OS_VMBEAM_API_VERSION)'
             % DEFAULT_API_VERSION)
    parser.add_argument(
        '--os-vmbeam-transport-url',
        metavar='<transport-url>',
        default=utils.env('OS_VMBEAM_TRANSPORT_URL'),
        help='Transport URL of Nova\'s message bus (nova.conf [DEFAULT] '
             'transport_url), e.g. rabbit://nova:secret@ctl:5672/ . '
             'Default: read from --os-vmbeam-config-file. '
             '(Env: OS_VMBEAM_TRANSPORT_URL)')
    parser.add_argument(
        '--os-vmbeam-config-file',
        metavar='<path>',
        default=utils.env('OS_VMBEAM_CONFIG_FILE'),
        help='A nova.conf to read the message bus settings from '
             '([DEFAULT] transport_url, control_exchange and the '
             '[oslo_messaging_*] sections), default %s when it is '
             'readable. (Env: OS_VMBEAM_CONFIG_FILE)'
             % defaults.CONFIG_FILE)
    parser.add_argument(
        '--os-vmbeam-rpc-timeout',
        # Not "..._timeout": openstack.config would take any option ending
        # so as the HTTP timeout of every API call (api_timeout).
        dest='os_vmbeam_rpc_timeout_s',
        metavar='<seconds>',
        type=float,
        default=utils.env('OS_VMBEAM_RPC_TIMEOUT'),
        help='Seconds a compute host may take to answer a VMBeam RPC call '
             'before it counts as not answering, default %d. '
             '(Env: OS_VMBEAM_RPC_TIMEOUT)' % defaults.RPC_TIMEOUT)
    return parser
