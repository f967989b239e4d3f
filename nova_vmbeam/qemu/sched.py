"""CPU priority for the threads that carry a guest's switchover.

While a guest is paused for its switchover, only a handful of threads do
work: the QEMU main loops and migration threads of source and destination,
the libvirt daemons relaying monitor commands, and the mover itself. On a
host whose cores are busy with other guests' vCPUs every wake-up of those
threads waits for a time slice, and the guest's downtime grows with the
number of guests. Raising their priority (nice) for the few milliseconds
of the switchover lets them run at once. The source's vCPU threads are
raised too: QEMU stops the guest by waiting for each of them to leave the
guest code, and a vCPU thread still waiting for a time slice stretches the
pause. The destination's vCPU threads keep their priority: once it runs,
they must not starve the other guests.
"""

import os
import threading

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

# QEMU names vCPU threads "CPU <n>/<accel>" (with -name debug-threads=on).
_VCPU_PREFIX = 'CPU '


def _threads(pid, vcpus=False):
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
        if vcpus or not comm.startswith(_VCPU_PREFIX):
            found.append(int(tid))
    return found


# Threads shared by concurrent moves (the daemons, this process) are
# boosted once and restored when the last move using them ends:
# tid -> [moves holding it, its nice before].
_held = {}
_held_lock = threading.Lock()


class Boost:
    """Context manager: raise the priority of ``pids``' threads, restore.

    ``vcpu_pids``: processes whose vCPU threads are raised as well.

    ``nice`` 0 does nothing. Threads that cannot be changed (no
    CAP_SYS_NICE, or gone) are skipped: a boost is an optimisation, never
    a reason for a move to fail.
    """

    def __init__(self, pids, nice, vcpu_pids=()):
        self.pids = sorted({p for p in pids if p})
        self.vcpu_pids = {p for p in vcpu_pids if p}
        self.nice = nice
        self._tids = []

    def __enter__(self):
        if self.nice == 0:
            return self
        with _held_lock:
            for pid in self.pids:
                for tid in _threads(pid, vcpus=pid in self.vcpu_pids):
                    if tid in _held:
                        _held[tid][0] += 1
                        self._tids.append(tid)
                        continue
                    try:
                        old = os.getpriority(os.PRIO_PROCESS, tid)
                        if old > self.nice:
                            os.setpriority(os.PRIO_PROCESS, tid, self.nice)
                    except OSError as exc:
                        LOG.debug('no priority boost for thread %d: %s',
                                  tid, exc)
                        continue
                    _held[tid] = [1, old]
                    self._tids.append(tid)
        return self

    def __exit__(self, *exc_info):
        with _held_lock:
            for tid in self._tids:
                entry = _held[tid]
                entry[0] -= 1
                if entry[0] == 0:
                    del _held[tid]
                    try:
                        os.setpriority(os.PRIO_PROCESS, tid, entry[1])
                    except OSError:
                        pass   # the thread is gone
            self._tids = []
        return False
