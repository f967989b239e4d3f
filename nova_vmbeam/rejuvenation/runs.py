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

"""The run lifecycle: open a run, record each guest, finish or leave it.

A run (records.Run) moves the guests of generation N onto N+1; it is
completed once N is empty, then N+1 is made active and N retired. A run
that stopped short stays open and the next rejuvenation takes it up.
"""

import time
import uuid

from oslo_log import log as logging

from nova_vmbeam import records
from nova_vmbeam.rejuvenation import generations as generations_mod
from nova_vmbeam.rejuvenation import health

LOG = logging.getLogger(__name__)

#: completed runs the journal keeps
_HISTORY = 10

# A run whose orchestrator died (nova-compute killed or stopped mid-run):
# its guests are settled, some may still be on the old generation; the
# next rejuvenation goes on with it.
INTERRUPTED = 'interrupted'


class Runs:

    def __init__(self, journal, generations, prepared, listener,
                 journal_lock):
        self.journal = journal
        self.generations = generations
        self.prepared = prepared
        self.listener = listener
        # Moves run in threads; each journal update is load-change-save.
        self.journal_lock = journal_lock

    def set_guest(self, name, **fields):
        """Change the open run's entry of guest ``name``."""
        with self.journal_lock, self.journal.update() as state:
            entry = state.run.guests.setdefault(name, records.GuestEntry())
            for field, value in fields.items():
                setattr(entry, field, value)

    def entry(self, name):
        """The open run's records.GuestEntry of ``name`` (or a blank one)."""
        run = self.journal.load().run
        return run.guests.get(name, records.GuestEntry(state=None)) \
            if run else records.GuestEntry(state=None)

    def begin(self, state, mover_name, guests, run_id=None):
        """Open a run onto N+1 (nothing moved yet).

        A standby generation, started ahead by standby(), is taken over
        with the destinations it prepared; otherwise N+1 starts now.
        """
        old = self.generations.active(state)
        begun = time.time()
        aging_before = health.measure(old)
        number = state.standby_generation()
        prepared_all = {}
        if number is not None:
            # A standby whose daemon died still has its prepared QEMUs:
            # restarted, the daemon finds them again.
            self.generations.ensure_running(
                self.generations.sibling(number, state))
            ready_ms = 0.0
            prepared_all = state.generations[number].prepared
            LOG.info('taking over standby generation %d with %d prepared '
                     'destinations', number, len(prepared_all))
            self.prepared.discard_except(number, set(guests))
        else:
            number = state.next_generation()
            _new, ready_ms = self.generations.start(
                state, number, generations_mod.READY)
        run = records.Run(
            id=run_id or str(uuid.uuid4()), source=old.generation,
            target=number, state='running', mover=mover_name,
            begun=begun, started=time.time(), sibling_ready_ms=ready_ms,
            standby=bool(prepared_all),
            guests={name: records.GuestEntry(state=records.PENDING,
                                             uuid=guest.spec.uuid)
                    for name, guest in guests.items()},
            aging_before=aging_before)
        # Marks a settled earlier run may have left (see Journal).
        self.journal.clear_switching()
        with self.journal.update() as st:
            generation = st.generations[number]
            generation.state = generations_mod.READY
            generation.prepared = {}
            for name, prepared in prepared_all.items():
                if name in run.guests:
                    run.guests[name].prepared = prepared
            st.run = run
        return run

    def take_up(self, on_source):
        """Reopen the open run for another attempt; return it."""
        with self.journal.update() as st:
            st.run.state = 'running'
            guests = st.run.guests
            for name in on_source:
                entry = guests.setdefault(
                    name, records.GuestEntry(
                        state=None, uuid=on_source[name].spec.uuid))
                if entry.state in (None, records.FAILED):
                    entry.state = records.PENDING
            for name, entry in guests.items():
                # Deleted since the last attempt.
                if name not in on_source and entry.state in (
                        records.PENDING, records.FAILED):
                    entry.state = records.GONE
        return self.journal.load().run

    def record_stages(self, moves_ms, stages):
        with self.journal.update() as st:
            st.run.moves_ms = moves_ms
            st.run.prepare_all_ms = stages['prepare_all_ms']
            st.run.switch_all_ms = stages['switch_all_ms']

    def finish(self, run_id):
        """Activate the target and retire the source once it is empty."""
        state = self.journal.load()
        run = state.run
        if run is None or run.id != run_id:
            return state.run
        source = self.generations.sibling(run.source, state)
        target = self.generations.sibling(run.target, state)
        left = list(run.left_behind())
        host = source.host()
        try:
            remaining = host.running_qemus()
        finally:
            host.close()
        if left or remaining:
            with self.journal.update() as st:
                st.run.state = 'incomplete'
                st.run.left = sorted(set(left) | set(remaining))
            return self.journal.load().run
        emptied = time.time()   # every guest runs on the target now
        aging_after = health.measure(target)
        self.listener.retiring(source, target)
        self.generations.link_active(target)
        source.retire()
        with self.journal.update() as st:
            st.generations[run.source].state = generations_mod.RETIRED
            st.generations[run.target].state = generations_mod.ACTIVE
            st.active = run.target
            st.run.state = 'completed'
            st.run.emptied = emptied
            st.run.finished = time.time()
            st.run.aging_after = aging_after
            st.history = (st.history + [st.run])[-_HISTORY:]
        return self.journal.load().run
