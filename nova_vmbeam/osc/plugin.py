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

"""OSC plugin module for VMBeam (entry point openstack.cli.extension).

The openstack command loads the commands of the group openstack.vmbeam.v1
and builds ``client_manager.vmbeam`` with make_client(): a client of
vmbeam-api on the command's own Keystone session, found in the catalog.
"""

from osc_lib import utils

API_NAME = 'vmbeam'
API_VERSION_OPTION = 'os_vmbeam_api_version'
DEFAULT_API_VERSION = '1'
API_VERSIONS = {'1': 'nova_vmbeam.osc.client.VMBeamClient'}


def make_client(instance):
    """The VMBeam client of an openstack command run (a ClientManager)."""
    from nova_vmbeam.osc import client
    return client.VMBeamClient(
        instance.session, compute=lambda: instance.compute,
        interface=instance.interface, region_name=instance.region_name)


def build_option_parser(parser):
    """The openstack command's global VMBeam options."""
    parser.add_argument(
        '--os-vmbeam-api-version',
        metavar='<vmbeam-api-version>',
        default=utils.env('OS_VMBEAM_API_VERSION'),
        help='VMBeam API version, default=%s (Env: OS_VMBEAM_API_VERSION)'
             % DEFAULT_API_VERSION)
    return parser
