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


"""Guests' disks of a nested sibling: served from L0 over NBD, in TLS.

An L2 guest's RAM is an ivshmem BAR mapped from sysfs inside its L1 (a
``VM_PFNMAP`` mapping, no ``struct page``): the L1 kernel cannot pin it,
so no I/O path that moves data straight between a device and the
guest's buffers works there (``O_DIRECT`` on a block device hot-plugged
into the L1, virtio-9p's zero-copy requests: ``EFAULT``). QEMU's NBD
client receives into guest RAM with ``recv``, a copy, which works.

So one ``qemu-storage-daemon`` on L0 opens each guest disk in its own
format (the instance's qcow2 with its backing file, a raw file, a Cinder
volume's block device) and exports it over NBD; the L2's domain names
the export instead of the file (``<disk type='network'>``,
``protocol='nbd'``, raw). No format state lives in the L2's QEMU nor any
cache in the L1 kernel, so the source and the destination of a move use
the one export (the source flushes before it hands over), and an L1 can
be replaced under a guest without its disks going anywhere.

What the daemon is and owns:

* it runs as the QEMU user (it opens what an L0 QEMU would open), out of
  nova-compute's cgroup like the generations (lifetime.py), and is found
  again through its pid file and QMP socket under
  ``<state>/nested/disks`` after a restart of nova-compute;
* it listens only on L0's address on the L1 network, in TLS with a
  client certificate of this node's CA required and only the L1s'
  certificate names accepted (pki.L1_CLIENT_DN_GLOB);
* an export is named after the guest and the disk's target
  (``v<first 16 hex digits of the UUID>-<target>``); it is added when the
  guest is launched in an L1 and removed only when the guest is gone for
  good (``unexport``), never by a move or its rollback;
* each export has a record (``exports/<name>.json``): a daemon started
  again after it died serves the same exports at once, and the guests'
  NBD clients, which wait up to RECONNECT_DELAY_S for it and reconnect,
  carry on without an I/O error;
* a running guest's disk is copied for Nova's snapshot by a backup job of
  the daemon (``snapshot``), at L0, while the guest goes on writing.
"""

import dataclasses
import fcntl
import json
import os
import pwd
import shutil
import time
import xml.etree.ElementTree as ET

from oslo_log import log as logging

from nova_vmbeam import exception
from nova_vmbeam import files
from nova_vmbeam import lifetime
from nova_vmbeam.nested import network
from nova_vmbeam.nested import pki
from nova_vmbeam.privsep import daemons as privsep_daemons
from nova_vmbeam.privsep import files as privsep_files
from nova_vmbeam.qemu import monitor as monitor_mod
from nova_vmbeam.qemu import procfs

LOG = logging.getLogger(__name__)

START_TIMEOUT = 30.0
FORMATS = ('qcow2', 'raw')
#: cache modes that bypass the host's page cache (O_DIRECT at L0)
DIRECT_CACHE_MODES = ('none', 'directsync')
#: how long a guest's disk requests wait for the daemon to come back
#: (libvirt's <reconnect delay>): a restart takes well under a second;
#: a guest's own kernel times a virtio-blk request out after 30 s
RECONNECT_DELAY_S = 20
#: how long a running guest's disk may take to be copied for a snapshot
SNAPSHOT_TIMEOUT = 3600.0


class DiskError(exception.InvalidInput):
    msg_fmt = ('Disk %(target)s of guest %(guest)s cannot be served to a '
               'nested sibling: %(reason)s. %(fix)s')


class StorageDaemonError(exception.VMBeamError):
    msg_fmt = ('The nested sibling\'s qemu-storage-daemon (%(base)s): '
               '%(reason)s. %(fix)s')


