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

"""Guest RAM pools owned by vmbeam-pagemoverd (backend ``pagemoverd``).

The same calls as the ``file`` backend (check, ensure, allocate,
file_path, mapped_by, release), answered by the daemon, which keeps a
descriptor to every pool so guest RAM outlives any hypervisor generation,
a crashed QEMU and an accidental unlink. Beyond those: hand a pool over as
a descriptor, verify that a QEMU maps exactly that pool, report how much
of it is resident, attach it to a hypervisor VM as ivshmem-plain or
virtio-pmem-pci.

The daemon answers one request at a time, but a guest's allocate and
release are sequences of them seen from here (the old pool released, a
new one allocated; a pool allocated, then mapped by its QEMU): those hold
the guest's lock and honour its lease (pool.guard), as the file backend
does.
"""

import os

from nova_vmbeam import exception
from nova_vmbeam import pool as pool_mod
from nova_vmbeam.pool import base
from nova_vmbeam.pool import daemon
from nova_vmbeam.pool import guard as guard_mod
from nova_vmbeam.pool import protocol


class PagemoverdPool(base.AttachablePool):
    """A RAM pool directory, through vmbeam-pagemoverd."""

    def __init__(self, conf):
        self.conf = conf
        self.path = os.path.abspath(conf.vmbeam.ram_pool_path)
        self.owner = conf.vmbeam.qemu_user
        self.socket = daemon.socket_path(conf)
        self.guard = guard_mod.GuestRamGuard(
            guard_mod.directory_for(conf, self.path))
        self._seen = False

    @classmethod
    def from_conf(cls, conf):
        return cls(conf)

    def _call(self, op, **args):
        """One request, the daemon started first if it is not running."""
        if not self._seen:
            daemon.hello(self.conf, self.path)
            self._seen = True
        request = dict(op=op, version=protocol.VERSION, **args)
        try:
            return protocol.call(self.socket, request)
        except (FileNotFoundError, ConnectionRefusedError):
            # The daemon is gone (killed, host rebooted): start it again;
            # it recovers the pools from their private links.
            daemon.hello(self.conf, self.path)
            return protocol.call(self.socket, request)

    def daemon_info(self):
        """The daemon's hello reply (pid, pools, total...) and its socket."""
        return dict(daemon.hello(self.conf, self.path), socket=self.socket)

    def ensure(self):
        """Create the pool directory if missing (mode 0711), then check."""
        return self._call('ensure')[0]['fstype']

    def check(self):
        """Refuse a pool that cannot hold shareable guest RAM."""
        return self._call('check')[0]['fstype']

    def file_path(self, guest_uuid):
        return pool_mod.guest_file_path(self.path, guest_uuid)

    def _allocate(self, guest_uuid, size_bytes):
        """Create (or reuse, if the size matches) a guest's pool; its path."""
        return self._call('allocate', uuid=guest_uuid,
                          size=size_bytes)[0]['path']

    def mapped_by(self, guest_uuid):
        """Pids of processes that map the guest's pool."""
        try:
            return self._call('mapped_by', uuid=guest_uuid)[0]['pids']
        except exception.DaemonError as exc:
            if exc.code == protocol.UNKNOWN_POOL:
                return []
            raise

    def _release(self, guest_uuid):
        """Free a guest's RAM; refused while any process maps it."""
        try:
            self._call('release', uuid=guest_uuid)
        except exception.DaemonError as exc:
            if exc.code == protocol.UNKNOWN_POOL:
                return False
            raise
        return True

    def fd(self, guest_uuid):
        """A descriptor of the guest's pool (SCM_RIGHTS); caller closes it."""
        reply, fd = self._call('fd', uuid=guest_uuid)
        if fd is None:
            raise exception.ProtocolError(socket=self.socket,
                                          version=protocol.VERSION,
                                          detail='no descriptor in reply')
        return fd

    def verify(self, guest_uuid, pid):
        """True if ``pid`` maps exactly this pool, shared, over its size."""
        return self._call('verify', uuid=guest_uuid, pid=pid)[0]['maps']

    def residency(self, guest_uuid):
        """size, resident_bytes (SEEK_DATA) and allocated_bytes."""
        reply = self._call('residency', uuid=guest_uuid)[0]
        return {k: reply[k] for k in ('size', 'resident_bytes',
                                      'allocated_bytes')}

    def attach(self, guest_uuid, qmp_socket, device, timeout=10,
               model=base.AttachablePool.IVSHMEM):
        """Attach the pool to a hypervisor VM as ``model`` ``device``."""
        self._call('attach', uuid=guest_uuid, qmp=qmp_socket, device=device,
                   timeout=timeout, model=model)

    def detach(self, guest_uuid, qmp_socket, device, timeout=10):
        """Detach ``device`` again (the VM's guest must eject it)."""
        self._call('detach', uuid=guest_uuid, qmp=qmp_socket, device=device,
                   timeout=timeout)
