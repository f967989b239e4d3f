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

"""A private libvirt daemon: libvirtd and virtlogd in a mount namespace.

Private /run/libvirt, /var/lib/libvirt, /var/log/libvirt,
/var/cache/libvirt and /etc/libvirt (bind-mounted from a state directory)
and its own host_uuid, so libvirt treats it as another host; reached from
the host at qemu:///system?socket=<base>/run/libvirt-sock.

Used by the colocated sibling (one per generation) and by the nested
sibling's L0 daemon (the one the L1 VMs run under). The daemons outlive
the process that started them, its session and its cgroup (lifetime.py:
a systemd unit of their own, else a cgroup of their own,
``vmbeam/<name>-<hash of base>``); they are found again from their pid
files. Its guests go to a resource partition of its own
(libvirt/partition.py): no other generation's guest shares their cgroups.
"""

import grp
import os
import pwd
import shutil
import signal
import time

from oslo_log import log as logging

from nova_vmbeam import exception
from nova_vmbeam.libvirt import host as host_mod
from nova_vmbeam.libvirt import namespace
from nova_vmbeam.libvirt import partition as partition_mod
from nova_vmbeam import lifetime
from nova_vmbeam.privsep import cgroups
from nova_vmbeam.privsep import daemons as privsep_daemons
from nova_vmbeam.privsep import files as privsep_files
from nova_vmbeam.qemu import procfs
from nova_vmbeam import waiting

LOG = logging.getLogger(__name__)

PRIVATE_DIRS = namespace.PRIVATE_DIRS


