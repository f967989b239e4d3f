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

"""Guest RAM pools: the named files that guest RAM lives in.

The pool owns creating, sizing, permissions and releasing of RAM files, one
per guest, keyed by the guest's UUID. Its interface is deliberately narrow
(check, ensure, allocate, file_path, release, mapped_by: base.PoolBase).
Two backends,
plugins in the ``nova_vmbeam.pools`` namespace, chosen by [vmbeam]
ram_pool_backend: ``pagemoverd`` (the native daemon owns the pools and
keeps them alive across hypervisor generations) and ``file`` (RamPool
below: this process manages the files itself). Every caller gets its pool
from load(). Both allocate and release a guest's RAM under that guest's
lock, and keep RAM that is about to be mapped (pool.guard).
"""

import os
import pwd

from oslo_log import log as logging

from nova_vmbeam import exception
from nova_vmbeam import plugins
from nova_vmbeam.pool import base
from nova_vmbeam.pool import daemon
from nova_vmbeam.pool import guard as guard_mod
from nova_vmbeam.privsep import daemons as privsep_daemons
from nova_vmbeam.privsep import files as privsep_files
from nova_vmbeam.qemu import procfs

LOG = logging.getLogger(__name__)


def available():
    """Names of the installed pool backends, sorted."""
    return plugins.available(plugins.POOLS)


def load(conf):
    """The guest RAM pool of [vmbeam] ram_pool_backend.

    UnknownPlugin if no backend of that name is installed.
    """
    return plugins.plugin_class(plugins.POOLS,
                                conf.vmbeam.ram_pool_backend).from_conf(conf)


def guest_file_path(pool_path, guest_uuid):
    """The RAM file of ``guest_uuid`` in the pool at ``pool_path``."""
    if not guest_uuid or '/' in guest_uuid or guest_uuid.startswith('.'):
        raise exception.InvalidInput(reason='bad guest UUID %r' %
                                     guest_uuid)
    return os.path.join(pool_path, '%s.ram' % guest_uuid)


TMPFS = 'tmpfs'
HUGETLBFS = 'hugetlbfs'
_FS_FIX = ('Mount tmpfs there (mount -t tmpfs -o mode=0711 vmbeam-ram '
           '%(path)s), or hugetlbfs for huge pages, or point '
           '[vmbeam] ram_pool_path at a directory under /dev/shm.')


def _mount_of(path):
    """(mount point, fs type, options) of the mount holding ``path``."""
    best = ('', '', '')
    with open('/proc/self/mountinfo') as mountinfo:
        for line in mountinfo:
            fields = line.split()
            mount_point = fields[4].replace('\\040', ' ')
            sep = fields.index('-')
            fstype, super_opts = fields[sep + 1], fields[sep + 3]
            if (path == mount_point or
                    path.startswith(mount_point.rstrip('/') + '/')) and \
                    len(mount_point) >= len(best[0]):
                best = (mount_point, fstype, super_opts)
    return best


def _hugepage_size(super_opts):
    for opt in super_opts.split(','):
        if opt.startswith('pagesize='):
            value = opt.split('=', 1)[1].upper()
            units = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}
            return int(value[:-1]) * units[value[-1]] \
                if value[-1] in units else int(value)
    return 2 << 20


