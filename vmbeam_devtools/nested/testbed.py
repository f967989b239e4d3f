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

"""Self-checking L2 guests inside nested siblings (tests and bench).

The L2 guest is the project's test guest (memworker keeps verifying its
memory), booted by the L1's libvirt from the copy of the test image the
dev appliance carries (devappliance.py), with its RAM in an L0 pool
mapped through the L1's ivshmem BAR and its console collected on L0.
"""

import dataclasses
import os
import pwd
import re
import shutil
import subprocess
import time
import unittest
import uuid
import xml.etree.ElementTree as ET

from oslo_log import log as logging

from nova_vmbeam import files
from nova_vmbeam import guest as guest_mod
from nova_vmbeam.libvirt import config as libvirt_config
from nova_vmbeam.nested import disks
from nova_vmbeam.nested import network
from nova_vmbeam.nested import sibling as nested_sibling
from vmbeam_devtools import guestimage
from vmbeam_devtools.nested import appliance as devappliance
from vmbeam_devtools.nested import console as console_mod
from vmbeam_devtools import testbed

LOG = logging.getLogger(__name__)

# An L2 boots in about two minutes under TCG inside TCG on an idle 2-core
# host; on a busy one several times that.
L2_BOOT_TIMEOUT = 900.0
# An L2 whose kernel is still booting after this long (its boot messages
# reach the console, so the L1, the L2's QEMU and the console path work)
# is on a machine too slow for TCG inside TCG: measured 2026-12-02 on a
# 2-core host with 15-25 % steal time, an L2 kernel took 10 minutes to
# reach its ACPI setup. The nested tests then cannot finish in CI's time.
L2_BOOT_BUDGET = 300.0
# What the tests that boot an L2 may take together in one run: on an idle
# host all five take about 17 minutes; on a busier one, where each takes
# longer, those that would end past this skip (CI's 90 minutes hold the
# rest of the suite too).
L2_RUN_BUDGET = 1100.0
KERNEL_LINE_RE = re.compile(r'^\[\s*(\d+\.\d+)\] ([^\n]*)', re.MULTILINE)
# An L2 whose /init ran has this long more for its memory worker to fill
# its RAM and say it is ready: measured 2026-12-03, an L2 of the nested
# Nova test said it booted about 4 minutes in and its worker was not
# ready a minute later, its disk worker running all along.
L2_READY_GRACE = 180.0
# What the test guest's /init says when a worker or its set-up failed.
_GUEST_FAULT_RE = re.compile(r'^VMBEAM-GUEST (ERROR|\w+ exited)',
                             re.MULTILINE)


class TooSlow(unittest.SkipTest):
    """TCG inside TCG on this machine cannot boot an L2 in time.

    A test skip (unittest's): the L2's kernel runs, only too slowly for
    the nested tests to end within CI's time. Once one L2 was too slow,
    every later L2 boot of the process gives up at once.
    """


class L2TimeBudget(object):
    """Whether another L2-booting test of this process may start.

    Not once an L2 was too slow to boot (``too_slow`` says why); else only
    if it would end within L2_RUN_BUDGET, judged by the longest such test
    so far. Otherwise it is TooSlow.
    """

    #: why L2s boot too slowly here, once one did (see TooSlow)
    too_slow = None
    spent = 0.0
    longest = 0.0

    @classmethod
    def check(cls):
        if cls.too_slow:
            raise TooSlow(cls.too_slow)
        if cls.spent and cls.spent + cls.longest > L2_RUN_BUDGET:
            raise TooSlow(
                'the nested tests that boot an L2 took %.0f s in this run '
                '(the longest %.0f s); another would end past their %.0f s '
                '(TCG inside TCG is slow on this machine)'
                % (cls.spent, cls.longest, L2_RUN_BUDGET))

    @classmethod
    def record(cls, started):
        """One such test, begun at time.monotonic() ``started``, ended."""
        seconds = time.monotonic() - started
        cls.spent += seconds
        cls.longest = max(cls.longest, seconds)


