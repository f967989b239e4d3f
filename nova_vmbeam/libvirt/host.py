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

"""A connection to one libvirt daemon, with QEMU monitor events.

libvirt delivers events only to a process that registered an event loop
implementation before opening connections and keeps running it; that loop
runs in one daemon thread here, shared by all connections (as in Nova).
"""

import collections
import json
import os
import threading
import time
import xml.etree.ElementTree as ET

import libvirt
import libvirt_qemu
from oslo_log import log as logging

from nova_vmbeam import exception
from nova_vmbeam import hypervisor
from nova_vmbeam.libvirt import config
from nova_vmbeam.libvirt import guest as guest_mod
from nova_vmbeam.libvirt import partition as partition_mod
from nova_vmbeam.qemu import procfs

LOG = logging.getLogger(__name__)

# QMP events kept per domain (a move needs the last few dozen).
_EVENTS_KEPT = 1024

#: The D-Bus error systemd-machined answers CreateMachine with when a
#: machine of that name is registered already (systemd's machined-dbus.c,
#: method_create_or_register_machine). libvirt 11 passes it on as a
#: VIR_ERR_DBUS_SERVICE error of VIR_FROM_DBUS with this name as str1
#: (virGDBusCallMethod, virSystemdCreateMachine).
MACHINE_EXISTS = 'org.freedesktop.machine1.MachineExists'

#: createXML calls for one launch whose machine name machined refuses. A
#: failed start uses up its domain id, so the second call gets another
#: machine name; more than two means something else holds the names.
LAUNCH_ATTEMPTS = 3

_loop_lock = threading.Lock()
_loop_started = False


def use_external_event_loop():
    """Another part of this process runs libvirt's event loop.

    libvirt has one default event loop per process; Nova's libvirt driver
    registers and runs it itself. Call this before any connection is
    opened here, so that this module never starts a second loop thread.
    """
    global _loop_started
    with _loop_lock:
        _loop_started = True


def _ensure_event_loop():
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        # libvirt prints every error to stderr unless told otherwise; ours
        # are raised as exceptions and reported where they matter.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

        def run():
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name='vmbeam-libvirt-events',
                         daemon=True).start()
        _loop_started = True


def machine_exists(exc):
    """Whether libvirt error ``exc`` is machined refusing a machine name.

    Only that error: another D-Bus failure of machined (not running, no
    answer, access denied) is a failure like any other.
    """
    return (exc.get_error_code() == libvirt.VIR_ERR_DBUS_SERVICE and
            exc.get_error_domain() == libvirt.VIR_FROM_DBUS and
            exc.get_str1() == MACHINE_EXISTS)


