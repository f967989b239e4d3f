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


"""Starting, signalling and reaping root daemons (privsep entrypoints).

The daemons a generation runs (libvirtd and virtlogd in a mount namespace,
vmbeam-pagemoverd) run as root and outlive nova-compute (lifetime.py).
They are started here, in the privsep daemon, whose children they are;
what they are started with is built here from typed arguments:

* binaries must be root's own and writable by no one else (check_binary),
  so an unprivileged caller can start only what root installed;
* state directories and sockets are absolute paths;
* nothing is ever given to a shell.

The privsep daemon keeps what it started (by pid) to tell the caller
whether a start failed and to reap it; a pid it did not start is only
ever signalled through its identity (pid and start time).
"""

import ipaddress
import json
import os
import pwd
import re
import stat
import subprocess
import sys
import threading

from nova_vmbeam import lifetime
from nova_vmbeam.privsep import vmbeam_pctxt
from nova_vmbeam.qemu import procfs

_NETNS = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$')

# pid -> lifetime.Spawned, in the privsep daemon
_started = {}
_started_lock = threading.Lock()


def check_binary(path):
    """Refuse a binary that is not root's own, or that others may change."""
    if not isinstance(path, str) or not os.path.isabs(path):
        raise ValueError('not an absolute path: %r' % (path,))
    real = os.path.realpath(path)
    st = os.stat(real)
    if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o111:
        raise ValueError('%s is not an executable file' % path)
    directory = real
    while True:
        st = os.stat(directory)
        if st.st_uid != 0 or st.st_mode & 0o022:
            raise ValueError(
                '%s may be changed by someone other than root (%s is owned '
                'by uid %d, mode %o): install it as root, writable by root '
                'only' % (path, directory, st.st_uid, st.st_mode & 0o7777))
        if directory == '/':
            return real
        directory = os.path.dirname(directory)


def check_path(path):
    if not isinstance(path, str) or not os.path.isabs(path) or \
            os.path.normpath(path) != path:
        raise ValueError('not an absolute, normal path: %r' % (path,))
    return path


def _keep(spawned):
    with _started_lock:
        _started[spawned.pid] = spawned
    return spawned.pid, spawned.unit


@vmbeam_pctxt.entrypoint
def start_libvirtd(base, group, libvirtd, virtlogd=None, netns=None,
                   log_path=None):
    """Start a generation's libvirtd (and virtlogd) under ``base``.

    ``virtlogd`` None: the generation's virtlogd runs already and is
    reused. ``netns``: a network namespace to run in. Returns (pid of the
    namespace's first process, systemd unit or None).
    """
    check_path(base)
    if not os.path.isdir(base) or os.path.islink(base):
        raise ValueError('%s is not a directory' % base)
    argv = ['unshare', '--mount', '--propagation', 'private', '--',
            sys.executable, '-m', 'nova_vmbeam.libvirt.namespace',
            '--base', base, '--libvirtd', check_binary(libvirtd)]
    if virtlogd is not None:
        argv += ['--virtlogd', check_binary(virtlogd)]
    if netns:
        if not _NETNS.match(netns):
            raise ValueError('not a network namespace name: %r' % (netns,))
        argv = ['ip', 'netns', 'exec', netns] + argv
    return _keep(lifetime.spawn(group, argv, log_path=log_path and
                                check_path(log_path)))


@vmbeam_pctxt.entrypoint
def start_pagemoverd(group, binary, socket_path, pool_dir, owner, budget_mib,
                     reserve_mib, timeout, client_uid=0):
    """Start vmbeam-pagemoverd; (exit status of its start, stdout, stderr).

    The daemon forks itself away (--daemon) once it serves; the status is
    that of the process started here, None if it did not get that far
    within ``timeout`` seconds (it is then killed). ``client_uid``: the
    unprivileged user nova-compute runs as, who may then use the daemon
    (0: root only, with the daemon's user and the pool owner).
    """
    base = os.path.splitext(check_path(socket_path))[0]
    argv = [check_binary(binary), '--daemon', '--socket', socket_path,
            '--pool-dir', check_path(pool_dir), '--owner', str(owner),
            '--budget-mib', str(int(budget_mib)),
            '--reserve-mib', str(int(reserve_mib)),
            '--pidfile', base + '.pid', '--log', base + '.log']
    if not isinstance(client_uid, int) or client_uid < 0:
        raise ValueError('not a user id: %r' % (client_uid,))
    if client_uid:
        argv += ['--client-uid', str(client_uid)]
    return _start_forking(group, argv, base + '.pid', timeout)


def _start_forking(group, argv, pid_file, timeout):
    """Start a daemon that forks itself away once it serves.

    (exit status of the process started here, stdout, stderr); the status
    is None if it did not get that far within ``timeout`` seconds (it is
    then killed).
    """
    spawned = lifetime.spawn(group, argv, service_type='forking',
                             pid_file=pid_file)
    try:
        stdout, stderr = spawned.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        spawned.popen.kill()
        stdout, stderr = spawned.communicate()
        return None, stdout, stderr
    return spawned.returncode, stdout, stderr


def _option_path(path):
    # QEMU's option syntax splits on commas: a path holding one would be
    # read as two options (an ",id=..." planted in a directory name, say).
    check_path(path)
    if ',' in path:
        raise ValueError('a comma in %r: QEMU would read it as an option '
                         'separator' % (path,))
    return path


