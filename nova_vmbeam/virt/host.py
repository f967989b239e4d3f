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

"""VMBeamHost: Nova's libvirt Host that follows hypervisor generations.

Nova's Host keeps one connection to one URI. Here the URI is the active
generation's daemon, and it changes at run time without restarting
nova-compute:

* switch_uri() opens the new primary connection under Nova's own lock and
  keeps the old one as a *secondary* while guests still live on it (a run
  moves them one by one): instance lookups and listings cover both.
* release_secondaries() lets the old daemon's connection go before that
  daemon is retired, with its close callback unregistered first, so that
  Nova never sees "connection lost" and never disables the compute service.
* Lifecycle events are dropped when they come from a released connection,
  concern a guest that is being moved, or come from the generation a guest
  has left: a move pauses and quits the source QEMU, which Nova must not
  take for the instance being paused or shut down.

The event callbacks run on libvirt's event loop thread: they only look at
a set under a short lock and never block.
"""

import socket
import threading

from nova import exception as nova_exception
from nova.virt.libvirt import config as vconfig
from nova.virt.libvirt import guest as libvirt_guest
from nova.virt.libvirt import host as nova_host
from oslo_log import log as logging
from oslo_utils import excutils

from nova_vmbeam import conf as vmbeam_conf
from nova_vmbeam.nested import disks as nested_disks

CONF = vmbeam_conf.CONF
LOG = logging.getLogger(__name__)


def _raw(conn):
    """The virConnect behind a (possibly proxied) connection."""
    return getattr(conn, '_obj', conn)


class VMBeamHost(nova_host.Host):

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._fence_lock = threading.Lock()
        self._secondaries = []      # [(uri, conn)], newest first
        self._released = []         # conns whose events are ignored
        self._moving = set()        # uuids in a move
        self._moved_away = set()    # uuids moved off the secondaries
        self._stopping = threading.Event()

    #: the generations' guests run inside hypervisor VMs (nested): their
    #: RAM is this host's, so memory totals are this host's too
    guests_in_vm = False

    @property
    def uri(self):
        return self._uri

    def get_hostname(self):
        # Nova names the compute node after it: an L1's own name would
        # change with every generation. This host's, by libvirt's rule.
        if not self.guests_in_vm:
            return super().get_hostname()
        if self._hostname is None:
            self._hostname = _this_hosts_name()
        return self._hostname

    def get_memory_mb_total(self):
        # Nova's comes from the daemon's node info: an L1 VM's memory
        # where the guests run nested, while their RAM (the pool) and the
        # "available" figure Nova subtracts from it are this host's.
        if not self.guests_in_vm or CONF.libvirt.file_backed_memory > 0:
            return super().get_memory_mb_total()
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemTotal:'):
                    return int(line.split()[1]) // 1024
        return super().get_memory_mb_total()

    # --- switching generations ---------------------------------------------

    def switch_uri(self, uri, keep_old=True):
        """Make ``uri`` the primary connection, at once.

        Nova's callbacks are registered on the new connection before it
        is used; no connection up/down event is queued, so the compute
        service's state does not flicker. With ``keep_old`` the previous
        connection stays as a secondary (guests still run there);
        otherwise it is released. Raises (keeping the old connection) if
        the new daemon cannot be reached.
        """
        with self._wrapped_conn_lock:
            if uri == self._uri and self._wrapped_conn is not None:
                return
            old_uri, old = self._uri, self._wrapped_conn
            self._uri = uri
            try:
                new = self._get_new_connection()
            except Exception:
                self._uri = old_uri
                raise
            self._wrapped_conn = new
            self._initial_connection = False
        LOG.info('libvirt connection switched from %s to %s', old_uri, uri)
        if old is None:
            return
        if keep_old:
            with self._fence_lock:
                self._secondaries.insert(0, (old_uri, old))
        else:
            self._release(old)

    def add_secondary(self, uri):
        """Also look up guests on ``uri`` (an open run's source)."""
        if uri == self._uri or any(u == uri for u, _c in self._secondaries):
            return
        with self._wrapped_conn_lock:
            saved = self._uri
            self._uri = uri
            try:
                conn = self._get_new_connection()
            finally:
                self._uri = saved
        with self._fence_lock:
            self._secondaries.append((uri, conn))

    def release_secondaries(self):
        """Drop every secondary connection (their daemon is retired next)."""
        with self._fence_lock:
            olds, self._secondaries = self._secondaries, []
            self._moved_away.clear()
        for _uri, conn in olds:
            self._release(conn)

    def secondary_uris(self):
        with self._fence_lock:
            return [uri for uri, _conn in self._secondaries]

    def _release(self, conn):
        raw = _raw(conn)
        with self._fence_lock:
            self._released.append(raw)
        # Unregister first: the daemon's exit would otherwise fire Nova's
        # close callback, which disables the compute service.
        self._quietly(raw, 'unregisterCloseCallback')
        for cbid in list(getattr(raw, 'domainEventCallbackID', None) or ()):
            self._quietly(raw, 'domainEventDeregisterAny', cbid)
        self._quietly(raw, 'close')

    @staticmethod
    def _quietly(conn, method, *args):
        call = getattr(conn, method, None)
        if call is None:
            return
        try:
            call(*args)
        except Exception as exc:   # a daemon already gone
            LOG.debug('releasing a libvirt connection: %s: %s', method, exc)

    def _conn_event_thread(self):
        # Nova's loops forever (nova-compute exits under it); this one ends
        # at cleanup(), so a stopped driver leaves no thread behind.
        while not self._stopping.is_set():
            self._dispatch_conn_event()

    def cleanup(self):
        super().cleanup()
        self._stopping.set()
        self._conn_event_handler_queue.put(lambda: None)

    # --- fencing guests in a move ------------------------------------------

    def begin_move(self, uuid):
        with self._fence_lock:
            self._moving.add(uuid)

    def end_move(self, uuid, moved):
        with self._fence_lock:
            self._moving.discard(uuid)
            if moved:
                self._moved_away.add(uuid)

    def is_moving(self, uuid):
        with self._fence_lock:
            return uuid in self._moving

    def _drop_event(self, conn, uuid):
        raw = _raw(conn)
        with self._fence_lock:
            if any(raw is c for c in self._released):
                return True
            if uuid in self._moving:
                return True
            primary = _raw(self._wrapped_conn)
            return uuid in self._moved_away and raw is not primary

    @staticmethod
    def _event_lifecycle_callback(conn, dom, event, detail, opaque):
        self = opaque
        if self._stopping.is_set() or \
                self._drop_event(conn, dom.UUIDString()):
            return
        nova_host.Host._event_lifecycle_callback(conn, dom, event, detail,
                                                 opaque)

    def _close_callback(self, conn, reason, opaque):
        # Only the primary connection's loss means the hypervisor is gone;
        # a secondary closes when its generation is retired.
        if _raw(conn) is not _raw(self._wrapped_conn):
            return
        # libvirt may call this inside an API call of the thread that holds
        # _wrapped_conn_lock (Host._get_connection testing the connection),
        # and Nova's handler takes that lock in threading mode: a deadlock,
        # seen when an L1's connection dropped under load. Whoever holds
        # the lock is testing or replacing the connection, and handles its
        # loss itself.
        if not self._wrapped_conn_lock.acquire(blocking=False):
            LOG.warning('libvirt connection %s closed (%s) while it is '
                        'being tested or replaced: left to that', self.uri,
                        reason)
            return
        self._wrapped_conn_lock.release()
        super()._close_callback(conn, reason, opaque)

    # --- generation-aware lookups --------------------------------------------

    def _get_domain(self, instance):
        try:
            return super()._get_domain(instance)
        except nova_exception.InstanceNotFound:
            with self._fence_lock:
                secondaries = list(self._secondaries)
            for _uri, conn in secondaries:
                try:
                    return conn.lookupByUUIDString(instance.uuid)
                except Exception:
                    continue
            raise

    def get_guest(self, instance):
        domain = self._get_domain(instance)
        if self.guests_in_vm:
            return _NestedGuest(domain)
        return libvirt_guest.Guest(domain)

    def list_instance_domains(self, only_running=True):
        domains = super().list_instance_domains(only_running=only_running)
        with self._fence_lock:
            secondaries = list(self._secondaries)
        if not secondaries:
            return domains
        seen = {dom.UUIDString() for dom in domains}
        flags = nova_host.libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE
        if not only_running:
            flags |= nova_host.libvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE
        for _uri, conn in secondaries:
            try:
                others = conn.listAllDomains(flags)
            except Exception as exc:
                LOG.warning('listing domains of a previous generation: %s',
                            exc)
                continue
            for dom in others:
                uuid = dom.UUIDString()
                if uuid not in seen:
                    seen.add(uuid)
                    domains.append(self._wrap_libvirt_proxy(dom))
        return domains


