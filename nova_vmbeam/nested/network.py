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

"""The private L0 network of the L1 VMs: one Linux bridge, no DHCP.

Addresses are static: the host has the first one, generation N a fixed one
(given to its kernel on the command line), so nothing has to be leased or
discovered.
"""

import ipaddress

from nova_vmbeam import exception
from nova_vmbeam.privsep import network as privsep_network

FIRST_L1 = 10


class NetworkError(exception.VMBeamError):
    msg_fmt = 'Nested sibling network: %(reason)s. %(fix)s'


def _net(conf):
    try:
        net = ipaddress.ip_network(conf.vmbeam_nested.network_cidr)
    except ValueError as exc:
        raise NetworkError(reason=str(exc),
                           fix='Set [vmbeam_nested] network_cidr to a '
                               'network such as 192.168.223.0/24.')
    if net.version != 4 or net.num_addresses < 16:
        raise NetworkError(reason='%s is not an IPv4 network of 16 '
                           'addresses or more' % net,
                           fix='Set [vmbeam_nested] network_cidr to a /28 '
                               'or larger IPv4 network.')
    return net


def host_address(conf):
    """(address, prefix length) of the host on the bridge."""
    net = _net(conf)
    return str(net.network_address + 1), net.prefixlen


def l1_address(conf, generation):
    """(address, prefix length) of generation ``generation``'s L1."""
    net = _net(conf)
    slots = net.num_addresses - FIRST_L1 - 2
    return (str(net.network_address + FIRST_L1 + generation % slots),
            net.prefixlen)


def ensure_bridge(conf):
    """Create the bridge with the host's address if it is missing."""
    bridge = conf.vmbeam_nested.bridge
    address, prefix = host_address(conf)
    failed = privsep_network.ensure_bridge(bridge, address, prefix)
    if failed:
        raise NetworkError(reason='cannot create bridge %s: %s' %
                           (bridge, failed),
                           fix='Load the bridge module, or create the '
                               'bridge yourself.')
    return bridge


def remove_bridge(conf):
    privsep_network.remove_bridge(conf.vmbeam_nested.bridge)
