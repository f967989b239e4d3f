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

"""Standby: generation N+1 started ahead, with prepared destinations.

A prepared destination is a destination QEMU started in the standby
generation for one guest of the active one, paused and waiting for its
migration (records.PreparedDestination); the next rejuvenation takes it
over and only switches the guest over.
"""

import hashlib
import time

from oslo_log import log as logging

from nova_vmbeam import exception
from nova_vmbeam import hypervisor
from nova_vmbeam import movers as movers_mod
from nova_vmbeam import pool as pool_mod
from nova_vmbeam import records
from nova_vmbeam.rejuvenation import generations as generations_mod
from nova_vmbeam.rejuvenation import planning
from nova_vmbeam import siblings as siblings_mod

LOG = logging.getLogger(__name__)


def xml_digest(endpoint):
    """What a prepared destination must have been prepared from."""
    return hashlib.sha256(endpoint.spec.domain_xml.encode()).hexdigest()


def adoptable(prepared, mover, src):
    """Whether ``mover`` may take over ``prepared`` for guest ``src``."""
    return (prepared is not None and prepared.state == records.READY and
            prepared.mover == mover.name and
            prepared.digest == xml_digest(src))


def discard(endpoint, pool=None):
    """Destroy a prepared destination that never received a guest.

    Only a QEMU still waiting for its migration is one; anything else
    may hold a guest and is left for the operator. With ``pool``, where
    the guest's RAM was attached to the destination's hypervisor VM for it
    (nested), the VM lets go of it too: the guest's RAM is then mapped by
    its source alone, and can be freed once the guest is deleted.
    """
    state = endpoint.status() if endpoint.alive() else None
    if state not in (None, 'inmigrate', 'prelaunch'):
        raise exception.VMBeamError(
            'domain %s on %s is %s, not a prepared destination; '
            'check it by hand' % (endpoint.name, endpoint.host.name,
                                  state))
    endpoint.destroy()
    if pool is not None and isinstance(endpoint.host,
                                       hypervisor.PoolAttachingHypervisor):
        endpoint.host.detach_pool(pool, endpoint.spec.uuid)


class Standby:

    def __init__(self, conf, journal, generations, journal_lock):
        self.conf = conf
        self.journal = journal
        self.generations = generations
        self.journal_lock = journal_lock

    def standby(self, recover, mover_name=None):
        """Start generation N+1 ahead of time, destinations prepared.

        ``recover`` settles what a killed run left first (under the
        lock). Returns the standby's records.Generation.
        """
        mover_name = mover_name or siblings_mod.default_mover(self.conf)
        mover = movers_mod.load(mover_name, self.conf)
        with self.journal.locked():
            recover()
            state = self.journal.load()
            run = state.run
            if run and run.state != 'completed':
                raise exception.InvalidInput(
                    reason='a rejuvenation run from generation %s to %s is '
                           'open; finish it with "vmbeam rejuvenate" '
                           'first' % (run.source, run.target))
            number = state.standby_generation()
            if number is None:
                number = state.next_generation()
                self.generations.start(state, number,
                                       generations_mod.STANDBY)
            else:
                self.generations.ensure_running(
                    self.generations.sibling(number, state))
            self._prepare_all(mover, number)
            return self.journal.load().generations[number]

    def _set(self, number, name, prepared):
        """Journal (None: forget) the destination prepared for ``name``."""
        with self.journal_lock, self.journal.update() as st:
            prepared_all = st.generations[number].prepared
            if prepared is None:
                prepared_all.pop(name, None)
            else:
                prepared_all[name] = prepared

    def _prepare_all(self, mover, number):
        source_host = self.generations.active().host()
        target_host = self.generations.sibling(number).host()
        try:
            on_source = planning.live_guests(source_host)
            prepared_all = self.journal.load().generations[number].prepared
            for endpoint in target_host.guests():
                src = on_source.get(endpoint.name)
                if src and adoptable(prepared_all.get(endpoint.name), mover,
                                     src):
                    continue
                LOG.info('discarding the stale prepared destination of %s',
                         endpoint.name)
                discard(endpoint)
                self._set(number, endpoint.name, None)
            prepared_all = self.journal.load().generations[number].prepared
            for name, src in sorted(on_source.items()):
                if name in prepared_all:
                    continue
                try:
                    mover.check(src.spec)
                except exception.InvalidInput as exc:
                    LOG.warning('no prepared destination for %s: %s', name,
                                exc)
                    continue
                prepared = records.PreparedDestination(
                    mover=mover.name, digest=xml_digest(src),
                    state=records.PREPARING)
                # Journalled first: a destination of a killed standby() is
                # found and discarded by the next one.
                self._set(number, name, prepared)
                started = time.monotonic()
                try:
                    mover.begin(src, target_host)
                except exception.VMBeamError as exc:
                    LOG.error('preparing a destination for %s: %s', name,
                              exc)
                    self._set(number, name, None)
                    continue
                prepared.state = records.READY
                prepared.prepare_ms = (time.monotonic() - started) * 1000.0
                self._set(number, name, prepared)
        finally:
            source_host.close()
            target_host.close()

    def discard_standby(self, names=None):
        """Discard the standby generation, or some prepared destinations.

        With ``names``, only the destinations prepared for those guests
        (guests about to be deleted, whose RAM they map). Returns the
        number of prepared destinations destroyed.
        """
        if self.journal.load().standby_generation() is None:
            return 0   # the common case, without waiting for a run's lock
        with self.journal.locked():
            state = self.journal.load()
            number = state.standby_generation()
            if number is None:
                return 0
            sibling = self.generations.sibling(number, state)
            self.generations.ensure_running(sibling)
            host = sibling.host()
            count = 0
            # The whole standby goes (retired below, its VM with it), or
            # the guests named are about to be deleted: their RAM must be
            # left to their source alone.
            pool = pool_mod.load(self.conf) if names is not None else None
            try:
                for endpoint in host.guests():
                    if names is None or endpoint.name in names:
                        discard(endpoint, pool)
                        self._set(number, endpoint.name, None)
                        count += 1
            finally:
                host.close()
            if names is None:
                sibling.retire()
                with self.journal.update() as st:
                    st.generations[number].state = generations_mod.RETIRED
                    st.generations[number].prepared = {}
            return count

    def discard_except(self, number, names):
        """Destroy the prepared destinations of guests not in ``names``.

        A guest deleted (or stopped) after standby() left its destination
        behind, mapping RAM that must be freed.
        """
        host = self.generations.sibling(number).host()
        pool = pool_mod.load(self.conf)
        try:
            for endpoint in host.guests():
                if endpoint.name not in names:
                    LOG.info('discarding the prepared destination of %s: '
                             'the guest is gone', endpoint.name)
                    discard(endpoint, pool)
        finally:
            host.close()
