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

"""CPU priority for the threads that carry a guest's switchover.

While a guest is paused for its switchover, only a handful of threads do
work: the QEMU main loops and migration threads of source and destination,
the libvirt daemons relaying monitor commands, and the mover itself. On a
host whose cores are busy with other guests' vCPUs every wake-up of those
threads waits for a time slice, and the guest's downtime grows with the
number of guests. Raising their priority for the few milliseconds of the
switchover lets them run at once: a lower nice value weighs them more
against the vCPUs; SCHED_FIFO lets them preempt the vCPUs outright. The
source's migration thread, started during the switchover, inherits the
boost. The destination's vCPU threads are raised only until it runs
(loading the device state waits for work done on them); once it runs,
they must not starve the other guests. The source's vCPU threads are not
raised: until the guest stops they run its code, and its pause begins
only once they have stopped.

A thread's priority only counts among the threads of its cgroup, and
libvirt puts each guest's QEMU in a cgroup of its own (the cpu controller
then weighs guests, not threads): for those, CpuSharesBoost raises the
weight of the moving guest's cgroups for the switchover. A realtime boost
of a thread in such a cgroup is refused by the kernel (the cgroup has no
realtime budget) and skipped.
"""

import os
import threading

from oslo_log import log as logging

from nova_vmbeam.privsep import sched as privsep_sched
from nova_vmbeam.qemu import procfs

LOG = logging.getLogger(__name__)

# QEMU names vCPU threads "CPU <n>/<accel>" (with -name debug-threads=on).
_VCPU_PREFIX = 'CPU '


def _threads(pid, which='other'):
    """Thread ids of ``pid``: 'other' than vCPU threads, 'vcpus', 'all'."""
    try:
        tids = os.listdir('/proc/%d/task' % pid)
    except OSError:
        return []
    found = []
    for tid in tids:
        try:
            with open('/proc/%d/task/%s/comm' % (pid, tid)) as f:
                comm = f.read().strip()
        except OSError:
            continue
        vcpu = comm.startswith(_VCPU_PREFIX)
        if which == 'all' or (which == 'vcpus') == vcpu:
            found.append(int(tid))
    return found


# Threads shared by concurrent moves (the daemons, this process) are
# boosted once and restored when the last move using them ends:
# tid -> [moves holding it, what to restore].
_held = {}
_held_lock = threading.Lock()

# Processes whose boosted threads pass the boost on to the threads they
# start (pid -> moves holding it); see Boost's ``inherit_pids``.
_inheriting = {}


def _active(policy, nice):
    return policy in privsep_sched.POLICIES and not (
        policy == 'nice' and nice == 0)


class Boost:
    """Context manager: raise the priority of ``pids``' threads, restore.

    ``policy``: 'nice' (to ``nice``), 'realtime' (SCHED_FIFO) or 'off'.
    ``vcpus``: raise the vCPU threads of ``pids`` instead of the others.
    ``inherit_pids``: processes whose boosted threads pass the boost on
    to the threads they start meanwhile (QEMU starts its migration thread
    when the migration starts, and that thread carries the pause); when
    the last boost of such a process ends, every thread of it that still
    carries the boost is set back to normal, so none keeps it for good.

    Other threads started meanwhile are not raised (SCHED_RESET_ON_FORK,
    privsep/sched.py). Threads that cannot be changed (gone, or refused
    by the kernel) are skipped: a boost is an optimisation, never a reason
    for a move to fail. The changes are made by the privsep daemon, one
    call for the whole batch each way.
    """

    def __init__(self, pids, policy, nice=0, vcpus=False, inherit_pids=()):
        self.pids = sorted({p for p in pids if p})
        self.vcpus = vcpus
        self.inherit_pids = {p for p in inherit_pids if p}
        self.policy = policy
        self.nice = nice
        self._tids = []
        self._inheriting = []

    def __enter__(self):
        if not _active(self.policy, self.nice):
            return self
        with _held_lock:
            wanted = []   # (tid, reset on fork) not yet held by any move
            for pid in self.pids:
                reset = True
                if pid in self.inherit_pids:
                    reset = False
                    _inheriting[pid] = _inheriting.get(pid, 0) + 1
                    self._inheriting.append(pid)
                for tid in _threads(pid,
                                    'vcpus' if self.vcpus else 'other'):
                    if tid in _held:
                        _held[tid][0] += 1
                        self._tids.append(tid)
                    else:
                        wanted.append((tid, reset))
            if wanted:
                try:
                    raised = privsep_sched.raise_threads(
                        self.policy, self.nice, wanted)
                except Exception as exc:
                    LOG.debug('no priority boost: %s', exc)
                    raised = {}
                for tid, old in raised.items():
                    _held[tid] = [1, old]
                    self._tids.append(tid)
        return self

    def __exit__(self, *exc_info):
        with _held_lock:
            restore = []
            for tid in self._tids:
                entry = _held[tid]
                entry[0] -= 1
                if not entry[0]:
                    del _held[tid]
                    restore.append((tid, entry[1]))
            inherited = []
            for pid in self._inheriting:
                _inheriting[pid] -= 1
                if _inheriting[pid]:
                    continue
                del _inheriting[pid]
                inherited += [tid for tid in _threads(pid, 'all')
                              if tid not in _held and tid not in self._tids]
            try:
                if restore:
                    privsep_sched.restore_threads(self.policy, restore)
                if inherited:
                    privsep_sched.reset_inherited(self.policy, self.nice,
                                                  inherited)
            except Exception as exc:
                LOG.warning('could not restore thread priorities: %s', exc)
            self._tids = []
            self._inheriting = []
        return False


