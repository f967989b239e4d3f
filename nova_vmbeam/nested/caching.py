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

"""Which mapping of the ivshmem BAR keeps L2 RAM write-back in an L1.

Inside an L1, a guest's (L2's) QEMU maps its RAM from the BAR of the
ivshmem device that holds the guest's L0 pool, through sysfs: ``resource2``
is mapped uncached (UC-) in the L1's page tables, ``resource2_wc``
write-combining. Whether that page attribute reaches the memory depends on
what runs the L1:

* TCG: page attributes are not emulated; every mapping is as fast as RAM.
* KVM on Intel (EPT): for RAM-backed guest memory (the BAR is RAM at L0)
  KVM sets the "ignore PAT" bit in its EPT entries and the memory type
  write-back, unless the VM has non-coherent DMA (an assigned device
  without snoop control; an L1 has none). The L1's UC- is overridden:
  write-back.
* KVM on AMD (NPT): the effective type combines L0's and the L1's PAT, so
  UC- stays uncached and WC stays write-combining: reads are uncached
  either way. Only a mapping that the L1 kernel treats as RAM (a DAX
  device) is write-back there; ``resource2_wc`` is the better of the two
  BAR files meanwhile, for streaming writes.

docs/design/nested.md has the measurements and how to repeat them on KVM
hardware (``vmbeam bench --nested-bandwidth``).
"""

import dataclasses

#: [vmbeam_nested] bar_mapping values naming a sysfs file of the BAR
BAR_FILES = ('resource2', 'resource2_wc')
AUTO = 'auto'
INTEL, AMD, OTHER = 'intel', 'amd', 'other'
_VENDORS = {'GenuineIntel': INTEL, 'AuthenticAMD': AMD, 'HygonGenuine': AMD}


@dataclasses.dataclass(frozen=True)
class BarMapping:
    """The BAR file L2 QEMUs map, and what that gives them."""

    #: the sysfs file of the BAR: resource2 or resource2_wc
    file: str
    #: whether L2 RAM is write-back (as fast as RAM) through it
    write_back: bool
    #: why: accelerator, CPU, and the rule applied
    reason: str


def cpu_vendor(path='/proc/cpuinfo'):
    """INTEL, AMD or OTHER: the vendor of this host's CPUs."""
    with open(path) as f:
        for line in f:
            key, _, value = line.partition(':')
            if key.strip() == 'vendor_id':
                return _VENDORS.get(value.strip(), OTHER)
    return OTHER


def choose(setting, accel, vendor):
    """The BarMapping for [vmbeam_nested] bar_mapping = ``setting``.

    ``accel`` is what runs the L1 VMs ('kvm' or 'tcg'), ``vendor`` the host
    CPU's (cpu_vendor()). ``auto`` picks the file that keeps L2 RAM
    write-back where one does, and says so when none does; a file named
    in the setting is taken as the operator's choice, with what it gives.
    """
    if accel != 'kvm':
        rule = ('the L1 runs under %s, which does not emulate page '
                'attributes: any mapping is write-back' % accel)
        return BarMapping(BAR_FILES[0] if setting == AUTO else setting,
                          True, rule)
    if vendor == INTEL:
        rule = ('KVM on Intel (EPT) ignores the L1\'s page attributes for '
                'RAM-backed memory: write-back whatever the L1 maps')
        return BarMapping(BAR_FILES[0] if setting == AUTO else setting,
                          True, rule)
    known = 'AMD (NPT)' if vendor == AMD else 'this CPU (not Intel)'
    rule = ('KVM on %s combines the L1\'s page attributes with L0\'s: '
            'the BAR is uncached or write-combining in the L2, not '
            'write-back; only a DAX mapping in the L1 would be, and none '
            'is built' % known)
    return BarMapping('resource2_wc' if setting == AUTO else setting,
                      False, rule)