@dataclasses.dataclass(frozen=True)
class Export:
    """One guest disk as L0's storage daemon serves it."""

    #: export id, NBD export name and the format node's name at once
    name: str
    #: the file or block device at L0
    path: str
    #: its format, as the domain said it (never probed)
    fmt: str
    #: a block device (Cinder volume) rather than a file
    block: bool
    writable: bool
    #: opened with O_DIRECT (the disk's cache mode bypasses the page cache)
    direct: bool

    @property
    def file_node(self):
        return file_node(self.name)


#: the namespace of the metadata that keeps what the disks are on L0
NAMESPACE = 'https://opendev.org/openstack/nova-vmbeam/disks/1.0'
ET.register_namespace('vmbeamdisks', NAMESPACE)


def _tag(name):
    return '{%s}%s' % (NAMESPACE, name)


def file_node(name):
    """The protocol node under export ``name``'s format node."""
    return name + '-file'


def export_name(guest_uuid, target):
    """The export of disk ``target`` of a guest.

    Also a QEMU node name: a letter first, 31 characters at most.
    """
    return 'v%s-%s' % (guest_uuid.replace('-', '')[:16], target)


def _disk_error(guest, target, reason, fix):
    return DiskError(guest=guest, target=target, reason=reason, fix=fix)


def to_network_disks(domain_xml, address, port):
    """(domain XML with every local disk on NBD, [Export] to serve).

    File and block disks become NBD disks of ``address``:``port`` in TLS,
    raw; a disk that already is one is left as it is (the XML of a guest
    moving between L1s), as is a drive without a medium. Anything else is
    refused before anything is changed.
    """
    domain = ET.fromstring(domain_xml)
    guest = domain.findtext('uuid') or domain.findtext('name') or '?'
    exports = []
    for disk in domain.findall('devices/disk'):
        target = disk.find('target')
        dev = target.get('dev') if target is not None else None
        kind = disk.get('type', 'file')
        source = disk.find('source')
        if kind == 'network':
            protocol = source.get('protocol') if source is not None else None
            if protocol != 'nbd':
                raise _disk_error(
                    guest, dev, 'a %s network disk is not reachable from '
                    'an L1' % protocol,
                    'Attach the volume on the host (a block device) or use '
                    '[vmbeam] sibling_kind = colocated.')
            continue
        if kind not in ('file', 'block'):
            raise _disk_error(guest, dev, 'disks of type %r are not '
                              'supported' % kind,
                              'Use file or block disks.')
        path = None if source is None else source.get(
            'file' if kind == 'file' else 'dev')
        if not path:
            continue   # an empty CD-ROM drive: nothing to serve
        if not dev:
            raise _disk_error(guest, path, 'it has no <target dev=...>',
                              'Give the disk a target device name.')
        driver = disk.find('driver')
        if driver is None:
            driver = ET.SubElement(disk, 'driver', name='qemu')
        fmt = driver.get('type', 'raw')
        if fmt not in FORMATS:
            raise _disk_error(guest, dev, 'format %r is not served' % fmt,
                              'Convert it to qcow2 or raw.')
        if not os.path.isabs(path) or ',' in path:
            raise _disk_error(guest, dev, 'its path %r is not absolute or '
                              'holds a comma' % path,
                              'Name it by an absolute path without commas.')
        exports.append(Export(
            name=export_name(guest, dev), path=path, fmt=fmt,
            block=kind == 'block',
            writable=disk.find('readonly') is None,
            direct=driver.get('cache') in DIRECT_CACHE_MODES))
        disk.set('type', 'network')
        driver.set('type', 'raw')
        # aio=native is a file's; the NBD client has no such thing
        driver.attrib.pop('io', None)
        for old in disk.findall('source') + disk.findall('backingStore'):
            disk.remove(old)
        new_source = ET.Element('source', protocol='nbd',
                                name=exports[-1].name, tls='yes')
        ET.SubElement(new_source, 'host', name=address, port=str(port))
        ET.SubElement(new_source, 'reconnect',
                      delay=str(RECONNECT_DELAY_S))
        # where <source> was: libvirt does not mind, readers do
        disk.insert(list(disk).index(driver) + 1, new_source)
        _keep_local(domain, dev, kind, path, fmt)
    names = [e.name for e in exports]
    if len(set(names)) != len(names):
        raise _disk_error(guest, ', '.join(names), 'two disks share a '
                          'target', 'Give each disk a target of its own.')
    if not exports:
        return domain_xml, []
    return ET.tostring(domain, encoding='unicode'), exports


