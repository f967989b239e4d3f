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


"""Thread priorities of other users' processes (privsep entrypoints).

The switchover raises the priority of QEMU's and the daemons' threads
(qemu/sched.py decides which and when). QEMU runs as another user and the
daemons as root, so the changes need CAP_SYS_NICE; each call takes a whole
batch of thread ids, so that a switchover costs one call to raise and one
to restore. What is restored is what was read here before raising:
plain integers, (nice, policy, priority).
"""

import os

from nova_vmbeam.privsep import vmbeam_pctxt

# SCHED_FIFO priority of a realtime boost: the lowest, above every normal
# thread and below the kernel's own realtime threads.
_FIFO_PRIORITY = 1


# A boosted thread may start a thread or a process meanwhile (libvirtd
# starting a QEMU, QEMU an I/O worker): it must not pass the boost on for
# good, so boosted threads carry SCHED_RESET_ON_FORK, which starts what
# they create, threads included, at SCHED_OTHER and nice 0.
_RESET = os.SCHED_RESET_ON_FORK


def _raise_nice(tid, nice, reset=_RESET):
    old = (os.getpriority(os.PRIO_PROCESS, tid),
           os.sched_getscheduler(tid),
           os.sched_getparam(tid).sched_priority)
    if old[1] == os.SCHED_OTHER:
        os.sched_setscheduler(tid, os.SCHED_OTHER | reset,
                              os.sched_param(0))
    if old[0] > nice:
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    return old


def _restore_nice(tid, old):
    os.setpriority(os.PRIO_PROCESS, tid, old[0])
    os.sched_setscheduler(tid, old[1], os.sched_param(old[2]))


def _raise_fifo(tid, _nice, reset=_RESET):
    old = (os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority)
    if old[0] == os.SCHED_OTHER:
        os.sched_setscheduler(tid, os.SCHED_FIFO | reset,
                              os.sched_param(_FIFO_PRIORITY))
    return old


def _restore_fifo(tid, old):
    os.sched_setscheduler(tid, old[0], os.sched_param(old[1]))


def _inherited(tid, policy, nice):
    """True if ``tid`` carries the boost of ``policy`` (passed on to it)."""
    current = os.sched_getscheduler(tid)
    if policy == 'realtime':
        return (current == os.SCHED_FIFO and os.sched_getparam(
            tid).sched_priority == _FIFO_PRIORITY)
    return (current == os.SCHED_OTHER and
            os.getpriority(os.PRIO_PROCESS, tid) == nice)


def _reset(tid):
    os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
    os.setpriority(os.PRIO_PROCESS, tid, 0)


#: policy -> (raise one thread, restore it)
POLICIES = {'nice': (_raise_nice, _restore_nice),
            'realtime': (_raise_fifo, _restore_fifo)}


def _check_tids(tids):
    for tid in tids:
        if not isinstance(tid, int) or isinstance(tid, bool) or tid <= 0:
            raise ValueError('not a thread id: %r' % (tid,))


@vmbeam_pctxt.entrypoint
def raise_threads(policy, nice, threads):
    """Boost ``threads`` ((tid, reset_on_fork) pairs) by ``policy``.

    Returns {tid: what to restore} for those raised; a thread that cannot
    be (gone, or refused by the kernel) is left out.
    """
    raise_one = POLICIES[policy][0]
    if not isinstance(nice, int) or not -20 <= nice <= 19:
        raise ValueError('not a nice value: %r' % (nice,))
    _check_tids(tid for tid, _reset_flag in threads)
    raised = {}
    for tid, reset in threads:
        try:
            raised[tid] = raise_one(tid, nice, _RESET if reset else 0)
        except OSError:
            continue
    return raised


@vmbeam_pctxt.entrypoint
def restore_threads(policy, olds):
    """Put back what raise_threads read: ``olds`` is (tid, old) pairs."""
    restore_one = POLICIES[policy][1]
    _check_tids(tid for tid, _old in olds)
    for tid, old in olds:
        try:
            restore_one(tid, tuple(int(v) for v in old))
        except OSError:
            pass   # the thread is gone


@vmbeam_pctxt.entrypoint
def reset_inherited(policy, nice, tids):
    """Set back to normal every thread of ``tids`` carrying the boost."""
    _check_tids(tids)
    for tid in tids:
        try:
            if _inherited(tid, policy, nice):
                _reset(tid)
        except OSError:
            pass   # the thread is gone
