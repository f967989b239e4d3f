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

"""Finding, starting and stopping vmbeam-pagemoverd.

The daemon is started on first use, the way libvirtd starts virtlogd: when
its socket does not answer, the client runs ``vmbeam-pagemoverd --daemon``,
which returns once the daemon listens. The daemon double-forks into a
session of its own, so neither the orchestrator's death nor a signal to
its process group ends it; and it starts outside its starter's cgroup
(lifetime.py: a systemd unit, else the cgroup ``vmbeam/pagemoverd-<hash>``),
so neither does a restart of nova-compute's service or container: it owns
guest RAM and must outlive nova-compute. It is started from the host-side
caller (orchestrator, testbed, CLI), never from inside a sibling's mount
namespace, so it sees the host's pool directory.

There is one daemon per pool directory, whatever the state directory of
its callers (a demo or bench run uses a state directory of its own and
removes it afterwards): by default its socket, pid file and log are
``/run/nova-vmbeam/pagemoverd-<hash of the pool path>.{sock,pid,log}``.
"""

import hashlib
import os
import shutil
import time

from oslo_concurrency import lockutils
from oslo_log import log as logging

from nova_vmbeam import exception
from nova_vmbeam import lifetime
from nova_vmbeam.pool import protocol
from nova_vmbeam.privsep import cgroups
from nova_vmbeam.privsep import daemons as privsep_daemons
from nova_vmbeam.qemu import procfs
from nova_vmbeam import waiting

LOG = logging.getLogger(__name__)

BINARY = 'vmbeam-pagemoverd'
RUN_DIR = '/run/nova-vmbeam'
START_TIMEOUT = 30.0


def socket_path(conf):
    if conf.vmbeam.pagemoverd_socket:
        return conf.vmbeam.pagemoverd_socket
    pool_dir = os.path.abspath(conf.vmbeam.ram_pool_path)
    digest = hashlib.sha256(pool_dir.encode()).hexdigest()[:16]
    return os.path.join(RUN_DIR, 'pagemoverd-%s.sock' % digest)


def group(path):
    """The daemon's cgroup (or unit name prefix): one per socket."""
    return lifetime.group_name('pagemoverd', path)


def find_binary(conf):
    """The daemon binary: the option, then PATH, then this source tree."""
    configured = conf.vmbeam.pagemoverd_binary
    looked = [configured]
    if os.path.isabs(configured):
        if os.access(configured, os.X_OK):
            return configured
    else:
        found = shutil.which(configured)
        if found:
            return found
        # A development install (pip -e, tox): the tree's own build.
        tree = os.path.join(os.path.dirname(os.path.dirname(
            os.path.dirname(os.path.abspath(__file__)))), 'native', 'build',
            BINARY)
        looked.append(tree)
        if os.access(tree, os.X_OK):
            return tree
    raise exception.DaemonNotFound(binary=BINARY, looked=', '.join(looked))


def _answers(path):
    try:
        return protocol.call(path, {'op': 'hello'}, timeout=5.0)[0]
    except (FileNotFoundError, ConnectionRefusedError):
        return None
    except PermissionError:
        # The socket is mode 0600, its daemon's (--client-uid) or root's.
        if procfs.pidfile_process(os.path.splitext(path)[0] + '.pid') \
                is None:
            # Left by a daemon that is gone: the next one replaces it.
            return None
        raise exception.PoolError(
            path=path,
            reason='the vmbeam-pagemoverd serving this socket does not let '
                   'uid %d in (started by root, or by a version without '
                   '--client-uid)' % os.geteuid(),
            fix='Stop it (kill $(cat %s.pid)); the next start runs one '
                'for this user. Pools and guests are kept.' %
                os.path.splitext(path)[0])


def hello(conf, pool_dir, start=True):
    """The running daemon's hello reply, starting it first if ``start``.

    Refuses a daemon that serves another pool directory: two pools on one
    socket would hand out the wrong RAM.
    """
    path = socket_path(conf)
    info = _answers(path)
    if info is None and start:
        info = _start(conf, path, pool_dir)
    if info is not None and info.get('pool_dir') != pool_dir:
        raise exception.PoolError(
            path=pool_dir,
            reason='the vmbeam-pagemoverd at %s serves %s' % (
                path, info.get('pool_dir')),
            fix='Point [vmbeam] pagemoverd_socket at a socket of its own '
                'for this pool, or ram_pool_path at %s.' %
                info.get('pool_dir'))
    return info


def _start(conf, path, pool_dir):
    run_dir = os.path.dirname(path)
    base = os.path.splitext(path)[0]
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    # One starter at a time, across threads and processes (the lock file
    # is <socket base>.start-lock, beside the socket).
    with lockutils.lock(os.path.basename(base) + '.start-lock',
                        external=True, lock_path=run_dir):
        info = _answers(path)
        if info is not None:
            return info
        started = time.monotonic()
        # Root's: started by the privsep daemon, out of the starter's
        # cgroup (forked away by the daemon itself; under systemd,
        # Type=forking).
        status, stdout, stderr = privsep_daemons.start_pagemoverd(
            group(path), find_binary(conf), path, pool_dir,
            conf.vmbeam.qemu_user, conf.vmbeam.ram_pool_budget_mib,
            conf.vmbeam.ram_pool_reserve_mib, START_TIMEOUT,
            client_uid=os.geteuid())
        if status is None:
            raise exception.DaemonStartFailed(
                detail='no answer within %.0f s' % START_TIMEOUT)
        if status:
            raise exception.DaemonStartFailed(
                detail=(stderr or stdout or b'exit status %d' %
                        status).decode(errors='replace').strip())
        info = _answers(path)
        if info is None:
            raise exception.DaemonStartFailed(
                detail='it exited right after start; see %s.log' % base)
        LOG.info('started vmbeam-pagemoverd %d on %s in %.0f ms (%d pools '
                 'recovered, %d in use, %d orphans collected)', info['pid'],
                 path, (time.monotonic() - started) * 1000,
                 info.get('recovered', 0), info.get('in_use', 0),
                 info.get('collected', 0))
        return info


def stop(conf, timeout=10.0):
    """Ask the daemon to exit (pools stay for the next one); True if it ran.

    Pool files and the daemon's private links outlive it; a daemon started
    later recovers them.
    """
    path = socket_path(conf)
    info = _answers(path)
    if info is None:
        return False
    # The pid comes from the daemon itself, which runs until told to stop
    # just below; its start time is taken now, so that a process reusing
    # the pid after the daemon exited is not waited for in its place.
    # Nothing is signalled here.
    daemon = procfs.ProcessIdentity.of(info['pid'])
    try:
        protocol.call(path, {'op': 'shutdown'})
    except OSError:
        pass

    def timed_out():
        raise exception.DaemonStartFailed(
            detail='pid %d did not exit after shutdown' % info['pid'])

    # Exited is enough: whoever adopted it reaps it in its own time.
    stopped = waiting.until(lambda: daemon is None or not daemon.alive(),
                            timeout, 0.01, timed_out)
    cgroups.remove_group(group(path))
    return stopped
