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

"""The generation registry and lifecycle.

A generation is one running instance of the hypervisor stack on this node,
numbered 1, 2, ...; the journal records each (records.Generation) and
which one is active. The sibling plugin of the configured kind
(nova_vmbeam.siblings) starts, finds again and retires them.
"""

import os
import time

import libvirt
from oslo_log import log as logging

from nova_vmbeam import exception
from nova_vmbeam import records
from nova_vmbeam import siblings as siblings_mod

LOG = logging.getLogger(__name__)

NotInitialized = exception.NotInitialized
RejuvenationAborted = exception.RejuvenationAborted

#: a generation's states in the journal
STARTING = 'starting'
STANDBY = 'standby'     # started ahead of a rejuvenation (see standby.py)
READY = 'ready'         # the target of the open run
ACTIVE = 'active'
RETIRED = 'retired'
FAILED = 'failed'


class Generations:
    """Find, start, keep running and retire the generations."""

    #: where the active generation's libvirt socket is always found (a
    #: symlink replaced atomically on every switch), for clients that
    #: cannot know the generation: other hosts' live migrations
    ACTIVE_SOCKET = 'active-libvirt-sock'

    def __init__(self, conf, journal):
        self.conf = conf
        self.journal = journal

    def sibling_of(self, generation):
        """The sibling plugin's object for a records.Generation."""
        cls = siblings_mod.kind(generation.kind)
        return cls.from_record(self.conf, generation.sibling)

    def new_sibling(self, number):
        """A sibling of the configured kind for generation ``number``."""
        cls = siblings_mod.kind(self.conf.vmbeam.sibling_kind)
        return cls(self.conf, number)

    @staticmethod
    def record(sibling, state):
        """The journal's records.Generation of ``sibling``."""
        return records.Generation(number=sibling.generation,
                                  kind=sibling.kind, state=state,
                                  sibling=sibling.record())

    def sibling(self, number, state=None):
        state = state or self.journal.load()
        generation = state.generations.get(number)
        return self.sibling_of(generation) if generation else None

    def active(self, state=None):
        state = state or self.journal.load()
        if state.active is None:
            raise NotInitialized(path=self.journal.path)
        return self.sibling(state.active, state)

    def ensure_running(self, sibling):
        """A generation's daemon died: start it again on its own state.

        Its guests' QEMUs outlive the daemon; the restarted daemon finds
        them again from its private run directory.
        """
        if not sibling.running():
            LOG.warning('daemon of %s is not running; restarting it',
                        sibling.name)
            sibling.start()
            sibling.wait_ready(self.conf.vmbeam.sibling_start_timeout)
            self._wait_reconnected(sibling,
                                   self.conf.vmbeam.sibling_start_timeout)
        # Its guests' partition, also where it was never made: a
        # generation an earlier version started.
        sibling.ensure_partition()

    @staticmethod
    def _wait_reconnected(sibling, timeout):
        """Until a restarted daemon has settled the QEMUs it found again.

        It answers before that: a domain whose QEMU died while the daemon
        was down stays listed as running until the daemon's reconnect
        notices, and starting that guest there meanwhile is refused
        ("already active").
        """
        host = sibling.host()
        try:
            deadline = time.monotonic() + timeout
            while True:
                stale = set(host.domains()) - set(host.running_qemus())
                if not stale:
                    return
                if time.monotonic() > deadline:
                    LOG.warning('%s still lists %s as running without a '
                                'QEMU', sibling.name, ', '.join(sorted(stale)))
                    return
                time.sleep(0.05)
        finally:
            host.close()

    def active_socket(self):
        return os.path.join(self.conf.vmbeam.state_path, self.ACTIVE_SOCKET)

    def link_active(self, sibling):
        """Point the active-socket symlink at ``sibling`` (atomically)."""
        socket_path = getattr(sibling, 'socket_path', None)
        if not socket_path:
            return
        link = self.active_socket()
        tmp = '%s.%d.tmp' % (link, os.getpid())
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(socket_path, tmp)
        os.replace(tmp, link)

    def init(self):
        """Start generation 1 if no generation is active yet."""
        with self.journal.locked():
            state = self.journal.load()
            if state.active is not None:
                sibling = self.active(state)
                self.ensure_running(sibling)
                self.link_active(sibling)
                return sibling
            sibling = self.new_sibling(1)
            sibling.start()
            sibling.wait_ready(self.conf.vmbeam.sibling_start_timeout)
            with self.journal.update() as state:
                state.generations[1] = self.record(sibling, ACTIVE)
                state.active = 1
            self.link_active(sibling)
            return sibling

    def start(self, state, number, journal_state):
        """Start generation ``number``; abort cleanly if it fails.

        Returns (its sibling, how long it took to accept guests in ms).
        """
        old = self.active(state)
        new = self.new_sibling(number)
        with self.journal.update() as st:
            st.generations[number] = self.record(new, STARTING)
        started = time.monotonic()
        try:
            new.start(seed_from=old)
            new.wait_ready(self.conf.vmbeam.sibling_start_timeout)
        except Exception as exc:
            try:
                new.retire()
            except Exception:
                LOG.exception('stopping the failed generation %s', new.name)
            with self.journal.update() as st:
                st.generations[number].state = FAILED
            raise RejuvenationAborted(reason=str(exc), active=old.name)
        self._carry_secrets(old, new)
        ready_ms = (time.monotonic() - started) * 1000.0
        with self.journal.update() as st:
            st.generations[number].state = journal_state
            st.generations[number].ready_ms = ready_ms
        return new, ready_ms

    def _carry_secrets(self, old, new):
        """Define the old generation's libvirt secrets in the new one.

        Secrets (Ceph keys, LUKS passphrases, vTPM) live in one daemon;
        guests moved without them would fail at their next attach or
        start. Private secrets cannot be read out and are left behind.
        """
        source, target = old.host(), new.host()
        try:
            for secret in source.conn.listAllSecrets():
                try:
                    value = secret.value()
                except libvirt.libvirtError:
                    LOG.warning('secret %s of %s is private; not carried '
                                'over to %s', secret.UUIDString(), old.name,
                                new.name)
                    continue
                copy = target.conn.secretDefineXML(secret.XMLDesc())
                copy.setValue(value)
        finally:
            source.close()
            target.close()