def _keep_local(domain, target, kind, path, fmt):
    """Keep what disk ``target`` is on L0 in the domain's metadata."""
    metadata = domain.find('metadata')
    if metadata is None:
        metadata = ET.SubElement(domain, 'metadata')
    # One element of this namespace: libvirt keeps one per namespace.
    kept = metadata.find(_tag('disks'))
    if kept is None:
        kept = ET.SubElement(metadata, _tag('disks'))
    ET.SubElement(kept, _tag('disk'), target=target, type=kind, path=path,
                  format=fmt)


def plugged_disk(domain_xml, disk_xml, address, port):
    """A disk to plug into a running guest, as its L1 reaches it.

    (the disk's XML on NBD, [Export] to serve), refused as
    to_network_disks refuses. The domain's metadata is left as it is:
    its disks are found again from it for Nova's work on a stopped
    guest, whose volumes Nova attaches anew when it starts.
    """
    domain = ET.fromstring(domain_xml)
    alone = ET.Element('domain')
    for tag in ('name', 'uuid'):
        if domain.find(tag) is not None:
            ET.SubElement(alone, tag).text = domain.findtext(tag)
    ET.SubElement(alone, 'devices').append(ET.fromstring(disk_xml))
    xml, exports = to_network_disks(ET.tostring(alone, encoding='unicode'),
                                    address, port)
    return (ET.tostring(ET.fromstring(xml).find('devices/disk'),
                        encoding='unicode'), exports)


def to_local_disks(domain_xml):
    """A domain XML whose NBD disks are again the L0 files they serve.

    What the disks are on this host, for whoever works on them here
    (Nova, on a stopped instance: its snapshot reads the root disk's
    path from the domain). Disks not in the metadata are left as they
    are.
    """
    domain = ET.fromstring(domain_xml)
    kept = domain.find('metadata/' + _tag('disks'))
    if kept is None:
        return domain_xml
    local = {d.get('target'): d for d in kept.findall(_tag('disk'))}
    for disk in domain.findall('devices/disk'):
        target = disk.find('target')
        was = local.get(target.get('dev') if target is not None else None)
        source = disk.find('source')
        if was is None or disk.get('type') != 'network' or source is None:
            continue
        disk.set('type', was.get('type'))
        driver = disk.find('driver')
        if driver is not None:
            driver.set('type', was.get('format'))
        index = list(disk).index(source)
        disk.remove(source)
        disk.insert(index, ET.Element('source', **{
            'file' if was.get('type') == 'file' else 'dev':
                was.get('path')}))
    return ET.tostring(domain, encoding='unicode')


