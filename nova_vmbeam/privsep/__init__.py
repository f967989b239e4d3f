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


"""The project's privilege-separation context (oslo.privsep).

Every operation nova-compute needs root for goes through an entrypoint of
``vmbeam_pctxt``, in the modules of this package, each taking typed
arguments and building no shell line:

* daemons.py: start a generation's libvirtd and virtlogd in a mount
  namespace, vmbeam-pagemoverd, and the nested sibling's
  qemu-storage-daemon (as the QEMU user); signal and reap them;
* cgroups.py: move a daemon into a cgroup of its own, remove it;
* files.py: hand a file to the QEMU user (and back);
* sched.py: raise and restore the priority of QEMU and daemon threads
  for a switchover;
* network.py: the nested sibling's bridge and its stale sockets.

nova-compute itself may then run as an unprivileged user (``nova``): the
privsep daemon is started through ``[vmbeam_privsep] helper_command``
(default: ``sudo privsep-helper --config-file ... --privsep_context
nova_vmbeam.privsep.vmbeam_pctxt``), as Nova's own ``[nova_sys_admin]``
is. A caller that already is root (a nova-compute run as root, the
``vmbeam`` command on a node, the tests) runs the helper itself, with this
interpreter, needing neither sudo nor a configuration file.
"""

import os
import sys
import warnings

from oslo_config import cfg
from oslo_privsep import capabilities as caps

# oslo.privsep imports eventlet where it is installed, only to ask whether
# it has monkey-patched anything (it has not: nova-vmbeam runs on
# threads), and eventlet warns of its own deprecation on import: on the
# stderr of every vmbeam command. Not a warning for an operator.
with warnings.catch_warnings():
    warnings.filterwarnings('ignore', message=r'\s*Eventlet is deprecated')
    from oslo_privsep import priv_context


# privsep-helper's main, run by this interpreter: a constant line, the
# arguments follow it (the deprecation warning as above).
_HELPER_MAIN = ('import sys, warnings; warnings.filterwarnings("ignore", '
                'message=r"\\s*Eventlet is deprecated"); '
                'from oslo_privsep.daemon import helper_main; '
                'sys.exit(helper_main())')


class _VMBeamContext(priv_context.PrivContext):
    """A context whose root caller starts its daemon without sudo.

    Not by forking (oslo.privsep's Method.FORK): a forked daemon would
    keep every descriptor its caller had open, among them the journal's
    lock, which would then outlive a killed orchestrator. The helper is
    started as a process of its own, which inherits none.
    """

    def __init__(self, *args, capabilities, **kwargs):
        super().__init__(*args, capabilities=capabilities, **kwargs)
        self._capabilities = list(capabilities)

    def start(self, method=priv_context.Method.ROOTWRAP):
        # Given again: a configuration cleared since (ConfigOpts.clear(),
        # as tests do) has lost the default set at construction, and a
        # daemon started with none would hold no capability at all.
        cfg.CONF.set_default('capabilities', self._capabilities,
                             group=self.cfg_section)
        super().start(method)

    def helper_command(self, sockpath):
        if os.geteuid() != 0 or self.conf.helper_command:
            return super().helper_command(sockpath)
        return [sys.executable, '-c', _HELPER_MAIN,
                '--privsep_context', self.pypath,
                '--privsep_sock_path', sockpath]


#: What the entrypoints need, and nothing else:
#: CAP_SYS_ADMIN: mount namespaces and bind mounts (a generation's private
#:   /run/libvirt, /var/lib/libvirt, ...), cgroupfs writes;
#: CAP_CHOWN, CAP_FOWNER, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH: instance
#:   files and volumes handed to the QEMU user, state kept by root daemons;
#: CAP_KILL: signalling the root daemons a generation runs;
#: CAP_SYS_NICE: the switchover's thread priorities (QEMU's threads are
#:   another user's);
#: CAP_NET_ADMIN: the nested sibling's bridge, closing its stale sockets;
#: CAP_SETUID, CAP_SETGID: the daemons started here drop to the QEMU
#:   user for their guests;
#: CAP_SYS_PTRACE: reading a QEMU's /proc/<pid>/maps (does it map its
#:   RAM file; who still maps a guest's RAM before it is freed).
vmbeam_pctxt = _VMBeamContext(
    'nova_vmbeam',
    cfg_section='vmbeam_privsep',
    pypath=__name__ + '.vmbeam_pctxt',
    capabilities=[caps.CAP_SYS_ADMIN, caps.CAP_CHOWN, caps.CAP_FOWNER,
                  caps.CAP_DAC_OVERRIDE, caps.CAP_DAC_READ_SEARCH,
                  caps.CAP_KILL, caps.CAP_SYS_NICE, caps.CAP_NET_ADMIN,
                  caps.CAP_SETUID, caps.CAP_SETGID, caps.CAP_SYS_PTRACE],
)
