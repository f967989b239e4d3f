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
  under machine.slice, which systemd creates on demand. UNTESTED: the
  machines the tests run on have no systemd. There the machine (and its
  scope unit) keeps its name ``qemu-<id>-<name>``: machined refuses a
  second machine of one name, so a destination whose daemon hands out the
  source's id fails to start and the move rolls back.

make() and remove() are the only writes to cgroupfs here; they need root
and take typed arguments only, so that they can become privsep
entrypoints (issue 16, part 1) as they are.
"""

import errno
import os
import re
import xml.etree.ElementTree as ET

from oslo_log import log as logging

from nova_vmbeam.qemu import procfs

LOG = logging.getLogger(__name__)

#: libvirt's default partition, the parent of every generation's
PARENT = '/machine'
#: the start of a generation's partition name below PARENT
PREFIX = 'vmbeam-'
#: what libvirt appends to a partition's cgroup where systemd is not used
SUFFIX = '.partition'

_LEAF = re.compile(r'^vmbeam-[a-z0-9][a-z0-9-]{0,62}$')

# The v1 cpuset files a new cpuset cgroup starts empty in: no task may
# join it until they are set, so they are copied from the parent (as
# libvirt does for the cgroups it makes itself).
_CPUSET_INHERITED = ('cpuset.cpus', 'cpuset.mems')


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


# --- the cgroupfs writes (root; privsep entrypoints to be) -----------------

def _hierarchies(mounts):
    """The mounted hierarchies libvirt makes guest cgroups in.

    The unified one and every v1 hierarchy with a controller; not a named
    v1 hierarchy without controllers (name=systemd), where libvirt never
    makes a directory.
    """
    for mount in mounts:
        if mount.fstype == 'cgroup2':
            yield mount
        elif mount.fstype == 'cgroup' and not any(
                option.startswith('name=') for option in mount.options):
            yield mount


def _make_cgroup(mount, path):
    """mkdir ``path`` below ``mount``; True if it was made now."""
    directory = os.path.join(mount.mount_point, path.lstrip('/'))
    try:
        os.mkdir(directory, 0o755)
    except FileExistsError:
        return False
    if mount.fstype == 'cgroup' and 'cpuset' in mount.options:
        parent = os.path.dirname(directory)
        for name in _CPUSET_INHERITED:
            with open(os.path.join(parent, name)) as f:
                value = f.read().strip()
            with open(os.path.join(directory, name), 'w') as f:
                f.write(value)
    return True


def _delegate_controllers(mount, path):
    """Let the cgroups below ``path`` (v2) use the controllers it has.

    On cgroup v2 a child only gets the controllers its parent enables in
    cgroup.subtree_control; libvirt enables them in the partition for the
    guest's cgroup, but only if the partition has them itself. A
    controller that cannot be enabled (held by threaded children, say) is
    left out, as libvirt leaves it out.
    """
    directory = os.path.join(mount.mount_point, path.lstrip('/'))
    try:
        with open(os.path.join(directory, 'cgroup.controllers')) as f:
            controllers = f.read().split()
    except OSError:
        return
    for controller in controllers:
        try:
            with open(os.path.join(directory, 'cgroup.subtree_control'),
                      'w') as f:
                f.write('+%s' % controller)
        except OSError as exc:
            LOG.debug('controller %s not enabled below %s: %s', controller,
                      directory, exc)


def make(partition, mounts=None):
    """Create ``partition``'s cgroup in each hierarchy; the new directories.

    Also /machine where it does not exist yet (libvirt makes it only for
    guests of the default partition). Idempotent: a daemon restarted, or
    a generation found running, makes it again without harm.
    """
    path = cgroup_path(partition)
    mounts = procfs.cgroup_mounts() if mounts is None else mounts
    made = []
    for mount in _hierarchies(mounts):
        # (cgroup, its parent): a cgroup made now gets the controllers of
        # its parent, as when libvirt makes one.
        for part, parent in ((PARENT, '/'), (path, PARENT)):
            if not _make_cgroup(mount, part):
                continue
            made.append(os.path.join(mount.mount_point, part.lstrip('/')))
            if mount.fstype == 'cgroup2':
                _delegate_controllers(mount, parent)
                _delegate_controllers(mount, part)
    if made:
        LOG.debug('made cgroups %s', ', '.join(made))
    return made


def _remove_tree(directory):
    """rmdir the cgroups below ``directory``, deepest first, then it.

    Only cgroups without processes go: the kernel refuses to remove one
    that has any (EBUSY), and that one and those above it stay. Returns
    True if ``directory`` is gone.
    """
    for parent, children, _files in os.walk(directory, topdown=False):
        for child in children:
            try:
                os.rmdir(os.path.join(parent, child))
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise
    try:
        os.rmdir(directory)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
            raise
        return False
    return True


def remove(partition, mounts=None):
    """Remove ``partition``'s cgroups where no process is left; True: all.

    For a retired generation, whose QEMUs are all gone. libvirt removes a
    guest's cgroup when the guest stops, but not that of a QEMU that died
    while its daemon was down: such empty cgroups go with the partition.
    A partition that still holds a process stays, and says so; /machine
    stays (other guests use it).
    """
    path = cgroup_path(partition)
    mounts = procfs.cgroup_mounts() if mounts is None else mounts
    left = []
    for mount in _hierarchies(mounts):
        directory = os.path.join(mount.mount_point, path.lstrip('/'))
        if not _remove_tree(directory):
            left.append(directory)
    if left:
        LOG.info('partition cgroups %s still hold guests; left in place',
                 ', '.join(left))
    return not left
