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

"""The rejuvenation orchestrator: what callers ask of the engine.

Rejuvenating a host: start generation N+1 beside the active N, move every
guest from N to N+1 with a mover, make N+1 active and retire N once it is
empty. The journal records each step before it happens; an orchestrator
that was killed is simply run again: recover() looks at both daemons and
settles every guest that was in flight (the destination wins only if it
already runs; otherwise it is destroyed and the source resumed), then the
run goes on. Exactly one generation is active; a guest runs exactly once.

The parts, each a module of this package:
  generations  the generation registry and lifecycle
  health       a generation's resource use (records.HealthReport)
  planning     preflight: movers, movable guests, the run's target
  runs         the run lifecycle: open, record each guest, finish
  moves        the parallel moves with their fences
  standby      generation N+1 ahead of time, with prepared destinations
  recovery     settling what a killed orchestrator left in flight
  listener     what an embedding program (the Nova driver) hears
"""

import os
import threading
import time

from nova_vmbeam import exception
from nova_vmbeam import records
from nova_vmbeam.rejuvenation import generations as generations_mod
from nova_vmbeam.rejuvenation import health as health_mod
from nova_vmbeam.rejuvenation import journal as journal_mod
from nova_vmbeam.rejuvenation import listener as listener_mod
from nova_vmbeam.rejuvenation import moves as moves_mod
from nova_vmbeam.rejuvenation import planning
from nova_vmbeam.rejuvenation import recovery as recovery_mod
from nova_vmbeam.rejuvenation import runs as runs_mod
from nova_vmbeam.rejuvenation import standby as standby_mod

RunListener = listener_mod.RunListener
STANDBY = generations_mod.STANDBY
INTERRUPTED = runs_mod.INTERRUPTED
RejuvenationAborted = exception.RejuvenationAborted
NotInitialized = exception.NotInitialized


