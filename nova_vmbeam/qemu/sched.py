"""CPU priority for the threads that carry a guest's switchover.

While a guest is paused for its switchover, only a handful of threads do
work: the QEMU main loops and migration threads of source and destination,
the libvirt daemons relaying monitor commands, and the mover itself. On a
host whose cores are busy with other guests' vCPUs every wake-up of those
threads waits for a time slice, and the guest's downtime grows with the
number of guests. Raising their priority for the few milliseconds of the
switchover lets them run at once: a lower nice value weighs them more
against the vCPUs; SCHED_FIFO lets them preempt the vCPUs outright. The
source's vCPU threads are raised too: QEMU stops the guest by waiting for
each of them to leave the guest code, and a vCPU thread still waiting for
a time slice stretches the pause; stopped, they sleep. The destination's
vCPU threads keep their priority: once it runs, they must not starve the
other guests.
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
# tid -> [moves holding it, what to restore].
_held = {}
_held_lock = threading.Lock()

# SCHED_FIFO priority of a realtime boost: the lowest, above every normal
# thread and below the kernel's own realtime threads.
_FIFO_PRIORITY = 1


# A boosted thread may start a thread or a process meanwhile (libvirtd
# starting a QEMU, QEMU an I/O worker): it must not pass the boost on for
# good, so boosted threads carry SCHED_RESET_ON_FORK, which starts what
# they create, threads included, at SCHED_OTHER and nice 0.
_RESET = os.SCHED_RESET_ON_FORK


def _raise_nice(tid, nice):
    old = (os.getpriority(os.PRIO_PROCESS, tid),
           os.sched_getscheduler(tid), os.sched_getparam(tid))
    if old[1] == os.SCHED_OTHER:
        os.sched_setscheduler(tid, os.SCHED_OTHER | _RESET,
                              os.sched_param(0))
    if old[0] > nice:
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    return old


def _restore_nice(tid, old):
    os.setpriority(os.PRIO_PROCESS, tid, old[0])
    os.sched_setscheduler(tid, old[1], old[2])


def _raise_fifo(tid, _nice):
    old = (os.sched_getscheduler(tid), os.sched_getparam(tid))
    if old[0] == os.SCHED_OTHER:
        os.sched_setscheduler(tid, os.SCHED_FIFO | _RESET,
                              os.sched_param(_FIFO_PRIORITY))
    return old


def _restore_fifo(tid, old):
    os.sched_setscheduler(tid, old[0], old[1])


_POLICIES = {'nice': (_raise_nice, _restore_nice),
             'realtime': (_raise_fifo, _restore_fifo)}


class Boost:
    """Context manager: raise the priority of ``pids``' threads, restore.

    ``policy``: 'nice' (to ``nice``), 'realtime' (SCHED_FIFO) or 'off'.
    ``vcpu_pids``: processes whose vCPU threads are raised as well.

    Threads started meanwhile are not raised (see _RESET). Threads that
    cannot be changed (no CAP_SYS_NICE, or gone) are skipped: a boost is
    an optimisation, never a reason for a move to fail.
    """

    def __init__(self, pids, policy, nice=0, vcpu_pids=()):
        self.pids = sorted({p for p in pids if p})
        self.vcpu_pids = {p for p in vcpu_pids if p}
        self.policy = policy
        self.nice = nice
        self._tids = []

    def __enter__(self):
        if self.policy not in _POLICIES or (self.policy == 'nice' and
                                            self.nice == 0):
            return self
        boost, _restore = _POLICIES[self.policy]
        with _held_lock:
            for pid in self.pids:
                for tid in _threads(pid, vcpus=pid in self.vcpu_pids):
                    if tid in _held:
                        _held[tid][0] += 1
                        self._tids.append(tid)
                        continue
                    try:
                        old = boost(tid, self.nice)
                    except OSError as exc:
                        LOG.debug('no priority boost for thread %d: %s',
                                  tid, exc)
                        continue
                    _held[tid] = [1, old]
                    self._tids.append(tid)
        return self

    def __exit__(self, *exc_info):
        if not self._tids:
            return False
        _boost, restore = _POLICIES[self.policy]
        with _held_lock:
            for tid in self._tids:
                entry = _held[tid]
                entry[0] -= 1
                if entry[0] == 0:
                    del _held[tid]
                    try:
                        restore(tid, entry[1])
                    except OSError:
                        pass   # the thread is gone
            self._tids = []
        return False
