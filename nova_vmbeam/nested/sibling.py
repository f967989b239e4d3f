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

"""nested: each hypervisor generation is a VM (L1) on this host (L0).

The faithful VMBeam shape: guests (L2) run inside the active L1, and
rejuvenation boots a fresh L1 (fresh kernel, libvirt and QEMU, from the L1
appliance: ``vmbeam appliance build``) and moves every guest across by
sharing its RAM at L0, then shuts the old L1 down. Unlike the colocated
sibling this also rejuvenates the hypervisor's kernel.

L0 side:
  * the L1 VMs run under one L0 libvirt daemon, started here on first use:
    a private libvirtd of its own (libvirt/daemon.py, like a colocated
    generation's, in ``<state>/nested/l0``), not one of the rejuvenated
    generations;
  * they share a private Linux bridge ([vmbeam_nested] bridge) with
    static addresses; the host reaches each L1's libvirtd over TLS with a
    client certificate, ``qemu+tls://<address>/system?pkipath=<dir>``
    (nested/pki.py: why, and where the keys live), and its
    qemu-guest-agent through the L0 daemon (``virDomainQemuAgentCommand``),
    which is also how the L1 gets its own keys before its libvirtd
    listens;
  * each L1 has a second QMP monitor on a unix socket
    (``<state>/nested/genN/qmp.sock``) through which vmbeam-pagemoverd
    hotplugs guest RAM pools as ivshmem-plain devices (virtio-pmem-pci
    with [vmbeam_nested] bar_mapping = dax);
  * the L0 daemon runs outside the cgroup of whoever started it
    (lifetime.py), and so do the L1 VMs' QEMUs: libvirt puts them in
    machine cgroups of their own where it makes any, they inherit the L0
    daemon's elsewhere, and one found in its starter's cgroup all the
    same is moved out (``vmbeam/l1-genN-<hash>``).
"""

import fcntl
import functools
import os
import pwd
import shutil
import time
import urllib.parse
import uuid

import libvirt
from oslo_log import log as logging

from nova_vmbeam import exception
from nova_vmbeam import files
from nova_vmbeam.libvirt import config as libvirt_config
from nova_vmbeam.libvirt import daemon as libvirt_daemon
from nova_vmbeam import lifetime
from nova_vmbeam.nested import agent
from nova_vmbeam.nested import appliance as appliance_mod
from nova_vmbeam.nested import caching
from nova_vmbeam.nested import disks
from nova_vmbeam.nested import host as nested_host
from nova_vmbeam.nested import kernel as nested_kernel
from nova_vmbeam.nested import network
from nova_vmbeam.nested import pki
from nova_vmbeam.privsep import cgroups
from nova_vmbeam.privsep import daemons as privsep_daemons
from nova_vmbeam.privsep import files as privsep_files
from nova_vmbeam.privsep import network as privsep_network
from nova_vmbeam.qemu import procfs
from nova_vmbeam import records
from nova_vmbeam.siblings import base
from nova_vmbeam import waiting

LOG = logging.getLogger(__name__)

DOMAIN_PREFIX = 'vmbeam-l1-'
QMP_ID = 'vmbeam-qmp'
# Kernel options of the L1, as for the test guest: fast boot under TCG,
# no console chatter, a panic ends the VM.
KERNEL_OPTS = ('console=ttyS0 quiet loglevel=3 mitigations=off '
               'no_timer_check tsc=reliable nokaslr i8042.noaux '
               'i8042.nokbd panic=-1')
#: how long an L1 whose agent stopped answering is watched for its end at
#: L0: a killed L1's QEMU is gone at once, but libvirt marks its domain
#: shut off only once it has read the end of its monitor
DYING_L1_SECONDS = 10.0


def nested_dir(conf, *parts):
    return os.path.join(conf.vmbeam.state_path, 'nested', *parts)


