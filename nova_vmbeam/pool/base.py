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

"""The RAM-pool plugin interface (namespace ``nova_vmbeam.pools``).

A pool holds one RAM file per guest, keyed by the guest's UUID. Callers
use check, ensure, allocate, reallocate, release, file_path and mapped_by;
allocate, reallocate and release come from guard.GuardedPool, which holds
the guest's lock around the backend's own _allocate and _release.

A backend that can also hand a pool to a hypervisor VM as a PCI device
(the nested sibling's guests map their RAM through it) derives from
AttachablePool.
"""

import abc

from nova_vmbeam.pool import guard as guard_mod


class PoolBase(guard_mod.GuardedPool, metaclass=abc.ABCMeta):
    """Base class of the RAM pool backends.

    Instances have ``path`` (the pool directory) and ``guard`` (its
    GuestRamGuard).
    """

    @classmethod
    @abc.abstractmethod
    def from_conf(cls, conf):
        """The pool of [vmbeam] ram_pool_path with this backend."""

    @abc.abstractmethod
    def ensure(self):
        """Create the pool directory if missing, then check(); its fs type."""

    @abc.abstractmethod
    def check(self):
        """Refuse a pool that cannot hold shareable guest RAM; its fs type.

        Changes nothing.
        """

    @abc.abstractmethod
    def file_path(self, guest_uuid):
        """The RAM file of ``guest_uuid``; InvalidInput for a bad UUID."""

    @abc.abstractmethod
    def mapped_by(self, guest_uuid):
        """Pids of processes that map the guest's RAM."""

    @abc.abstractmethod
    def _allocate(self, guest_uuid, size_bytes):
        """Create (or reuse, if the size matches) a guest's RAM; its path.

        Called with the guest's lock held.
        """

    @abc.abstractmethod
    def _release(self, guest_uuid):
        """Free a guest's RAM (refused while mapped); False if it had none.

        Called with the guest's lock held.
        """

    def daemon_info(self):
        """What the daemon that owns the pools says of itself, or None.

        A dict with at least pid, pools, total (bytes) and socket; None
        when the backend has no daemon.
        """
        return None


class AttachablePool(PoolBase):
    """A pool that can be attached to a hypervisor VM as a PCI device.

    Its files become ivshmem-plain devices of the VM (a BAR), or
    virtio-pmem-pci ones (a pmem region, for device-DAX), and who maps
    them can be verified.
    """

    #: the PCI device models a pool can be attached as
    IVSHMEM, PMEM = 'ivshmem-plain', 'virtio-pmem-pci'

    @abc.abstractmethod
    def attach(self, guest_uuid, qmp_socket, device, timeout=10,
               model=IVSHMEM):
        """Attach the guest's pool to the VM at ``qmp_socket``.

        A ``PMEM`` device cannot be unplugged again (QEMU refuses): the
        VM maps the pool until it stops.
        """

    @abc.abstractmethod
    def detach(self, guest_uuid, qmp_socket, device, timeout=10):
        """Detach ``device`` again (the VM's guest must eject it)."""

    @abc.abstractmethod
    def verify(self, guest_uuid, pid):
        """True if ``pid`` maps exactly this pool, shared, over its size."""
