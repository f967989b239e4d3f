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

"""The libvirt daemon inside an L1 VM, as a move target, and its guests.

The guests' QEMUs run inside the L1: L0 cannot see their processes, so
everything about them is asked of the L1's libvirt (over TCP on the
private network), never of /proc here; "the process of this guest" at L0
is the L1 VM's QEMU, which is what a CPU priority boost should reach.

Guest RAM: an L0 pool (vmbeam-pagemoverd) is attached to the L1 as an
ivshmem-plain device (hotplugged through the L1 QEMU's own QMP socket);
inside the L1 its BAR 2 is enabled and the guest's QEMU maps
/sys/bus/pci/devices/<bdf>/<BAR file> as RAM. With the sibling's
ram_mapping ``dax`` (nested/caching.py) it is attached as virtio-pmem-pci
instead, and the guest's QEMU maps /dev/daxN.M: the pool's RAM from its
2 MiB on. Such a device cannot be unplugged: it stays in the L1 until the
L1 stops, and its pool (mapped by the L1 until then) cannot be freed
before.
"""

import dataclasses
import pwd
import time

import libvirt
from oslo_log import log as logging

from nova_vmbeam import exception
from nova_vmbeam import guest as guest_mod
from nova_vmbeam import hypervisor
from nova_vmbeam.libvirt import config as libvirt_config
from nova_vmbeam.libvirt import guest as libvirt_guest
from nova_vmbeam.libvirt import host as host_mod
from nova_vmbeam.nested import agent
from nova_vmbeam.nested.appliance import builder as appliance_builder
from nova_vmbeam.nested import bootfiles
from nova_vmbeam.nested import consoles
from nova_vmbeam.nested import disks
from nova_vmbeam.nested import uplinks

LOG = logging.getLogger(__name__)

IVSHMEM_PREFIX = 'vmbeam-pool-'
KEEPALIVE_INTERVAL_S = 2
KEEPALIVE_COUNT = 3


def pool_device(guest_uuid):
    """QEMU id of the ivshmem device of a guest's pool (in the L1 VM)."""
    return IVSHMEM_PREFIX + guest_uuid.replace('-', '')[:16]


class RemoteGuest(libvirt_guest.LibvirtGuest):
    """A guest whose QEMU runs in an L1 VM: all through libvirt there."""

    def alive(self):
        try:
            return bool(self.dom.isActive())
        except libvirt.libvirtError:
            return False

    def cpu_seconds(self, thread_prefix=None):
        return 0.0   # its threads are in the L1; not measured from here

    def exit_reason(self):
        return ''

    def _wait_gone(self, pid=None, timeout=10.0):
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                raise RuntimeError('QEMU of %s in %s did not exit' %
                                   (self.name, self.host.name))
            time.sleep(0.01)

    def _console_log(self):
        try:
            return consoles.log_path(self.dom.XMLDesc())
        except libvirt.libvirtError:
            return None

    def _leave_l1(self, console_log):
        """Unplug its console port, delete its boot files (it left)."""
        sibling = getattr(self.host, 'sibling', None)
        if sibling is None:
            return
        if console_log:
            consoles.remove_port(sibling, self.spec.uuid, console_log)
        bootfiles.remove(sibling, self.spec.uuid)

    def destroy(self):
        """Kill through the L1's libvirt and wait until it is gone.

        Never a signal from here: the pid this endpoint reports is the L1
        VM's, which runs other guests too. An L1 VM that is gone (killed)
        took this QEMU with it: that is destroyed too, though its libvirt
        can no longer say so.
        """
        console_log = self._console_log()
        try:
            self.dom.destroy()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (libvirt.VIR_ERR_OPERATION_INVALID,
                                            libvirt.VIR_ERR_NO_DOMAIN):
                if not self.l1_gone():
                    raise
                LOG.warning('%s: its L1 VM %s is gone, and its QEMU with it '
                            '(%s)', self.name, self.host.name, exc)
                return
        self._wait_gone()
        self.undefine()
        self._leave_l1(console_log)

    def l1_gone(self):
        """True if the L1 VM this guest ran in no longer runs (L0 says)."""
        sibling = getattr(self.host, 'sibling', None)
        return sibling is not None and not sibling.running()

    def retire(self):
        console_log = self._console_log()
        self.undefine()
        try:
            self.execute('quit')
        except Exception:
            pass   # the reply is lost when QEMU closes the monitor
        try:
            self._wait_gone(timeout=10.0)
        except RuntimeError:
            self.destroy()
        self._leave_l1(console_log)


