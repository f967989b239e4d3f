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

"""Moving the guests of a run: destinations first, then the switchovers.

Each guest is fenced (the run listener's ``moving``) from its prepare
until its move has ended; its journal entry is written before each step.
"""

import concurrent.futures
import contextlib
import threading
import time

import libvirt
from oslo_log import log as logging

from nova_vmbeam import exception
from nova_vmbeam import records
from nova_vmbeam.rejuvenation import standby as standby_mod

LOG = logging.getLogger(__name__)


class Moves:

    def __init__(self, journal, runs, listener, abort_event):
        self.journal = journal
        self.runs = runs
        self.listener = listener
        # Set by the orchestrator's abort(): stop between guests.
        self.abort_event = abort_event

    def prepare_one(self, mover, name, source_host, target_host):
        """Journal the move, then get its destination ready (paused).

        A standby's destination is adopted when it was prepared by this
        mover from the very same domain XML; otherwise it is discarded
        and a new one started. Returns the MoveContext, or None.
        """
        set_guest = self.runs.set_guest
        src = source_host.guest(name)
        if src is None:
            # Deleted (or stopped) meanwhile: nothing left to move.
            set_guest(name, state=records.GONE,
                      error='not running on %s any more' % source_host.name)
            return None
        prepared = self.journal.load().run.guests[name].prepared
        set_guest(name, state=records.MOVING, prepared=None,
                  mover=mover.name, was_running=src.status() == 'running')
        try:
            ctx = None
            dest = target_host.guest(name) if prepared else None
            if dest is not None:
                if standby_mod.adoptable(prepared, mover, src):
                    try:
                        ctx = mover.adopt(src, target_host, dest)
                    except exception.InvalidInput as exc:
                        LOG.warning('%s; preparing a new one', exc)
                if ctx is None:
                    standby_mod.discard(dest)
            if ctx is None:
                ctx = mover.begin(src, target_host)
            ctx.adopted = dest is not None and ctx.destination is dest
            return ctx
        except exception.RollbackFailed as exc:
            # Where the guest is is unknown: it stays "moving", so the next
            # run's recovery settles it from what the daemons say.
            set_guest(name, error=str(exc))
            LOG.error('%s', exc)
        except exception.VMBeamError as exc:
            set_guest(name, state=records.FAILED, error=str(exc))
            LOG.error('%s', exc)
        return None

    def finish_one(self, mover, name, ctx, target_host, pause_lock=None):
        """Transfer, verify, switch over; the records.MoveResult or None."""
        # Only this move's own switchover may leave a mark from here on.
        self.journal.clear_switching(name)
        try:
            result = mover.finish(ctx, on_switchover=lambda:
                                  self.journal.mark_switching(name),
                                  pause_lock=pause_lock)
        except exception.RollbackFailed as exc:
            self.runs.set_guest(name, error=str(exc))
            LOG.error('%s', exc)
            return None
        except exception.VMBeamError as exc:
            # Rolled back: the source runs the guest again.
            self.runs.set_guest(name, state=records.FAILED, error=str(exc))
            self.journal.clear_switching(name)
            LOG.error('%s', exc)
            return None
        try:
            result.destination.persist()
        except libvirt.libvirtError as exc:
            # The guest runs on the target all the same; it stays a
            # transient domain there until defined again.
            LOG.warning('defining %s on %s failed: %s', name,
                        target_host.name, exc)
        result.standby = ctx.adopted
        self.runs.set_guest(name, state=records.MOVED, result=result,
                            error=None)
        self.journal.clear_switching(name)
        return result

    def move_all(self, movers, pending, on_source, source_host,
                 target_host, concurrency):
        """Prepare every destination first, then switch the guests over.

        Starting a destination QEMU through libvirt costs a few hundred
        milliseconds of CPU; done before any guest pauses, it does not
        compete with the switchovers, which stay short. Each guest is
        fenced (the run listener's ``moving``) from its prepare until its
        move has ended; abort() stops the run between guests and gives up
        the destinations prepared for the rest. Returns how long the two
        stages took: {'prepare_all_ms', 'switch_all_ms'}.
        """
        def pmap(fn, items):
            with concurrent.futures.ThreadPoolExecutor(
                    max_workers=concurrency) as pool:
                return list(pool.map(fn, items))

        fences = {}
        # One guest paused at a time; the rest of the moves overlap.
        pause_lock = threading.Lock()

        def release(name):
            fence = fences.pop(name, None)
            if fence is None:
                return
            fence.close()
            entry = self.runs.entry(name)
            try:
                self.listener.guest_done(name, on_source[name].spec.uuid,
                                         entry)
            except Exception:
                LOG.exception('run listener failed after moving %s', name)

        def prepare(name):
            if self.abort_event.is_set():
                return None
            fence = contextlib.ExitStack()
            fence.enter_context(self.listener.moving(
                name, on_source[name].spec.uuid))
            fences[name] = fence
            ctx = self.prepare_one(movers[name], name, source_host,
                                   target_host)
            if ctx is None:
                release(name)
            return ctx

        def finish(item):
            name, ctx = item
            try:
                if self.abort_event.is_set():
                    self._give_up(movers[name], name, ctx)
                    return None
                return self.finish_one(movers[name], name, ctx,
                                       target_host, pause_lock)
            finally:
                release(name)

        try:
            started = time.monotonic()
            contexts = pmap(prepare, pending)
            prepared = time.monotonic()
            pmap(finish, [(n, c) for n, c in zip(pending, contexts)
                          if c is not None])
            return {'prepare_all_ms': (prepared - started) * 1e3,
                    'switch_all_ms': (time.monotonic() - prepared) * 1e3}
        finally:
            for name in list(fences):
                release(name)

    def _give_up(self, mover, name, ctx):
        """An aborted run: destroy a prepared destination, keep the guest."""
        try:
            mover.abort(ctx)
        except exception.RollbackFailed as exc:
            self.runs.set_guest(name, error=str(exc))
            LOG.error('%s', exc)
            return
        self.runs.set_guest(name, state=records.PENDING, was_running=None)
