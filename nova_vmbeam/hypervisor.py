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

"""What a mover needs from a hypervisor and from a guest running on it.

A move takes a running guest (a GuestEndpoint) and a target Hypervisor.
Plain QEMU processes implement these (nova_vmbeam.qemu.process); sibling
hypervisors (libvirt daemons, hypervisor VMs) implement them too, so the
movers never know which kind they drive.
"""

import abc


class GuestEndpoint(metaclass=abc.ABCMeta):
    """One QEMU instance of a guest, reachable through its monitor."""

    spec = None
    #: the Hypervisor it runs on, where it knows it (a libvirt guest does;
    #: a bare QEMU process started by this process does not)
    host = None

    @property
    @abc.abstractmethod
    def pid(self):
        """Pid of the QEMU process (used to check what RAM it maps)."""

    @abc.abstractmethod
    def connect(self, timeout=None):
        """Connect to the monitor; raise QemuStartFailed if QEMU died."""

    @abc.abstractmethod
    def execute(self, command, timeout=None, **arguments):
        """Run a QMP command and return its result."""

    @abc.abstractmethod
    def events(self):
        """QMP events received so far, oldest first."""

    @abc.abstractmethod
    def wait_event(self, name, timeout, since=0.0):
        """First QMP event ``name`` emitted at or after ``since``."""

    @abc.abstractmethod
    def alive(self):
        """True while the QEMU process exists."""

    @abc.abstractmethod
    def resume(self):
        """Let the vCPUs run (through the hypervisor, so it knows)."""

    @abc.abstractmethod
    def destroy(self):
        """Kill QEMU at once and wait until it is gone."""

    @abc.abstractmethod
    def retire(self):
        """Stop the source of a completed move: it must never run again."""

    @abc.abstractmethod
    def cpu_seconds(self, thread_prefix=None):
        """CPU time of QEMU, or of its threads named ``thread_prefix*``."""

    def status(self):
        return self.execute('query-status')['status']

    def exit_reason(self):
        """What QEMU said before it exited (its own error text), if known."""
        return ''

    def cpu_shares(self):
        """CPU weight of the guest's cgroup, or None if it has none.

        A hypervisor that puts each guest in a cgroup of its own (libvirt
        does) schedules the guests' cgroups against each other: a thread's
        nice value only counts within its guest's cgroup.
        """
        return None

    def set_cpu_shares(self, shares):
        """Set the CPU weight of the guest's cgroup (see cpu_shares)."""
        raise NotImplementedError()


class Hypervisor(metaclass=abc.ABCMeta):
    """A place where guests run; a move's target."""

    name = None

    @property
    @abc.abstractmethod
    def run_dir(self):
        """Directory for sockets of incoming migrations."""

    def control_pids(self):
        """Pids of the daemons that relay this hypervisor's monitors.

        They carry a switchover's monitor commands, so they share its
        CPU priority boost (nova_vmbeam.qemu.sched). None by default.
        """
        return []

    @abc.abstractmethod
    def launch(self, spec, incoming=(), paused=False):
        """Start QEMU for ``spec`` and return its GuestEndpoint.

        With ``incoming`` it waits for a migration; with ``paused`` its
        vCPUs do not run until resume(). The monitor is not connected yet:
        with cpr-transfer it only answers once the cpr channel was read.
        """


class PoolAttachingHypervisor(Hypervisor):
    """A hypervisor VM whose guests map their RAM through a PCI BAR.

    The guest's RAM pool on this host (pool.base.AttachablePool) is
    attached to the VM as an ivshmem-plain device, and the guest's QEMU
    inside the VM maps that device's BAR. A mover that shares RAM across
    such VMs (the nested mover) needs this of its source and target.
    """

    #: the sibling (generation) this hypervisor is: its L0 process maps
    #: the pools attached to it
    sibling = None

    @property
    @abc.abstractmethod
    def address(self):
        """Where the VM takes incoming migrations (an IP address)."""

    @abc.abstractmethod
    def attach_pool(self, pool, guest_uuid):
        """Attach the guest's pool to the VM; the BAR file to map there."""

    @abc.abstractmethod
    def detach_pool(self, pool, guest_uuid):
        """Detach the guest's pool from the VM, if attached."""

    @abc.abstractmethod
    def maps_bar(self, name, bar_path):
        """True if guest ``name``'s QEMU in the VM maps ``bar_path``."""
