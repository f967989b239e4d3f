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

"""Self-checking demo guests on plain QEMU-process hypervisors.

Used by `vmbeam demo`, `vmbeam bench` and the functional tests: it boots
guests from the project's test image (a Debian kernel and a memworker that
keeps verifying its own memory), moves them between hypervisor generations
with a mover, and checks afterwards that no page was lost or went stale.
"""

import dataclasses
import os
import pwd
import shutil
import subprocess
import uuid

from oslo_log import log as logging

from nova_vmbeam import exception
from nova_vmbeam import guest as guest_mod
from nova_vmbeam.libvirt import config as libvirt_config
from nova_vmbeam import pool as pool_mod
from nova_vmbeam.qemu import process
from nova_vmbeam.qemu import procfs
from nova_vmbeam.qemu import version
from nova_vmbeam.rejuvenation import orchestrator as orchestrator_mod
from nova_vmbeam import waiting
from vmbeam_devtools import guestimage

LOG = logging.getLogger(__name__)

BOOT_TIMEOUT = 300.0


class IntegrityError(exception.VMBeamError):
    msg_fmt = 'Guest %(guest)s failed its memory check: %(detail)s'


class TestGuest:
    """A demo guest: its spec, where it runs now, and its console."""

    def __init__(self, spec, endpoint, hypervisor):
        self.spec = spec
        self.endpoint = endpoint
        self.hypervisor = hypervisor
        self.console = guestimage.ConsoleLog(spec.console_log)
        self.moved_at = 0

    @property
    def name(self):
        return self.spec.name


class Testbed:
    """Demo guests on numbered hypervisor generations on this host."""

    def __init__(self, conf, name='testbed', image=None):
        self.conf = conf
        self.run_dir = os.path.join(conf.vmbeam.state_path, name)
        self.pool = pool_mod.load(conf)
        self.accel = version.resolve_accel(conf.vmbeam.accel)
        self._image = image
        self.generation = 0
        self.hypervisors = []
        self.guests = []

    @property
    def image(self):
        if self._image is None:
            self._image = guestimage.build()
        return self._image

    def new_hypervisor(self):
        self.generation += 1
        hypervisor = process.ProcessHypervisor(
            'gen%d' % self.generation, self.run_dir,
            self.conf.vmbeam.qemu_binary, self.accel,
            self.conf.vmbeam.qmp_timeout)
        self.hypervisors.append(hypervisor)
        return hypervisor

    def spec(self, name, ram_mib, ram_kind, work_mib, dirty_mib_s,
             report_ms=500, ip=None, disk=False):
        """A guest spec whose RAM is placed the way ``ram_kind`` says.

        With ``ip`` ("ADDR/PREFIX") the guest configures its network card;
        with ``disk`` it keeps writing and checking its first disk.
        """
        guest_uuid = str(uuid.uuid4())
        console = os.path.join(self.run_dir, '%s.console.log' % name)
        os.makedirs(self.run_dir, exist_ok=True)
        if os.path.exists(console):
            os.unlink(console)
        if ram_kind == guest_mod.RAM_FILE:
            self.pool.ensure()
            ram = guest_mod.RamBacking(
                ram_kind, self.pool.allocate(guest_uuid, ram_mib << 20))
        else:
            ram = guest_mod.RamBacking(ram_kind)
        return guest_mod.GuestSpec(
            name=name, uuid=guest_uuid, ram_mib=ram_mib, ram=ram,
            kernel=self.image.kernel, initrd=self.image.initrd,
            # A full memory check every half second: often enough to catch
            # a bad page right after a move, without one host core per
            # guest spent on checking.
            cmdline=guestimage.kernel_cmdline(work_mib, dirty_mib_s,
                                              report_ms,
                                              verify_mib_s=2 * work_mib,
                                              ip=ip, disk=disk,
                                              hostname=name),
            console_log=console)

    def boot(self, hypervisor, spec, wait=True):
        endpoint = hypervisor.boot(spec)
        if endpoint.status() != 'running':
            endpoint.resume()
        guest = TestGuest(spec, endpoint, hypervisor)
        self.guests.append(guest)
        if wait:
            self.wait_ready(guest)
        return guest

    def wait_ready(self, guest, timeout=BOOT_TIMEOUT):
        """Wait until the memworker has verified its memory once."""
        guest.console.wait_for(guestimage.console.READY_RE, timeout)
        self.check_integrity(guest, guest.console.offset(), passes=1,
                             timeout=timeout)

    def move(self, guest, mover, target):
        """Move ``guest`` onto ``target``; the MoveResult is returned.

        ``guest.moved_at`` is the console offset at switchover: pass it to
        check_integrity() to check the memory as the destination sees it.
        """
        result = mover.move(guest.endpoint, target)
        guest.moved_at = guest.console.offset()
        guest.hypervisor.forget(guest.endpoint)
        target.adopt(result.destination)
        guest.endpoint, guest.hypervisor = result.destination, target
        return result

    def check_integrity(self, guest, since, passes=2, timeout=120.0):
        """Wait for ``passes`` full memory checks begun after ``since``.

        Two passes after a move means one began and ended entirely on the
        destination. Raises IntegrityError on any reported bad page.
        """
        first = guest.console.wait_for_ticks(1, timeout, since)[0]
        need = first['passes'] + passes
        status = first
        while status['passes'] < need:
            status = guest.console.wait_for_ticks(
                1, timeout, status['end_offset'])[0]
            if status['errors'] or status['error_seen']:
                break
        status = guest.console.worker_status(since)
        if status['errors'] or status['error_seen']:
            raise IntegrityError(guest=guest.name, detail='; '.join(
                status['error_lines'][:5]) or '%d errors' % status['errors'])
        status['new_passes'] = status['passes'] - first['passes']
        return status

    def retire_empty(self):
        """Stop hypervisor generations that no longer run any guest."""
        for hypervisor in list(self.hypervisors):
            if not hypervisor.guests:
                hypervisor.shutdown()
                self.hypervisors.remove(hypervisor)

    def destroy(self, guest):
        guest.endpoint.destroy()
        guest.hypervisor.forget(guest.endpoint)
        self.guests.remove(guest)
        if guest.spec.ram.kind == guest_mod.RAM_FILE:
            self.pool.release(guest.spec.uuid)

    def cleanup(self):
        for guest in list(self.guests):
            try:
                self.destroy(guest)
            except Exception:
                LOG.exception('cleaning up guest %s', guest.name)
        for hypervisor in self.hypervisors:
            hypervisor.shutdown()
        self.hypervisors = []
        shutil.rmtree(self.run_dir, ignore_errors=True)