class NestedHost(host_mod.Host, hypervisor.PoolAttachingHypervisor):
    """The libvirtd of one L1 VM, reached from L0 over TCP."""

    guest_class = RemoteGuest

    def __init__(self, sibling, run_dir):
        super().__init__(sibling.name, sibling.uri, run_dir, pid_dir=None,
                         log_dir=None, daemon_pid_file=None)
        self.sibling = sibling

    def _open(self):
        conn = super()._open()
        # An L1 that is shut down sends no TCP reset: without keepalive a
        # call (even close) on its connection would wait for minutes.
        conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
        return conn

    @property
    def address(self):
        return self.sibling.address

    def control_pids(self):
        return []

    def qemu_pid(self, name, timeout=5.0):
        """The L0 process that runs guest ``name``: the L1 VM's QEMU."""
        pid = self.sibling.l1_pid()
        if pid is None:
            raise exception.VMBeamError('L1 VM %s does not run' % self.name)
        return pid

    def running_qemus(self):
        """Guests whose QEMU runs in the L1 (libvirt's word for it)."""
        try:
            return sorted(self.domains())
        except libvirt.libvirtError:
            return []
        except exception.VMBeamError:
            # Its libvirtd cannot be reached. An L1 VM that is gone (L0
            # says so) took its guests with it; one that runs may still
            # hold some, which only the caller can decide about.
            if self.sibling.running():
                raise
            return []

    def prepare(self, guest_uuid, domain_xml):
        """The domain XML as this L1 runs it, with all it needs here.

        Its disks are L0's NBD exports (nested/disks.py): a file or block
        disk is served from L0 first and named so. Its console log on L0
        is written through a port of this L1 (nested/consoles.py). Its
        kernel and initrd are copied in (nested/bootfiles.py), and its host
        bridges reach this L1 (nested/uplinks.py). Idempotent, and for a
        moving guest's XML (rewritten already) too.
        """
        conf = self.sibling.conf
        xml = disks.serve(conf, domain_xml)
        xml, console_log = consoles.to_l1_console(xml)
        if console_log:
            pw = pwd.getpwnam(conf.vmbeam.qemu_user)
            consoles.ensure_port(self.sibling, guest_uuid, console_log,
                                 (pw.pw_uid, pw.pw_gid),
                                 appliance_builder.QEMU_USER)
        xml, boot_files = bootfiles.to_l1_files(xml)
        bootfiles.ensure(self.sibling, guest_uuid, boot_files)
        uplinks.ensure(self.sibling, uplinks.bridges_of(xml))
        return xml

    def reach_bridges(self, bridges):
        """Host ``bridges`` reach this L1 (a NIC plugged into a guest)."""
        uplinks.ensure(self.sibling, bridges)

    def launch(self, spec, incoming=(), paused=False):
        """As Host.launch, once the guest has what it needs in this L1."""
        xml = self.prepare(spec.uuid, spec.domain_xml)
        return super().launch(dataclasses.replace(spec, domain_xml=xml),
                              incoming, paused)

    def with_attached_ram(self, domain_xml, pool, guest_uuid, ram_mib):
        """``domain_xml`` with its RAM the BAR of its pool, attached here.

        For a guest whose XML names its RAM file in the L0 pool (Nova's):
        its QEMU in this L1 maps that file through the BAR instead.
        """
        bar = self.attach_pool(pool, guest_uuid)
        return libvirt_config.with_ram(
            domain_xml, guest_mod.RamBacking(guest_mod.RAM_FILE, bar),
            ram_mib)

    def forget(self, guest_uuid, pool, console_log=None):
        """Let go of what this L1 holds for a guest that no longer runs.

        Its pool (so that L0 may free its RAM), its console port and its
        boot files. Best effort but for the pool: RAM still mapped here
        must not be freed, so a failure to detach it raises.
        """
        self.detach_pool(pool, guest_uuid)
        if console_log:
            consoles.remove_port(self.sibling, guest_uuid, console_log)
        bootfiles.remove(self.sibling, guest_uuid)

    def guest_qemu_pid(self, name):
        """Pid of guest ``name``'s QEMU inside the L1."""
        return int(agent.sh(self.sibling.l1_domain(),
                            'cat /run/libvirt/qemu/%s.pid' % name).strip())

    # --- guest RAM: L0 pools as PCI BARs in the L1 ------------------------

    def attach_pool(self, pool, guest_uuid):
        """Attach the guest's L0 pool to this L1; the file to map as RAM.

        The BAR file, or the dax device (ram_mapping ``dax``). Idempotent:
        an attached pool is found again (its device id is derived from the
        guest UUID).
        """
        mapping = self.sibling.ram_mapping
        usable = (self.sibling.dax_device if mapping.dax
                  else self.sibling.enable_bar)
        device = pool_device(guest_uuid)
        bdf = self.sibling.find_device(device)
        if bdf is not None:
            return usable(bdf)
        pool.attach(guest_uuid, self.sibling.qmp_socket, device,
                    model=pool.PMEM if mapping.dax else pool.IVSHMEM)
        try:
            bdf = self.sibling.find_device(device)
            if bdf is None:
                raise exception.VMBeamError(
                    'pool of %s attached to %s as %s, but the VM does not '
                    'list it' % (guest_uuid, self.name, device))
            return usable(bdf)
        except Exception:
            # Attached here and not usable (the L1's agent did not answer,
            # say): nothing will map it, and whoever called cannot know it
            # is attached. Left so, this L1 would keep the guest's RAM
            # mapped after a move that failed.
            try:
                self.detach_pool(pool, guest_uuid)
            except Exception as exc:
                LOG.warning('detaching the pool of %s from %s after a '
                            'failed attach: %s', guest_uuid, self.name, exc)
            raise

    def detach_pool(self, pool, guest_uuid):
        """Let this L1 go of a guest's pool, where it can.

        A pool plugged as virtio-pmem (dax) cannot be unplugged: it stays
        mapped by this L1, so L0 keeps its RAM (the pool daemon refuses to
        free a mapped pool) until the L1 stops.
        """
        device = pool_device(guest_uuid)
        if self.sibling.find_device(device) is None:
            return
        if self.sibling.ram_mapping.dax:
            LOG.info('the pool of %s stays in %s until it retires (a '
                     'virtio-pmem device cannot be unplugged)', guest_uuid,
                     self.name)
            return
        pool.detach(guest_uuid, self.sibling.qmp_socket, device,
                    timeout=30)

    def maps_bar(self, name, bar_path):
        """True if guest ``name``'s QEMU in the L1 maps ``bar_path``.

        A BAR file or a dax device (/dev/daxN.M).
        """
        pid = self.guest_qemu_pid(name)
        # maps names the device by its real path (/sys/devices/...), not
        # the /sys/bus/pci/devices link: match ".../<bdf>/<file>".
        tail = '/'.join(bar_path.rstrip('/').split('/')[-2:])
        out = agent.sh(self.sibling.l1_domain(),
                       'grep -c "/%s$" /proc/%d/maps || true' % (tail, pid))
        return int(out.strip() or 0) > 0
