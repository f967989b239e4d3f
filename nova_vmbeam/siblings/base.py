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

"""The sibling-hypervisor plugin interface.

A sibling is one generation of the hypervisor stack on this compute node.
Rejuvenation starts generation N+1 beside the active generation N, moves
every guest onto it and retires N once it is empty.
"""

import abc


class SiblingBase(metaclass=abc.ABCMeta):
    """One numbered generation of the hypervisor on this node."""

    #: entry-point name
    kind = None

    #: whether VMBeamDriver can run Nova's instances on its generations:
    #: their disks, volumes, networks and console reached from the
    #: generation's daemon, as Nova sets them up on this host
    runs_nova_instances = False

    #: the mover a request that names none uses ([vmbeam] default_mover
    #: unset)
    default_mover = 'zerocopy'

    #: whether its guests run inside a hypervisor VM (whose libvirt
    #: reports that VM's memory, not this host's, which holds their RAM)
    guests_in_vm = False

    def __init__(self, conf, generation):
        self.conf = conf
        self.generation = generation

    @property
    def name(self):
        return 'gen%d' % self.generation

    @abc.abstractmethod
    def start(self, seed_from=None):
        """Start the hypervisor stack; do not wait for it.

        ``seed_from`` is the sibling it replaces: what can be carried over
        safely (caches) may be taken from it.
        """

    @abc.abstractmethod
    def wait_ready(self, timeout):
        """Block until it accepts guests; SiblingStartFailed if it won't."""

    @property
    @abc.abstractmethod
    def uri(self):
        """libvirt URI of this generation's daemon, usable from the host."""

    #: path of the daemon's libvirt socket, if it has one on this host
    socket_path = None

    #: libvirt resource partition of its guests (<resource><partition>),
    #: or None for libvirt's default; see nova_vmbeam/libvirt/partition.py
    partition = None

    def ensure_partition(self):
        """Make sure ``partition`` exists, where it must be made.

        Idempotent. For a generation found running, too: one an earlier
        version started has none yet.
        """

    @abc.abstractmethod
    def host(self):
        """A nova_vmbeam.libvirt.host.Host (a move target) for it."""

    @abc.abstractmethod
    def running(self):
        """True while its daemons run."""

    @abc.abstractmethod
    def health(self):
        """Resource use of the hypervisor stack (for aging evidence).

        A nova_vmbeam.records.HealthReport whose ``daemon`` is the process
        that hosts the guests.
        """

    @abc.abstractmethod
    def retire(self):
        """Stop the stack. Only ever called once no guest runs on it."""

    @abc.abstractmethod
    def record(self):
        """What the journal keeps to find this sibling again (a dict)."""
