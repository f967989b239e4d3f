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

"""One guest's RAM is allocated and released one caller at a time.

Who allocates and frees a guest's RAM file, and from where:

* nova-compute (VMBeamDriver, through nova_vmbeam.virt.ram): allocated
  (the old file released first) right before its QEMU is created, in
  _create_guest and pre_live_migration; released in destroy, cleanup and
  post_live_migration_at_source. Each runs in a thread of Nova's own;
  Nova holds its instance lock around most, not around all of them.
* the vmbeam command, the demo, the benchmarks and the testbeds, in
  processes of their own, for their guests.
* vmbeam-pagemoverd carries out each request on its own, one at a time;
  but "release the old file, allocate a new one" is two requests, and the
  file backend's release is "nobody maps it" followed by an unlink.

So every allocate and release of a guest's RAM holds that guest's lock
(oslo.concurrency: a semaphore for the threads of this process, a file
lock for the other processes). That is not enough on its own: a file is
allocated for a QEMU that only maps it a moment later, once libvirt has
started it, and a release in that moment finds nobody mapping it. So an
allocation leaves a lease (RamLease) in the lock directory, and a release
by anybody but the allocating thread itself keeps RAM that a live
allocator has just allocated and no QEMU has touched yet. The lease ends
when the file holds pages (a QEMU mapped it and ran), when its allocator
calls again (its QEMU started or failed by then), when its allocator is
gone, or after LEASE_S.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import threading
import time
import typing

from oslo_concurrency import lockutils
from oslo_log import log as logging

from nova_vmbeam import exception
from nova_vmbeam import files
from nova_vmbeam.pool import daemon
from nova_vmbeam.qemu import procfs

LOG = logging.getLogger(__name__)

#: how long an allocation waits for its QEMU at most; libvirt gives a QEMU
#: far less to start, and Nova starts it right after the allocation
LEASE_S = 300.0
_LOCK_PREFIX = 'vmbeam-ram-'
_BOOT_ID = '/proc/sys/kernel/random/boot_id'


def _boot_id():
    with open(_BOOT_ID) as f:
        return f.read().strip()


def directory(run_dir, pool_path):
    """The lock directory of the pool at ``pool_path``.

    ``run_dir`` is where the pool's vmbeam-pagemoverd keeps its socket
    (pool.daemon.socket_path): every process that uses the pool agrees on
    it already, whatever its state directory, and it is on tmpfs, as the
    pools are. One directory per pool: two pools may each hold a file of
    the same guest.
    """
    digest = hashlib.sha256(
        os.path.abspath(pool_path).encode()).hexdigest()[:16]
    return os.path.join(run_dir, 'ram-locks', digest)


def directory_for(conf, pool_path):
    """directory() of the pool at ``pool_path`` under ``conf``."""
    return directory(os.path.dirname(daemon.socket_path(conf)), pool_path)


@dataclasses.dataclass(frozen=True)
class RamLease:
    """A guest RAM file allocated for a QEMU that has not used it yet."""

    #: the allocating process and thread
    owner: procfs.ProcessIdentity
    thread: int
    #: the file allocated (device, inode): a lease holds only that file
    dev: int
    inode: int
    #: wall clock (time.time()) after which the lease is over
    expires: float
    #: /proc/sys/kernel/random/boot_id: a lease never outlives a reboot
    boot_id: str

    def as_dict(self):
        record = dataclasses.asdict(self)
        record['owner'] = dataclasses.asdict(self.owner)
        return record

    @classmethod
    def from_dict(cls, record):
        return cls(**dict(record, owner=procfs.ProcessIdentity(
            **record['owner'])))

    def held_by_caller(self):
        return self.owner == procfs.ProcessIdentity.current() and \
            self.thread == threading.get_ident()

    def pending(self, path):
        """True while the RAM at ``path`` is about to be mapped.

        That is: its allocator is another thread (one calling here is past
        its QEMU's start), still runs, the lease has not expired, and the
        file is the one allocated and has no pages yet. A QEMU that mapped
        it and ran wrote to it (tmpfs and hugetlbfs count the pages in
        st_blocks); whether one still maps it is the pool's own check.
        """
        if self.held_by_caller() or not self.owner.alive() or \
                time.time() > self.expires or self.boot_id != _boot_id():
            return False
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == (self.dev, self.inode) and \
            st.st_blocks == 0


class GuestRamGuard:
    """The per-guest locks and leases of one RAM pool."""

    def __init__(self, lock_dir, lease_s=LEASE_S):
        self.lock_dir = lock_dir
        self.lease_s = lease_s

    @contextlib.contextmanager
    def locked(self, guest_uuid):
        """Hold ``guest_uuid``'s lock, against threads and processes."""
        os.makedirs(self.lock_dir, mode=0o700, exist_ok=True)
        with lockutils.lock(_LOCK_PREFIX + guest_uuid, external=True,
                            lock_path=self.lock_dir):
            yield

    def _lease_path(self, guest_uuid):
        return os.path.join(self.lock_dir, '%s.lease' % guest_uuid)

    def lease(self, guest_uuid):
        """The guest's RamLease, or None (call with its lock held)."""
        try:
            with open(self._lease_path(guest_uuid)) as f:
                return RamLease.from_dict(json.load(f))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            LOG.warning('ignoring the unreadable RAM lease of %s: %s',
                        guest_uuid, exc)
            return None

    def grant(self, guest_uuid, path):
        """Record that ``path`` was just allocated for a QEMU to come."""
        st = os.stat(path)
        lease = RamLease(owner=procfs.ProcessIdentity.current(),
                         thread=threading.get_ident(), dev=st.st_dev,
                         inode=st.st_ino,
                         expires=time.time() + self.lease_s,
                         boot_id=_boot_id())
        # No fsync: a lease never outlives a boot (boot_id).
        files.replace_json(self._lease_path(guest_uuid), lease.as_dict())

    def end(self, guest_uuid):
        try:
            os.unlink(self._lease_path(guest_uuid))
        except FileNotFoundError:
            pass

    def check_release(self, guest_uuid, path, pool_path):
        """Refuse to free RAM that a QEMU is about to map; end a lease.

        Call with the guest's lock held, before the pool's own release
        (which refuses RAM that is mapped).
        """
        lease = self.lease(guest_uuid)
        if lease is None:
            return
        if lease.pending(path):
            raise exception.PoolError(
                path=pool_path,
                reason='RAM of guest %s was allocated by pid %d for a '
                       'QEMU that has not used it yet' % (guest_uuid,
                                                          lease.owner.pid),
                fix='It is about to be mapped: it is released once that '
                    'QEMU is gone, or when its start failed.')
        self.end(guest_uuid)


class GuardedPool:
    """allocate, release and reallocate under the guest's lock.

    Mixed into the pool backends, which provide ``guard`` (a
    GuestRamGuard), ``path``, file_path() and the unguarded
    _allocate(guest_uuid, size_bytes) and _release(guest_uuid).
    """

    guard: typing.Optional[GuestRamGuard] = None

    def allocate(self, guest_uuid, size_bytes):
        """Create (or reuse, if the size matches) a guest's RAM; its path.

        Refused while another caller's fresh allocation of it waits for
        its QEMU: one guest is never started twice on one RAM.
        """
        self.file_path(guest_uuid)   # refuses a bad UUID before any lock
        with self.guard.locked(guest_uuid):
            lease = self.guard.lease(guest_uuid)
            if lease is not None and \
                    lease.pending(self.file_path(guest_uuid)):
                raise exception.PoolError(
                    path=self.path,
                    reason='RAM of guest %s was just allocated by pid %d '
                           'for a QEMU of its own' % (guest_uuid,
                                                      lease.owner.pid),
                    fix='One guest is started once; wait for that start '
                        'to finish.')
            path = self._allocate(guest_uuid, size_bytes)
            self.guard.grant(guest_uuid, path)
            return path

    def release(self, guest_uuid):
        """Free a guest's RAM; refused while it is mapped or about to be.

        Returns False if the guest had none.
        """
        self.file_path(guest_uuid)
        with self.guard.locked(guest_uuid):
            self.guard.check_release(guest_uuid,
                                     self.file_path(guest_uuid), self.path)
            return self._release(guest_uuid)

    def reallocate(self, guest_uuid, size_bytes):
        """A fresh RAM file for a guest about to be created; its path.

        The old file, of an earlier incarnation of the guest (hard reboot,
        rebuild), is released first, in the same hold of the lock: no
        guest starts on old RAM contents, and no release or allocation of
        another caller comes in between.
        """
        self.file_path(guest_uuid)
        with self.guard.locked(guest_uuid):
            self.guard.check_release(guest_uuid,
                                     self.file_path(guest_uuid), self.path)
            self._release(guest_uuid)
            path = self._allocate(guest_uuid, size_bytes)
            self.guard.grant(guest_uuid, path)
            return path
