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

"""Guests in plain QEMU processes: the hypervisor of `vmbeam demo/bench`.

No libvirt: nova-vmbeam starts QEMU itself. This is the smallest hypervisor
that the movers can drive, and the one their tests and benchmarks use.
"""

import os
import signal
import subprocess
import time

from oslo_log import log as logging

from nova_vmbeam import exception
from nova_vmbeam import hypervisor
from nova_vmbeam.qemu import cmdline
from nova_vmbeam.qemu import monitor as monitor_mod
from nova_vmbeam.qemu import procfs

LOG = logging.getLogger(__name__)


class QemuProcess(hypervisor.GuestEndpoint):
    """One QEMU process running (or about to receive) one guest."""

    def __init__(self, spec, run_dir, argv, qmp_socket, qmp_timeout):
        self.spec = spec
        self.run_dir = run_dir
        self.argv = argv
        self.qmp_socket = qmp_socket
        self.stderr_path = os.path.join(run_dir, 'qemu.stderr')
        self.monitor = monitor_mod.Monitor(qmp_socket, spec.name,
                                           timeout=qmp_timeout)
        self._popen = None

    def start(self):
        os.makedirs(self.run_dir, exist_ok=True)
        if os.path.exists(self.qmp_socket):
            os.unlink(self.qmp_socket)
        with open(self.stderr_path, 'wb') as err:
            self._popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True)
        LOG.debug('started QEMU %d for %s: %s', self._popen.pid,
                  self.spec.name, ' '.join(self.argv))
        return self

    @property
    def pid(self):
        return self._popen.pid

    def alive(self):
        return self._popen is not None and self._popen.poll() is None

    def exit_reason(self):
        return self.stderr_text()

    def stderr_text(self):
        try:
            with open(self.stderr_path, errors='replace') as f:
                return f.read().strip()
        except OSError:
            return ''

    def connect(self, timeout=None):
        timeout = self.monitor.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.qmp_socket):
            if not self.alive():
                raise exception.QemuStartFailed(
                    guest=self.spec.name,
                    detail=self.stderr_text() or 'exit code %s' %
                    self._popen.returncode)
            if time.monotonic() > deadline:
                raise exception.QemuStartFailed(
                    guest=self.spec.name,
                    detail='no monitor socket after %.0f s' % timeout)
            time.sleep(0.002)
        while True:
            # The socket is bound a moment before QEMU listens on it (and a
            # cpr-transfer destination only accepts once it has read the cpr
            # channel): retry a refused connection until the deadline.
            try:
                self.monitor.connect(max(deadline - time.monotonic(), 0.1))
                return self
            except exception.MonitorError as exc:
                if not self.alive():
                    raise exception.QemuStartFailed(
                        guest=self.spec.name, detail=self.stderr_text())
                if time.monotonic() > deadline:
                    raise exception.QemuStartFailed(guest=self.spec.name,
                                                    detail=str(exc))
            time.sleep(0.002)

    def execute(self, command, timeout=None, **arguments):
        return self.monitor.execute(command, timeout=timeout, **arguments)

    def events(self):
        return self.monitor.events()

    def wait_event(self, name, timeout, since=0.0):
        return self.monitor.wait_event(name, timeout, since)

    def resume(self):
        self.execute('cont')

    def destroy(self):
        self.monitor.close()
        if self._popen is None:
            return
        if self.alive():
            os.killpg(self._popen.pid, signal.SIGKILL)
        # Waiting matters: only a reaped QEMU has surely unmapped the RAM.
        self._popen.wait()

    def retire(self):
        """Ask QEMU to quit; kill it if it does not go within 5 s."""
        try:
            self.execute('quit', timeout=5.0)
            self._popen.wait(5.0)
        except (exception.MonitorError, subprocess.TimeoutExpired) as exc:
            LOG.warning('QEMU %d of %s did not quit (%s); killing it',
                        self.pid, self.spec.name, exc)
        self.destroy()

    def cpu_seconds(self, thread_prefix=None):
        return procfs.cpu_seconds(self.pid, thread_prefix)


class ProcessHypervisor(hypervisor.Hypervisor):
    """Guests as plain QEMU processes under ``run_dir``."""

    def __init__(self, name, run_dir, binary, accel, qmp_timeout=30.0):
        self.name = name
        self._run_dir = os.path.join(run_dir, name)
        self.binary = binary
        self.accel = accel
        self.qmp_timeout = qmp_timeout
        self.guests = {}
        self._launched = 0

    @property
    def run_dir(self):
        return self._run_dir

    def launch(self, spec, incoming=(), paused=False):
        self._launched += 1
        # A fresh directory per launch: sockets of an earlier QEMU of the
        # same guest (a failed move, a rollback) can never be picked up.
        guest_dir = os.path.join(self._run_dir,
                                 '%s.%d' % (spec.name, self._launched))
        qmp_socket = os.path.join(guest_dir, 'qmp.sock')
        argv = [self.binary] + cmdline.build(spec, qmp_socket, self.accel,
                                             incoming, paused)
        return QemuProcess(spec, guest_dir, argv, qmp_socket,
                           self.qmp_timeout).start()

    def boot(self, spec):
        """Start ``spec`` running here and record it."""
        process = self.launch(spec)
        try:
            process.connect()
        except Exception:
            process.destroy()
            raise
        self.adopt(process)
        return process

    def adopt(self, process):
        """Record ``process`` as running here (after a move onto us)."""
        self.guests[process.spec.name] = process

    def forget(self, process):
        if self.guests.get(process.spec.name) is process:
            del self.guests[process.spec.name]

    def shutdown(self):
        for process in list(self.guests.values()):
            process.destroy()
        self.guests.clear()
