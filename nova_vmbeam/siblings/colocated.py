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

import os
import signal
import uuid

from oslo_log import log as logging

from nova_vmbeam.libvirt import daemon as daemon_mod
from nova_vmbeam.privsep import daemons as privsep_daemons
from nova_vmbeam.qemu import procfs
from nova_vmbeam import records
from nova_vmbeam.siblings import base

LOG = logging.getLogger(__name__)


class ColocatedSibling(base.SiblingBase):
    kind = 'colocated'
    # Its daemons run on this kernel and see this host's files, devices
    # and bridges, as the host's own libvirtd would.
    runs_nova_instances = True

    def __init__(self, conf, generation, host_uuid=None):
        super().__init__(conf, generation)
        self.base = os.path.join(conf.vmbeam.state_path, 'siblings',
                                 'gen%d' % generation)
        self.host_uuid = host_uuid or str(uuid.uuid4())
        self.daemon = daemon_mod.PrivateLibvirtd(
            conf, self.base, self.host_uuid, self.name, generation)

    @classmethod
    def from_record(cls, conf, record):
        return cls(conf, record['generation'], record['host_uuid'])

    def record(self):
        return {'kind': self.kind, 'generation': self.generation,
                'host_uuid': self.host_uuid, 'uri': self.uri,
                'base': self.base}

    def _path(self, *parts):
        return self.daemon.path(*parts)

    @property
    def socket_path(self):
        return self.daemon.socket_path

    @property
    def uri(self):
        return self.daemon.uri

    @property
    def partition(self):
        return self.daemon.partition

    @property
    def migrate_dir(self):
        return self.daemon.migrate_dir

    def host(self):
        return self.daemon.host()

    def cache_dir(self):
        return self.daemon.cache_dir()

    def start(self, seed_from=None):
        """Start the daemons (reusing seed_from's capability cache)."""
        self.daemon.start(seed_from.cache_dir() if seed_from is not None
                          else None)

    def ensure_partition(self):
        self.daemon.make_partition()

    def wait_ready(self, timeout):
        self.daemon.wait_ready(timeout)

    def processes(self):
        """The daemons that run now: name -> procfs.ProcessIdentity or None.

        See PrivateLibvirtd.processes: found from their locked pid files.
        """
        return self.daemon.processes()

    def pids(self):
        """name -> pid of the daemons that run now (None if not)."""
        return self.daemon.pids()

    def running(self):
        return self.daemon.running()

    def health(self):
        daemons = []
        for name, pid in self.pids().items():
            rss = procfs.status_kib(pid, 'VmRSS') if pid else 0
            fds = privsep_daemons.open_fds(pid) if pid else 0
            daemons.append(records.DaemonHealth(name=name, pid=pid,
                                                rss_kib=rss, fds=fds))
        daemon = next(d for d in daemons if d.name == 'libvirtd')
        return records.HealthReport(
            generation=self.generation, running=self.running(),
            daemon=daemon, helpers=[d for d in daemons if d is not daemon])

    def kill_daemon(self, sig=signal.SIGKILL):
        """Signal libvirtd (fault tests, and a wedged daemon)."""
        self.daemon.kill(sig)

    def retire(self):
        self.daemon.stop()
