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


"""Host bridges reaching into an L1: its guests' NICs (uplinks).

A guest's domain names the host bridge its NIC is on (``<interface
type='bridge'><source bridge='B'/>``), as Nova's libvirt driver writes it
for a VIF plugged on this host. Inside an L1 there is no such bridge, so
before a guest with such a NIC starts in an L1 (booted there, or as a
move's destination):

* L0 hot-plugs a virtio NIC into the L1 VM on host bridge B (its MAC is
  derived from the generation and B, so a second ensure finds it);
* in the L1, through the guest agent, a bridge named B is created and
  that NIC made its port. The guest's tap then joins B in the L1 as it
  would on the host, and its frames reach the host's B through the
  uplink. After a move, QEMU's announce (RARP) teaches the host bridge
  the guest's new port.

The L1 itself takes no part on B: B carries no address there, answers no
ARP, has IPv6 off, and drops (strict reverse-path filter: no route leads
back through B) every packet that arrives on it for the L1's own
addresses, which would otherwise be taken for the L1's address on its
own network; frames between the guests and the uplink are bridged, never
routed, so the filter does not touch them. The L1's libvirtd listens on
its own network's address only (/init). Nothing on a guest network
reaches the L1.
"""

import hashlib
import os
import xml.etree.ElementTree as ET

import libvirt
from oslo_log import log as logging

from nova_vmbeam import exception
from nova_vmbeam.libvirt import config as libvirt_config
from nova_vmbeam.nested import agent

LOG = logging.getLogger(__name__)

# Linux's limit on interface names (IFNAMSIZ - 1).
_NAME_MAX = 15
# In the L1 (busybox sh): find the NIC by its MAC (hotplug takes a
# moment), make bridge B if missing, the NIC its port, B silent.
_SCRIPT = '''
mac=%(mac)s
bridge=%(bridge)s
dev=
i=0
while [ -z "$dev" ] && [ $i -lt 100 ]; do
    for path in /sys/class/net/*; do
        if [ "$(cat "$path/address")" = "$mac" ]; then dev=${path##*/}; fi
    done
    [ -n "$dev" ] || usleep 100000
    i=$((i + 1))
done
if [ -z "$dev" ]; then echo "no NIC with address $mac" >&2; exit 1; fi
if [ ! -e "/sys/class/net/$bridge" ]; then
    ip link add name "$bridge" type bridge || exit 1
fi
echo 8 > "/proc/sys/net/ipv4/conf/$bridge/arp_ignore"
echo 1 > "/proc/sys/net/ipv4/conf/$bridge/rp_filter"
echo 1 > "/proc/sys/net/ipv6/conf/$bridge/disable_ipv6" 2>/dev/null
ip link set "$dev" master "$bridge" && ip link set "$dev" up &&
    ip link set "$bridge" up || exit 1
echo "$dev"
'''


def bridges_of(domain_xml):
    """Host bridges the NICs of ``domain_xml`` are on, in order."""
    found = []
    for nic in ET.fromstring(domain_xml).iterfind(
            "devices/interface[@type='bridge']"):
        source = nic.find('source')
        name = source.get('bridge') if source is not None else None
        if name and name not in found:
            found.append(name)
    return found


def mac(generation, bridge):
    """The L1 uplink's MAC: locally administered, fixed per (gen, B)."""
    digest = hashlib.sha256(('%d/%s' % (generation, bridge)).encode())
    return '52:54:01:' + ':'.join('%02x' % b for b in digest.digest()[:3])


def _check_name(bridge):
    if not bridge or len(bridge) > _NAME_MAX or not all(
            c.isalnum() or c in '-_.' for c in bridge):
        raise exception.InvalidInput(reason=(
            'bridge %r of a guest NIC is not an interface name (up to %d '
            'letters, digits, "-", "_" or ".")' % (bridge, _NAME_MAX)))
    if not os.path.isdir('/sys/class/net/%s/bridge' % bridge):
        raise exception.InvalidInput(reason=(
            'a guest NIC is on bridge %s, which is not a bridge of this '
            'host; plug the VIF (create the bridge) before the guest '
            'starts' % bridge))


def ensure(sibling, bridges):
    """Every bridge in ``bridges`` reaches into ``sibling``'s L1.

    Idempotent. InvalidInput for a name that is not a host bridge (before
    anything changes); VMBeamError if the L1 cannot take the uplink.
    """
    for bridge in bridges:
        _check_name(bridge)
    if not bridges:
        return
    dom = sibling.l1_domain()
    if dom is None:
        raise exception.VMBeamError('L1 VM %s does not run' %
                                    sibling.domain_name)
    plugged = set(
        nic.get('address') for nic in ET.fromstring(dom.XMLDesc(0)).iterfind(
            'devices/interface/mac'))
    for bridge in bridges:
        address = mac(sibling.generation, bridge)
        if address not in plugged:
            devices = ET.Element('devices')
            nic = libvirt_config.add_bridge_nic(devices, bridge, address)
            libvirt_config.sub_element(
                nic, 'address', type='pci', domain='0x0000', bus='0x00',
                slot='0x%02x' % sibling.free_pci_slot('an uplink'),
                function='0x0')
            try:
                dom.attachDeviceFlags(libvirt_config.to_xml(nic),
                                      libvirt.VIR_DOMAIN_AFFECT_LIVE)
            except libvirt.libvirtError as exc:
                raise exception.VMBeamError(
                    'cannot plug an uplink on bridge %s into L1 VM %s: %s'
                    % (bridge, sibling.domain_name, exc))
        try:
            dev = agent.sh(dom, _SCRIPT % {'mac': address, 'bridge': bridge},
                           timeout=30).strip()
        except agent.AgentError as exc:
            raise exception.VMBeamError(
                'L1 VM %s did not bridge its uplink on %s: %s' %
                (sibling.domain_name, bridge, exc))
        if address not in plugged:
            LOG.info('%s: host bridge %s reaches into the L1 (%s)',
                     sibling.name, bridge, dev)