class StorageDaemon:
    """L0's qemu-storage-daemon for one node's nested siblings."""

    def __init__(self, conf):
        self.conf = conf
        self.base = os.path.join(conf.vmbeam.state_path, 'nested', 'disks')
        self.socket_path = os.path.join(self.base, 'qmp.sock')
        self.pid_file = os.path.join(self.base, 'qsd.pid')
        self.records = os.path.join(self.base, 'exports')

    @property
    def address(self):
        return network.host_address(self.conf)[0]

    @property
    def port(self):
        return self.conf.vmbeam_nested.disk_export_port

    def process(self):
        """The daemon's process (procfs identity), None if it is gone."""
        return procfs.pidfile_process(self.pid_file)

    def running(self):
        return self.process() is not None

    def _error(self, reason, fix):
        return StorageDaemonError(base=self.base, reason=reason, fix=fix)

    def _binary(self):
        configured = self.conf.vmbeam_nested.storage_daemon_binary
        found = configured if os.path.isabs(configured) else \
            shutil.which(configured)
        if not found or not os.access(found, os.X_OK):
            raise self._error(
                '%s is not installed' % configured,
                'Install qemu-utils (Debian, Ubuntu) or qemu-img (RHEL), '
                'or set [vmbeam_nested] storage_daemon_binary.')
        return found

    def ensure(self):
        """Start the daemon unless it runs (one starter at a time)."""
        os.makedirs(os.path.dirname(self.base), exist_ok=True)
        os.makedirs(self.base, mode=0o770, exist_ok=True)
        with open(self.base + '.lock', 'a') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.running():
                self._start()
        return self

    def watch(self):
        """Start the daemon again if it died while serving guests' disks.

        Their NBD clients wait for it to come back (reconnect) and carry
        on. Called periodically (VMBeamDriver, with Nova's resource
        update); True if it had to be started.
        """
        if self.running() or not self.recorded():
            return False
        LOG.warning('qemu-storage-daemon of %s is gone with exports to '
                    'serve: starting it again', self.base)
        self.ensure()
        return True

    def _start(self):
        pw = pwd.getpwnam(self.conf.vmbeam.qemu_user)
        binary = self._binary()
        # The daemon (the QEMU user) writes its pid file and socket here;
        # the service's own group keeps the way in.
        if os.stat(self.base).st_uid != pw.pw_uid:
            # (Once: then it is the QEMU user's, which an unprivileged
            # service may not chmod when it starts the daemon again.)
            os.chmod(self.base, 0o770)
            privsep_files.chown(self.base, pw.pw_uid, os.getegid())
        files.searchable(os.path.dirname(self.base))
        for stale in (self.socket_path, self.pid_file):
            if os.path.exists(stale):
                os.unlink(stale)
        # A fresh server certificate each start: it names the address of
        # the moment ([vmbeam_nested] network_cidr may have changed).
        for name, data in sorted(pki.disk_server_files(
                self.conf, self.address).items()):
            path = os.path.join(self.base, name)
            pki.write_private(path, data)
            privsep_files.chown(path, pw.pw_uid, pw.pw_gid)
        started = time.monotonic()
        status, stdout, stderr = privsep_daemons.start_storage_daemon(
            lifetime.group_name('nested-disks', self.base), binary,
            self.base, self.conf.vmbeam.qemu_user, self.address, self.port,
            pki.L1_CLIENT_DN_GLOB, START_TIMEOUT, client_uid=os.geteuid())
        if status != 0 or not self.running():
            detail = (stderr or stdout or b'').decode(
                errors='replace').strip()
            if not detail:
                detail = ('no answer within %.0f s' % START_TIMEOUT
                          if status is None else 'exit status %s' % status)
            raise self._error(
                'it did not start (%s)' % detail,
                'If another process holds %s:%d, set [vmbeam_nested] '
                'disk_export_port to a free port.' % (self.address,
                                                      self.port))
        LOG.info('started qemu-storage-daemon %d, NBD in TLS on %s:%d, in '
                 '%.0f ms', self.process().pid, self.address, self.port,
                 (time.monotonic() - started) * 1000)
        recorded = self.recorded()
        if recorded:
            # It died with guests using it: they wait to reconnect.
            self._serve(recorded, each_alone=True)
            LOG.warning('qemu-storage-daemon started again: serving the %d '
                        'exports it served before', len(recorded))

    def recorded(self):
        """The exports recorded as served ([Export])."""
        try:
            names = sorted(os.listdir(self.records))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            if name.endswith('.json'):
                with open(os.path.join(self.records, name)) as f:
                    found.append(Export(**json.load(f)))
        return found

    def _monitor(self):
        mon = monitor_mod.Monitor(self.socket_path, 'qemu-storage-daemon')
        mon.connect()
        return mon

    def exports(self):
        """Names of the exports it serves."""
        mon = self._monitor()
        try:
            return sorted(e['id'] for e in mon.execute('query-block-exports'))
        finally:
            mon.close()

    def export(self, exports):
        """Serve ``exports`` (those served already are kept as they are)."""
        if not exports:
            return
        self.ensure()
        os.makedirs(self.records, mode=0o700, exist_ok=True)
        for export in exports:
            # Recorded before it is added: a daemon started again after a
            # crash half way serves it too (adding is idempotent).
            files.replace_json(os.path.join(self.records, export.name +
                                            '.json'),
                               dataclasses.asdict(export), durable=True)
        self._serve(exports)

    def _serve(self, exports, each_alone=False):
        """Add what of ``exports`` is not served yet.

        ``each_alone``: one that cannot be served (its file is gone) is
        logged and the others are served all the same.
        """
        mon = self._monitor()
        try:
            served = {e['id'] for e in mon.execute('query-block-exports')}
            nodes = {n['node-name'] for n in
                     mon.execute('query-named-block-nodes', flat=True)}
            for export in exports:
                if export.name in served:
                    continue
                try:
                    self._add(mon, export, nodes)
                except exception.MonitorError as exc:
                    if not each_alone:
                        raise
                    LOG.error('cannot serve %s again as %s: %s', export.path,
                              export.name, exc)
        finally:
            mon.close()

    @staticmethod
    def _add(mon, export, nodes):
        common = {'read-only': not export.writable,
                  'cache': {'direct': export.direct}}
        if export.file_node not in nodes:
            mon.execute('blockdev-add', **dict(
                common, driver='host_device' if export.block else 'file',
                filename=export.path, **{'node-name': export.file_node}))
        if export.name not in nodes:
            mon.execute('blockdev-add', **dict(
                common, driver=export.fmt, file=export.file_node,
                **{'node-name': export.name}))
        mon.execute('block-export-add', type='nbd', id=export.name,
                    name=export.name, writable=export.writable,
                    **{'node-name': export.name})
        LOG.info('serving %s (%s, %s) as NBD export %s', export.path,
                 export.fmt, 'read-write' if export.writable else
                 'read-only', export.name)

    def unexport(self, guest_uuid, path=None, timeout=30.0):
        """Stop serving a guest's disks (the guest is gone for good).

        ``path``: only the disk of that file or device (a volume detached
        from the guest). Refused by the daemon while an L1 still has the
        export open: a guest that still runs somewhere keeps its disks.
        Their records go too, whether the daemon runs or not.
        """
        prefix = export_name(guest_uuid, '')
        real = None if path is None else os.path.realpath(path)
        names = {e.name for e in self.recorded()
                 if e.name.startswith(prefix) and
                 (real is None or os.path.realpath(e.path) == real)}
        removed = []
        if self.running():
            removed = self._unserve(
                lambda name: name.startswith(prefix) and
                (real is None or name in names), timeout)
        for name in names:
            os.unlink(os.path.join(self.records, name + '.json'))
        return removed

    def _unserve(self, chosen, timeout):
        mon = self._monitor()
        removed = []
        try:
            for export in mon.execute('query-block-exports'):
                if chosen(export['id']):
                    mon.execute('block-export-del', id=export['id'])
                    removed.append(export['id'])
            deadline = time.monotonic() + timeout
            while any(e['id'] in removed
                      for e in mon.execute('query-block-exports')):
                if time.monotonic() > deadline:
                    raise self._error('exports %s were not closed within '
                                      '%.0f s' % (removed, timeout),
                                      'Check that no L1 still uses them.')
                time.sleep(0.05)
            for name in removed:
                for node in (name, file_node(name)):
                    mon.execute('blockdev-del', **{'node-name': node})
        finally:
            mon.close()
        return removed

    def _export_of(self, path):
        real = os.path.realpath(path)
        for export in self.recorded():
            if os.path.realpath(export.path) == real:
                return export
        raise self._error('%s is not one of the disks it serves' % path,
                          'Snapshot a running nested instance\'s disks '
                          'only; a stopped one\'s are this host\'s files.')

    def snapshot(self, path, target, started=None, timeout=SNAPSHOT_TIMEOUT):
        """Copy what the served disk ``path`` holds now into ``target``.

        A crash-consistent copy while its guest runs and writes: the
        daemon, which holds the disk open, runs a backup job that copies
        the clusters of the disk's top layer as they were when the job
        started (a guest's write to one not copied yet first copies the
        old data out: copy-before-write). ``target``: a qcow2 file of the
        disk's virtual size, on the disk's backing file if it has one
        (so that the two make the whole disk), made beforehand and
        writable by the QEMU user. ``started()`` runs once the copy's
        point in time is set (to thaw a quiesced guest). Returns when
        the copy is complete; the target is closed by then.
        """
        export = self._export_of(path)
        self.ensure()
        # QEMU node names: 31 characters at most (the export's has 21).
        node, node_file = export.name + '-snap', export.name + '-snapf'
        job = node
        mon = self._monitor()
        added = []
        try:
            mon.execute('blockdev-add', driver='file', filename=target,
                        **{'node-name': node_file})
            added.insert(0, node_file)
            # The backing file stays unopened here: only the header names
            # it, for whoever reads the copy.
            mon.execute('blockdev-add', driver='qcow2', file=node_file,
                        backing=None, **{'node-name': node})
            added.insert(0, node)
            mon.execute('blockdev-backup', device=export.name, target=node,
                        sync='top', **{'job-id': job, 'auto-dismiss': False})
            try:
                if started is not None:
                    started()
            finally:
                self._wait_job(mon, job, path, timeout)
        finally:
            try:
                for name in added:
                    mon.execute('blockdev-del', **{'node-name': name})
            finally:
                mon.close()
        LOG.info('copied %s (%s) into %s', path, export.name, target)

    def _wait_job(self, mon, job, path, timeout):
        deadline = time.monotonic() + timeout
        cancelled = False
        while True:
            jobs = {j['id']: j for j in mon.execute('query-jobs')}
            state = jobs.get(job)
            if state is None:
                raise self._error('the copy of %s vanished' % path,
                                  'See the daemon\'s log, then retry.')
            if state['status'] == 'concluded':
                mon.execute('job-dismiss', id=job)
                if cancelled:
                    raise self._error(
                        'the copy of %s took more than %.0f s, and was '
                        'cancelled' % (path, timeout),
                        'Retry when the host\'s disks are less busy.')
                if state.get('error'):
                    raise self._error('the copy of %s failed: %s' % (
                        path, state['error']), 'See the daemon\'s log, '
                        'and check the space of the snapshot directory.')
                return
            if not cancelled and time.monotonic() > deadline:
                mon.execute('job-cancel', id=job)
                cancelled = True
            time.sleep(0.1)

    def stop(self, timeout=10.0):
        """Stop the daemon (no guest may be using it); True if it ran."""
        process = self.process()
        if process is None:
            return False
        mon = self._monitor()
        try:
            mon.execute('quit')
        except exception.MonitorError:
            pass   # the reply is lost when it closes the monitor
        finally:
            mon.close()
        deadline = time.monotonic() + timeout
        while process.alive():
            if time.monotonic() > deadline:
                raise self._error('pid %d did not exit' % process.pid,
                                  'Kill it by hand.')
            time.sleep(0.02)
        return True


def serve(conf, domain_xml):
    """The domain XML with its disks on L0's NBD exports, which now serve.

    Nothing is exported unless every disk can be (bad input is refused
    first).
    """
    daemon = StorageDaemon(conf)
    xml, exports = to_network_disks(domain_xml, daemon.address, daemon.port)
    if exports:
        daemon.export(exports)
    elif ET.fromstring(xml).findall(
            "devices/disk/source[@protocol='nbd']/host[@name='%s']" %
            daemon.address):
        # A guest moving with its disks served already: by a daemon that
        # runs (started again if it died: the records say what it served).
        daemon.ensure()
    return xml
