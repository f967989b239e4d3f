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

"""Resource partitions: each generation's guests in cgroups of their own.

libvirt 11 puts a guest's QEMU in a cgroup named after the guest's
machine name, ``qemu-<id>-<name>`` (virDomainDriverGenerateMachineName),
under the guest's resource partition, ``/machine`` unless the domain XML
says otherwise. Domain ids count from 1 in each daemon and a moving guest
keeps its name, so without more the source and destination of a move (two
generations' daemons) often get the very same cgroup
``/machine/qemu-1-<name>.libvirt-qemu``: what one daemon sets in it (CPU
shares, the devices list, memory limits) applies to the other's QEMU too
(measured on this project's test machines: two generations' guests of one
name, both ``qemu-1-<name>``, in one cgroup).

Nothing in libvirtd's configuration changes the machine name (only the
embedded driver, ``qemu:///embed?root=``, adds a hash of its root), but
every domain may name its partition: ``<resource><partition>``. Each
generation's guests therefore go to a partition of its own,
``/machine/vmbeam-<group>`` (``group``: lifetime.group_name, e.g.
``gen2-1a2b3c4d``, unique per generation and state directory). libvirt
maps it to

* without systemd (cgroup v1 or v2): the cgroup
  ``/machine/vmbeam-<group>.partition`` in each hierarchy, which libvirt
  does not create (only the default ``/machine`` is made on demand): make()
  creates it when the generation starts, remove() when it is retired;
* with systemd-machined: the slice ``machine-vmbeam\\x2d<group>.slice``
  under machine.slice, which systemd creates on demand. There the machine
  (and its scope unit) keeps its name ``qemu-<id>-<name>``, and machined
  refuses a second machine of one name: a destination whose daemon hands
  out its source's id fails to start (MachineExists). libvirt 11.3 has
  used up that id and terminated no machine (it registered none), so
  Host.launch creates the destination again and it gets another id
  (host.machine_exists, LAUNCH_ATTEMPTS; docs/nova-driver.md, "Machine
  names on systemd-machined hosts"). UNTESTED against machined: the
  machines the tests run on have no systemd.

The partition's cgroups are made and removed by the privsep daemon
(privsep/cgroups.py make_partition, remove_partition).
"""

import re
import xml.etree.ElementTree as ET

from oslo_log import log as logging


LOG = logging.getLogger(__name__)

#: libvirt's default partition, the parent of every generation's
PARENT = '/machine'
#: the start of a generation's partition name below PARENT
PREFIX = 'vmbeam-'
#: what libvirt appends to a partition's cgroup where systemd is not used
SUFFIX = '.partition'

_LEAF = re.compile(r'^vmbeam-[a-z0-9][a-z0-9-]{0,62}$')


def name_for(group):
    """The partition of the generation whose daemons run in ``group``."""
    leaf = PREFIX + group
    if not _LEAF.match(leaf):
        raise ValueError('not a vmbeam generation group: %r' % (group,))
    return '%s/%s' % (PARENT, leaf)


def _leaf(partition):
    """The last part of a vmbeam partition; ValueError for any other."""
    if not isinstance(partition, str):
        raise ValueError('not a vmbeam partition: %r' % (partition,))
    parent, _, leaf = partition.rpartition('/')
    if parent != PARENT or not _LEAF.match(leaf):
        raise ValueError('not a vmbeam partition: %r' % (partition,))
    return leaf


def cgroup_path(partition):
    """Where libvirt puts ``partition`` without systemd, in each hierarchy."""
    return '%s/%s%s' % (PARENT, _leaf(partition), SUFFIX)


def slice_name(partition):
    """The systemd slice libvirt puts ``partition``'s guests in.

    Each part of the partition's path becomes a dash-separated part of
    the slice name, with the dashes inside a part escaped (as systemd
    unit names escape them).
    """
    return 'machine-%s.slice' % _leaf(partition).replace('-', '\\x2d')


# --- the domain XML ----------------------------------------------------------

def partition_of(xml):
    """The resource partition ``xml`` names, or None (libvirt: /machine)."""
    return ET.fromstring(xml).findtext('resource/partition')


def with_partition(xml, partition):
    """``xml`` with its guest placed in ``partition``.

    Replaces whatever partition the XML names (a guest's XML from another
    generation names that generation's); other <resource> settings stay.
    """
    domain = ET.fromstring(xml)
    resource = domain.find('resource')
    if resource is None:
        resource = ET.Element('resource')
        # libvirt writes <resource> after the CPU tuning elements; its
        # parser takes the element anywhere below <domain>.
        domain.append(resource)
    element = resource.find('partition')
    if element is None:
        element = ET.Element('partition')
        resource.insert(0, element)
    element.text = partition
    return ET.tostring(domain, encoding='unicode')


def without_partition(xml):
    """``xml`` without a resource partition (libvirt's default, /machine).

    For a guest that leaves for another host, which has partitions of its
    own generations, not this one's.
    """
    domain = ET.fromstring(xml)
    resource = domain.find('resource')
    if resource is None or resource.find('partition') is None:
        return xml
    resource.remove(resource.find('partition'))
    if not len(resource):
        domain.remove(resource)
    return ET.tostring(domain, encoding='unicode')
