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

"""Host rejuvenation on real libvirt daemons (colocated siblings)."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import fixtures
import libvirt

from nova_vmbeam import exception
from nova_vmbeam import guest as guest_mod
from nova_vmbeam.libvirt import partition as partition_mod
from nova_vmbeam.qemu import procfs
from nova_vmbeam.rejuvenation import journal as journal_mod
from nova_vmbeam.rejuvenation import orchestrator as orchestrator_mod
from tests.functional import base
from vmbeam_devtools.guestimage import console as guestimage_console
from vmbeam_devtools import testbed as testbed_mod


def wait_for_incoming_qemu(scope, name, timeout=60.0):
    """Pid of a QEMU of ``name`` started as a migration destination."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = procfs.qemu_pids(scope, 'guest=%s,' % name, '-incoming')
        if pids:
            return pids[0]
        time.sleep(0.001)
    raise AssertionError('no incoming QEMU for %s' % name)


def _process_state(pid):
    """The state letter in /proc/<pid>/stat (R, S, T for stopped...)."""
    with open('/proc/%d/stat' % pid) as f:
        return f.read().rsplit(')', 1)[1].split()[0]


class RejuvenationTestCase(base.PrivateStateTestCase):
    """Guests under colocated sibling daemons run by the orchestrator."""

    RAM_MIB = 256
    WORK_MIB = 64
    DIRTY_MIB_S = 16
    NETWORK = False
    REQUIRED = ('qemu-system-x86_64', 'unshare', '/usr/sbin/libvirtd')

    def setUp(self):
        super().setUp()
        if self.NETWORK:
            self._make_network()
        self.testbed = testbed_mod.LibvirtTestbed(self.conf, name='rj',
                                                  image=base.image())
        self.addCleanup(self.testbed.cleanup)
        self.orchestrator = self.testbed.orchestrator
        self.orchestrator.init()

    def _make_network(self):
        """A private network namespace with a bridge, for guest NICs.

        The sibling daemons run in it, so guest taps land on its bridge;
        all addresses stay inside it.
        """
        if not shutil.which('ip'):
            self.skipTest('iproute2 is not installed')
        self.netns = 'vmbeam-rj-%d' % os.getpid()

        def ip(*args):
            subprocess.run(['ip', 'netns', 'exec', self.netns, 'ip'] +
                           list(args), check=True)
        subprocess.run(['ip', 'netns', 'add', self.netns], check=True)
        self.addCleanup(subprocess.run, ['ip', 'netns', 'del', self.netns])
        ip('link', 'add', 'vmbr0', 'type', 'bridge')
        ip('addr', 'add', '10.251.0.1/24', 'dev', 'vmbr0')
        ip('link', 'set', 'vmbr0', 'up')
        ip('link', 'set', 'lo', 'up')
        self.conf.set_override('sibling_netns', self.netns, 'vmbeam')

    def guest_tcp(self, address, port=7777):
        """What the guest's TCP responder says (asked from the netns)."""
        code = ('import socket,sys\n'
                's = socket.create_connection((sys.argv[1], %d), 10)\n'
                'print(s.makefile().readline().strip())\n' % port)
        out = subprocess.run(['ip', 'netns', 'exec', self.netns,
                              sys.executable, '-c', code, address],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(0, out.returncode, out.stderr)
        return out.stdout.strip()

    def boot(self, name, ram_kind=guest_mod.RAM_FILE):
        spec = self.testbed.spec(name, self.RAM_MIB, ram_kind,
                                 self.WORK_MIB, self.DIRTY_MIB_S)
        return self.testbed.boot_libvirt(spec)

    def boot_many(self, count):
        guests = []
        for index in range(count):
            spec = self.testbed.spec('g%d' % index, self.RAM_MIB,
                                     guest_mod.RAM_FILE, self.WORK_MIB,
                                     self.DIRTY_MIB_S)
            guests.append(self.testbed.boot_libvirt(spec, wait=False))
        for guest in guests:
            self.testbed.wait_ready(guest)
        return guests

    def assert_each_runs_once_intact(self, guests, marks, generation):
        for guest in guests:
            pids = self.qemu_pids('guest=%s,' % guest.name)
            self.assertEqual(1, len(pids), '%s: %s' % (guest.name, [
                open('/proc/%d/cmdline' % p).read().replace('\0', ' ')
                for p in pids]))
            self.assertEqual(generation, self.testbed.locate(guest))
            self.assertEqual('running', guest.endpoint.status())
            status = self.testbed.check_integrity(guest, marks[guest.name])
            self.assertEqual(0, status['errors'])

    def marks(self, guests):
        return {g.name: g.console.offset() for g in guests}

    def journal(self):
        return self.orchestrator.journal.load()


class TestRejuvenation(RejuvenationTestCase):

    def test_rejuvenate_moves_every_guest_and_retires_old_daemon(self):
        guests = self.boot_many(2)
        marks = self.marks(guests)
        gen1 = self.orchestrator.active()
        run = self.orchestrator.rejuvenate()
        self.assertEqual('completed', run.state)
        for name, entry in run.guests.items():
            self.assertEqual('moved', entry.state, name)
            self.assertLess(entry.result.transferred_bytes, 1 << 20)
        state = self.journal()
        self.assertEqual(2, state.active)
        self.assertEqual('retired', state.generations[1].state)
        self.assertFalse(gen1.running())
        self.assertEqual(['g0', 'g1'],
                         sorted(self.orchestrator.active().host().domains()))
        # Aging evidence: the hypervisor's resources before and after.
        self.assertGreater(run.aging_before.daemon.rss_kib, 0)
        self.assertGreater(run.aging_after.daemon.fds, 0)
        self.assertEqual(2, len(run.aging_after.guests))
        self.assert_each_runs_once_intact(guests, marks, 2)
        # And again: generation 3 takes over from 2.
        marks = self.marks(guests)
        run = self.orchestrator.rejuvenate()
        self.assertEqual('completed', run.state)
        self.assertEqual(3, self.journal().active)
        self.assert_each_runs_once_intact(guests, marks, 3)

    def test_guest_cgroups_weigh_more_only_during_the_switchover(self):
        guests = self.boot_many(1)
        marks = self.marks(guests)
        seen = []
        cgroups = []
        mark_switching = self.orchestrator.journal.mark_switching

        def shares(generation):
            host = self.orchestrator.sibling(generation).host()
            try:
                return host.lookup('g0').schedulerParameters()['cpu_shares']
            finally:
                host.close()

        def cpu_cgroup(generation):
            host = self.orchestrator.sibling(generation).host()
            try:
                return procfs.cpu_cgroup(host.guest('g0').pid)
            finally:
                host.close()

        def at_switchover(name):
            # Source and destination, while the guest is paused.
            seen.append((shares(1), shares(2)))
            cgroups.append((cpu_cgroup(1), cpu_cgroup(2)))
            return mark_switching(name)
        self.orchestrator.journal.mark_switching = at_switchover
        before = shares(1)
        run = self.orchestrator.rejuvenate()
        self.assertEqual('completed', run.state)
        # Both ends raised, each in a cgroup of its own generation's
        # (both daemons call the guest qemu-1-g0).
        factor = round(1.25 ** -self.conf.vmbeam.switchover_nice)
        self.assertEqual([(before * factor, before * factor)], seen)
        [(source_cgroup, dest_cgroup)] = cgroups
        self.assertNotEqual(source_cgroup, dest_cgroup)
        for generation, cgroup in ((1, source_cgroup), (2, dest_cgroup)):
            self.assertTrue(cgroup.startswith(partition_mod.cgroup_path(
                self.orchestrator.sibling(generation).partition) + '/'),
                cgroup)
        # The guest runs on at its former weight.
        self.assertEqual(before, shares(2))
        self.assert_each_runs_once_intact(guests, marks, 2)

    def test_standby_destinations_are_taken_over(self):
        guests = self.boot_many(3)
        record = self.orchestrator.standby()
        self.assertEqual('standby', record.state)
        self.assertEqual(['g0', 'g1', 'g2'], sorted(record.prepared))
        standby = self.orchestrator.sibling(2)
        self.assertEqual(['g0', 'g1', 'g2'],
                         sorted(standby.host().domains()))
        # Run again: nothing changed, nothing is prepared twice.
        pids = sorted(self.qemu_pids('guest=g1,'))
        self.orchestrator.standby()
        self.assertEqual(pids, sorted(self.qemu_pids('guest=g1,')))
        self.assertEqual(1, self.journal().active)
        # g2 goes away after the standby was prepared: its prepared
        # destination maps RAM that must not stay mapped. (Its RAM file
        # cannot be released while that destination maps it.)
        guests.pop().endpoint.destroy()
        marks = self.marks(guests)
        run = self.orchestrator.rejuvenate()
        self.assertEqual('completed', run.state)
        self.assertEqual(0.0, run.sibling_ready_ms)
        self.assertTrue(run.standby)
        for name in ('g0', 'g1'):
            result = run.guests[name].result
            self.assertTrue(result.standby, name)
        self.assertEqual(2, self.journal().active)
        self.assertEqual(['g0', 'g1'],
                         sorted(self.orchestrator.active().host().domains()))
        self.assertEqual([], self.qemu_pids('guest=g2,'))
        self.assert_each_runs_once_intact(guests, marks, 2)

    def test_stale_standby_destination_is_replaced(self):
        guests = self.boot_many(1)
        self.orchestrator.standby()
        old_shell = self.qemu_pids('guest=g0,', '-incoming')
        self.assertEqual(1, len(old_shell))
        # The prepared destination dies (or was made from other XML):
        # the rejuvenation starts a new one instead of using it.
        os.kill(old_shell[0], signal.SIGKILL)
        marks = self.marks(guests)
        run = self.orchestrator.rejuvenate()
        self.assertEqual('completed', run.state)
        self.assertFalse(run.guests['g0'].result.standby)
        self.assert_each_runs_once_intact(guests, marks, 2)
        # And a standby can be discarded, leaving nothing behind.
        self.orchestrator.standby()
        self.assertEqual(1, self.orchestrator.discard_standby())
        self.assertEqual('retired', self.journal().generations[3].state)
        self.assertEqual(1, len(self.qemu_pids('guest=g0,')))

    def test_move_one_guest_then_finish(self):
        guests = self.boot_many(2)
        marks = self.marks(guests)
        run = self.orchestrator.move('g1')
        self.assertEqual('incomplete', run.state)
        self.assertEqual('moved', run.guests['g1'].state)
        self.assertEqual('pending', run.guests['g0'].state)
        self.assertEqual(1, self.journal().active)
        self.assertEqual(2, self.testbed.locate(guests[1]))
        self.assertEqual(1, self.testbed.locate(guests[0]))
        run = self.orchestrator.rejuvenate()
        self.assertEqual('completed', run.state)
        self.assert_each_runs_once_intact(guests, marks, 2)

    def test_unknown_guest_changes_nothing(self):
        self.boot('g0')
        before = self.journal()
        exc = self.assertRaises(exception.GuestNotFound,
                                self.orchestrator.move, 'nosuchguest')
        self.assertIn('g0', str(exc))
        self.assertEqual(before, self.journal())

    def test_guest_without_pool_ram_is_refused_up_front(self):
        self.boot('plain', ram_kind=guest_mod.RAM_ANONYMOUS)
        before = self.journal()
        exc = self.assertRaises(exception.RamNotShareable,
                                self.orchestrator.rejuvenate)
        self.assertIn('plain', str(exc))
        self.assertIn('ram_pool_path', str(exc))
        self.assertEqual(before, self.journal())

    def test_sibling_that_fails_to_start_aborts_before_any_move(self):
        guests = self.boot_many(1)
        marks = self.marks(guests)
        self.conf.set_override('libvirtd', '/bin/false', 'vmbeam')
        exc = self.assertRaises(orchestrator_mod.RejuvenationAborted,
                                self.orchestrator.rejuvenate)
        self.assertIn('nothing changed', str(exc))
        self.conf.clear_override('libvirtd', 'vmbeam')
        state = self.journal()
        self.assertEqual(1, state.active)
        self.assertEqual('failed', state.generations[2].state)
        self.assertIsNone(state.run)
        self.assert_each_runs_once_intact(guests, marks, 1)


class TestGenerationCgroups(RejuvenationTestCase):
    """Two generations' guests of one name and id share no cgroup."""

    @staticmethod
    def cgroups(pid):
        """hierarchy -> cgroup of ``pid``, where libvirt placed it.

        Those below /machine: in the others (name=systemd, pids) QEMU
        stays in its daemon's cgroup, a generation's own (lifetime.py).
        """
        return {key: path for key, path in procfs.cgroups(pid).items()
                if path.startswith(partition_mod.PARENT + '/')}

    @staticmethod
    def cpu_shares_file(cgroup):
        """The v1 cpu.shares of the domain cgroup holding ``cgroup``."""
        for mount in procfs.cgroup_mounts():
            if mount.fstype == 'cgroup' and 'cpu' in mount.options:
                # The QEMU main thread is in <domain>/emulator.
                path = os.path.join(mount.mount_point, os.path.dirname(
                    cgroup).lstrip('/'), 'cpu.shares')
                with open(path) as f:
                    return int(f.read())
        return None

    def test_destination_in_other_generation_has_cgroups_of_its_own(self):
        self.boot_many(1)
        # A standby generation prepares the move's destination: the same
        # guest, paused for an incoming migration, in generation 2.
        self.orchestrator.standby()
        source_host = self.orchestrator.sibling(1).host()
        self.addCleanup(source_host.close)
        dest_host = self.orchestrator.sibling(2).host()
        self.addCleanup(dest_host.close)
        source, dest = source_host.lookup('g0'), dest_host.lookup('g0')
        # One name and one id: one machine name, qemu-1-g0, in both.
        self.assertEqual(source.ID(), dest.ID())
        [source_pid] = [p for p in self.qemu_pids('guest=g0,')
                        if p not in self.qemu_pids('guest=g0,', '-incoming')]
        [dest_pid] = self.qemu_pids('guest=g0,', '-incoming')
        source_cgroups = self.cgroups(source_pid)
        dest_cgroups = self.cgroups(dest_pid)
        self.assertTrue(source_cgroups)
        self.assertEqual(sorted(source_cgroups), sorted(dest_cgroups))
        for key, path in source_cgroups.items():
            self.assertNotEqual(path, dest_cgroups[key], key)
        for generation, cgroups in ((1, source_cgroups), (2, dest_cgroups)):
            prefix = partition_mod.cgroup_path(
                self.orchestrator.sibling(generation).partition) + '/'
            for key, path in cgroups.items():
                self.assertTrue(path.startswith(prefix), (key, path))

        # A setting of one generation's guest leaves the other's alone.
        before = source.schedulerParameters()['cpu_shares']
        dest.setSchedulerParametersFlags({'cpu_shares': before // 2},
                                         libvirt.VIR_DOMAIN_AFFECT_LIVE)
        self.assertEqual(before // 2,
                         dest.schedulerParameters()['cpu_shares'])
        self.assertEqual(before, source.schedulerParameters()['cpu_shares'])
        source_cpu = procfs.cpu_cgroup(source_pid)
        dest_cpu = procfs.cpu_cgroup(dest_pid)
        if self.cpu_shares_file(source_cpu) is not None:   # cgroup v1
            self.assertEqual(before, self.cpu_shares_file(source_cpu))
            self.assertEqual(before // 2, self.cpu_shares_file(dest_cpu))

        # Discarded, the standby generation takes its partition along.
        dest_partition = self.orchestrator.sibling(2).partition
        self.orchestrator.discard_standby()
        self.assertEqual(before, source.schedulerParameters()['cpu_shares'])
        for mount in procfs.cgroup_mounts():
            self.assertFalse(os.path.exists(os.path.join(
                mount.mount_point,
                partition_mod.cgroup_path(dest_partition).lstrip('/'))))


class TestRunListenerAndFallback(RejuvenationTestCase):
    """What an embedding program (the Nova driver) relies on."""

    def test_plain_ram_moves_with_the_fallback_and_the_listener_hears(self):
        pooled = self.boot('pooled')
        plain = self.boot('plain', ram_kind=guest_mod.RAM_ANONYMOUS)
        heard = []

        class Listener(orchestrator_mod.RunListener):
            def run_started(self, run, source, target):
                heard.append(('started', source.generation,
                              target.generation, run.id))

            @contextlib.contextmanager
            def moving(self, name, uuid):
                heard.append(('moving', name, uuid))
                yield
                heard.append(('fenced until', name))

            def guest_done(self, name, uuid, entry):
                heard.append(('done', name, entry.state, entry.mover))

            def retiring(self, source, target):
                heard.append(('retiring', source.running()))

            def run_finished(self, run):
                heard.append(('finished', run.state))

        self.orchestrator.listener = Listener()
        # Without a fallback the plain guest is refused, as before.
        self.assertRaises(exception.RamNotShareable,
                          self.orchestrator.preflight)
        plan = self.orchestrator.preflight(fallback_mover='precopy')
        self.assertEqual({'pooled': 'zerocopy', 'plain': 'precopy'},
                         plan.movers)
        self.assertEqual((None, 1, 2),
                         (plan.run_id, plan.source, plan.target))
        self.assertIsNone(self.journal().run)   # preflight: no change
        marks = self.marks([pooled, plain])
        run = self.orchestrator.rejuvenate(fallback_mover='precopy',
                                           run_id='run-x')
        self.assertEqual(('completed', 'run-x'), (run.state, run.id))
        self.assertEqual('precopy', run.guests['plain'].mover)
        self.assertEqual(plain.spec.uuid, run.guests['plain'].uuid)
        self.assertLess(run.guests['pooled'].result.transferred_bytes,
                        1 << 20)
        self.assertGreater(run.guests['plain'].result.transferred_bytes,
                           self.WORK_MIB << 20)
        self.assertEqual(('started', 1, 2, 'run-x'), heard[0])
        for guest in (pooled, plain):
            mover = 'zerocopy' if guest is pooled else 'precopy'
            # Fenced from its prepare until its move has ended, then done.
            at = heard.index(('moving', guest.name, guest.spec.uuid))
            until = heard.index(('fenced until', guest.name))
            self.assertLess(at, until)
            self.assertEqual(('done', guest.name, 'moved', mover),
                             heard[until + 1])
        # The old daemon still runs when the listener hears of its end.
        self.assertEqual([('retiring', True), ('finished', 'completed')],
                         heard[-2:])
        self.assert_each_runs_once_intact([pooled, plain], marks, 2)

    def test_guest_deleted_during_an_open_run_does_not_hold_it_up(self):
        guests = self.boot_many(2)
        run = self.orchestrator.move('g1')
        self.assertEqual('incomplete', run.state)
        self.testbed.locate(guests[0])
        guests[0].endpoint.destroy()
        run = self.orchestrator.rejuvenate()
        self.assertEqual('completed', run.state)
        self.assertEqual('gone', run.guests['g0'].state)
        self.assertEqual(2, self.journal().active)
        marks = self.marks(guests[1:])
        self.assert_each_runs_once_intact(guests[1:], marks, 2)

    def test_abort_stops_between_guests(self):
        guests = self.boot_many(2)
        original = self.orchestrator.moves.finish_one

        def move_then_abort(*args):
            result = original(*args)
            self.orchestrator.abort()
            return result
        self.orchestrator.moves.finish_one = move_then_abort
        # One guest after the other: the abort comes between them, and the
        # destination already prepared for the second is given up.
        run = self.orchestrator.rejuvenate(concurrency=1)
        self.assertEqual('incomplete', run.state)
        self.assertEqual(['moved', 'pending'], sorted(
            g.state for g in run.guests.values()))
        self.orchestrator.moves.finish_one = original
        self.assertEqual(['g0'], sorted(
            self.orchestrator.sibling(2).host().domains()))
        run = self.orchestrator.rejuvenate()
        self.assertEqual('completed', run.state)
        self.assert_each_runs_once_intact(guests, self.marks(guests), 2)

    def test_libvirt_secrets_are_carried_to_the_next_generation(self):
        conn = self.orchestrator.active().host().conn
        secret = conn.secretDefineXML(
            "<secret ephemeral='no' private='no'><usage type='volume'>"
            "<volume>/vmbeam/test</volume></usage></secret>")
        secret.setValue(b'sesame')
        private = conn.secretDefineXML(
            "<secret ephemeral='no' private='yes'><usage type='volume'>"
            "<volume>/vmbeam/private</volume></usage></secret>")
        private.setValue(b'hidden')
        run = self.orchestrator.rejuvenate()
        self.assertEqual('completed', run.state)
        new = self.orchestrator.active().host().conn
        self.assertEqual(b'sesame', new.secretLookupByUUIDString(
            secret.UUIDString()).value())
        self.assertEqual([secret.UUIDString()],
                         [s.UUIDString() for s in new.listAllSecrets()])

    def test_active_socket_follows_the_active_generation(self):
        link = self.orchestrator.active_socket()
        self.assertEqual(self.orchestrator.active().socket_path,
                         os.readlink(link))
        self.boot('g0')
        self.orchestrator.rejuvenate()
        self.assertIn('gen2', os.readlink(link))
        self.assertTrue(os.path.exists(link))   # the daemon's socket


class TestRejuvenationFaults(RejuvenationTestCase):

    def test_new_sibling_daemon_killed_mid_run(self):
        guests = self.boot_many(2)
        marks = self.marks(guests)
        original = self.orchestrator.moves.finish_one
        moved = []

        def move_then_kill_daemon(mover, name, *args):
            result = original(mover, name, *args)
            if not moved:
                self.orchestrator.sibling(2).kill_daemon(signal.SIGKILL)
            moved.append(name)
            return result
        self.orchestrator.moves.finish_one = move_then_kill_daemon
        # One guest after the other: the daemon dies between them.
        run = self.orchestrator.rejuvenate(concurrency=1)
        self.assertEqual('incomplete', run.state)
        self.assertEqual(['failed', 'moved'],
                         sorted(g.state for g in run.guests.values()))
        self.assertEqual(1, self.journal().active)
        self.orchestrator.moves.finish_one = original
        # Run again: the dead daemon is restarted, finds its guest again,
        # and the rest moves.
        run = self.orchestrator.rejuvenate()
        self.assertEqual('completed', run.state)
        self.assertEqual(2, self.journal().active)
        self.assert_each_runs_once_intact(guests, marks, 2)

    def test_generation_left_starting_or_ready_is_stopped(self):
        # What an orchestrator killed after starting the next generation
        # and before recording its run leaves: a generation nothing
        # tracks, its daemons running.
        guests = self.boot_many(1)
        marks = self.marks(guests)
        state = self.journal()
        abandoned, _ms = self.orchestrator.generations.start(state, 2,
                                                             'ready')
        self.assertTrue(abandoned.running())
        self.orchestrator.recover()
        self.assertEqual('failed', self.journal().generations[2].state)
        self.assertFalse(abandoned.running())
        # The next run starts a generation of its own and moves the guest.
        run = self.orchestrator.rejuvenate()
        self.assertEqual(('completed', 3), (run.state, run.target))
        self.assert_each_runs_once_intact(guests, marks, 3)

    def test_destination_qemu_killed_mid_move(self):
        guests = self.boot_many(1)
        marks = self.marks(guests)

        def kill_destination():
            pid = wait_for_incoming_qemu(self.conf.vmbeam.state_path, 'g0')
            os.kill(pid, signal.SIGSTOP)
            time.sleep(0.5)
            os.kill(pid, signal.SIGKILL)
        killer = threading.Thread(target=kill_destination)
        killer.start()
        run = self.orchestrator.rejuvenate()
        killer.join()
        self.assertEqual('incomplete', run.state)
        self.assertEqual('failed', run.guests['g0'].state)
        self.assertIn('rolled back', run.guests['g0'].error)
        self.assert_each_runs_once_intact(guests, marks, 1)
        run = self.orchestrator.rejuvenate()
        self.assertEqual('completed', run.state)
        self.assert_each_runs_once_intact(guests, self.marks(guests), 2)

    def _orchestrator_process(self, *python):
        """``vmbeam rejuvenate`` in a process of its own, to be killed.

        ``python``: lines run in that process before the command.
        """
        config = os.path.join(self.conf.vmbeam.state_path, 'vmbeam.conf')
        with open(config, 'w') as f:
            f.write('[vmbeam]\nstate_path = %s\nram_pool_path = %s\n' %
                    (self.conf.vmbeam.state_path,
                     self.conf.vmbeam.ram_pool_path))
        script = '\n'.join(python + (
            'import sys',
            'from nova_vmbeam import cli',
            'sys.exit(cli.main(["--config-file", %r, "rejuvenate"]))' %
            config,))
        orchestrator = subprocess.Popen(
            [sys.executable, '-c', script], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        self.addCleanup(orchestrator.wait)
        return orchestrator

    def test_orchestrator_killed_mid_move_then_run_again(self):
        guests = self.boot_many(2)
        marks = self.marks(guests)
        orchestrator = self._orchestrator_process()
        # Freeze the first destination so the move cannot finish, then
        # kill the orchestrator in the middle of it.
        destination = wait_for_incoming_qemu(self.conf.vmbeam.state_path, 'g0')
        os.kill(destination, signal.SIGSTOP)
        deadline = time.monotonic() + 30
        while self.journal().run is None or \
                self.journal().run.guests['g0'].state != \
                journal_mod.MOVING:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.01)
        time.sleep(0.5)
        orchestrator.kill()
        orchestrator.wait()
        os.kill(destination, signal.SIGCONT)
        self.assertEqual('running', self.journal().run.state)
        # Settled (as nova-compute does at start): open, no longer running.
        with self.orchestrator.journal.locked():
            self.orchestrator.recover()
        self.assertEqual(orchestrator_mod.INTERRUPTED,
                         self.journal().run.state)
        self.assertEqual(journal_mod.PENDING,
                         self.journal().run.guests['g0'].state)
        # Run again: the run goes on and completes.
        run = self.orchestrator.rejuvenate()
        self.assertEqual('completed', run.state)
        self.assertEqual(2, self.journal().active)
        self.assert_each_runs_once_intact(guests, marks, 2)

    def test_orchestrator_killed_as_the_switchover_begins(self):
        # The worst moment: the switchover mark is written, the source is
        # stopped and the destination may be about to run. The process
        # stops itself right after writing the mark; it is killed there.
        guests = self.boot_many(2)
        marks = self.marks(guests)
        orchestrator = self._orchestrator_process(
            'import os, signal',
            'from nova_vmbeam.rejuvenation import journal',
            'mark = journal.Journal.mark_switching',
            'def mark_and_stop(self, name):',
            '    mark(self, name)',
            '    os.kill(os.getpid(), signal.SIGSTOP)',
            'journal.Journal.mark_switching = mark_and_stop')
        deadline = time.monotonic() + 120
        while _process_state(orchestrator.pid) != 'T':
            self.assertLess(time.monotonic(), deadline)
            self.assertIsNone(orchestrator.poll())
            time.sleep(0.01)
        orchestrator.kill()
        orchestrator.wait()
        journal = self.orchestrator.journal
        marked = [g.name for g in guests if journal.is_switching(g.name)]
        self.assertEqual(1, len(marked))
        self.assertEqual(journal_mod.MOVING,
                         self.journal().run.guests[marked[0]].state)
        destination = wait_for_incoming_qemu(self.conf.vmbeam.state_path,
                                             marked[0])
        # Run again: the marked guest goes forward onto that very
        # destination (its stopped source is destroyed, never resumed;
        # without the mark it would be rolled back and moved anew).
        run = self.orchestrator.rejuvenate()
        self.assertEqual('completed', run.state)
        self.assertFalse(journal.is_switching(marked[0]))
        self.assertEqual([destination],
                         self.qemu_pids('guest=%s,' % marked[0]))
        self.assertEqual(2, self.journal().active)
        self.assert_each_runs_once_intact(guests, marks, 2)


class TestHalfCreatedDestination(RejuvenationTestCase):
    """createXML of a destination creates the domain, then fails.

    As when its reply is lost: the daemon went on and started the QEMU,
    paused, waiting for a migration, mapping the guest's RAM, under the
    guest's name and UUID in the new generation.
    """

    @contextlib.contextmanager
    def reply_of_first_destination_lost(self):
        original = libvirt.virConnect.createXML
        lost = []

        def create(conn, xml, flags=0):
            dom = original(conn, xml, flags)
            if '-incoming' in xml and not lost:
                lost.append(dom.name())
                raise libvirt.libvirtError('reply lost (test)')
            return dom
        with fixtures.MonkeyPatch('libvirt.virConnect.createXML', create):
            yield lost

    def test_half_created_destination_is_destroyed_before_rollback(self):
        guests = self.boot_many(1)
        marks = self.marks(guests)
        with self.reply_of_first_destination_lost() as lost:
            run = self.orchestrator.rejuvenate()
        self.assertEqual(['g0'], lost)
        target = self.orchestrator.sibling(2).host()
        self.addCleanup(target.close)
        self.assertNotIn('g0', target.domains())
        self.assert_each_runs_once_intact(guests, marks, 1)
        self.assertEqual('incomplete', run.state)
        self.assertEqual('failed', run.guests['g0'].state)
        self.assertIn('was destroyed', run.guests['g0'].error)
        run = self.orchestrator.rejuvenate()
        self.assertEqual('completed', run.state)
        self.assert_each_runs_once_intact(guests, self.marks(guests), 2)

    def test_stray_left_behind_is_removed_by_the_next_run(self):
        guests = self.boot_many(1)
        marks = self.marks(guests)
        # The daemon could not be asked what the failed call left (it was
        # out of reach then): the stray stays for now.
        with self.reply_of_first_destination_lost(), fixtures.MonkeyPatch(
                'nova_vmbeam.libvirt.host.Host._remove_half_created',
                lambda host, spec, before, exc: str(exc)):
            run = self.orchestrator.rejuvenate()
        self.assertEqual('failed', run.guests['g0'].state)
        [stray] = self.qemu_pids('guest=g0,', '-incoming')
        stray = procfs.ProcessIdentity.of(stray)
        self.assertEqual(2, len(self.qemu_pids('guest=g0,')))
        # The next run tells it from a moved guest (the journal has g0 as
        # failed, its QEMU still waits for a migration) and destroys it
        # before moving g0 anew.
        run = self.orchestrator.rejuvenate()
        self.assertEqual('completed', run.state)
        self.assertFalse(stray.alive())
        self.assert_each_runs_once_intact(guests, marks, 2)


class TestDevicesSurvive(RejuvenationTestCase):

    NETWORK = True

    def test_disk_network_and_console_survive_rejuvenation(self):
        spec = self.testbed.spec('dev0', self.RAM_MIB, guest_mod.RAM_FILE,
                                 self.WORK_MIB, self.DIRTY_MIB_S,
                                 ip='10.251.0.11/24', bridge='vmbr0',
                                 disk=True)
        guest = self.testbed.boot_libvirt(spec)
        guest.console.wait_for(guestimage_console.NET_RE, 60)
        before = self.guest_tcp('10.251.0.11')
        self.assertTrue(before.startswith('vmbeam-guest dev0'), before)
        guest.console.wait_for_disk_ok(2, 60)
        mark = guest.console.offset()

        run = self.orchestrator.rejuvenate()
        self.assertEqual('completed', run.state)
        self.assert_each_runs_once_intact([guest], {'dev0': mark}, 2)
        # Network: the guest answers on its old address, from its new tap.
        after = self.guest_tcp('10.251.0.11')
        self.assertTrue(after.startswith('vmbeam-guest dev0'), after)
        self.assertNotEqual(before, after)   # uptime went on
        # Disk: writes and read-backs go on with no error after the move.
        statuses = guest.console.wait_for_disk_ok(3, 60, mark)
        self.assertEqual(0, guest.console.disk_status(mark)['errors'])
        self.assertGreater(statuses[-1]['seq'], statuses[0]['seq'])
        # The new generation's domain has both devices.
        xml = guest.endpoint.dom.XMLDesc(0)
        self.assertIn('dev0.qcow2', xml)
        self.assertIn("bridge='vmbr0'", xml)