def wait_booted(name, console, timeout=L2_BOOT_TIMEOUT, after_offset=None):
    """Wait until L2 ``name`` says it is ready on ``console``.

    Within L2_BOOT_BUDGET: an L2 whose kernel still boots then (its lines,
    with boot_messages, show it runs) is TooSlow, and so is every later
    one of this process. One whose /init ran but whose memory worker is
    not ready yet (it fills its RAM first) has L2_READY_GRACE more, then
    is TooSlow too. A silent console, a worker that exited or failed, or
    a kernel panic raise TimeoutError: a fault, not slowness.
    """
    if L2TimeBudget.too_slow:
        raise TooSlow(L2TimeBudget.too_slow)
    budget = min(timeout, L2_BOOT_BUDGET)
    try:
        return console.wait_for(guestimage.console.READY_RE, budget,
                                after_offset=after_offset)
    except TimeoutError:
        text = console.read()[after_offset or 0:]
        booting = KERNEL_LINE_RE.findall(text)
        if not booting or 'Kernel panic' in text or \
                _GUEST_FAULT_RE.search(text):
            raise
        if 'VMBEAM-GUEST booted' not in text:
            last = booting[-1]
            slow = 'its kernel at [%s] %s' % (last[0], last[1][:80])
        else:
            # Its workers start: the disk worker reports at once, the
            # memory worker only once it has filled its RAM.
            try:
                return console.wait_for(guestimage.console.READY_RE,
                                        L2_READY_GRACE,
                                        after_offset=after_offset)
            except TimeoutError:
                text = console.read()[after_offset or 0:]
                if _GUEST_FAULT_RE.search(text) or 'Kernel panic' in text:
                    raise
            budget += L2_READY_GRACE
            slow = 'its /init ran, its memory worker was not ready yet'
        L2TimeBudget.too_slow = (
            'TCG inside TCG is too slow on this machine for the nested '
            'tests: L2 %s had not booted after %.0f s, %s' % (name, budget,
                                                              slow))
        raise TooSlow(L2TimeBudget.too_slow)


