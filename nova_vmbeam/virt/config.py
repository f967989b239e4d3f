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

"""The guest XML hook: VMBeam-ready RAM in Nova's domain config.

Nova's config classes know no <qemu:commandline>, so the guest config
object becomes a VMBeamConfigGuest, which writes the same RAM backend
arguments as the engine (nova_vmbeam.libvirt.config) into the domain.
"""

from lxml import etree
from nova.virt.libvirt import config as vconfig

from nova_vmbeam import guest as guest_mod
from nova_vmbeam.libvirt import config as engine_config

QEMU_NS = engine_config.QEMU_NS


class VMBeamConfigGuest(vconfig.LibvirtConfigGuest):
    """A guest config whose domain carries extra QEMU arguments."""

    qemu_args = ()

    def format_dom(self):
        root = super().format_dom()
        if not self.qemu_args:
            return root
        # lxml cannot add a namespace prefix to an existing element: the
        # root is rebuilt with xmlns:qemu, keeping its children.
        domain = etree.Element(root.tag, attrib=dict(root.attrib),
                               nsmap={'qemu': QEMU_NS})
        domain.text = root.text
        domain.extend(list(root))
        commandline = etree.SubElement(domain, '{%s}commandline' % QEMU_NS)
        for value in self.qemu_args:
            etree.SubElement(commandline, '{%s}arg' % QEMU_NS, value=value)
        return domain


def use_pool_ram(guest_config, path):
    """Make ``guest_config`` (from Nova) keep its RAM in pool file ``path``.

    One backend is all the guest's RAM, so Nova's guest NUMA cells, memory
    tuning and its own huge page or file backing are dropped (the pool's
    filesystem gives the huge pages; ram.plan() refused topologies this
    would change). Locked memory is kept.
    """
    guest_config.__class__ = VMBeamConfigGuest
    if guest_config.cpu is not None:
        guest_config.cpu.numa = None
    guest_config.numatune = None
    backing = guest_config.membacking
    if backing is not None:
        backing.hugepages = []
        backing.filesource = False
        backing.sharedaccess = False
        backing.allocateimmediate = False
        backing.discard = False
        if backing.sharedpages and not backing.locked:
            guest_config.membacking = None
    ram_mib = guest_config.memory // 1024
    guest_config.qemu_args = engine_config.ram_backend_args(
        guest_mod.RamBacking(guest_mod.RAM_FILE, path), ram_mib)
    return guest_config
