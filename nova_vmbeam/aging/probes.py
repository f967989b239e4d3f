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

"""The aging probes shipped with nova-vmbeam (``nova_vmbeam.aging``).

Daemon and QEMU figures come from the orchestrator's health report of the
active generation (``ProbeContext.health``), host figures from /proc and
statvfs. Values are in the probe's ``unit``.
"""

import os
import statistics
import time

import libvirt

from nova_vmbeam.aging import base
from nova_vmbeam.qemu import procfs


def mem_available_kib(path='/proc/meminfo'):
    """The kernel's estimate of memory available without swapping."""
    with open(path) as f:
        for line in f:
            if line.startswith('MemAvailable:'):
                return int(line.split()[1])
    raise ValueError('%s has no MemAvailable line' % path)


class HostFreeMemory(base.ProbeBase):
    """MemAvailable of the host.

    Exhausted at [vmbeam_aging] min_free_memory_mib.
    """

    name = 'host_free_memory'
    unit = 'MiB'
    direction = base.FALLING

    def sample(self, context):
        return base.Sample(mem_available_kib() / 1024.0,
                           float(self.conf.vmbeam_aging.min_free_memory_mib))


class DaemonRss(base.ProbeBase):
    """Resident size of the daemon that hosts the active generation's guests.

    libvirtd (colocated) or the L1 VM (nested): the health report's
    ``daemon``.
    """

    name = 'daemon_rss'
    unit = 'MiB'
    direction = base.RISING

    def sample(self, context):
        health = context.health
        if not health or not health.daemon.rss_kib:
            return None
        return base.Sample(health.daemon.rss_kib / 1024.0,
                           float(self.conf.vmbeam_aging.daemon_rss_limit_mib))


class DaemonFds(base.ProbeBase):
    """Open descriptors of the daemon that hosts the guests (see DaemonRss).

    Exhausted at its RLIMIT_NOFILE unless [vmbeam_aging] daemon_fds_limit
    is set.
    """

    name = 'daemon_fds'
    unit = 'fds'
    direction = base.RISING

    def sample(self, context):
        health = context.health
        if not health or not health.daemon.fds:
            return None
        limit = self.conf.vmbeam_aging.daemon_fds_limit or \
            procfs.open_files_limit(health.daemon.pid)
        if not limit:
            return None   # unlimited: descriptors cannot run out
        return base.Sample(float(health.daemon.fds), float(limit))


class QemuOverhead(base.ProbeBase):
    """The largest private memory beyond guest RAM over the guests' QEMUs.

    A rejuvenation starts every guest's QEMU afresh, so a leaking QEMU is
    cured by it too. The largest, not the sum: guests come and go, and the
    sum would read every boot as growth.
    """

    name = 'qemu_overhead'
    unit = 'MiB'
    direction = base.RISING

    def sample(self, context):
        health = context.health
        overheads = [g.overhead_kib for g in
                     (health.guests.values() if health else ())
                     if g.overhead_kib]
        if not overheads:
            return None
        return base.Sample(
            max(overheads) / 1024.0,
            float(self.conf.vmbeam_aging.qemu_overhead_limit_mib))


def _hypervisor_kernel(context):
    """The active generation's own kernel (records.KernelHealth), or None.

    None where the hypervisor runs on the host's kernel, or it could not
    be read this round.
    """
    return context.health.kernel if context.health else None


class HypervisorKernelFreeMemory(base.ProbeBase):
    """MemAvailable of the hypervisor's own kernel (nested: the L1's).

    Nothing to measure where the hypervisor runs on the host's kernel
    (colocated): host_free_memory watches that one. Exhausted at
    [vmbeam_aging] hypervisor_kernel_min_free_memory_mib.
    """

    name = 'hypervisor_kernel_free_memory'
    unit = 'MiB'
    direction = base.FALLING

    def sample(self, context):
        kernel = _hypervisor_kernel(context)
        if kernel is None:
            return None
        return base.Sample(
            kernel.mem_available_kib / 1024.0,
            float(self.conf.vmbeam_aging.
                  hypervisor_kernel_min_free_memory_mib))


class HypervisorKernelSlab(base.ProbeBase):
    """Unreclaimable slab of the hypervisor's own kernel (nested: the L1's).

    What a leaking kernel (a driver, a netfilter table, a cgroup that is
    never freed) grows; only a reboot of that kernel gives it back.
    Exhausted at [vmbeam_aging] hypervisor_kernel_slab_limit_percent of
    its memory.
    """

    name = 'hypervisor_kernel_slab'
    unit = 'MiB'
    direction = base.RISING

    def sample(self, context):
        kernel = _hypervisor_kernel(context)
        if kernel is None:
            return None
        percent = self.conf.vmbeam_aging.hypervisor_kernel_slab_limit_percent
        return base.Sample(kernel.slab_unreclaimable_kib / 1024.0,
                           kernel.mem_total_kib / 1024.0 * percent / 100.0)


class InstancesDiskFree(base.ProbeBase):
    """Free space (for unprivileged users) under the instances path."""

    name = 'instances_disk_free'
    unit = 'MiB'
    direction = base.FALLING

    def sample(self, context):
        try:
            st = os.statvfs(self.conf.vmbeam_aging.instances_path)
        except FileNotFoundError:
            return None
        return base.Sample(st.f_bavail * st.f_frsize / 2.0 ** 20,
                           float(self.conf.vmbeam_aging.min_free_disk_mib))


class LibvirtLatency(base.ProbeBase):
    """Milliseconds the active daemon takes to list its domains.

    A connection of its own (no event registration), the median of three
    calls so one scheduling hiccup does not count.
    """

    name = 'libvirt_latency'
    unit = 'ms'
    direction = base.RISING
    CALLS = 3

    def sample(self, context):
        if context.sibling is None:
            return None
        try:
            conn = libvirt.open(context.sibling.uri)
        except libvirt.libvirtError:
            return None
        try:
            times = []
            for _ in range(self.CALLS):
                start = time.perf_counter()
                conn.listAllDomains(0)
                times.append((time.perf_counter() - start) * 1000.0)
        finally:
            conn.close()
        return base.Sample(
            statistics.median(times),
            float(self.conf.vmbeam_aging.libvirt_latency_limit_ms))
