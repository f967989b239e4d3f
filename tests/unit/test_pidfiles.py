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

"""Pid files are believed only while the process they name holds them.

With real processes: a stranger (``sleep``) whose pid a stale pid file
names, as after the daemon or QEMU died and its pid was reused; and
processes that hold their pid file locked, as libvirt's daemons and QEMUs
do.
"""

import os
import signal
import time

import fixtures
import libvirt
import testtools

from nova_vmbeam import exception
from nova_vmbeam import guest as guest_mod
from nova_vmbeam.libvirt import guest as libvirt_guest
from nova_vmbeam.libvirt import host as host_mod
from nova_vmbeam.nested import host as nested_host
from nova_vmbeam.qemu import procfs
from nova_vmbeam.siblings import colocated
from tests.unit import fakes
from tests.unit import processes


def write_pid(path, pid):
    with open(path, 'w') as f:
        f.write('%d\n' % pid)


class TestColocatedDaemons(testtools.TestCase):

    def setUp(self):
        super().setUp()
        state = self.useFixture(fixtures.TempDir()).path
        self.sibling = colocated.ColocatedSibling(
            fakes.make_conf(state_path=state), 1)
        os.makedirs(self.sibling._path('run'))
        self.libvirtd_pid = self.sibling._path('run', 'libvirtd.pid')
        self.virtlogd_pid = self.sibling._path('run', 'virtlogd.pid')

    def test_stale_pid_files_never_signal_the_process_with_that_pid(self):
        # The daemons died; their pids went to processes of others.
        libvirtd, virtlogd = processes.stranger(self), \
            processes.stranger(self)
        write_pid(self.libvirtd_pid, libvirtd.pid)
        write_pid(self.virtlogd_pid, virtlogd.pid)
        self.assertFalse(self.sibling.running())
        self.assertEqual({'libvirtd': None, 'virtlogd': None},
                         self.sibling.pids())
        self.sibling.kill_daemon(signal.SIGKILL)
        self.sibling.retire()
        self.assertIsNone(libvirtd.poll())
        self.assertIsNone(virtlogd.poll())
        health = self.sibling.health()
        self.assertFalse(health.running)
        self.assertIsNone(health.daemon.pid)

    def test_daemons_holding_their_pid_files_are_found_and_retired(self):
        libvirtd = processes.pidfile_holder(self, self.libvirtd_pid)
        virtlogd = processes.pidfile_holder(self, self.virtlogd_pid)
        self.assertTrue(self.sibling.running())
        self.assertEqual({'libvirtd': libvirtd.pid,
                          'virtlogd': virtlogd.pid}, self.sibling.pids())
        self.sibling.retire()
        self.assertEqual(-signal.SIGTERM, libvirtd.wait(timeout=5))
        self.assertEqual(-signal.SIGTERM, virtlogd.wait(timeout=5))
        self.assertFalse(self.sibling.running())

    def test_kill_daemon_reaches_the_daemon(self):
        libvirtd = processes.pidfile_holder(self, self.libvirtd_pid)
        self.sibling.kill_daemon(signal.SIGKILL)
        self.assertEqual(-signal.SIGKILL, libvirtd.wait(timeout=5))