class LibvirtTestbed(Testbed):
    """Demo guests under libvirt, on generations run by the orchestrator.

    QEMU runs as [vmbeam] qemu_user there, so the guest image is staged in
    a directory that user can read, and RAM files and console logs are
    owned by it.
    """

    def __init__(self, conf, name='testbed', image=None):
        super().__init__(conf, name, image)
        self.orchestrator = orchestrator_mod.Orchestrator(conf)
        self._staged = None

    def _qemu_ids(self):
        pw = pwd.getpwnam(self.conf.vmbeam.qemu_user)
        return pw.pw_uid, pw.pw_gid

    @property
    def image(self):
        if self._staged is None:
            built = super().image
            stage = os.path.join(self.run_dir, 'image')
            os.makedirs(stage, exist_ok=True)
            paths = []
            for path in built:
                target = os.path.join(stage, os.path.basename(path))
                if not os.path.exists(target):
                    try:
                        os.link(path, target)
                    except OSError:
                        shutil.copyfile(path, target)
                os.chmod(target, 0o644)
                paths.append(target)
            # Every directory down to the image must be searchable.
            directory = stage
            while directory != '/':
                os.chmod(directory, os.stat(directory).st_mode | 0o011)
                directory = os.path.dirname(directory)
            self._staged = guestimage.GuestImage(*paths)
        return self._staged

    def spec(self, name, *args, bridge=None, disk=False, **kwargs):
        """As Testbed.spec, as a libvirt domain.

        ``disk`` gives the guest a qcow2 disk in the run directory;
        ``bridge`` a virtio NIC on that Linux bridge (pass ``ip`` too).
        """
        spec = super().spec(name, *args, disk=disk, **kwargs)
        uid, gid = self._qemu_ids()
        os.chown(self.run_dir, uid, gid)
        disks = []
        if disk:
            path = os.path.join(self.run_dir, '%s.qcow2' % name)
            subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', path,
                            '64M'], check=True)
            os.chown(path, uid, gid)
            disks.append(path)
        bridges = []
        if bridge:
            mac = '52:54:00:%02x:%02x:%02x' % tuple(
                bytes.fromhex(spec.uuid.replace('-', ''))[:3])
            bridges.append((bridge, mac))
        xml = libvirt_config.domain_xml(
            spec, accel=self.accel,
            emulator=shutil.which(self.conf.vmbeam.qemu_binary),
            disks=disks, bridges=bridges)
        return dataclasses.replace(spec, domain_xml=xml)

    def boot_libvirt(self, spec, wait=True):
        """Boot ``spec`` in the active generation."""
        return self.boot(self.orchestrator.active().host(), spec, wait)

    def _kill_strays(self):
        """Kill any QEMU of this testbed still running (its daemon died).

        A demo or a test must not leave guests behind.
        """
        for pid in procfs.qemu_pids(self.run_dir):
            LOG.warning('killing stray QEMU %d of %s', pid, self.run_dir)
            os.kill(pid, 9)

    def locate(self, guest):
        """Point ``guest`` at the generation it runs on now."""
        state = self.orchestrator.state()
        for number, generation in state.generations.items():
            if generation.state in ('retired', 'failed'):
                continue
            sibling = self.orchestrator.sibling(number, state)
            if not sibling.running():
                continue
            host = sibling.host()
            endpoint = host.guest(guest.name)
            if endpoint is not None:
                guest.endpoint, guest.hypervisor = endpoint, host
                return number
            host.close()
        return None

    def cleanup(self):
        state = self.orchestrator.state()
        dead = []
        for number in state.generations:
            sibling = self.orchestrator.sibling(number, state)
            if not sibling.running():
                if state.generations[number].state != 'retired':
                    dead.append(sibling)
                continue
            host = sibling.host()
            try:
                for endpoint in host.guests():
                    endpoint.destroy()
            except Exception:
                LOG.exception('destroying guests of %s', sibling.name)
            finally:
                host.close()
            sibling.retire()
        self._kill_strays()
        # A generation whose daemon was killed (fault tests) was never
        # retired: what it leaves (its cgroups, its guests' partition)
        # goes once the QEMUs killed above are gone.
        waiting.until(lambda: not procfs.qemu_pids(self.run_dir), 5.0, 0.05,
                      lambda: None)
        for sibling in dead:
            try:
                sibling.retire()
            except Exception:
                LOG.exception('retiring %s', sibling.name)
        for guest in self.guests:
            if guest.spec.ram.kind == guest_mod.RAM_FILE:
                try:
                    self.pool.release(guest.spec.uuid)
                except exception.VMBeamError:
                    LOG.exception('releasing RAM of %s', guest.name)
        self.guests = []
        shutil.rmtree(self.run_dir, ignore_errors=True)
