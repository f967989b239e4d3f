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

"""Options of the [vmbeam_nested] group: the nested sibling."""

from oslo_config import cfg

from nova_vmbeam.conf import groups

nested_group = cfg.OptGroup(
    'vmbeam_nested',
    title='VMBeam nested sibling options',
    help='The nested sibling ([vmbeam] sibling_kind = nested) runs each '
         'hypervisor generation as a VM (L1) on this host (L0), booted '
         'from the L1 appliance ("vmbeam appliance build"). Guests (L2) '
         'run inside the active L1 with their RAM in L0 pools attached to '
         'the L1 as ivshmem-plain devices, so moving them to a fresh L1 '
         'copies no RAM.')

nested_opts = [
    cfg.IntOpt('l1_memory_mib',
               default=1536,
               min=512,
               help='RAM of each L1 VM, in MiB. Guest RAM is not part of '
                    'it (it lives in L0 pools mapped through PCI BARs); it '
                    'holds the appliance\'s root filesystem (about 190 '
                    'MiB, in RAM), libvirtd and the guests\' QEMU '
                    'processes.'),
    cfg.IntOpt('l1_vcpus',
               default=1,
               min=1,
               help='vCPUs of each L1 VM. Under TCG each vCPU is a host '
                    'thread: on a small host one leaves room for the '
                    'rest.'),
    cfg.StrOpt('appliance_dir',
               help='Directory of a built L1 appliance (holding '
                    'manifest.json, from "vmbeam appliance build"). Unset: '
                    'the appliance is built, or taken from the cache, on '
                    'first use.'),
    cfg.StrOpt('bridge',
               default='vmbeam-nbr0',
               help='Linux bridge of the private L0 network that joins the '
                    'L1 VMs to each other and to the host; created (with '
                    'the first address of network_cidr) when missing. '
                    'Guests move between L1s over it and the host reaches '
                    'each L1\'s libvirtd on it, both in TLS with client '
                    'certificates of this node\'s own CA; still, do not '
                    'add a physical interface to it.'),
    cfg.StrOpt('network_cidr',
               default='192.168.223.0/24',
               help='Private L0 network of the L1 VMs. The host takes the '
                    'first address; generation N takes address 10 + (N '
                    'mod (size - 12)).'),
    cfg.StrOpt('bar_mapping',
               default='auto',
               choices=[('auto', 'the mapping that keeps L2 RAM write-back '
                         'at the least cost (nova_vmbeam/nested/caching.py):'
                         ' resource2 when the L1 runs under TCG or under KVM '
                         'on Intel; dax under KVM on AMD, where no BAR file '
                         'is write-back'),
                        ('resource2', 'the BAR as sysfs maps it: uncached '
                         'in the L1 page tables (under KVM, whether L2 RAM '
                         'is really uncached depends on the CPU: see '
                         'docs/design/nested.md)'),
                        ('resource2_wc', 'the BAR mapped write-combining'),
                        ('dax', 'the pool plugged as virtio-pmem and mapped '
                         'as device-DAX (/dev/daxN.M), which the L1 kernel '
                         'maps as RAM: write-back everywhere. A pool so '
                         'plugged cannot be unplugged: it stays with its L1 '
                         'until the L1 retires, and a deleted guest\'s RAM '
                         'is freed then; each L1 holds at most dax_slots '
                         'pools over its life')],
               help='How the guest\'s QEMU in the L1 maps its RAM: a sysfs '
                    'file of its pool\'s ivshmem BAR, or device-DAX. '
                    'Measure with "vmbeam bench --nested-bandwidth" before '
                    'changing it. Changing it on a node with running '
                    'nested guests is refused (their pools are plugged the '
                    'other way).'),
    cfg.IntOpt('dax_slots',
               default=32,
               min=1,
               max=200,
               help='With bar_mapping = dax: memory-device slots of each '
                    'L1 VM, so the number of guest pools one L1 can hold '
                    'over its life (a pool plugged as virtio-pmem is not '
                    'unplugged before the L1 retires). Each slot costs the '
                    'L1 a little address space only.'),
    cfg.IntOpt('l1_boot_timeout',
               default=600,
               min=10,
               help='Seconds an L1 VM may take to boot and answer on '
                    'libvirt and its guest agent (under TCG the appliance '
                    'takes tens of seconds).'),
    cfg.IntOpt('migration_port_base',
               default=49152,
               min=1024,
               max=65000,
               help='First TCP port of the range (500 ports) a guest\'s '
                    'destination listens on in the target L1 during a '
                    'move; the port is derived from the guest UUID.'),
    cfg.IntOpt('disk_export_port',
               default=10809,
               min=1024,
               max=65535,
               help='TCP port on which L0 serves the guests\' disks to '
                    'the L1s over NBD (qemu-storage-daemon, in TLS, on '
                    'L0\'s address on the L1 network only).'),
    cfg.StrOpt('storage_daemon_binary',
               default='qemu-storage-daemon',
               help='The qemu-storage-daemon that serves guests\' disks '
                    'to the L1s: a name looked up in PATH or an absolute '
                    'path (Debian: qemu-utils).'),
]


def register_opts(conf):
    group = groups.fresh(nested_group)
    conf.register_group(group)
    conf.register_opts(nested_opts, group=group)


def list_opts():
    return {nested_group: nested_opts}
