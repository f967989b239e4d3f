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

"""Hypervisor lifetimes independent of the process that starts them.

Every generation's daemons (libvirtd and virtlogd of a colocated
generation, the nested sibling's L0 daemon) and vmbeam-pagemoverd, which
owns guest RAM, are started by the orchestrator, that is from inside
nova-compute. A session of their own (start_new_session) keeps them out of
nova-compute's process group and session, but not out of its cgroup: a
``systemctl restart nova-compute`` (KillMode=control-group), a container
restart or a ``cgroup.kill`` ends every process in that cgroup, and with
them every guest. This module starts them outside it, in one place:

* where systemd is PID 1 (``/run/systemd/system`` exists), as a transient
  *service* of its own, ``systemd-run --unit vmbeam-<group>-<stamp>``. Not
  ``systemd-run --scope``: a scope is registered by its caller and runs
  the command as the caller's own child, in the caller's mount namespace,
  with the caller's sandbox (a nova-compute.service with PrivateTmp=,
  ProtectSystem=, a capability bounding set or NoNewPrivileges= would
  pass all of it on to the hypervisor), and its output goes where the
  caller's does. A service is forked by PID 1 from a clean context, is
  shown by ``systemctl status`` with its main process, and leaves nothing
  of itself in nova-compute. KillMode=process, as libvirt's own
  libvirtd.service: stopping the unit (or its main process dying) ends the
  main process only, never a QEMU or virtlogd left in its cgroup.
  UNTESTED on a systemd host: the machines these tests run on have no
  systemd; only the command line is unit-tested.
* elsewhere, by moving the process into a cgroup of its own,
  ``<hierarchy>/vmbeam/<group>`` (e.g. ``vmbeam/gen2-1a2b3c4d``), in every
  hierarchy in which the starter is not at the root: the unified (v2)
  one and the v1 hierarchies in V1_HIERARCHIES. The process is moved
  before it runs anything: it starts behind a gate (a constant ``sh``
  line that waits for one line on stdin, then execs the real argv), is
  moved, then let go, so whatever it forks is born in its own cgroup.
  QEMUs started later by that libvirtd inherit its cgroups where libvirt
  creates none (name=systemd, pids); where it creates them (the unified
  hierarchy, cpu, memory, ...), libvirt 11 puts them under ``/machine``
  at the root of the hierarchy, not under its own cgroup.

The v1 memory hierarchy is left alone on purpose: a kill never goes
through it, and v1 leaves the pages a process charged where they were
when the process moves (memory.move_charge_at_immigrate is deprecated),
so moving the daemons would only escape a limit someone set on purpose.

The writes to cgroupfs are privsep entrypoints (privsep/cgroups.py);
spawn itself runs in the privsep daemon (privsep/daemons.py), whose
children the daemons are.
"""

import dataclasses
import hashlib
import os
import subprocess
import time

from oslo_log import log as logging

from nova_vmbeam.privsep import cgroups
from nova_vmbeam.qemu import procfs

LOG = logging.getLogger(__name__)

SYSTEMD_DIR = '/run/systemd/system'
PARENT = cgroups.PARENT
#: the v1 hierarchies a daemon is taken out of, besides the unified one
V1_HIERARCHIES = ('name=systemd', 'pids')
UNIFIED = cgroups.UNIFIED

# Waits for one line on stdin, then execs its arguments: constant, no
# value is ever put into it (they follow as "$@").
GATE = ('/bin/sh', '-c', 'read -r _ || exit 1; exec "$@" </dev/null',
        'vmbeam-gate')


def systemd_booted():
    """True where systemd is PID 1 (what sd_booted() checks)."""
    return os.path.isdir(SYSTEMD_DIR)


def group_name(name, key):
    """A group's name: ``name`` and a hash of ``key`` (its state path).

    Two state directories (a test's, a demo's, the node's) may each run a
    gen1 at once; the hash keeps their groups apart.
    """
    return '%s-%s' % (name, hashlib.sha256(key.encode()).hexdigest()[:8])


@dataclasses.dataclass(frozen=True)
class Hierarchy:
    """One cgroup hierarchy and a process's cgroup in it."""

    key: str            # '' (unified) or as /proc/<pid>/cgroup names it
    mount_point: str
    path: str           # the process's cgroup, relative to the mount

    @property
    def at_root(self):
        return self.path == '/'

    def directory(self, *parts):
        return os.path.join(self.mount_point, self.path.lstrip('/'), *parts)

    def group_directory(self, group):
        return os.path.join(self.mount_point, PARENT, group)

    def holds(self, path):
        """True if ``path`` is this cgroup or one below it."""
        return self.path == '/' or path == self.path or \
            path.startswith(self.path.rstrip('/') + '/')


def hierarchies(pid='self', keys=None, mounts=None):
    """The hierarchies of interest and ``pid``'s cgroup in each.

    ``keys``: which ones (default: the unified one and V1_HIERARCHIES);
    those not mounted here, or whose mounted subtree does not hold the
    process, are left out.
    """
    keys = (UNIFIED,) + V1_HIERARCHIES if keys is None else keys
    mounts = procfs.cgroup_mounts() if mounts is None else mounts
    found = []
    for key, path in procfs.cgroups(pid).items():
        if key not in keys:
            continue
        mount = cgroups.mount_for(key, mounts)
        if mount is None:
            continue
        root = mount.root.rstrip('/')
        if root:
            if path != root and not path.startswith(root + '/'):
                continue
            path = path[len(root):] or '/'
        found.append(Hierarchy(key, mount.mount_point, path))
    return found