def _this_hosts_name():
    """This host's name as its libvirt would say it (virGetHostname)."""
    name = socket.gethostname()
    if '.' in name:
        return name
    try:
        canonical = socket.getaddrinfo(name, None,
                                       flags=socket.AI_CANONNAME)[0][3]
    except (OSError, IndexError):
        return name
    if not canonical or canonical.startswith('localhost'):
        return name
    return canonical


class _NestedGuest(libvirt_guest.Guest):
    """An instance's domain in an L1 VM, with its disks as this host's.

    Running, its disks are this host's NBD exports (nested/disks.py):
    the domain's XML names them, for what reaches the L1's libvirtd.
    What Nova reads to work on the disks here (the root disk's path for
    a snapshot, the disks of a resize) names this host's files: the
    parsed config always, the XML once the instance stopped (they are
    served no more).
    """

    def get_xml_desc(self, *args, **kwargs):
        xml = super().get_xml_desc(*args, **kwargs)
        if self.is_active():
            return xml
        return nested_disks.to_local_disks(xml)

    def attach_device(self, conf, persistent=False, live=False):
        # A disk plugged into the running guest (a volume os-brick just
        # connected) is a file or device of this host, which the L1 does
        # not have: it is served by L0's disk server, as the guest's other
        # disks, and the L1 plugs in the export. (Nova regenerates a
        # stopped guest's XML, volumes included, when it starts it.)
        if not live or not isinstance(conf, vconfig.LibvirtConfigGuestDisk):
            return super().attach_device(conf, persistent=persistent,
                                         live=live)
        daemon = nested_disks.StorageDaemon(CONF)
        disk_xml, exports = nested_disks.plugged_disk(
            super().get_xml_desc(), conf.to_xml(), daemon.address,
            daemon.port)
        daemon.export(exports)
        flags = nova_host.libvirt.VIR_DOMAIN_AFFECT_LIVE
        if persistent:
            flags |= nova_host.libvirt.VIR_DOMAIN_AFFECT_CONFIG
        LOG.debug('attach device xml (served from L0): %s', disk_xml)
        try:
            self._domain.attachDeviceFlags(disk_xml, flags=flags)
        except Exception:
            with excutils.save_and_reraise_exception():
                for export in exports:
                    daemon.unexport(self.uuid, path=export.path)

    def get_config(self):
        # Nova's reads the domain itself, not get_xml_desc().
        config = vconfig.LibvirtConfigGuest()
        config.parse_str(nested_disks.to_local_disks(
            super().get_xml_desc()))
        return config