class Host(hypervisor.Hypervisor):
    """One libvirt daemon as a hypervisor that guests can move onto.

    It keeps the QMP events of its domains per domain UUID, with QEMU's own
    timestamps. ``pid_dir`` and ``log_dir`` are the daemon's /run/libvirt and
    /var/log/libvirt as seen from this process (a colocated sibling has
    private ones); ``run_dir`` is where incoming migration sockets go and
    must be reachable by the QEMU user of every generation.
    """

    #: the endpoint class of this daemon's guests
    guest_class = guest_mod.LibvirtGuest

    def __init__(self, name, uri, run_dir, pid_dir='/run/libvirt',
                 log_dir='/var/log/libvirt',
                 daemon_pid_file='/run/libvirtd.pid', partition=None):
        self.name = name
        # The resource partition of the guests it starts (None: libvirt's
        # default); see libvirt/partition.py.
        self.partition = partition
        self.daemon_pid_file = daemon_pid_file
        self.uri = uri
        self._run_dir = run_dir
        self.pid_dir = pid_dir
        self.log_dir = log_dir
        self._conn = None
        self._callback = None
        self._lock = threading.Lock()
        self._events = {}

    @property
    def conn(self):
        with self._lock:
            if self._conn is None or not self._conn.isAlive():
                self._conn = self._open()
            return self._conn

    def _open(self):
        _ensure_event_loop()
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise exception.VMBeamError(
                'cannot connect to libvirt at %s: %s' % (self.uri, exc))
        self._callback = libvirt_qemu.qemuMonitorEventRegister(
            conn, None, None, self._on_event, None, 0)
        return conn

    def _on_event(self, conn, dom, event, seconds, micros, details, opaque):
        if isinstance(details, str):
            # libvirt relays the event's "data" as JSON text.
            try:
                details = json.loads(details)
            except ValueError:
                details = {'raw': details}
        # 'received': when it reached us, on this host's clock; QEMU's own
        # timestamp is on the clock of the kernel it runs on, which is not
        # ours for a QEMU inside an L1 VM (nested).
        record = {'event': event, 'data': details or {},
                  'timestamp': {'seconds': seconds,
                                'microseconds': micros},
                  'received': time.time()}
        with self._lock:
            # Bounded: a long-lived connection must not grow with time.
            self._events.setdefault(dom.UUIDString(), collections.deque(
                maxlen=_EVENTS_KEPT)).append(record)

    def events(self, uuid):
        with self._lock:
            return list(self._events.get(uuid, ()))

    def close(self):
        with self._lock:
            if self._conn is not None:
                try:
                    # The registered callback holds a reference to the
                    # connection: without this, close() leaves the socket
                    # and the daemon's descriptor for it open.
                    libvirt_qemu.qemuMonitorEventDeregister(self._conn,
                                                            self._callback)
                except libvirt.libvirtError:
                    pass
                try:
                    self._conn.close()
                except libvirt.libvirtError:
                    pass
                self._conn = None

    def alive(self):
        try:
            self.conn.getLibVersion()
            return True
        except (libvirt.libvirtError, exception.VMBeamError):
            return False

    @property
    def run_dir(self):
        return self._run_dir

    def control_pids(self):
        # Boosted during a switchover: a stale pid file must not lend the
        # boost to whatever process has the daemon's pid now.
        daemon = procfs.pidfile_process(self.daemon_pid_file) \
            if self.daemon_pid_file else None
        return [daemon.pid] if daemon else []

    def launch(self, spec, incoming=(), paused=False):
        """Create the domain of ``spec`` (from its XML) in this daemon.

        If createXML fails, a domain it started all the same is destroyed
        before the failure is raised (_remove_half_created).

        Where systemd-machined registers guests, the machine name of the
        new domain, ``qemu-<id>-<name>``, is the one its source in another
        generation's daemon has whenever this daemon hands out the
        source's id (each daemon counts ids from 1), and machined refuses
        it. libvirt asks machined before the new QEMU execs and tidies up
        on the refusal without asking machined to terminate anything, but
        the id stays used up: createXML is called again, up to
        LAUNCH_ATTEMPTS times in all, and gets a higher id, so another name
        (docs/nova-driver.md, "Machine names on systemd-machined hosts").
        """
        xml = spec.domain_xml
        if self.partition:
            # Also for a guest of another generation: its XML names that
            # generation's partition.
            xml = partition_mod.with_partition(xml, self.partition)
        if incoming:
            xml = config.for_destination(xml, incoming)
        flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
        try:
            before = self._domain_id(spec.name)
        except libvirt.libvirtError as exc:
            raise exception.QemuStartFailed(guest=spec.name, detail=exc)
        for attempt in range(1, LAUNCH_ATTEMPTS + 1):
            try:
                dom = self.conn.createXML(xml, flags)
            except libvirt.libvirtError as exc:
                detail = self._remove_half_created(spec, before, exc)
                if not machine_exists(exc):
                    raise exception.QemuStartFailed(guest=spec.name,
                                                    detail=detail)
                if attempt == LAUNCH_ATTEMPTS:
                    raise exception.QemuStartFailed(
                        guest=spec.name,
                        detail='systemd-machined refused its machine name '
                               '%d times, the last time: %s' % (
                                   attempt, detail))
                self._ready_for_another_attempt(spec, before, detail)
                LOG.warning('systemd-machined refused the machine name of '
                            '%s on %s (%s): another guest, most likely its '
                            'source in another generation, has it; this '
                            'daemon has used up that domain id, trying '
                            'again (attempt %d of %d)', spec.name,
                            self.name, exc, attempt + 1, LAUNCH_ATTEMPTS)
            else:
                return self.guest_class(self, dom, spec)

    def _ready_for_another_attempt(self, spec, before, detail):
        """Raise QemuStartFailed unless the failed call left nothing here.

        A refused machine name stops libvirt before QEMU runs a guest, and
        libvirt removes the new domain again; should it still be here (or
        unknown: the daemon out of reach), it is not created a second time.
        """
        try:
            now = self._domain_id(spec.name)
        except (libvirt.libvirtError, exception.VMBeamError) as exc:
            raise exception.QemuStartFailed(
                guest=spec.name,
                detail='%s; whether it left a domain behind on %s is '
                       'unknown: %s' % (detail, self.name, exc))
        if now != before:
            raise exception.QemuStartFailed(
                guest=spec.name,
                detail='%s; domain %d of that name still runs on %s' % (
                    detail, now, self.name))

    def _domain_id(self, name):
        """The id of the running domain ``name`` here, or None.

        libvirt gives every domain it starts an id of its own (-1 while a
        domain is not running); ids are never reused while the daemon runs.
        """
        dom = self.lookup(name)
        domain_id = dom.ID() if dom is not None else -1
        return None if domain_id == -1 else domain_id

    def _remove_half_created(self, spec, before, exc):
        """Destroy what a failed createXML of ``spec`` left running.

        createXML can fail after the daemon has created the domain and
        started its QEMU: the reply is lost (a connection that dropped or
        timed out while the daemon went on), or a late step failed and
        libvirt did not tidy up. Such a domain is told apart from a guest
        of the same name (a moved one, another generation's) by its id:
        one that runs now but did not run before this call, or ran with
        another id (``before``), was started by the call. It never
        received a guest, since launch() did not return: nobody asked it
        to take a migration or resumed it. But it maps the guest's RAM,
        and Nova would find it under the guest's UUID in this generation,
        so it is destroyed, and its QEMU reaped, before the move rolls
        back. Returns what to report.
        """
        try:
            dom = self.lookup(spec.name)
            found = dom.ID() if dom is not None else -1
            started = found not in (-1, before) and \
                dom.UUIDString() == spec.uuid
        except (libvirt.libvirtError, exception.VMBeamError) as lookup_exc:
            return ('%s; whether it left a domain behind on %s is unknown: '
                    '%s' % (exc, self.name, lookup_exc))
        if not started:
            return str(exc)
        LOG.warning('creating %s on %s failed (%s), but it started domain '
                    '%d: destroying that half-created domain', spec.name,
                    self.name, exc, found)
        try:
            self.guest_class(self, dom, spec).destroy()
        except Exception as destroy_exc:
            LOG.error('destroying the half-created domain %s (id %d) on %s '
                      'failed: %s', spec.name, found, self.name, destroy_exc)
            return ('%s; the domain it started (id %d) could not be '
                    'destroyed: %s' % (exc, found, destroy_exc))
        return '%s; the domain it started (id %d) was destroyed' % (
            exc, found)

    def boot(self, spec):
        """Start ``spec`` here as a persistent, running domain."""
        guest = self.launch(spec)
        guest.persist()
        return guest

    def guest(self, name):
        """The running guest ``name`` here, or None."""
        dom = self.lookup(name)
        try:
            if dom is None or not dom.isActive():
                return None
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
        except libvirt.libvirtError as exc:
            # Gone between the lookup and now (a retired source that
            # libvirt has just tidied away).
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise
        return self.guest_class(self, dom, config.guest_spec(xml))

    def guests(self):
        """The guests running here (skipping domains that stop meanwhile)."""
        found = []
        for name in sorted(self.domains()):
            try:
                guest = self.guest(name)
            except libvirt.libvirtError:
                continue
            if guest is not None:
                found.append(guest)
        return found

    def host_uuid(self):
        return ET.fromstring(self.conn.getCapabilities()).findtext(
            'host/uuid')

    def domains(self):
        """Running (or paused) domains, by name."""
        return {dom.name(): dom for dom in self.conn.listAllDomains(
            libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}

    def lookup(self, name):
        try:
            return self.conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def running_qemus(self):
        """Names of this daemon's guests whose QEMU process still exists.

        Read from libvirt's pid files and /proc, not asked of the daemon:
        libvirt lists a domain as active for a second or more after its
        QEMU has exited, while it tidies up, and "is this daemon empty"
        only cares about live QEMUs. Only a pid file locked by the process
        it names, and that process the QEMU of that domain, counts
        (libvirt keeps its own driver.pid there too).
        """
        names = []
        qemu_dir = os.path.join(self.pid_dir, 'qemu')
        try:
            entries = os.listdir(qemu_dir)
        except FileNotFoundError:
            return names
        for entry in entries:
            if not entry.endswith('.pid'):
                continue
            name = entry[:-len('.pid')]
            pid = self.qemu_pid(name, timeout=0)
            if pid is not None and procfs.is_libvirt_qemu(pid, name):
                names.append(name)
        return sorted(names)

    def qemu_process(self, name, timeout=5.0):
        """The QEMU of domain ``name`` (a ProcessIdentity), from its pid file.

        Only the QEMU that holds the lock on libvirt's pid file counts
        (procfs.pidfile_process): a file left behind by a QEMU that died
        while its daemon was down names a pid that may belong to any
        process by now, another generation's QEMU of the same domain
        included. Waits up to ``timeout`` for the file of a QEMU that is
        starting; None at once with ``timeout`` 0.

        A hypervisor without pid files here (pid_dir None: its QEMUs run
        in a VM) names the process that runs the guest by qemu_pid().
        """
        if self.pid_dir is None:
            pid = self.qemu_pid(name, timeout)
            return procfs.ProcessIdentity.of(pid) if pid else None
        path = os.path.join(self.pid_dir, 'qemu', '%s.pid' % name)
        deadline = time.monotonic() + timeout
        while True:
            process = procfs.pidfile_process(path)
            if process is not None or timeout == 0:
                return process
            # A starting QEMU holds the lock before it writes its pid: a
            # pid that does not hold it (asked twice, in case the file was
            # written between) is a QEMU gone, not one to wait for.
            if procfs.pidfile_pid(path) is not None:
                process = procfs.pidfile_process(path)
                if process is not None:
                    return process
                raise exception.QemuGone(
                    'QEMU pid file %s is stale: the QEMU it names is gone'
                    % path)
            if time.monotonic() > deadline:
                raise exception.VMBeamError(
                    'no QEMU holds its pid file %s' % path)
            time.sleep(0.005)

    def qemu_pid(self, name, timeout=5.0):
        """Pid of the QEMU of domain ``name`` (see qemu_process)."""
        if self.pid_dir is None:
            raise exception.VMBeamError(
                '%s keeps no QEMU pid files here' % self.name)
        process = self.qemu_process(name, timeout)
        return process.pid if process is not None else None

    def monitor_command(self, dom, command, arguments=None, timeout=None):
        """A QMP command through libvirt's monitor passthrough."""
        message = {'execute': command}
        if arguments:
            message['arguments'] = arguments
        try:
            reply = json.loads(libvirt_qemu.qemuMonitorCommand(
                dom, json.dumps(message), 0))
        except libvirt.libvirtError as exc:
            raise exception.MonitorError('%s: %s failed: %s' %
                                         (dom.name(), command, exc))
        if 'error' in reply:
            raise exception.MonitorError('%s: %s failed: %s' % (
                dom.name(), command, reply['error'].get('desc')))
        return reply.get('return')