class TestLibvirtPidFiles(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.run_dir = self.useFixture(fixtures.TempDir()).path
        os.makedirs(os.path.join(self.run_dir, 'qemu'))
        self.host = host_mod.Host(
            'gen2', 'qemu:///nowhere', self.run_dir, pid_dir=self.run_dir,
            daemon_pid_file=os.path.join(self.run_dir, 'libvirtd.pid'))

    def qemu_pid_file(self, name):
        return os.path.join(self.run_dir, 'qemu', '%s.pid' % name)

    def test_a_qemu_of_the_domain_counts_only_if_it_holds_the_pid_file(self):
        # g1's QEMU here died while its daemon was down; its pid now
        # belongs to a QEMU of g1 elsewhere (say, the other generation's),
        # whose command line names the domain all the same.
        other = processes.pidfile_holder(
            self, os.path.join(self.run_dir, 'elsewhere.pid'),
            'qemu-system-x86_64', processes.fake_qemu_args('g1'))
        self.assertTrue(procfs.is_libvirt_qemu(other.pid, 'g1'))
        write_pid(self.qemu_pid_file('g1'), other.pid)
        # g2's QEMU runs here and holds its pid file, as libvirt's do.
        g2 = processes.pidfile_holder(
            self, self.qemu_pid_file('g2'), 'qemu-system-x86_64',
            processes.fake_qemu_args('g2'))
        # libvirtd's own driver.pid, held by a process that is no QEMU.
        processes.pidfile_holder(self, self.qemu_pid_file('driver'))

        self.assertEqual(['g2'], self.host.running_qemus())
        self.assertIsNone(self.host.qemu_pid('g1', timeout=0))
        self.assertEqual(g2.pid, self.host.qemu_pid('g2', timeout=0))
        started = time.monotonic()
        self.assertRaises(exception.QemuGone, self.host.qemu_process,
                          'g1', timeout=5)
        # Stale is known at once: nothing to wait for.
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertRaises(exception.VMBeamError, self.host.qemu_pid, 'g3',
                          timeout=0.05)

    def test_only_a_daemon_holding_its_pid_file_is_boosted(self):
        write_pid(self.host.daemon_pid_file,
                  processes.stranger(self).pid)
        self.assertEqual([], self.host.control_pids())
        os.unlink(self.host.daemon_pid_file)
        daemon = processes.pidfile_holder(self, self.host.daemon_pid_file)
        self.assertEqual([daemon.pid], self.host.control_pids())


class _Domain:
    """A libvirt domain whose daemon no longer answers destroy."""

    def __init__(self):
        self.destroyed = False

    def isActive(self):
        return True

    def destroy(self):
        self.destroyed = True
        exc = libvirt.libvirtError('daemon gone')
        exc.err = (libvirt.VIR_ERR_INTERNAL_ERROR, 0, 'daemon gone', 0, '',
                   None, None, 0, 0)
        raise exc

    def isPersistent(self):
        return False


class _Host:
    """Reads a QEMU from its pid file, as Host does, from a script."""

    name = 'gen1'

    def __init__(self, process):
        self.process = process

    def qemu_process(self, name, timeout=5.0):
        return self.process

    def qemu_pid(self, name, timeout=5.0):
        return self.process.pid


class TestLibvirtGuest(testtools.TestCase):

    def spec(self):
        return guest_mod.GuestSpec(name='g1', uuid='u1', ram_mib=64)

    def test_destroy_never_kills_a_process_that_reused_the_qemus_pid(self):
        # The QEMU read from the pid file has exited since; its pid went
        # to another process. libvirt cannot destroy the domain (daemon
        # gone), so the endpoint would kill the QEMU itself.
        sleep = processes.stranger(self)
        exited = procfs.ProcessIdentity(
            sleep.pid, procfs.ProcessIdentity.of(sleep.pid).start_ticks - 1)
        dom = _Domain()
        endpoint = libvirt_guest.LibvirtGuest(_Host(exited), dom,
                                              self.spec())
        self.assertFalse(endpoint.alive())
        endpoint.destroy()
        self.assertTrue(dom.destroyed)
        self.assertIsNone(sleep.poll())

    def test_destroy_kills_the_qemu_itself_when_libvirt_cannot(self):
        qemu = processes.stranger(self)
        endpoint = libvirt_guest.LibvirtGuest(
            _Host(procfs.ProcessIdentity.of(qemu.pid)), _Domain(),
            self.spec())
        self.assertTrue(endpoint.alive())
        endpoint.destroy()
        self.assertEqual(-signal.SIGKILL, qemu.wait(timeout=5))


class _L1Sibling:
    """A nested sibling whose L1 VM's QEMU is ``pid``."""

    name = 'gen3'
    uri = 'qemu+tcp://192.0.2.3/system'

    def __init__(self, pid):
        self.pid = pid

    def l1_pid(self):
        return self.pid


class TestHostWithoutPidFiles(testtools.TestCase):

    def test_the_l1_vm_is_the_process_of_a_nested_guest(self):
        # Its QEMU runs in the L1 VM; here the L1 VM's QEMU stands for it
        # (boosts): named by the host's qemu_pid, with an identity too.
        l1 = processes.stranger(self)
        host = nested_host.NestedHost(_L1Sibling(l1.pid), '/nowhere')
        endpoint = nested_host.RemoteGuest(
            host, _Domain(), guest_mod.GuestSpec(name='g1', uuid='u1',
                                                 ram_mib=64))
        self.assertEqual(l1.pid, endpoint.pid)
        self.assertEqual(procfs.ProcessIdentity.of(l1.pid), endpoint.process)
        self.assertEqual([], host.control_pids())