class RamPool(base.PoolBase):
    """A directory of guest RAM files on tmpfs or hugetlbfs (``file``).

    ``lock_dir``: where the guests' locks and leases go (pool.guard);
    by default where the pool's daemon would keep its socket.
    """

    def __init__(self, path, owner=None, reserve_mib=0, lock_dir=None):
        self.path = os.path.abspath(path)
        self.owner = owner
        self.reserve_bytes = reserve_mib * 1024 * 1024
        self.guard = guard_mod.GuestRamGuard(
            lock_dir or guard_mod.directory(daemon.RUN_DIR, self.path))

    @classmethod
    def from_conf(cls, conf):
        return cls(conf.vmbeam.ram_pool_path, conf.vmbeam.qemu_user,
                   conf.vmbeam.ram_pool_reserve_mib,
                   lock_dir=guard_mod.directory_for(
                       conf, conf.vmbeam.ram_pool_path))

    def _fail(self, reason, fix):
        raise exception.PoolError(path=self.path, reason=reason, fix=fix)

    def _owner_ids(self):
        if self.owner is None:
            return os.getuid(), os.getgid()
        try:
            pw = pwd.getpwnam(self.owner)
        except KeyError:
            self._fail('owner %r does not exist' % self.owner,
                       'Create the user or fix [vmbeam] qemu_user.')
        return pw.pw_uid, pw.pw_gid

    def ensure(self):
        """Create the pool directory if missing (mode 0711), then check."""
        if not os.path.isdir(self.path):
            uid, gid = self._owner_ids()
            os.makedirs(self.path, mode=0o711)
            privsep_files.chown(self.path, uid, gid)
        return self.check()

    def check(self):
        """Refuse a pool that cannot hold shareable guest RAM.

        Returns the filesystem type. Changes nothing.
        """
        if not os.path.isdir(self.path):
            self._fail('directory does not exist',
                       'Create it (mkdir -m 0711 %s) on tmpfs, or run '
                       '"vmbeam pool init".' % self.path)
        _mount_point, fstype, _opts = _mount_of(self.path)
        if fstype not in (TMPFS, HUGETLBFS):
            self._fail('is on %s, not tmpfs or hugetlbfs' % fstype,
                       _FS_FIX % {'path': self.path})
        uid, _gid = self._owner_ids()
        st = os.stat(self.path)
        if st.st_uid != uid:
            self._fail('is owned by uid %d, not by %s (uid %d), the user '
                       'QEMU runs as' % (st.st_uid,
                                         self.owner or 'this user', uid),
                       'Run: chown %s %s' % (self.owner or uid, self.path))
        return fstype

    def page_size(self):
        """Bytes per page of the pool's filesystem (huge pages or 4 KiB)."""
        _mount_point, fstype, opts = _mount_of(self.path)
        return _hugepage_size(opts) if fstype == HUGETLBFS else os.sysconf(
            'SC_PAGE_SIZE')

    def file_path(self, guest_uuid):
        return guest_file_path(self.path, guest_uuid)

    def _allocate(self, guest_uuid, size_bytes):
        """Create (or reuse, if the size matches) the RAM file of a guest.

        The file is mode 0600, owned by the pool owner, and sized but not
        filled: tmpfs and hugetlbfs allocate pages as the guest touches
        them. Returns its path.
        """
        fstype = self.check()
        path = self.file_path(guest_uuid)
        if fstype == HUGETLBFS:
            page = _hugepage_size(_mount_of(self.path)[2])
            if size_bytes % page:
                raise exception.InvalidInput(
                    reason='RAM of %d bytes is not a multiple of the huge '
                           'page size %d of %s' % (size_bytes, page,
                                                   self.path))
        if os.path.exists(path):
            have = os.stat(path).st_size
            if have != size_bytes:
                self._fail('%s exists with %d bytes, not %d' %
                           (path, have, size_bytes),
                           'Release it first (it belongs to another '
                           'incarnation of guest %s)' % guest_uuid)
            return path
        vfs = os.statvfs(self.path)
        free = vfs.f_bavail * vfs.f_frsize
        if free < size_bytes + self.reserve_bytes:
            self._fail('too small: %d MiB free, %d MiB needed (+%d MiB '
                       'reserve)' % (free >> 20, size_bytes >> 20,
                                     self.reserve_bytes >> 20),
                       'Grow it (mount -o remount,size=... %s), free RAM '
                       'files of deleted guests, or lower '
                       '[vmbeam] ram_pool_reserve_mib.' % self.path)
        uid, gid = self._owner_ids()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size_bytes)
            os.fchown(fd, uid, gid)
        except OSError:
            os.unlink(path)
            raise
        finally:
            os.close(fd)
        LOG.info('allocated RAM file %s (%d MiB)', path, size_bytes >> 20)
        return path

    def mapped_by(self, guest_uuid):
        """Pids of processes that map the guest's RAM file."""
        path = self.file_path(guest_uuid)
        if not os.path.exists(path):
            return []
        identity = procfs.file_identity(path)
        # As root: a process this one may not read must not be missed.
        return list(privsep_daemons.pids_mapping(identity.dev,
                                                 identity.inode))

    def _release(self, guest_uuid):
        """Free a guest's RAM; refused while any process maps it."""
        path = self.file_path(guest_uuid)
        if not os.path.exists(path):
            return False
        users = self.mapped_by(guest_uuid)
        if users:
            self._fail('RAM of guest %s is still mapped by pid(s) %s' %
                       (guest_uuid, ', '.join(map(str, users))),
                       'Stop the guest first; RAM is never freed while a '
                       'QEMU maps it.')
        os.unlink(path)
        LOG.info('released RAM file %s', path)
        return True
