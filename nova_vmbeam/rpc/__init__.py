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

"""The vmbeam RPC API of a compute host (topic "vmbeam", server = host).

api.py is the client, server.py the endpoint that VMBeamDriver serves from
nova-compute. The contract is in docs/design/rpc.md.
"""

TOPIC = 'vmbeam'

# Version history of the API (bump the minor version for a compatible
# addition, as nova/compute/rpcapi.py does; the client sends each method
# at the lowest version that has it, so a version cap lets vmbeam-api talk
# to compute hosts not yet upgraded):
#
#   1.0 - rejuvenate_host, rejuvenate_instance, status
#
VERSION = '1.0'

#: The trait VMBeamDriver reports on its compute node's resource provider:
#: what marks a host that serves this API (the openstack CLI checks it in
#: Placement; flavors can require it to land guests on VMBeam hosts).
HOST_TRAIT = 'CUSTOM_VMBEAM'