class L0Daemon:
    """The libvirt daemon the L1 VMs run under (never rejuvenated here).

    A private libvirtd + virtlogd like a colocated generation's, under
    ``<state>/nested/l0``, with a host UUID kept there.
    """

    name = 'nested-l0'

    def __init__(self, conf):
        self.conf = conf
        self.base = nested_dir(conf, 'l0')
        os.makedirs(self.base, exist_ok=True)
        uuid_file = os.path.join(self.base, 'host_uuid')
        try:
            with open(uuid_file) as f:
                host_uuid = f.read().strip()
        except FileNotFoundError:
            host_uuid = str(uuid.uuid4())
            with open(uuid_file, 'w') as f:
                f.write(host_uuid)
        # Chardev files opened by libvirtd itself, not by virtlogd: the
        # L1s' console ports (nested/consoles.py) of one guest append to
        # the same log from two L1s during a move, and virtlogd lets one
        # domain at a time open a file.
        self.daemon = libvirt_daemon.PrivateLibvirtd(
            conf, self.base, host_uuid, self.name, 0,
            qemu_conf_extra='stdio_handler = "file"\n')

    def host(self):
        return self.daemon.host()

    def running(self):
        return self.daemon.running()

    def retire(self):
        self.daemon.stop()

    def ensure(self):
        """Start the daemon unless it runs.

        Under a lock: siblings may start at the same time.
        """
        with open(os.path.join(self.base, '.lock'), 'a') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.daemon.running():
                self.daemon.start()
                self.daemon.wait_ready(
                    self.conf.vmbeam.sibling_start_timeout)
        return self


def appliance(conf):
    """The L1 appliance to boot ([vmbeam_nested] appliance_dir or built)."""
    directory = conf.vmbeam_nested.appliance_dir
    if directory:
        found = appliance_mod.builder.load(os.path.join(directory,
                                                        'manifest.json'))
        if found is None:
            raise appliance_mod.ApplianceError(
                reason='%s holds no complete appliance (manifest.json and '
                       'the files it names)' % directory,
                fix='Run "vmbeam appliance build" and point [vmbeam_nested] '
                    'appliance_dir at the directory it prints, or unset '
                    'it.')
        return found
    return appliance_mod.build()


def host_memory_mib(meminfo='/proc/meminfo'):
    """This host's RAM (MemTotal), in MiB."""
    with open(meminfo) as f:
        for line in f:
            if line.startswith('MemTotal:'):
                return int(line.split()[1]) >> 10
    raise exception.VMBeamError('no MemTotal in %s' % meminfo)


#: the slots of the L1's root PCI bus that hotplugged devices may take
#: (0-2 and the boot-time devices are below). Not 0x1f: QEMU (10.0)
#: checks function 0 of the slot of a hot-plugged device before it gives
#: the device its address, and a device whose address QEMU is to choose
#: (a pool that vmbeam-pagemoverd plugs) reads as slot 31 then: with a
#: device in slot 31, every such plug fails ("slot 31 function 0 already
#: occupied by virtio-net-pci, new func ivshmem-plain cannot be exposed
#: to guest").
FIRST_PCI_SLOT, LAST_PCI_SLOT = 0x08, 0x1e
#: the L2 guests' QEMU binary in the L1 appliance
L2_QEMU = 'qemu-system-x86_64'