class NestedTestbed(testbed.Testbed):
    """L1 siblings started directly (no orchestrator) and L2 guests."""

    def __init__(self, conf, name='nested-testbed'):
        super().__init__(conf, name, image=devappliance.use(conf))
        self.siblings = []
        self.collectors = []
        self.boot_s = {}

    def start_sibling(self, generation):
        """Boot the L1 of ``generation``; wait until it takes guests."""
        sibling = nested_sibling.NestedSibling(self.conf, generation)
        self.siblings.append(sibling)
        started = time.monotonic()
        sibling.start()
        sibling.wait_ready(self.conf.vmbeam_nested.l1_boot_timeout)
        self.boot_s[generation] = time.monotonic() - started
        return sibling

    def spec(self, name, host, ram_mib=128, work_mib=32, dirty_mib_s=1,
             report_ms=1000, verify_mib_s=16, bridge=None, ip=None,
             disk_mib=0, console_port=False):
        """An L2 guest for ``host`` (a NestedHost), its pool attached.

        ``bridge``: a virtio NIC on that bridge of this host (L0), which
        the L1 reaches through an uplink (nested/uplinks.py); ``ip``
        ("ADDR/PREFIX") the address the guest gives it. ``disk_mib``: a
        qcow2 disk of that size on this host, as Nova makes an instance's
        (the L1 reaches it over NBD, nested/disks.py), on which the
        guest's disk worker writes and reads back. ``console_port``: the
        console log is written as Nova's would be (nested/consoles.py: a
        port of the L1 onto the file on this host) instead of sent to a
        collector here over TCP.
        """
        os.makedirs(self.run_dir, exist_ok=True)
        guest_uuid = str(uuid.uuid4())
        self.pool.ensure()
        # A 2 MiB head before the RAM where the L1 maps it as device-DAX.
        self.pool.allocate(guest_uuid, (ram_mib << 20) +
                           host.sibling.ram_mapping.pool_head_bytes)
        bar = host.attach_pool(self.pool, guest_uuid)
        log = os.path.join(self.run_dir, '%s.console.log' % name)
        if os.path.exists(log):
            os.unlink(log)
        if not console_port:
            collector = console_mod.ConsoleCollector(
                network.host_address(self.conf)[0], log)
            self.collectors.append(collector)
        spec = guest_mod.GuestSpec(
            name=name, uuid=guest_uuid, ram_mib=ram_mib,
            ram=guest_mod.RamBacking(guest_mod.RAM_FILE, bar),
            kernel=devappliance.GUEST_KERNEL,
            initrd=devappliance.GUEST_INITRD,
            cmdline=guestimage.kernel_cmdline(
                work_mib, dirty_mib_s, report_ms,
                verify_mib_s=verify_mib_s, ip=ip, hostname=name,
                disk=bool(disk_mib), boot_messages=True),
            console_log=log)
        bridges = []
        if bridge:
            bridges.append((bridge, '52:54:00:%02x:%02x:%02x' % tuple(
                bytes.fromhex(guest_uuid.replace('-', ''))[:3])))
        # The L1 has its own QEMU: its path there, not this host's.
        xml = libvirt_config.domain_xml(
            dataclasses.replace(spec, console_log=None), accel='tcg',
            emulator='/usr/bin/qemu-system-x86_64', bridges=bridges)
        domain = ET.fromstring(xml)
        if console_port:
            # As Nova's libvirt driver writes a console log (virtlogd).
            domain.find('devices').extend([ET.fromstring(
                "<serial type='pty'><log file='%s' append='off'/>"
                "<target port='0'/></serial>" % log), ET.fromstring(
                "<console type='pty'><target type='serial' port='0'/>"
                "</console>")])
        else:
            domain.find('devices').append(ET.fromstring(
                console_mod.serial_xml(collector.address, collector.port)))
        if disk_mib:
            domain.find('devices').append(ET.fromstring(
                self._disk_xml(name, disk_mib)))
        return dataclasses.replace(
            spec, domain_xml=ET.tostring(domain, encoding='unicode'))

    def _disk_xml(self, name, disk_mib):
        path = os.path.join(self.run_dir, '%s.qcow2' % name)
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', path,
                        '%dM' % disk_mib], check=True)
        pw = pwd.getpwnam(self.conf.vmbeam.qemu_user)
        os.chown(path, pw.pw_uid, pw.pw_gid)
        files.searchable(self.run_dir)
        return ("<disk type='file' device='disk'>"
                "<driver name='qemu' type='qcow2' cache='none'/>"
                "<source file='%s'/><target dev='vda' bus='virtio'/>"
                "</disk>" % path)

    def wait_ready(self, guest, timeout=L2_BOOT_TIMEOUT):
        started = time.monotonic()
        wait_booted(guest.name, guest.console, timeout)
        super().wait_ready(guest, max(
            60.0, timeout - (time.monotonic() - started)))

    def move(self, guest, mover, target):
        result = mover.move(guest.endpoint, target)
        guest.moved_at = guest.console.offset()
        guest.endpoint, guest.hypervisor = result.destination, target
        return result

    def cleanup(self):
        for guest in list(self.guests):
            try:
                guest.endpoint.destroy()
            except Exception:
                LOG.exception('destroying L2 guest %s', guest.name)
        storage = disks.StorageDaemon(self.conf)
        for guest in self.guests:
            try:
                storage.unexport(guest.spec.uuid)
            except Exception:
                LOG.exception('removing the disk exports of %s', guest.name)
        for sibling in self.siblings:
            try:
                if sibling.running():
                    sibling.retire()
            except Exception:
                LOG.exception('retiring %s', sibling.name)
            sibling.close()
        for guest in self.guests:
            try:
                self.pool.release(guest.spec.uuid)
            except Exception:
                LOG.exception('releasing the RAM of %s', guest.name)
        self.guests = []
        for collector in self.collectors:
            collector.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)
