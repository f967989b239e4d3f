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

"""One libvirt domain as a move endpoint.

Every state change goes through libvirt (resume, destroy, undefine), so the
daemon's view of its domains stays right; QMP commands go through libvirt's
monitor passthrough.
"""

import os
import signal
import time

import libvirt
from oslo_log import log as logging

from nova_vmbeam import exception
from nova_vmbeam import hypervisor
from nova_vmbeam.libvirt import config
from nova_vmbeam.privsep import daemons as privsep_daemons
from nova_vmbeam.qemu import monitor as monitor_mod
from nova_vmbeam.qemu import procfs

LOG = logging.getLogger(__name__)


class LibvirtGuest(hypervisor.GuestEndpoint):

    def __init__(self, host, dom, spec):
        self.host = host
        self.dom = dom
        self.spec = spec
        self._process = None

    @property
    def name(self):
        return self.spec.name

    @property
    def pid(self):
        return self.process.pid

    @property
    def process(self):
        """The QEMU as a procfs.ProcessIdentity, read once and kept.

        What is waited for and signalled: once this QEMU has exited, its
        pid may name another process, which must never be taken for it.
        """
        if self._process is None:
            process = self.host.qemu_process(self.spec.name)
            if process is None:
                raise exception.QemuGone('no QEMU runs for %s on %s' %
                                         (self.name, self.host.name))
            self._process = process
        return self._process

    def connect(self, timeout=None):
        """libvirt holds the monitor; nothing to connect."""

    def execute(self, command, timeout=None, **arguments):
        return self.host.monitor_command(self.dom, command, arguments)

    def events(self):
        return self.host.events(self.spec.uuid)

    def wait_event(self, name, timeout, since=0.0):
        return monitor_mod.wait_event(self.events, self.name, name, timeout,
                                      since)

    def alive(self):
        try:
            return self.process.alive()
        except exception.VMBeamError:
            return False   # no pid file: libvirt has no QEMU for it

    def exit_reason(self):
        log = os.path.join(self.host.log_dir or '', 'qemu',
                           '%s.log' % self.name)
        try:
            with open(log, errors='replace') as f:
                lines = [line for line in f.read().splitlines()
                         if 'qemu-system' in line or 'error' in line]
            return '\n'.join(lines[-5:])
        except OSError:
            return ''

    def resume(self):
        self.dom.resume()

    def cpu_shares(self):
        try:
            return self.dom.schedulerParameters().get('cpu_shares')
        except libvirt.libvirtError as exc:
            # No CPU cgroup controller for this daemon.
            LOG.debug('no CPU shares for %s: %s', self.name, exc)
            return None

    def set_cpu_shares(self, shares):
        self.dom.setSchedulerParametersFlags(
            {'cpu_shares': shares}, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    def _wait_gone(self, process, timeout=10.0):
        deadline = time.monotonic() + timeout
        while process.alive():
            if time.monotonic() > deadline:
                raise RuntimeError('QEMU %d of %s did not exit' %
                                   (process.pid, self.name))
            time.sleep(0.002)

    def destroy(self):
        """Kill through libvirt and wait until QEMU is really gone."""
        process = self._process
        try:
            if process is None and self.dom.isActive():
                try:
                    process = self.process
                except exception.QemuGone:
                    pass   # only libvirt's record of it is left to tidy
            self.dom.destroy()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (libvirt.VIR_ERR_OPERATION_INVALID,
                                            libvirt.VIR_ERR_NO_DOMAIN):
                if process is None:
                    raise
                # The daemon is gone or wedged: the QEMU still is not.
                LOG.warning('libvirt could not destroy %s (%s); killing '
                            'QEMU %d', self.name, exc, process.pid)
                privsep_daemons.signal(process, signal.SIGKILL)
        if process is not None:
            self._wait_gone(process)
        self.undefine()

    def retire(self):
        """Stop the source of a completed move.

        QMP "quit" (through libvirt) ends QEMU within milliseconds; libvirt
        sees the exit and tidies its records by itself, which takes it over
        a second that no guest needs to wait for. Falls back to destroy().
        """
        process = self.process
        # Undefine first, while the domain runs (it just turns transient):
        # once QEMU is gone, every libvirt call on the domain waits until
        # libvirt has finished tidying up after it.
        self.undefine()
        try:
            self.execute('quit')
        except exception.MonitorError:
            pass   # the reply is lost when QEMU closes the monitor
        try:
            self._wait_gone(process, timeout=5.0)
        except RuntimeError:
            LOG.warning('%s did not quit; destroying it', self.name)
            self.destroy()

    def undefine(self):
        try:
            if self.dom.isPersistent():
                self.dom.undefine()
        except libvirt.libvirtError:
            pass

    def persist(self):
        """Make a (transient) destination domain persistent."""
        xml = self.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE |
                               libvirt.VIR_DOMAIN_XML_MIGRATABLE)
        self.host.conn.defineXML(config.without_incoming(xml))

    def cpu_seconds(self, thread_prefix=None):
        return procfs.cpu_seconds(self.pid, thread_prefix)
