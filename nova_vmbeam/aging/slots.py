"""Cluster-wide rejuvenation slots: at most K hosts rejuvenate at once.

K named tooz locks, ``nova-vmbeam-rejuvenation-0`` .. ``K-1``; a host takes
any free one without waiting and holds it for its whole rejuvenation.
Locks work the same on every tooz backend (file, etcd3gw, redis, ...),
and a host that dies loses its lock: the kernel drops a file lock, etcd
and redis let it expire once the heartbeat stops.
"""

import os

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

LOCK_PREFIX = 'nova-vmbeam-rejuvenation-'


def backend_url(conf):
    """[vmbeam_aging] backend_url, or the file backend under state_path."""
    return conf.vmbeam_aging.backend_url or 'file://' + os.path.join(
        conf.vmbeam.state_path, 'coordination')


class Slots:

    def __init__(self, url, member_id, count):
        self.url = url
        self.member_id = member_id
        self.count = count
        self._coordinator = None

    @classmethod
    def from_conf(cls, conf, member_id):
        return cls(backend_url(conf), member_id,
                   conf.vmbeam_aging.max_concurrent)

    def start(self):
        if self._coordinator is None:
            # tooz imports futurist, which probes for the green-thread
            # library that Nova installs. Imported here, that probe runs in
            # nova-compute's init_host, after Nova chose its threading mode
            # (which makes the probe fail quietly), never at module import
            # time, before it.
            from tooz import coordination
            if self.url.startswith('file://'):
                os.makedirs(self.url[len('file://'):], exist_ok=True)
            coordinator = coordination.get_coordinator(
                self.url, self.member_id.encode())
            coordinator.start(start_heart=True)
            self._coordinator = coordinator

    def stop(self):
        if self._coordinator is not None:
            try:
                self._coordinator.stop()
            finally:
                self._coordinator = None

    def try_acquire(self):
        """A held slot lock, or None when all K are taken (no waiting)."""
        self.start()
        for index in range(self.count):
            lock = self._coordinator.get_lock(
                ('%s%d' % (LOCK_PREFIX, index)).encode())
            if lock.acquire(blocking=False):
                LOG.debug('%s holds rejuvenation slot %d of %d',
                          self.member_id, index, self.count)
                return lock
        return None