class PrivateLibvirtd:
    """libvirtd + virtlogd of ours under ``base``, answering as ``host_uuid``.

    ``name`` names it in logs and errors (and its Host); ``generation`` is
    written into its configuration files as a comment.
    """

    def __init__(self, conf, base, host_uuid, name, generation,
                 qemu_conf_extra=''):
        """``qemu_conf_extra``: lines added to its qemu.conf, last."""
        self.conf = conf
        self.qemu_conf_extra = qemu_conf_extra
        self.base = base
        self.host_uuid = host_uuid
        self.name = name
        self.generation = generation
        # The daemons' own cgroup (or unit name prefix), per state path.
        self.group = lifetime.group_name(name, base)
        # Where its guests' cgroups go, apart from other generations'.
        self.partition = partition_mod.name_for(self.group)
        self._started_pid = None   # the namespace's first process

    def path(self, *parts):
        return os.path.join(self.base, *parts)

    @property
    def socket_path(self):
        return self.path('run', 'libvirt-sock')

    @property
    def uri(self):
        return 'qemu:///system?socket=%s' % self.socket_path

    @property
    def migrate_dir(self):
        return self.path('migrate')

    def cache_dir(self):
        return self.path('cache')

    def host(self):
        return host_mod.Host(self.name, self.uri, self.migrate_dir,
                             pid_dir=self.path('run'),
                             log_dir=self.path('log'),
                             daemon_pid_file=self.path('run',
                                                       'libvirtd.pid'),
                             partition=self.partition)

    def _prepare_dirs(self, seed_cache=None):
        for private, _target in PRIVATE_DIRS:
            os.makedirs(self.path(private), exist_ok=True)
        etc = self.path('etc')
        # The host's daemon settings, but none of its domains or networks
        # (those live in subdirectories): a generation starts empty.
        # (qemu.conf is root's only: copied by the privsep daemon.)
        privsep_files.copy_libvirt_conf(etc, os.geteuid(), os.getegid())
        with open(os.path.join(etc, 'libvirtd.conf'), 'a') as f:
            f.write('\n# nova-vmbeam generation %d\nhost_uuid = "%s"\n'
                    % (self.generation, self.host_uuid))
            if os.geteuid() != 0:
                # An unprivileged nova-compute reaches its daemons through
                # the socket's group (its own), as Nova reaches the host's
                # libvirtd through the libvirt group; no polkit.
                f.write('unix_sock_group = "%s"\n'
                        'unix_sock_ro_perms = "0770"\n'
                        'unix_sock_rw_perms = "0770"\n'
                        'auth_unix_ro = "none"\nauth_unix_rw = "none"\n'
                        % grp.getgrgid(os.getegid()).gr_name)
        user = self.conf.vmbeam.qemu_user
        with open(os.path.join(etc, 'qemu.conf'), 'a') as f:
            # Files are shared by two generations at once: neither may
            # chown them back when its QEMU goes.
            f.write('\n# nova-vmbeam generation %d\nuser = "%s"\n'
                    'group = "%s"\ndynamic_ownership = 0\n'
                    'remember_owner = 0\n%s' %
                    (self.generation, user, _group_of(user),
                     self.qemu_conf_extra))
        if seed_cache and not os.listdir(self.path('cache')):
            # QEMU's capabilities, probed by an earlier generation: saves
            # the new daemon seconds of probing at start-up.
            try:
                shutil.copytree(seed_cache, self.path('cache'),
                                dirs_exist_ok=True)
            except (OSError, shutil.Error) as exc:
                # The earlier daemon's files are root's: an unprivileged
                # starter cannot read them; the new daemon probes QEMU.
                LOG.info('sibling %s starts without a capability cache: '
                         '%s', self.name, exc)
        os.makedirs(self.migrate_dir, exist_ok=True)
        pw = pwd.getpwnam(user)
        if os.stat(self.migrate_dir).st_uid != pw.pw_uid:
            # Once QEMU's, it is no longer ours to chmod (a daemon
            # restarted finds it so).
            os.chmod(self.migrate_dir, 0o770)
            privsep_files.chown(self.migrate_dir, pw.pw_uid, pw.pw_gid)

    def start(self, seed_cache=None):
        """Start the daemons; do not wait (``wait_ready``).

        ``seed_cache``: a capability cache to start from (another
        daemon's ``cache_dir()``), if it exists.
        """
        self.make_partition()
        if self.running():
            return
        self._prepare_dirs(seed_cache if seed_cache and
                           os.path.isdir(seed_cache) else None)
        virtlogd = self.processes()['virtlogd']
        if virtlogd is not None:
            # Only libvirtd died: the running QEMUs still log through
            # this virtlogd, so the restarted libvirtd uses it too.
            LOG.info('sibling %s reuses virtlogd %d', self.name, virtlogd.pid)
            virtlogd_binary = None
        else:
            virtlogd_binary = self.conf.vmbeam.virtlogd
            self._unlink_run('virtlogd.pid')
        self._unlink_run('libvirt-sock', 'libvirtd.pid')
        # Root's work (a mount namespace, the daemons), done by the
        # privsep daemon, out of the starter's session and cgroup.
        pid, unit = privsep_daemons.start_libvirtd(
            self.base, self.group, self.conf.vmbeam.libvirtd,
            virtlogd=virtlogd_binary,
            netns=self.conf.vmbeam.sibling_netns or None,
            log_path=self.path('daemon.log'))
        self._started_pid = pid
        LOG.info('starting sibling %s (pid %d%s)', self.name, pid,
                 ', unit %s' % unit if unit else '')

    def make_partition(self):
        """Create its guests' partition (idempotent; see partition.py).

        Without systemd libvirt places guests in it but never creates it;
        where systemd is PID 1 the partition is a slice, which systemd
        makes on demand, and its cgroup tree is not ours to write.
        """
        if lifetime.systemd_booted():
            return
        try:
            cgroups.make_partition(self.partition)
        except OSError as exc:
            # No guest could start in this generation.
            raise exception.SiblingStartFailed(
                'sibling %s: cannot make the cgroups of its guests\' '
                'partition %s: %s' % (self.name, self.partition, exc))

    def _unlink_run(self, *names):
        for name in names:
            path = self.path('run', name)
            if os.path.exists(path):
                os.unlink(path)

    def _daemon_log_tail(self):
        """The daemon's last words: its error lines, else its last lines."""
        try:
            with open(self.path('daemon.log'), errors='replace') as f:
                lines = [line.rstrip() for line in f if line.strip()]
        except OSError:
            return '(no log)'
        errors = [line for line in lines if ' error : ' in line]
        return '\n'.join((errors or lines)[-5:]) or '(nothing logged)'

    def wait_ready(self, timeout):
        """Until libvirtd answers as ``host_uuid``; SiblingStartFailed."""
        host = self.host()

        def ready():
            status = None if self._started_pid is None else \
                privsep_daemons.exit_status(self._started_pid)
            if status is not None:
                raise exception.SiblingStartFailed(
                    'sibling %s exited with %s: %s' %
                    (self.name, status, self._daemon_log_tail()))
            if not (os.path.exists(self.path('run', 'libvirt-sock')) and
                    host.alive()):
                return False
            found = host.host_uuid()
            if found != self.host_uuid:
                raise exception.SiblingStartFailed(
                    'sibling %s answers with host UUID %s, not %s'
                    % (self.name, found, self.host_uuid))
            return True

        def timed_out():
            raise exception.SiblingStartFailed(
                'sibling %s not ready within %.0f s: %s' %
                (self.name, timeout, self._daemon_log_tail()))

        try:
            waiting.until(ready, timeout, 0.05, timed_out)
        finally:
            host.close()

    def processes(self):
        """The daemons that run now: name -> procfs.ProcessIdentity or None.

        Read from their pid files, which both hold locked while they run
        (--pid-file): a file they left behind when killed names a pid that
        another process may have by now, and that process is never taken
        for the daemon (procfs.pidfile_process).
        """
        return {name: procfs.pidfile_process(
                    self.path('run', '%s.pid' % name))
                for name in ('libvirtd', 'virtlogd')}

    def pids(self):
        """name -> pid of the daemons that run now (None if not)."""
        return {name: process.pid if process else None
                for name, process in self.processes().items()}

    def running(self):
        return self.processes()['libvirtd'] is not None

    def kill(self, sig=signal.SIGKILL):
        """Signal libvirtd (fault tests, and a wedged daemon)."""
        libvirtd = self.processes()['libvirtd']
        if libvirtd is not None:
            privsep_daemons.signal(libvirtd, sig)

    def stop(self):
        """SIGTERM both daemons, SIGKILL what ignores it; wait until gone."""
        # Identities taken once: waited for and signalled until they are
        # gone, never whatever process gets their pid afterwards.
        daemons = {name: process for name, process in
                   self.processes().items() if process is not None}
        for process in daemons.values():
            privsep_daemons.signal(process, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, process in daemons.items():
            while process.alive():
                if time.monotonic() > deadline:
                    LOG.warning('%s of %s ignores SIGTERM; killing it',
                                name, self.name)
                    privsep_daemons.signal(process, signal.SIGKILL)
                    deadline += 5
                time.sleep(0.05)
        if self._started_pid is not None:
            privsep_daemons.reap(self._started_pid)
            self._started_pid = None
        # Its cgroup goes with it (where it had one and nothing is left).
        cgroups.remove_group(self.group)
        if not lifetime.systemd_booted():
            cgroups.remove_partition(self.partition)
        LOG.info('retired sibling %s', self.name)


def _group_of(user):
    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
