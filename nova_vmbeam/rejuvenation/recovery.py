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

"""Crash recovery: settle what a killed orchestrator left in flight.

Never two QEMUs running one guest, never the stale one: a guest whose
destination already runs (or was told to) belongs to the target; any
other destination is destroyed first and only then the source resumed.
"""

import libvirt
from oslo_log import log as logging

from nova_vmbeam import exception
from nova_vmbeam import movers as movers_mod
from nova_vmbeam.movers import base as movers_base
from nova_vmbeam import records
from nova_vmbeam.rejuvenation import generations as generations_mod
from nova_vmbeam.rejuvenation import runs as runs_mod

LOG = logging.getLogger(__name__)

# Journal states of guests whose destination, if any, was destroyed.
_NOT_MOVED = (records.PENDING, records.FAILED, records.GONE)


class Recovery:

    def __init__(self, conf, journal, generations, runs):
        self.conf = conf
        self.journal = journal
        self.generations = generations
        self.runs = runs

    def _settle(self, mover, name, entry, source_host, target_host):
        """Decide where an in-flight guest lives; return its journal state.

        Never two running, never the stale one: once the switchover began
        (``switching``) the destination may have run and written the shared
        RAM, so it owns the guest and the source is destroyed. Before that,
        a destination that runs anyway owns it too; any other destination
        is destroyed first and only then is the source resumed, exactly as
        in a rollback.
        """
        was_running = entry.was_running is not False
        src = source_host.guest(name)
        dst = target_host.guest(name)
        if dst is not None and not dst.alive():
            dst = None
        dst_state = dst.status() if dst is not None else None
        if self.journal.is_switching(name) or dst_state == 'running':
            if dst is None:
                raise exception.VMBeamError(
                    'guest %s: its destination on %s was told to run and '
                    'is gone; the stopped source on %s is stale and must '
                    'not be resumed. Check the guest by hand.' %
                    (name, target_host.name, source_host.name))
            if src is not None:
                src.destroy()
            if dst_state != 'running' and was_running:
                dst.resume()
            dst.persist()
            return records.MOVED
        if src is None:
            raise exception.VMBeamError(
                'guest %s runs on neither %s nor %s: check it by hand '
                'before going on' % (name, source_host.name,
                                     target_host.name))
        ctx = movers_base.MoveContext(src, target_host)
        ctx.destination = dst
        ctx.source_was_running = was_running
        mover.rollback(ctx)
        return records.PENDING

    def recover(self):
        """Settle what a killed orchestrator left in flight."""
        state = self.journal.load()
        if state.active is None:
            return
        self.generations.ensure_running(self.generations.active(state))
        self._retire_abandoned(state)
        run = state.run
        if not run or run.state == 'completed':
            return
        source = self.generations.sibling(run.source, state)
        target = self.generations.sibling(run.target, state)
        self.generations.ensure_running(target)
        source_host, target_host = source.host(), target.host()
        try:
            for name, entry in run.guests.items():
                if entry.state in _NOT_MOVED:
                    self._remove_stray(name, entry, target_host)
                    continue
                if entry.state != records.MOVING:
                    continue
                try:
                    mover = movers_mod.load(entry.mover or run.mover,
                                            self.conf)
                    settled = self._settle(mover, name, entry, source_host,
                                           target_host)
                except Exception as exc:
                    # Left "moving" for the operator; the others go on.
                    LOG.error('cannot settle %s: %s', name, exc)
                    self.runs.set_guest(name, error=str(exc))
                    continue
                LOG.warning('recovered %s after an interrupted move: %s',
                            name, settled)
                self.runs.set_guest(name, state=settled)
                self.journal.clear_switching(name)
        finally:
            source_host.close()
            target_host.close()
        # Whoever ran this run is gone (recover runs under the host's
        # rejuvenation lock): it is open, not running. An operator reads
        # this state; the next rejuvenation takes the run up again.
        with self.runs.journal_lock, self.journal.update() as st:
            if st.run and st.run.state == 'running':
                st.run.state = runs_mod.INTERRUPTED

    def _retire_abandoned(self, state):
        """Stop generations whose start a killed orchestrator left behind.

        A generation is 'starting' until it accepts guests, then 'ready'
        until a run names it as its target. recover() holds the host's
        rejuvenation lock, so nothing is starting now: one found so, and
        not the target of an open run, lost its orchestrator in between.
        No guest runs on it; its daemons are stopped and it is marked
        failed, so that no daemon is left running that nothing tracks.
        """
        run = state.run
        target = run.target if run and run.state != 'completed' else None
        for number, record in sorted(state.generations.items()):
            if record.state not in (generations_mod.STARTING,
                                    generations_mod.READY) or \
                    number == target:
                continue
            sibling = self.generations.sibling(number, state)
            LOG.warning('generation %s was left %s by an orchestrator that '
                        'died; stopping it', sibling.name, record.state)
            try:
                sibling.retire()
            except Exception:
                LOG.exception('stopping the abandoned generation %s',
                              sibling.name)
            with self.journal.update() as st:
                st.generations[number].state = generations_mod.FAILED

    def _remove_stray(self, name, entry, target_host):
        """Destroy a destination of ``name`` that never received the guest.

        For a guest the run has not moved and is not moving (``entry``
        pending, failed or gone), nothing on the target holds it: every
        move that failed destroyed its destination first. A domain of
        that name there all the same is a stray, left by a createXML that
        failed half way while its daemon was out of reach (killed during
        the call, it found that QEMU again when restarted). It is told
        apart from a moved guest by the journal, from a destination a
        standby prepared by its journal record, and by its QEMU's state:
        only one still waiting for a migration ('inmigrate': destinations
        start with -incoming, and a guest that moved in has left that
        state for good), or already gone, is destroyed. Anything else (a
        guest that runs, or one Nova started paused: 'prelaunch') is left
        for the operator.
        """
        prepared = entry.prepared
        if prepared and prepared.state == records.READY:
            return   # a standby's destination, taken over by the run
        try:
            stray = target_host.guest(name)
            if stray is None:
                return
            state = stray.status() if stray.alive() else None
            if state not in (None, 'inmigrate'):
                raise exception.VMBeamError(
                    'guest %s is %s, but %s has a domain of it that is %s, '
                    'not a destination that never received it; check it '
                    'by hand' % (name, entry.state, target_host.name,
                                 state))
            LOG.warning('%s is %s, but %s has a destination of it that '
                        'never received it (left by a failed start): '
                        'destroying it', name, entry.state,
                        target_host.name)
            stray.destroy()
        except (exception.VMBeamError, libvirt.libvirtError) as exc:
            LOG.error('%s', exc)
            self.runs.set_guest(name, error=str(exc))