@vmbeam_pctxt.entrypoint
def start_storage_daemon(group, binary, base, user, address, port,
                         client_dn_glob, timeout, client_uid=0):
    """Start the nested sibling's qemu-storage-daemon on L0.

    It runs as ``user`` (the QEMU user: it opens what an L0 QEMU would),
    serves NBD only on ``address``:``port``, in TLS with a client
    certificate required (its keys in ``base``, ``client_dn_glob`` the
    certificate names it lets in), and takes QMP on ``base``/qmp.sock,
    given to ``client_uid`` (mode 0600). It forks itself away once it
    listens (--daemonize). Returns (exit status of its start, stdout,
    stderr), status None if it did not get that far within ``timeout``.
    """
    base = _option_path(base)
    if not os.path.isdir(base) or os.path.islink(base):
        raise ValueError('%s is not a directory' % base)
    pw = pwd.getpwnam(user)
    address = str(ipaddress.ip_address(address))
    if not isinstance(port, int) or not 1024 <= port <= 65535:
        raise ValueError('not an unprivileged TCP port: %r' % (port,))
    if not isinstance(client_uid, int) or client_uid < 0:
        raise ValueError('not a user id: %r' % (client_uid,))
    if not re.match(r'^CN=[A-Za-z0-9*.-]+$', client_dn_glob or ''):
        raise ValueError('not a certificate name pattern: %r' %
                         (client_dn_glob,))
    socket_path = os.path.join(base, 'qmp.sock')
    pid_file = os.path.join(base, 'qsd.pid')
    authz = {'qom-type': 'authz-list', 'id': 'vmbeam-nbd-authz',
             'policy': 'deny',
             'rules': [{'match': client_dn_glob, 'policy': 'allow',
                        'format': 'glob'}]}
    argv = ['setpriv', '--reuid', str(pw.pw_uid), '--regid',
            str(pw.pw_gid), '--init-groups', '--', check_binary(binary),
            '--chardev', 'socket,id=vmbeam-qmp,path=%s,server=on,wait=off'
            % socket_path,
            '--monitor', 'chardev=vmbeam-qmp',
            '--object', 'tls-creds-x509,id=vmbeam-nbd-tls,endpoint=server,'
            'dir=%s,verify-peer=on' % base,
            '--object', json.dumps(authz),
            '--nbd-server', 'addr.type=inet,addr.host=%s,addr.port=%d,'
            'tls-creds=vmbeam-nbd-tls,tls-authz=vmbeam-nbd-authz' %
            (address, port),
            '--daemonize', '--pidfile', pid_file]
    status, stdout, stderr = _start_forking(group, argv, pid_file, timeout)
    if status == 0 and client_uid and os.path.exists(socket_path):
        os.chown(socket_path, client_uid, -1)
        os.chmod(socket_path, 0o600)
    if status == 0 and os.path.exists(pid_file):
        # QEMU writes it 0600, its own: the service that finds the daemon
        # by it (StorageDaemon.process) is another user.
        os.chmod(pid_file, 0o644)
    return status, stdout, stderr


@vmbeam_pctxt.entrypoint
def exit_status(pid):
    """The exit status of a daemon started here; None while it runs.

    None too for a pid this privsep daemon did not start (another one, or
    an earlier privsep daemon, started it).
    """
    with _started_lock:
        spawned = _started.get(pid)
    if spawned is None or not spawned.failed():
        return None
    return spawned.returncode


@vmbeam_pctxt.entrypoint
def reap(pid, timeout=None):
    """Wait for a daemon started here to exit, and forget it."""
    with _started_lock:
        spawned = _started.pop(pid, None)
    if spawned is not None:
        spawned.wait(timeout)


@vmbeam_pctxt.entrypoint
def open_fds(pid):
    """How many descriptors process ``pid`` has open (0 if it is gone).

    /proc/<pid>/fd of a daemon run by root is root's to read; the aging
    monitor counts them.
    """
    return procfs.open_fds(int(pid))


@vmbeam_pctxt.entrypoint
def maps_shared_file(pid, dev, inode, size):
    """True if process ``pid`` maps file (dev, inode) shared, ``size`` bytes.

    /proc/<pid>/maps of a QEMU (the QEMU user's) is not an unprivileged
    nova-compute's to read: the movers' check that a QEMU maps its RAM.
    """
    return procfs.maps_identity(int(pid), procfs.RamIdentity(int(dev),
                                                             int(inode)),
                                int(size))


@vmbeam_pctxt.entrypoint
def pids_mapping(dev, inode):
    """Every process that maps file (dev, inode): none may be missed.

    Before a guest's RAM is freed: read as root, so that no process is
    skipped for being another user's.
    """
    return procfs.pids_mapping(procfs.RamIdentity(int(dev), int(inode)))


@vmbeam_pctxt.entrypoint
def signal_process(pid, start_ticks, sig):
    """Send ``sig`` to the process (pid, start time); False if it is gone.

    The start time makes sure a process that got the pid later is never
    signalled (procfs.ProcessIdentity.signal).
    """
    return procfs.ProcessIdentity(int(pid), int(start_ticks)).signal(
        int(sig))


def signal(process, sig):
    """Signal ``process`` (a procfs.ProcessIdentity) with root's rights."""
    return signal_process(process.pid, process.start_ticks, int(sig))
