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

"""Which mapping of its pool keeps L2 RAM write-back in an L1.

Inside an L1, a guest's (L2's) QEMU maps its RAM from its L0 pool, which
is plugged into the L1 in one of two ways:

* the BAR of an ivshmem-plain device, through sysfs: ``resource2`` is
  mapped uncached (UC-) in the L1's page tables, ``resource2_wc``
  write-combining;
* ``dax``: a virtio-pmem-pci device the L1 kernel turns into device-DAX
  (``/dev/daxN.M``), which it maps as RAM, write-back. It costs more: the
  L1 needs memory-device slots, the pool a 2 MiB head, and a pool plugged
  so cannot be unplugged (QEMU refuses): it stays mapped by that L1 until
  the L1 retires, and is freed then (docs/design/nested.md, "The DAX
  path").

Whether a page attribute of the L1 reaches the memory depends on what runs
the L1:

* TCG: page attributes are not emulated; every mapping is as fast as RAM.
* KVM on Intel (EPT): for RAM-backed guest memory (the BAR is RAM at L0)
  KVM sets the "ignore PAT" bit in its EPT entries and the memory type
  write-back, unless the VM has non-coherent DMA (an assigned device
  without snoop control; an L1 has none). The L1's UC- is overridden:
  write-back.
* KVM on AMD (NPT): the effective type combines L0's and the L1's PAT, so
  UC- stays uncached and WC stays write-combining: reads are uncached
  either way. Only a mapping that the L1 kernel treats as RAM (device-DAX)
  is write-back there: ``auto`` picks ``dax``.

docs/design/nested.md has the measurements and how to repeat them on KVM
hardware (``vmbeam bench --nested-bandwidth``).
"""

import dataclasses

#: [vmbeam_nested] bar_mapping values naming a sysfs file of the BAR
BAR_FILES = ('resource2', 'resource2_wc')
#: [vmbeam_nested] bar_mapping value: the pool as device-DAX in the L1
DAX = 'dax'
AUTO = 'auto'
INTEL, AMD, OTHER = 'intel', 'amd', 'other'
_VENDORS = {'GenuineIntel': INTEL, 'AuthenticAMD': AMD, 'HygonGenuine': AMD}
#: where an L2's RAM starts in a pool plugged as device-DAX: the L1 kernel
#: keeps its info block in the first 2 MiB (measured: the data offset of
#: a namespace in mode=ram with align=2M)
DAX_HEAD_BYTES = 2 << 20
#: the page size of the L1's dax devices
DAX_ALIGN_BYTES = 2 << 20


@dataclasses.dataclass(frozen=True)
class RamMapping:
    """How L2 QEMUs in an L1 map their pools, and what that gives them."""

    #: resource2 or resource2_wc (a sysfs file of the ivshmem BAR), or
    #: DAX (a virtio-pmem device, as /dev/daxN.M)
    file: str
    #: whether L2 RAM is write-back (as fast as RAM) through it
    write_back: bool
    #: why: accelerator, CPU, and the rule applied
    reason: str

    @property
    def dax(self):
        return self.file == DAX

    @property
    def pool_head_bytes(self):
        """Bytes of a guest's pool before its RAM."""
        return DAX_HEAD_BYTES if self.dax else 0


def cpu_vendor(path='/proc/cpuinfo'):
    """INTEL, AMD or OTHER: the vendor of this host's CPUs."""
    with open(path) as f:
        for line in f:
            key, _, value = line.partition(':')
            if key.strip() == 'vendor_id':
                return _VENDORS.get(value.strip(), OTHER)
    return OTHER


def choose(setting, accel, vendor):
    """The RamMapping for [vmbeam_nested] bar_mapping = ``setting``.

    ``accel`` is what runs the L1 VMs ('kvm' or 'tcg'), ``vendor`` the host
    CPU's (cpu_vendor()). ``auto`` picks the mapping that keeps L2 RAM
    write-back at the least cost: a BAR file where the BAR is write-back
    (TCG, KVM on Intel), device-DAX where it is not (KVM on AMD and other
    CPUs). A mapping named in the setting is taken as the operator's
    choice, with what it gives.
    """
    if setting == DAX:
        return RamMapping(DAX, True, 'device-DAX: the L1 kernel maps the '
                          'pool as RAM, write-back under any accelerator')
    if accel != 'kvm':
        rule = ('the L1 runs under %s, which does not emulate page '
                'attributes: any mapping is write-back' % accel)
        return RamMapping(BAR_FILES[0] if setting == AUTO else setting,
                          True, rule)
    if vendor == INTEL:
        rule = ('KVM on Intel (EPT) ignores the L1\'s page attributes for '
                'RAM-backed memory: write-back whatever the L1 maps')
        return RamMapping(BAR_FILES[0] if setting == AUTO else setting,
                          True, rule)
    known = 'AMD (NPT)' if vendor == AMD else 'this CPU (not Intel)'
    rule = ('KVM on %s combines the L1\'s page attributes with L0\'s: '
            'the BAR is uncached or write-combining in the L2, not '
            'write-back' % known)
    if setting == AUTO:
        return RamMapping(DAX, True, rule + '; device-DAX is, as the L1 '
                          'kernel maps it as RAM')
    return RamMapping(setting, False, rule + '; set bar_mapping = auto '
                      'or dax for device-DAX, which is')


def for_conf(conf, accel):
    """The RamMapping of this host's L1s under ``accel``, by its config."""
    return choose(conf.vmbeam_nested.bar_mapping, accel, cpu_vendor())
