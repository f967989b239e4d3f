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

"""Cluster-wide rejuvenation slots: at most K hosts rejuvenate at once.

K named tooz locks, ``nova-vmbeam-rejuvenation-0`` .. ``K-1``; a host takes
any free one without waiting and holds it for its whole rejuvenation.
Locks work the same on every tooz backend, but only a backend that every
compute host reaches (redis, etcd3, zookeeper, ...) makes K a limit of the
cloud: the file backend, the default, counts the hosts that share one
directory, which is this host alone. So the monitor refuses to rejuvenate
on a backend of this host only, unless the operator declares the host
alone ([vmbeam_aging] single_node); see ``require_fleet_limit``.

A host that dies loses its slot: the kernel drops a file lock; redis,
etcd3 and memcached locks are leases that tooz's heartbeat thread renews
while the holder lives and that expire ``lock_timeout`` seconds (a URL
option, default 30) after its last beat; zookeeper, mysql and postgresql
locks end with the holder's session.
"""

from importlib import metadata
import os
from urllib import parse

from oslo_log import log as logging

from nova_vmbeam import exception

LOG = logging.getLogger(__name__)

LOCK_PREFIX = 'nova-vmbeam-rejuvenation-'

#: tooz backends whose locks only this host sees, and where they live.
LOCAL_BACKENDS = {'file': 'a directory of this host',
                  'ipc': 'System V semaphores of this host'}

#: tooz's pip extra that installs a backend's client library.
_TOOZ_EXTRAS = {'redis': 'redis', 'etcd3+http': 'etcd3gw',
                'etcd3+https': 'etcd3gw', 'zookeeper': 'zookeeper',
                'kazoo': 'zookeeper', 'memcached': 'memcached',
                'mysql': 'mysql', 'postgresql': 'postgresql',
                'kubernetes': 'kubernetes', 'ipc': 'ipc'}


class UnsafeFleetConfig(exception.InvalidInput):
    msg_fmt = ('%(what)s, but %(why)s: nothing would keep more than '
               'max_concurrent = %(count)d host(s) of the cloud from '
               'rejuvenating at once. Set [vmbeam_aging] backend_url to a '
               'tooz backend that every compute host reaches (e.g. '
               'redis://ctl:6379 or etcd3+http://ctl:2379), or '
               '[vmbeam_aging] single_node = true if this host is the only '
               'one that rejuvenates, or [vmbeam_aging] action = report.')


class BackendNotInstalled(exception.InvalidInput):
    msg_fmt = '[vmbeam_aging] backend_url %(url)r: %(reason)s. %(fix)s'


def backend_url(conf):
    """[vmbeam_aging] backend_url, or the file backend under state_path."""
    return conf.vmbeam_aging.backend_url or 'file://' + os.path.join(
        conf.vmbeam.state_path, 'coordination')


def backend_scheme(url):
    """The tooz backend name of ``url`` ("redis", "etcd3+http", ...)."""
    return parse.urlsplit(url).scheme


def fleet_problem(url, single_node):
    """Why ``url`` cannot limit rejuvenations across hosts, or None.

    ``url`` is [vmbeam_aging] backend_url as given (None or '' when
    unset). Strings only, nothing is loaded: "vmbeam compute-node
    configure" asks this too, before it writes a config.
    """
    if single_node:
        return None
    if not url:
        return ('[vmbeam_aging] backend_url is unset (a file backend '
                'under [vmbeam] state_path, which only this host sees)')
    where = LOCAL_BACKENDS.get(backend_scheme(url))
    if where is not None:
        return ('[vmbeam_aging] backend_url %s keeps its locks in %s' %
                (url, where))
    return None


def require_fleet_limit(conf, what='[vmbeam_aging] action = rejuvenate'):
    """Refuse to rejuvenate without a limit across the cloud's hosts.

    Raises UnsafeFleetConfig unless backend_url names a backend that
    other hosts can share or single_node is set, and BackendNotInstalled
    when the backend's tooz driver cannot load (its client library is
    missing), so both show when the monitor starts, not when a
    rejuvenation is due. ``what`` names what asked to rejuvenate.
    """
    opts = conf.vmbeam_aging
    why = fleet_problem(opts.backend_url, opts.single_node)
    if why is not None:
        raise UnsafeFleetConfig(what=what, why=why,
                                count=opts.max_concurrent)
    _load_backend(backend_url(conf))


def _load_backend(url):
    name = backend_scheme(url)
    backends = {ep.name: ep for ep in
                metadata.entry_points(group='tooz.backends')}
    if name not in backends:
        raise BackendNotInstalled(
            url=url, reason='tooz has no backend %r (installed: %s)' % (
                name, ', '.join(sorted(backends))),
            fix='Give a URL of one of them, e.g. redis://ctl:6379.')
    try:
        # Imports tooz and the backend's client library: only ever from
        # init_host or the command, as in Slots.start.
        backends[name].load()
    except ImportError as exc:
        raise BackendNotInstalled(
            url=url, reason='its tooz driver does not load (%s)' % exc,
            fix='Install its client library where nova-compute runs: pip '
                'install "tooz[%s]".' % _TOOZ_EXTRAS.get(name, name))


class Slot:
    """A held slot; ``release()`` gives it back."""

    def __init__(self, lock, index, url):
        self.index = index
        self._lock = lock
        self._url = url

    def release(self):
        from tooz import coordination
        try:
            self._lock.release()
        except coordination.ToozError as exc:
            # The rejuvenation is over either way; the backend lets the
            # lock expire once the heartbeat no longer renews it.
            LOG.warning('could not release rejuvenation slot %d at %s (%s);'
                        ' it expires with its lease', self.index, self._url,
                        exc)


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
        """Connect; CoordinationUnavailable when the backend is away."""
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
            try:
                # The heart renews the leases of held locks (redis, etcd3,
                # memcached) in a thread of its own.
                coordinator.start(start_heart=True)
            except coordination.ToozError as exc:
                raise exception.CoordinationUnavailable(url=self.url,
                                                        reason=exc)
            self._coordinator = coordinator

    def stop(self):
        if self._coordinator is not None:
            try:
                self._coordinator.stop()
            finally:
                self._coordinator = None

    def try_acquire(self):
        """A held Slot, or None when all K are taken (no waiting).

        exception.CoordinationUnavailable when the backend does not answer: no
        slot then, as when all are taken.
        """
        from tooz import coordination
        self.start()
        for index in range(self.count):
            lock = self._coordinator.get_lock(
                ('%s%d' % (LOCK_PREFIX, index)).encode())
            try:
                acquired = lock.acquire(blocking=False)
            except coordination.ToozError as exc:
                raise exception.CoordinationUnavailable(url=self.url,
                                                        reason=exc)
            if acquired:
                LOG.debug('%s holds rejuvenation slot %d of %d',
                          self.member_id, index, self.count)
                return Slot(lock, index, self.url)
        return None
