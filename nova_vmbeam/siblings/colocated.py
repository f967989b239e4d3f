"""colocated: a fresh libvirt daemon on the same kernel.

Each generation runs its own libvirtd and virtlogd in a private mount
namespace, with private /run/libvirt, /var/lib/libvirt, /var/log/libvirt,
/var/cache/libvirt and /etc/libvirt (bind-mounted from its state directory)
and its own host_uuid, so libvirt treats it as another host. From the host
it is reached at qemu:///system?socket=<state>/run/libvirt-sock.

The daemons outlive the process that started them: guests keep running
whatever happens to the orchestrator, and a later run finds them again from
the journal's record.
"""

import grp
import os
import pwd
import shutil
import signal
import subprocess
import time
import uuid

from oslo_log import log as logging

from nova_vmbeam.libvirt import host as host_mod
from nova_vmbeam.qemu import procfs
from nova_vmbeam import records
from nova_vmbeam.siblings import base

LOG = logging.getLogger(__name__)

# private directory -> where the daemons see it
PRIVATE_DIRS = (('run', '/run/libvirt'),
                ('lib', '/var/lib/libvirt'),
                ('log', '/var/log/libvirt'),
                ('cache', '/var/cache/libvirt'),
                ('etc', '/etc/libvirt'))

_START_SCRIPT = '''set -e
%(binds)s
%(start_virtlogd)s
exec %(libvirtd)s --pid-file %(base)s/run/libvirtd.pid
'''


def _proc_usage(pid):
    """(RSS KiB, open fds) of a process."""
    rss = 0
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    rss = int(line.split()[1])
        fds = len(os.listdir('/proc/%d/fd' % pid))
    except OSError:
        return 0, 0
    return rss, fds