# libvirt's cpu_shares maximum (cgroup v1 cpu.shares).
_MAX_SHARES = 262144


def shares_factor(policy, nice):
    """How much a guest's cgroup weight is raised for ``policy``.

    The weight ratio of ``nice`` to nice 0 (the kernel's weight table
    grows by about 1.25 per nice step); for realtime, that of nice -20
    (cgroups have no realtime share); 1 for 'off'.
    """
    if policy == 'realtime':
        nice = -20
    elif policy != 'nice':
        return 1
    return round(1.25 ** -nice)


class CpuSharesBoost:
    """Context manager: raise the CPU weight of guests' cgroups, restore.

    A guest's QEMU threads run in a cgroup of the guest's own (libvirt
    puts each domain in one), and the kernel schedules those cgroups
    against each other by their weight: raising the threads' priority
    only orders them within the guest's cgroup. For the switchover, the
    cgroups of the moving guest's source and destination weigh
    ``factor`` times as much as before. Each generation's guests have
    cgroups of their own (libvirt/partition.py), so source and destination
    are raised each in its own; two endpoints found in one cgroup (guests
    started before generations had partitions: two daemons name a domain's
    cgroup alike) raise it once, and it is restored through whichever of
    them still exists.
    Endpoints without a cgroup and failures are skipped, as with Boost.
    """

    def __init__(self, endpoints, factor):
        self.endpoints = [e for e in endpoints if e is not None]
        self.factor = factor
        self._raised = []   # [(endpoints sharing the cgroup, old shares)]

    def __enter__(self):
        if self.factor <= 1:
            return self
        groups = {}
        for endpoint in self.endpoints:
            try:
                key = procfs.cpu_cgroup(endpoint.pid)
            except Exception:
                key = None
            groups.setdefault(key or id(endpoint), []).append(endpoint)
        for members in groups.values():
            endpoint = members[0]
            try:
                shares = endpoint.cpu_shares()
                if not shares:
                    continue
                endpoint.set_cpu_shares(min(shares * self.factor,
                                            _MAX_SHARES))
            except Exception as exc:
                LOG.debug('no CPU shares boost for %s: %s',
                          getattr(endpoint, 'name', endpoint), exc)
                continue
            self._raised.append((members, shares))
        return self

    def __exit__(self, *exc_info):
        for members, shares in self._raised:
            for endpoint in members:
                try:
                    endpoint.set_cpu_shares(shares)
                    break
                except Exception as exc:
                    # A retired source is gone, and its cgroup with it.
                    LOG.debug('CPU shares of %s not restored: %s',
                              getattr(endpoint, 'name', endpoint), exc)
        self._raised = []
        return False
