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

from oslo_log import log as logging

from nova_vmbeam.privsep import vmbeam_pctxt
from nova_vmbeam.qemu import procfs

LOG = logging.getLogger(__name__)

#: the cgroup (in each hierarchy) under which every group is made
PARENT = 'vmbeam'
#: the unified (v2) hierarchy's key, as /proc/<pid>/cgroup names it
UNIFIED = ''
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


@vmbeam_pctxt.entrypoint
def remove_group(group):
    """Remove ``vmbeam/<group>`` in every hierarchy where it is empty.

    True when none is left; a group that still holds a process (a QEMU
    that outlived its daemon in name=systemd or pids) stays and says so.
    """
    check_group(group)
    left = []
    for mount in procfs.cgroup_mounts():
        directory = os.path.join(mount.mount_point, PARENT, group)
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            left.append(directory)
    if left:
        LOG.info('cgroups %s still hold processes; left in place',
                 ', '.join(left))
    return not left