class ColocatedSibling(base.Sibling):
    kind = 'colocated'

    def __init__(self, conf, generation, host_uuid=None):
        super().__init__(conf, generation)
        self.base = os.path.join(conf.vmbeam.state_path, 'siblings',
                                 'gen%d' % generation)
        self.host_uuid = host_uuid or str(uuid.uuid4())
        self._popen = None

    @classmethod
    def from_record(cls, conf, record):
        return cls(conf, record['generation'], record['host_uuid'])

    def record(self):
        return {'kind': self.kind, 'generation': self.generation,
                'host_uuid': self.host_uuid, 'uri': self.uri,
                'base': self.base}

    def _path(self, *parts):
        return os.path.join(self.base, *parts)

    @property
    def socket_path(self):
        return self._path('run', 'libvirt-sock')

    @property
    def uri(self):
        return 'qemu:///system?socket=%s' % self.socket_path

    @property
    def migrate_dir(self):
        return self._path('migrate')

    def host(self):
        return host_mod.Host(self.name, self.uri, self.migrate_dir,
                             pid_dir=self._path('run'),
                             log_dir=self._path('log'),
                             daemon_pid_file=self._path('run',
                                                        'libvirtd.pid'))

    def _prepare_dirs(self, seed_cache=None):
        for private, _target in PRIVATE_DIRS:
            os.makedirs(self._path(private), exist_ok=True)
        etc = self._path('etc')
        # The host's daemon settings, but none of its domains or networks
        # (those live in subdirectories): a generation starts empty.
        for name in os.listdir('/etc/libvirt'):
            if name.endswith('.conf'):
                shutil.copyfile(os.path.join('/etc/libvirt', name),
                                os.path.join(etc, name))
        with open(os.path.join(etc, 'libvirtd.conf'), 'a') as f:
            f.write('\n# nova-vmbeam generation %d\nhost_uuid = "%s"\n'
                    % (self.generation, self.host_uuid))
        user = self.conf.vmbeam.qemu_user
        with open(os.path.join(etc, 'qemu.conf'), 'a') as f:
            # Files are shared by two generations at once: neither may
            # chown them back when its QEMU goes.
            f.write('\n# nova-vmbeam generation %d\nuser = "%s"\n'
                    'group = "%s"\ndynamic_ownership = 0\n'
                    'remember_owner = 0\n' %
                    (self.generation, user, self._group_of(user)))
        if seed_cache and not os.listdir(self._path('cache')):
            # QEMU's capabilities, probed by an earlier generation: saves
            # the new daemon seconds of probing at start-up.
            shutil.copytree(seed_cache, self._path('cache'),
                            dirs_exist_ok=True)
        os.makedirs(self.migrate_dir, exist_ok=True)
        pw = pwd.getpwnam(user)
        os.chown(self.migrate_dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.migrate_dir, 0o770)

    @staticmethod
    def _group_of(user):
        return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name

    def cache_dir(self):
        return self._path('cache')

    def start(self, seed_from=None):
        """Start the daemons (reusing seed_from's capability cache)."""
        if self.running():
            return
        seed = seed_from.cache_dir() if seed_from is not None else None
        self._prepare_dirs(seed if seed and os.path.isdir(seed) else None)
        binds = '\n'.join('mkdir -p %s && mount --bind %s %s' %
                          (target, self._path(private), target)
                          for private, target in PRIVATE_DIRS)
        virtlogd = self.processes()['virtlogd']
        if virtlogd is not None:
            # Only libvirtd died: the running QEMUs still log through
            # this virtlogd, so the restarted libvirtd uses it too.
            start_virtlogd = ': reusing virtlogd %d' % virtlogd.pid
        else:
            start_virtlogd = '%s --daemon --pid-file %s' % (
                self.conf.vmbeam.virtlogd, self._path('run', 'virtlogd.pid'))
            self._unlink_run('virtlogd.pid')
        self._unlink_run('libvirt-sock', 'libvirtd.pid')
        script = _START_SCRIPT % {'binds': binds, 'base': self.base,
                                  'start_virtlogd': start_virtlogd,
                                  'libvirtd': self.conf.vmbeam.libvirtd}
        with open(self._path('daemon.log'), 'ab') as log:
            argv = ['unshare', '--mount', '--propagation', 'private', '--',
                    '/bin/sh', '-c', script]
            if self.conf.vmbeam.sibling_netns:
                argv = ['ip', 'netns', 'exec',
                        self.conf.vmbeam.sibling_netns] + argv
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        LOG.info('starting sibling %s (pid %d)', self.name,
                 self._popen.pid)

    def _unlink_run(self, *names):
        for name in names:
            path = self._path('run', name)
            if os.path.exists(path):
                os.unlink(path)

    def _daemon_log_tail(self):
        """The daemon's last words: its error lines, else its last lines."""
        try:
            with open(self._path('daemon.log'), errors='replace') as f:
                lines = [line.rstrip() for line in f if line.strip()]
        except OSError:
            return '(no log)'
        errors = [line for line in lines if ' error : ' in line]
        return '\n'.join((errors or lines)[-5:]) or '(nothing logged)'

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        host = self.host()
        try:
            while True:
                if self._popen is not None and self._popen.poll() is not None:
                    raise base.SiblingStartFailed(
                        'sibling %s exited with %s: %s' %
                        (self.name, self._popen.returncode,
                         self._daemon_log_tail()))
                if os.path.exists(self._path('run', 'libvirt-sock')) and \
                        host.alive():
                    found = host.host_uuid()
                    if found != self.host_uuid:
                        raise base.SiblingStartFailed(
                            'sibling %s answers with host UUID %s, not %s'
                            % (self.name, found, self.host_uuid))
                    return
                if time.monotonic() > deadline:
                    raise base.SiblingStartFailed(
                        'sibling %s not ready within %.0f s: %s' %
                        (self.name, timeout, self._daemon_log_tail()))
                time.sleep(0.05)
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
                    self._path('run', '%s.pid' % name))
                for name in ('libvirtd', 'virtlogd')}

    def pids(self):
        """name -> pid of the daemons that run now (None if not)."""
        return {name: process.pid if process else None
                for name, process in self.processes().items()}

    def running(self):
        return self.processes()['libvirtd'] is not None

    def health(self):
        daemons = []
        for name, pid in self.pids().items():
            rss, fds = _proc_usage(pid) if pid else (0, 0)
            daemons.append(records.DaemonHealth(name=name, pid=pid,
                                                rss_kib=rss, fds=fds))
        daemon = next(d for d in daemons if d.name == 'libvirtd')
        return records.HealthReport(
            generation=self.generation, running=self.running(),
            daemon=daemon, helpers=[d for d in daemons if d is not daemon])

    def kill_daemon(self, sig=signal.SIGKILL):
        """Signal libvirtd (fault tests, and a wedged daemon)."""
        libvirtd = self.processes()['libvirtd']
        if libvirtd is not None:
            libvirtd.signal(sig)

    def retire(self):
        # Identities taken once: waited for and signalled until they are
        # gone, never whatever process gets their pid afterwards.
        daemons = {name: process for name, process in
                   self.processes().items() if process is not None}
        for process in daemons.values():
            process.signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, process in daemons.items():
            while process.alive():
                if time.monotonic() > deadline:
                    LOG.warning('%s of %s ignores SIGTERM; killing it',
                                name, self.name)
                    process.signal(signal.SIGKILL)
                    deadline += 5
                time.sleep(0.05)
        if self._popen is not None:
            self._popen.wait()
        LOG.info('retired sibling %s', self.name)
