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


"""cgroupfs writes, the privileged half of lifetime.py.

A daemon is taken out of its starter's cgroups into ``vmbeam/<group>`` in
each hierarchy named; the group's cgroups are removed when it retires.
Typed arguments only: a pid, a group name matching GROUP, hierarchy keys
looked up among the cgroup file systems mounted here. Nothing else on the
host can be written through them.
"""

import errno
import os
import re
import time

from oslo_log import log as logging

from nova_vmbeam.libvirt import partition as partition_mod
from nova_vmbeam.privsep import vmbeam_pctxt
from nova_vmbeam.qemu import procfs

LOG = logging.getLogger(__name__)

#: the cgroup (in each hierarchy) under which every group is made
PARENT = 'vmbeam'
#: the unified (v2) hierarchy's key, as /proc/<pid>/cgroup names it
UNIFIED = ''
# The v1 cpuset files a new cpuset cgroup starts empty in: no task may
# join it until they are set, so they are copied from the parent (as
# libvirt does for the cgroups it makes itself).
CPUSET_INHERITED = ('cpuset.cpus', 'cpuset.mems')
#: a group's name, as lifetime.group_name makes it
GROUP = re.compile(r'^[a-z0-9][a-z0-9.-]{0,62}$')


def check_group(group):
    if not isinstance(group, str) or not GROUP.match(group):
        raise ValueError('not a vmbeam cgroup name: %r' % (group,))


def mount_for(key, mounts):
    for mount in mounts:
        if key == UNIFIED and mount.fstype == 'cgroup2':
            return mount
        if key != UNIFIED and mount.fstype == 'cgroup' and \
                set(key.split(',')) <= mount.options:
            return mount
    return None


@vmbeam_pctxt.entrypoint
def move_into(pid, group, keys):
    """Move process ``pid`` into ``vmbeam/<group>``; the directories.

    In each hierarchy in ``keys``, making the cgroup first. Typed
    arguments only: a pid, a group name (checked), hierarchy keys (looked
    up here among the mounted cgroup file systems).
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise ValueError('not a pid: %r' % (pid,))
    check_group(group)
    mounts = procfs.cgroup_mounts()
    moved = []
    for key in keys:
        mount = mount_for(key, mounts)
        if mount is None:
            raise ValueError('no cgroup hierarchy %r is mounted' % (key,))
        directory = os.path.join(mount.mount_point, PARENT, group)
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, 'cgroup.procs'), 'w') as f:
            f.write('%d\n' % pid)
        moved.append(directory)
    return moved


#: how long a cgroup whose last processes have exited may wait for them to
#: be reaped (a daemon's helpers become init's zombies when it dies)
REAP_WAIT = 5.0


def _only_exited(directory):
    """True if every process in the cgroup has exited (zombie or gone)."""
    try:
        with open(os.path.join(directory, 'cgroup.procs')) as f:
            pids = [int(pid) for pid in f.read().split()]
    except (OSError, ValueError):
        return False
    return all(procfs.ProcessIdentity.of(pid) is None for pid in pids)


def _rmdir_once_reaped(directory):
    """rmdir a cgroup; True once it is gone, False if a process holds it.

    A zombie still counts as the cgroup's until its parent reaps it: one
    whose parent was the daemon just stopped (virtlogd's first process,
    a QEMU) is reaped by init a moment later. Such a cgroup is tried again
    for up to REAP_WAIT seconds; one with a live process is left at once.
    """
    deadline = time.monotonic() + REAP_WAIT
    while True:
        try:
            os.rmdir(directory)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
        if time.monotonic() > deadline or not _only_exited(directory):
            return False
        time.sleep(0.05)


@vmbeam_pctxt.entrypoint
def remove_group(group):
    """Remove ``vmbeam/<group>`` in every hierarchy where it is empty.

    True when none is left; a group that still holds a process (a QEMU
    that outlived its daemon in name=systemd or pids) stays and says so.
    """
    check_group(group)
    return _remove_each(
        [os.path.join(mount.mount_point, PARENT, group)
         for mount in procfs.cgroup_mounts()],
        _rmdir_once_reaped, 'processes')


def _remove_each(directories, remove, held_by):
    """``remove`` each cgroup directory; True if all went.

    One that stays (it holds ``held_by``) is logged, never an error.
    """
    left = [directory for directory in directories
            if not remove(directory)]
    if left:
        LOG.info('cgroups %s still hold %s; left in place',
                 ', '.join(left), held_by)
    return not left


# --- a generation's guest partition (libvirt/partition.py) -------------------

def _guest_hierarchies(mounts):
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
        for name in CPUSET_INHERITED:
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


def make_partition_in(partition, mounts):
    """Create ``partition``'s cgroup in each hierarchy; the new directories.

    Also /machine where it does not exist yet (libvirt makes it only for
    guests of the default partition). Idempotent: a daemon restarted, or
    a generation found running, makes it again without harm.
    """
    path = partition_mod.cgroup_path(partition)
    made = []
    for mount in _guest_hierarchies(mounts):
        # (cgroup, its parent): a cgroup made now gets the controllers of
        # its parent, as when libvirt makes one.
        for part, parent in ((partition_mod.PARENT, '/'),
                             (path, partition_mod.PARENT)):
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


def remove_partition_in(partition, mounts):
    """Remove ``partition``'s cgroups where no process is left; True: all.

    For a retired generation, whose QEMUs are all gone. libvirt removes a
    guest's cgroup when the guest stops, but not that of a QEMU that died
    while its daemon was down: such empty cgroups go with the partition.
    A partition that still holds a process stays, and says so; /machine
    stays (other guests use it).
    """
    path = partition_mod.cgroup_path(partition)
    return _remove_each(
        [os.path.join(mount.mount_point, path.lstrip('/'))
         for mount in _guest_hierarchies(mounts)],
        _remove_tree, 'guests')


@vmbeam_pctxt.entrypoint
def make_partition(partition):
    """Create a generation's guest partition (see make_partition_in)."""
    return make_partition_in(partition, procfs.cgroup_mounts())


@vmbeam_pctxt.entrypoint
def remove_partition(partition):
    """Remove a retired generation's partition (see remove_partition_in)."""
    return remove_partition_in(partition, procfs.cgroup_mounts())