class Orchestrator:

    ACTIVE_SOCKET = generations_mod.Generations.ACTIVE_SOCKET

    def __init__(self, conf, journal=None, listener=None):
        self.conf = conf
        self.journal = journal or journal_mod.Journal(
            os.path.join(conf.vmbeam.state_path, 'journal.json'))
        listener = listener or RunListener()
        # Set by abort(): the run stops between guests.
        self._abort = threading.Event()
        # Moves run in threads; each journal update is load-change-save.
        journal_lock = threading.Lock()
        self.generations = generations_mod.Generations(conf, self.journal)
        self.prepared = standby_mod.Standby(conf, self.journal,
                                            self.generations, journal_lock)
        self.runs = runs_mod.Runs(self.journal, self.generations,
                                  self.prepared, listener,
                                  journal_lock)
        self.moves = moves_mod.Moves(self.journal, self.runs,
                                     listener, self._abort)
        self.recovery = recovery_mod.Recovery(conf, self.journal,
                                              self.generations, self.runs)

    @property
    def listener(self):
        """The RunListener of the runs (may be replaced between runs)."""
        return self.runs.listener

    @listener.setter
    def listener(self, listener):
        self.runs.listener = self.moves.listener = listener

    # --- generations ------------------------------------------------------

    def init(self):
        """Start generation 1 if no generation is active yet."""
        return self.generations.init()

    def sibling(self, generation, state=None):
        """The sibling of generation number ``generation``, or None."""
        return self.generations.sibling(generation, state)

    def active(self, state=None):
        return self.generations.active(state)

    def active_socket(self):
        return self.generations.active_socket()

    def state(self):
        """The journal's records.JournalState, as it is now."""
        return self.journal.load()

    def guest_entry(self, name):
        """The open run's records.GuestEntry of ``name`` (state None: none)."""
        return self.runs.entry(name)

    def endpoints(self):
        """(URI guests go to, [URIs they may still be on]), recovered.

        Settles a killed run first; while a run is open its target takes
        new guests and its source still holds some.
        """
        self.init()
        with self.journal.locked():
            self.recover()
        state = self.journal.load()
        run = state.run
        if run and run.state != 'completed':
            return (self.sibling(run.target, state).uri,
                    [self.sibling(run.source, state).uri])
        return self.active(state).uri, []

    # --- status -------------------------------------------------------------

    @staticmethod
    def health(sibling):
        """records.HealthReport of a generation: daemons, per-guest QEMU."""
        return health_mod.measure(sibling)

    def status(self):
        """records.Status: generations that run, with their health."""
        state = self.journal.load()
        generations = {}
        for number, generation in state.generations.items():
            if generation.state in (generations_mod.RETIRED,
                                    generations_mod.FAILED):
                continue
            generations[number] = records.GenerationStatus(
                generation=generation, health=self.health(
                    self.generations.sibling_of(generation)))
        return records.Status(active=state.active, generations=generations,
                              run=state.run, history=state.history)

    # --- recovery -----------------------------------------------------------

    def recover(self):
        """Settle what a killed orchestrator left in flight."""
        self.recovery.recover()

    # --- rejuvenation -------------------------------------------------------

    def preflight(self, mover_name=None, concurrency=None, names=None,
                  fallback_mover=None):
        """Check what rejuvenate() would do, changing nothing.

        Returns the records.RunPlan; raises what rejuvenate() would raise
        before moving anything.
        """
        return planning.preflight(self.conf, self.journal, self.generations,
                                  mover_name, concurrency, names,
                                  fallback_mover)

    def rejuvenate(self, mover_name=None, concurrency=None, names=None,
                   fallback_mover=None, run_id=None):
        """Move every guest (or ``names``) onto a fresh generation.

        Guests whose RAM ``mover_name`` cannot move are refused (nothing
        changes), or moved with ``fallback_mover`` when one is named. An
        interrupted or incomplete run is taken up again instead of
        starting yet another generation (``run_id`` names a new run).
        Returns the records.Run.
        """
        mover_name, mover, fallback, concurrency = planning.load_movers(
            self.conf, mover_name, fallback_mover, concurrency)
        self._abort.clear()
        with self.journal.locked():
            self.recover()
            state = self.journal.load()
            run, source = planning.open_run(state, self.generations)
            source_host = source.host()
            try:
                on_source = planning.live_guests(source_host)
                chosen = planning.check_movable(mover, fallback, on_source,
                                                names, run)
                if run is None:
                    run = self.runs.begin(state, mover_name, on_source,
                                          run_id)
                else:
                    run = self.runs.take_up(on_source)
                target = self.sibling(run.target)
                self.generations.ensure_running(target)
                self.listener.run_started(run, source, target)
                target_host = target.host()
                pending = [n for n in sorted(on_source)
                           if run.guests[n].state == records.PENDING and
                           (names is None or n in names)]
                started = time.monotonic()
                try:
                    stages = self.moves.move_all(
                        chosen, pending, on_source, source_host,
                        target_host, concurrency)
                finally:
                    target_host.close()
            finally:
                source_host.close()
            self.runs.record_stages((time.monotonic() - started) * 1e3,
                                    stages)
            finished = self.runs.finish(run.id)
            self.listener.run_finished(finished)
            return finished

    def move(self, name, mover_name=None, fallback_mover=None, run_id=None):
        """Move one guest onto the open run's target generation.

        A new generation is started when no run is open.
        """
        return self.rejuvenate(mover_name, concurrency=1, names=[name],
                               fallback_mover=fallback_mover, run_id=run_id)

    def abort(self):
        """Stop the run in progress after the moves under way.

        Guests not moved yet stay on the source; the run is left
        incomplete, and the next rejuvenate() takes it up again.
        """
        self._abort.set()

    # --- standby ------------------------------------------------------------

    def standby(self, mover_name=None):
        """Start generation N+1 ahead of time, destinations prepared.

        Every guest of the active generation gets a destination QEMU in
        N+1, paused and waiting for its migration; the next rejuvenate()
        takes them over and only switches the guests. Guests that left or
        changed since are prepared again; run it again to refresh.
        Returns the standby's records.Generation.
        """
        return self.prepared.standby(self.recover, mover_name)

    def discard_standby(self, names=None):
        """Discard the standby generation, or some prepared destinations.

        With ``names``, only the destinations prepared for those guests.
        Returns the number of prepared destinations destroyed.
        """
        return self.prepared.discard_standby(names)