class NestedSibling(base.SiblingBase):
    kind = 'nested'
    #: an instance's disks, volumes, console log, boot files and host
    #: bridges reach the L1 (NestedHost.prepare); its RAM is the L0 pool
    runs_nova_instances = True
    guests_in_vm = True
    default_mover = 'nested'
    #: what runs the L1 VMs: TCG (this machine's KVM, like that of many
    #: nested clouds, cannot boot the appliance's stock kernel)
    accel = 'tcg'

    def __init__(self, conf, generation, domain_uuid=None):
        super().__init__(conf, generation)
        self.base = nested_dir(conf, 'gen%d' % generation)
        self.domain_uuid = domain_uuid or str(uuid.uuid4())
        self.address, self.prefix = network.l1_address(conf, generation)
        self._l0 = None
        self._l0_conn = None

    @classmethod
    def from_record(cls, conf, record):
        return cls(conf, record['generation'], record['domain_uuid'])

    def record(self):
        return {'kind': self.kind, 'generation': self.generation,
                'domain_uuid': self.domain_uuid, 'uri': self.uri,
                'address': self.address, 'base': self.base}

    @property
    def l1_group(self):
        """The L1 QEMU's own cgroup, should it need one (lifetime)."""
        return lifetime.group_name('l1-%s' % self.name, self.base)

    @property
    def domain_name(self):
        return '%s%s' % (DOMAIN_PREFIX, self.name)

    @property
    def pki_dir(self):
        """L0's client credentials for this L1 (libvirt's pkipath)."""
        return os.path.join(self.base, 'pki')

    @property
    def uri(self):
        return 'qemu+tls://%s/system?pkipath=%s' % (
            self.address, urllib.parse.quote(self.pki_dir, safe='/'))

    def ensure_client_pki(self):
        """Make L0's client credentials for this L1 unless they exist."""
        return pki.ensure_client(self.conf, self.pki_dir)

    @property
    def qmp_socket(self):
        return os.path.join(self.base, 'qmp', 'qmp.sock')

    @property
    def console_log(self):
        return os.path.join(self.base, 'console.log')

    @property
    def l0(self):
        if self._l0 is None:
            self._l0 = L0Daemon(self.conf)
        return self._l0

    def _l0_host(self):
        # One connection to the L0 daemon per sibling object.
        if self._l0_conn is None:
            self._l0_conn = self.l0.host()
        return self._l0_conn

    def close(self):
        if self._l0_conn is not None:
            self._l0_conn.close()
            self._l0_conn = None

    def host(self):
        # Credentials first: an L1 adopted from a state without them
        # (or whose directory was lost) is reached with new ones.
        self.ensure_client_pki()
        return nested_host.NestedHost(self, os.path.join(self.base,
                                                         'migrate'))

    # --- the L1 VM ---------------------------------------------------------

    def _stage(self, image):
        """Kernel and initrd where the L0 QEMU user can read them."""
        stage = nested_dir(self.conf, 'appliance')
        os.makedirs(stage, exist_ok=True)
        paths = []
        for path in (image.kernel, image.initrd):
            key = os.path.basename(os.path.dirname(path))
            target = os.path.join(stage, '%s-%s' % (key,
                                                    os.path.basename(path)))
            if not os.path.exists(target):
                tmp = target + '.tmp'
                try:
                    os.link(path, tmp)
                except OSError:
                    shutil.copyfile(path, tmp)
                os.chmod(tmp, 0o644)
                os.rename(tmp, target)
            paths.append(target)
        files.searchable(stage)
        return paths

    def domain_xml(self, kernel, initrd):
        conf = self.conf.vmbeam_nested
        domain = libvirt_config.new_domain(
            self.domain_name, self.domain_uuid, conf.l1_memory_mib,
            conf.l1_vcpus, kernel=kernel, initrd=initrd,
            cmdline='%s vmbeam.ip=%s/%d vmbeam.hostname=l1-%s' % (
                KERNEL_OPTS, self.address, self.prefix, self.name),
            emulator=shutil.which(self.conf.vmbeam.qemu_binary) or
            self.conf.vmbeam.qemu_binary, accel=self.accel,
            # An L1 that reboots has lost its guests: it is over.
            on_reboot='destroy')
        if self.ram_mapping.dax:
            # Guests' pools are plugged as virtio-pmem, a memory device:
            # room for dax_slots of them, as large as this host's RAM.
            libvirt_config.add_memory_slots(
                domain, conf.dax_slots,
                conf.l1_memory_mib + host_memory_mib())
        devices = domain.find('devices')
        libvirt_config.add_bridge_nic(
            devices, conf.bridge, '52:54:00:be:%02x:%02x' % (
                (self.generation >> 8) & 0xff, self.generation & 0xff))
        libvirt_config.add_file_serial(devices, self.console_log)
        channel = libvirt_config.sub_element(devices, 'channel', type='unix')
        libvirt_config.sub_element(channel, 'target', type='virtio',
                                   name='org.qemu.guest_agent.0')
        libvirt_config.sub_element(devices, 'memballoon', model='none')
        # A QMP monitor of our own, beside libvirt's, for the pool daemon's
        # ivshmem hotplug.
        libvirt_config.add_commandline_args(domain, [
            '-chardev', 'socket,id=%s,path=%s,server=on,wait=off' %
            (QMP_ID, self.qmp_socket),
            '-mon', 'chardev=%s,mode=control' % QMP_ID])
        return libvirt_config.to_xml(domain)

    def _prepare_dirs(self):
        pw = pwd.getpwnam(self.conf.vmbeam.qemu_user)
        os.makedirs(os.path.join(self.base, 'migrate'), exist_ok=True)
        qmp_dir = os.path.dirname(self.qmp_socket)
        os.makedirs(qmp_dir, exist_ok=True)
        if os.stat(qmp_dir).st_uid != pw.pw_uid:
            os.chmod(qmp_dir, 0o750)
            privsep_files.chown(qmp_dir, pw.pw_uid, pw.pw_gid)
        if os.path.exists(self.qmp_socket):
            os.unlink(self.qmp_socket)
        # Made here, so that it is this service's (it reads it while the
        # L1 boots): the L0 daemon, root, appends to it as it finds it
        # (no dynamic ownership), where it would make it root's only.
        fd = os.open(self.console_log, os.O_WRONLY | os.O_CREAT |
                     os.O_APPEND | os.O_NOFOLLOW, 0o640)
        os.close(fd)

    def l1_domain(self):
        """The L1 VM's domain in the L0 daemon, or None."""
        try:
            return self._l0_host().conn.lookupByName(self.domain_name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def l1_pid(self):
        try:
            return self._l0_host().qemu_pid(self.domain_name, timeout=0)
        except Exception:
            return None

    def start(self, seed_from=None):
        """Boot the L1 VM (the L0 daemon and the bridge first)."""
        if self.running():
            return
        image = appliance(self.conf)
        network.ensure_bridge(self.conf)
        self.l0.ensure()
        self._prepare_dirs()
        self.ensure_client_pki()
        kernel, initrd = self._stage(image)
        xml = self.domain_xml(kernel, initrd)
        self.started_at = time.monotonic()
        try:
            self._l0_host().conn.createXML(xml, 0)
        except libvirt.libvirtError as exc:
            raise exception.SiblingStartFailed('L1 VM %s did not start: %s' %
                                               (self.domain_name, exc))
        pid = self.l1_pid()
        if pid:
            # The hypervisor VM outlives its starter as a generation's
            # daemons do.
            lifetime.keep_out(pid, self.l1_group)
        LOG.info('starting nested sibling %s (L1 VM %s at %s)', self.name,
                 self.domain_name, self.address)
        mapping = self.ram_mapping
        (LOG.info if mapping.write_back else LOG.warning)(
            '%s: guests map their RAM %s, %s: %s', self.name,
            'as device-DAX' if mapping.dax else
            'from the BAR file %s' % mapping.file,
            'write-back' if mapping.write_back else 'NOT write-back',
            mapping.reason)

    @functools.cached_property
    def ram_mapping(self):
        """caching.RamMapping: how L2 QEMUs here map their RAM, and why."""
        return caching.for_conf(self.conf, self.accel)

    def _console_tail(self):
        try:
            with open(self.console_log, errors='replace') as f:
                lines = [line.rstrip() for line in f if line.strip()]
        except OSError:
            return '(no console log)'
        return '\n'.join(lines[-5:]) or '(nothing on the console)'

    def deliver_keys(self, dom):
        """Hand the L1 its TLS keys through the guest agent.

        The agent's channel is a virtio-serial port of the L0 daemon,
        which only this service's user can reach: the keys never cross
        the L1 network. They go on the agent command's standard input,
        not its command line. Idempotent: an L1 that has its keys keeps
        them.
        """
        archive = pki.tar_of(pki.l1_files(self.conf, self.address,
                                          self.name))
        agent.sh(dom, pki.INSTALL_SCRIPT, timeout=60, stdin=archive)
        LOG.info('TLS keys delivered to L1 VM %s', self.domain_name)

    def wait_ready(self, timeout):
        """Until the L1's libvirtd and guest agent answer.

        The L1 starts libvirtd once it has its keys (deliver_keys, as
        soon as its agent answers). An L1 boots in tens of seconds under
        TCG: the wait is at least [vmbeam_nested] l1_boot_timeout.
        """
        timeout = max(timeout, self.conf.vmbeam_nested.l1_boot_timeout)
        deadline = time.monotonic() + timeout
        host = self.host()
        delivered = False
        try:
            while True:
                dom = self.l1_domain()
                if dom is None or not dom.isActive():
                    raise exception.SiblingStartFailed(
                        'L1 VM %s is not running: %s' %
                        (self.domain_name, self._console_tail()))
                console = self._console_text()
                if 'VMBEAM-L1 ERROR' in console:
                    raise exception.SiblingStartFailed(
                        'L1 VM %s failed to boot: %s' %
                        (self.domain_name, self._console_tail()))
                if not delivered and 'VMBEAM-L1 waiting for keys' in \
                        console and agent.ping(dom, timeout=5):
                    try:
                        self.deliver_keys(dom)
                    except agent.AgentError as exc:
                        raise exception.SiblingStartFailed(
                            'L1 VM %s did not take its keys: %s' %
                            (self.domain_name, exc))
                    delivered = True
                if 'VMBEAM-L1 ready' in console and \
                        agent.ping(dom, timeout=5) and host.alive():
                    return
                if time.monotonic() > deadline:
                    raise exception.SiblingStartFailed(
                        'L1 VM %s not ready within %.0f s: %s' %
                        (self.domain_name, timeout, self._console_tail()))
                time.sleep(0.5)
        finally:
            host.close()

    def _console_text(self):
        try:
            with open(self.console_log, errors='replace') as f:
                return f.read()
        except OSError:
            return ''

    def running(self):
        if not self.l0.running():
            return False
        try:
            dom = self.l1_domain()
            return dom is not None and bool(dom.isActive())
        except libvirt.libvirtError:
            return False

    def health(self):
        pid = self.l1_pid()
        rss = fds = 0
        if pid and procfs.alive(pid):
            rss = procfs.status_kib(pid, 'VmRSS')
            fds = privsep_daemons.open_fds(pid)
        report = records.HealthReport(
            generation=self.generation, running=self.running(),
            address=self.address,
            # The L1 VM hosts the guests, as libvirtd does colocated.
            daemon=records.DaemonHealth(name='l1', pid=pid, rss_kib=rss,
                                        fds=fds))
        if not report.running:
            return report
        host = self.host()
        try:
            report.libvirt_alive = host.alive()
            # L2 QEMUs run inside the L1: named, not measurable here.
            report.guests = {name: records.GuestUsage()
                             for name in host.running_qemus()}
            # Its own kernel: what a nested rejuvenation renews.
            dom = self.l1_domain()
            if dom is not None:
                report.kernel = nested_kernel.measure(dom)
        except (exception.VMBeamError, libvirt.libvirtError) as exc:
            # Its libvirtd or agent does not answer (the L1 is being
            # retired, or ails): reported, as a status must not fail.
            report.error = str(exc)
        finally:
            host.close()
        return report

    # --- guest RAM BARs inside the L1 ---------------------------------------

    def _pci_devices(self):
        """(bus, device) for every PCI device of the L1, as QEMU lists it.

        QEMU's own answer: libvirt does not know of the pools that
        vmbeam-pagemoverd hotplugs (QEMU gives them the lowest free
        slots of the root bus).
        """
        dom = self.l1_domain()
        for bus in self._l0_host().monitor_command(dom, 'query-pci'):
            for dev in bus.get('devices', ()):
                yield bus.get('bus'), dev

    def find_device(self, device):
        """Guest-visible PCI address (BDF) of QEMU device ``device``."""
        for _, dev in self._pci_devices():
            if dev.get('qdev_id') == device:
                return '0000:%02x:%02x.%x' % (dev['bus'], dev['slot'],
                                              dev['function'])
        return None

    def used_pci_slots(self):
        """Slots of the L1's root PCI bus in use, whoever plugged them.

        A device libvirt plugs here needs a slot not among them.
        """
        return {dev['slot'] for bus, dev in self._pci_devices() if bus == 0}

    def free_pci_slot(self, what):
        """The highest free slot of the L1's root bus, for ``what``.

        From the top: QEMU gives the guests' RAM pools (hotplugged by
        vmbeam-pagemoverd, unknown to libvirt) the lowest free ones, so an
        address left to libvirt could be one a pool already holds.
        """
        used = self.used_pci_slots()
        for slot in range(LAST_PCI_SLOT, FIRST_PCI_SLOT - 1, -1):
            if slot not in used:
                return slot
        raise exception.VMBeamError(
            'L1 VM %s has no free PCI slot for %s (its root bus holds %d '
            'devices: guests\' RAM pools and uplinks)' %
            (self.domain_name, what, len(used)))

    def enable_bar(self, bdf, timeout=60):
        """Wait for a hotplugged device in the L1 and enable it.

        Returns the BAR file that guests map as their RAM, given to the
        L1's QEMU user: QEMU does not run as root there, and sysfs makes
        the file root's, mode 0600.
        """
        bar = '/sys/bus/pci/devices/%s/%s' % (bdf, self.ram_mapping.file)
        script = (
            'd=/sys/bus/pci/devices/%(bdf)s; i=0; '
            'while [ ! -e %(bar)s ] && [ $i -lt %(tries)d ]; do '
            'usleep 100000; i=$((i+1)); done; '
            '[ -e %(bar)s ] || { echo "no $d after hotplug" >&2; exit 1; }; '
            '[ "$(cat $d/enable)" = 1 ] || echo 1 > $d/enable; '
            'chown %(user)s:%(user)s %(bar)s; '
            'cat $d/enable' % {'bdf': bdf, 'bar': bar, 'tries': timeout * 10,
                               'user': appliance_mod.builder.QEMU_USER})
        out = agent.sh(self.l1_domain(), script, timeout=timeout + 10)
        if out.strip() != '1':
            raise exception.SiblingStartFailed('%s: cannot enable %s: %r' %
                                               (self.domain_name, bdf, out))
        return bar

    def dax_device(self, bdf, timeout=60):
        """The device-DAX of the virtio-pmem device at ``bdf`` in the L1.

        A pool plugged for the first time is set up by sysfs (no ndctl in
        the appliance): its namespace is taken from nd_pmem and given to
        a dax device (2 MiB pages, struct pages in the L1's RAM, a fresh
        uuid, without which the bind fails silently), which the L1 kernel
        records in the pool's head. A pool set up by an earlier L1 holds
        that record, and the L1 kernel made its dax device at probe: it is
        found, and its data (the guest's RAM) left as it is. Returns
        /dev/daxN.M, given to the L1's QEMU user.
        """
        script = (
            'd=/sys/bus/pci/devices/%(bdf)s; i=0; '
            'while ! ls -d $d/virtio*/ndbus*/region*/namespace*.0 '
            '>/dev/null 2>&1 && [ $i -lt %(tries)d ]; do '
            'usleep 100000; i=$((i+1)); done; '
            'ns=$(ls -d $d/virtio*/ndbus*/region*/namespace*.0 2>/dev/null '
            '| head -1); '
            '[ -n "$ns" ] || { echo "no pmem namespace under $d" >&2; '
            'exit 1; }; '
            'ns=$(readlink -f $ns); region=${ns%%/*}; nsname=${ns##*/}; '
            'found() { for x in /sys/bus/dax/devices/dax*; do '
            '[ -e "$x" ] || continue; case $(readlink -f $x) in '
            '$region/*) echo ${x##*/}; return;; esac; done; }; '
            # The kernel probes the namespace asynchronously: until it has
            # a driver (a new pool: nd_pmem) or a holder (a pool an
            # earlier L1 set up: its dax device, made from the record in
            # the head), which of the two it is cannot be told.
            'while [ ! -e $ns/driver ] && [ -z "$(cat $ns/holder)" ] && '
            '[ $i -lt %(tries)d ]; do usleep 100000; i=$((i+1)); done; '
            'dev=$(found); '
            'while [ -z "$dev" ] && [ -n "$(cat $ns/holder)" ] && '
            '[ $i -lt %(tries)d ]; do usleep 100000; i=$((i+1)); '
            'dev=$(found); done; '
            'if [ -z "$dev" ]; then '
            '[ -e /sys/bus/nd/drivers/nd_pmem/$nsname ] && '
            'echo $nsname > /sys/bus/nd/drivers/nd_pmem/unbind; '
            'seed=$(cat $region/dax_seed); s=/sys/bus/nd/devices/$seed; '
            'echo %(align)d > $s/align && echo ram > $s/mode && '
            'cat /proc/sys/kernel/random/uuid > $s/uuid && '
            'echo $nsname > $s/namespace && '
            'echo $seed > /sys/bus/nd/drivers/dax_pmem/bind || '
            '{ echo "cannot make $seed a dax device of $nsname" >&2; '
            'exit 1; }; '
            'dev=$(found); fi; '
            '[ -n "$dev" ] && [ -c /dev/$dev ] || '
            '{ echo "no dax device for $ns" >&2; exit 1; }; '
            'chown %(user)s:%(user)s /dev/$dev; echo /dev/$dev' % {
                'bdf': bdf, 'tries': timeout * 10,
                'align': caching.DAX_ALIGN_BYTES,
                'user': appliance_mod.builder.QEMU_USER})
        out = agent.sh(self.l1_domain(), script, timeout=timeout + 10)
        path = out.strip().splitlines()[-1] if out.strip() else ''
        if not path.startswith('/dev/dax'):
            raise exception.SiblingStartFailed(
                '%s: no device-DAX for the pool at %s: %r' % (
                    self.domain_name, bdf, out))
        return path

    def retire(self):
        """Stop the L1 VM; refused while any guest runs in it.

        Its root filesystem is an initramfs and it has no disks: nothing is
        lost by stopping it at once.
        """
        dom = self.l1_domain()
        if dom is None:
            cgroups.remove_group(self.l1_group)
            return
        if self._active(dom):
            host = self.host()
            try:
                if host.alive():
                    remaining = host.running_qemus()
                else:
                    remaining = self._qemus_without_libvirt(dom)
            finally:
                host.close()
            if remaining:
                raise exception.SiblingStartFailed(
                    'not retiring %s: guests still run in it: %s' %
                    (self.name, ', '.join(remaining)))
            stop_l1(dom, self.address)
        cgroups.remove_group(self.l1_group)
        LOG.info('retired nested sibling %s', self.name)

    def _qemus_without_libvirt(self, dom):
        """QEMU processes in the L1, asked of its kernel (libvirtd is gone).

        A libvirtd that does not answer says nothing about its guests,
        which may still run: never taken for none. Raises
        SiblingStartFailed when the agent cannot tell either, unless the
        L1 VM itself ends meanwhile (it was killed: libvirt still listed
        it while its agent was already gone).
        """
        try:
            out = agent.sh(dom, 'pidof %s || true' % L2_QEMU, timeout=30)
        except agent.AgentError as exc:
            if self._ended(dom):
                # Its QEMU is gone, and every guest with it: what is left
                # is only libvirt's record and connections (stop_l1).
                LOG.info('%s ended while being retired (%s)', self.name,
                         exc)
                return []
            raise exception.SiblingStartFailed(
                'not retiring %s: neither its libvirtd nor its guest agent '
                'answers (%s), so whether guests still run in it is unknown. '
                'Look at its console (%s); once no guest runs in it, stop '
                'the L1 VM %s with virsh destroy on the L0 daemon.' % (
                    self.name, exc, self.console_log, self.domain_name))
        return ['QEMU pid %s' % pid for pid in out.split()]

    @staticmethod
    def _active(dom):
        """Whether the L1 VM ``dom`` runs (libvirt forgets an ended one)."""
        try:
            return bool(dom.isActive())
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            raise

    def _ended(self, dom):
        """Whether the L1 VM ``dom`` ends within DYING_L1_SECONDS."""
        return waiting.until(lambda: not self._active(dom),
                             DYING_L1_SECONDS, 0.2, lambda: False)


def stop_l1(dom, address):
    """Stop an L1 VM so that its clients notice.

    libvirtd in the L1 is stopped first, through the guest agent: it
    closes its TCP connections, so every connection this host (or any
    other process here) holds to it ends at once. A VM destroyed with its
    connections open leaves them waiting for minutes for a peer that is
    gone (the VM sends no reset), and a libvirt connection released at
    interpreter exit then hangs the process. Whatever connection survives
    that (the agent did not answer) is reset here with ``ss -K``.
    """
    try:
        active = dom.isActive()
    except libvirt.libvirtError:
        active = False   # gone already; its sockets are reset below
    try:
        # The pid file is trusted as it is here: a stale one can only name
        # another process of this L1, and the whole L1 is destroyed just
        # below (retired once empty, or stopped with everything in it).
        if active:
            agent.sh(dom, 'kill $(cat /run/libvirtd.pid 2>/dev/null || '
                     'pidof libvirtd) 2>/dev/null; i=0; while pidof '
                     'libvirtd >/dev/null && [ $i -lt 50 ]; do usleep '
                     '100000; i=$((i+1)); done; true', timeout=15)
    except agent.AgentError as exc:
        LOG.warning('stopping libvirtd in %s: %s', dom.name(), exc)
    try:
        dom.destroy()
    except libvirt.libvirtError as exc:
        # Not running, or gone (an L1 is a transient domain: libvirt
        # forgets it once its QEMU has ended).
        if exc.get_error_code() not in (libvirt.VIR_ERR_OPERATION_INVALID,
                                        libvirt.VIR_ERR_NO_DOMAIN):
            raise
    privsep_network.kill_sockets_to(address)


def generation_of(domain_name):
    """The generation an L1 VM's domain name says, or None."""
    prefix = DOMAIN_PREFIX + 'gen'
    if domain_name.startswith(prefix) and \
            domain_name[len(prefix):].isdigit():
        return int(domain_name[len(prefix):])
    return None


def stop_all(conf):
    """Stop every L1 VM, the L0 daemon and the disks' (tests, uninstall)."""
    l0 = L0Daemon(conf)
    if not l0.running():
        disks.StorageDaemon(conf).stop()
        return
    host = l0.host()
    try:
        for name, dom in host.domains().items():
            generation = generation_of(name)
            if generation is not None:
                stop_l1(dom, network.l1_address(conf, generation)[0])
            else:
                dom.destroy()
    finally:
        host.close()
    disks.StorageDaemon(conf).stop()
    l0.retire()