# --- taking processes out of the starter's cgroups -------------------------

def detach(pid, group):
    """Move ``pid`` out of this process's cgroups into ``group``'s.

    Only the hierarchies in which this process is not at the root: at the
    root no kill of "its cgroup" is possible, and nothing is moved. Where
    systemd is PID 1 nothing is done (spawn starts a unit instead). A
    failure to move is logged loudly, not raised: the daemon runs, as it
    did before, but dies with its starter.
    """
    if systemd_booted():
        return []
    keys = [h.key for h in hierarchies() if not h.at_root]
    if not keys:
        return []
    try:
        moved = cgroups.move_into(pid, group, keys)
    except (OSError, ValueError) as exc:
        LOG.warning('could not move pid %d out of the cgroup of its starter '
                    '(%s): it will die with it: %s', pid,
                    ', '.join(h.directory() for h in hierarchies()
                              if not h.at_root), exc)
        return []
    LOG.debug('pid %d moved to %s', pid, ', '.join(moved))
    return moved


def keep_out(pid, group):
    """Move ``pid`` into ``group`` where it is inside this process's cgroup.

    For a process someone else started (an L1 VM's QEMU, started by the L0
    libvirtd): left where it is unless a kill of this process's cgroup
    would reach it. Where systemd is PID 1 that is only reported: the
    cgroup tree is systemd's to write.
    """
    theirs = {h.key: h.path for h in hierarchies(pid)}
    keys = [h.key for h in hierarchies() if not h.at_root and
            h.key in theirs and h.holds(theirs[h.key])]
    if not keys:
        return []
    if systemd_booted():
        LOG.warning('pid %d runs in the cgroup of its starter (%s): it will '
                    'die with it', pid, ', '.join(keys))
        return []
    try:
        return cgroups.move_into(pid, group, keys)
    except (OSError, ValueError) as exc:
        LOG.warning('could not move pid %d out of the cgroup of its starter: '
                    'it will die with it: %s', pid, exc)
        return []


# --- starting daemons ------------------------------------------------------

def unit_name(group):
    """A transient unit's name: the group and a start stamp.

    Unique per start: a unit whose main process died may stay loaded
    while what it left in its cgroup (virtlogd) runs.
    """
    return 'vmbeam-%s-%x' % (group, time.time_ns() // 1000000)


def systemd_run_argv(unit, argv, service_type='simple', log_path=None,
                     pid_file=None):
    """The systemd-run command line that starts ``argv`` as ``unit``."""
    command = ['systemd-run', '--unit', unit,
               '--description', 'nova-vmbeam %s' % unit,
               '--collect', '--quiet',
               '--service-type', service_type,
               '--property', 'KillMode=process']
    if pid_file:
        command += ['--property', 'PIDFile=%s' % pid_file]
    if log_path:
        command += ['--property', 'StandardOutput=append:%s' % log_path,
                    '--property', 'StandardError=append:%s' % log_path]
    return command + ['--'] + list(argv)


class Spawned:
    """A started daemon: its process, or the systemd-run that started it."""

    def __init__(self, popen, unit=None):
        self.popen = popen
        self.unit = unit

    @property
    def pid(self):
        return self.popen.pid

    @property
    def returncode(self):
        return self.popen.poll()

    def failed(self):
        """True once the start is known to have failed.

        The daemon itself exited; or, started as a unit, systemd-run
        exited with an error (it exits 0 once the unit has started).
        """
        code = self.popen.poll()
        return code is not None and (self.unit is None or code != 0)

    def wait(self, timeout=None):
        return self.popen.wait(timeout)

    def communicate(self, timeout=None):
        return self.popen.communicate(timeout=timeout)


def spawn(group, argv, log_path=None, service_type='simple', pid_file=None):
    """Start ``argv`` so that it outlives this process and its cgroup.

    ``group``: the daemon's group (group_name); ``log_path``: where its
    output goes (else it is captured: ``Spawned.communicate``);
    ``service_type``/``pid_file``: the unit's Type= (``forking`` for a
    daemon that forks itself away) and PIDFile=, under systemd.
    """
    cgroups.check_group(group)
    log = open(log_path, 'ab') if log_path else None
    output = log if log is not None else subprocess.PIPE
    try:
        if systemd_booted():
            unit = unit_name(group)
            popen = subprocess.Popen(
                systemd_run_argv(unit, argv, service_type, log_path,
                                 pid_file),
                stdin=subprocess.DEVNULL, stdout=output, stderr=output)
            LOG.info('started unit %s', unit)
            return Spawned(popen, unit)
        popen = subprocess.Popen(
            list(GATE) + list(argv), stdin=subprocess.PIPE, stdout=output,
            stderr=output, start_new_session=True)
        try:
            detach(popen.pid, group)
            popen.stdin.write(b'go\n')
        finally:
            # Closed without a line the gate exits, running nothing.
            try:
                popen.stdin.close()
            except BrokenPipeError:
                pass
            popen.stdin = None
        return Spawned(popen)
    finally:
        if log is not None:
            log.close()
