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

"""Planning a run: which movers, which guests, checked before any change."""

from nova_vmbeam import exception
from nova_vmbeam import movers as movers_mod
from nova_vmbeam import records
from nova_vmbeam import siblings as siblings_mod


def live_guests(host):
    """Guests of ``host`` by name, live QEMUs only.

    libvirt lists a quit domain a little longer while it tidies up.
    """
    return {g.name: g for g in host.guests() if g.alive()}


def load_movers(conf, mover_name, fallback_mover, concurrency):
    """(mover name, mover, fallback mover or None, concurrency), checked."""
    mover_name = mover_name or siblings_mod.default_mover(conf)
    mover = movers_mod.load(mover_name, conf)
    fallback = (movers_mod.load(fallback_mover, conf)
                if fallback_mover and fallback_mover != mover_name
                else None)
    concurrency = concurrency or conf.vmbeam.rejuvenation_concurrency
    if not isinstance(concurrency, int) or concurrency < 1:
        raise exception.InvalidInput(
            reason='concurrency must be a whole number, 1 or more, not '
                   '%r' % (concurrency,))
    return mover_name, mover, fallback, concurrency


def check_movable(mover, fallback, on_source, names, run):
    """Refuse, before anything changes, what this run cannot move.

    Returns the mover of each guest: ``mover``, or ``fallback`` for a
    guest whose RAM ``mover`` cannot move.
    """
    moved = {n for n, g in (run.guests if run else {}).items()
             if g.state == records.MOVED}
    unknown = [n for n in names or () if n not in on_source and
               n not in moved]
    if unknown:
        raise exception.GuestNotFound(
            guest=', '.join(unknown),
            known=', '.join(sorted(on_source)) or 'none')
    chosen = {}
    for name in names or sorted(on_source):
        if name not in on_source:
            continue
        spec = on_source[name].spec
        try:
            mover.check(spec)
            chosen[name] = mover
        except exception.RamNotShareable:
            if fallback is None:
                raise
            fallback.check(spec)
            chosen[name] = fallback
    return chosen


def open_run(state, generations):
    """(the run to take up or None, the sibling guests move from)."""
    run = state.run
    if run and run.state == 'completed':
        run = None
    source = generations.sibling(run.source, state) if run \
        else generations.active(state)
    return run, source


def target_of(state, run):
    """The generation number the run moves guests to (maybe not started)."""
    if run is not None:
        return run.target
    return state.standby_generation() or state.next_generation()


def preflight(conf, journal, generations, mover_name=None, concurrency=None,
              names=None, fallback_mover=None):
    """Check what a rejuvenation would do, changing nothing.

    Raises what it would raise before moving anything (a rejuvenation
    already running, unknown mover or guest, a guest the mover cannot
    move). Returns the records.RunPlan.
    """
    _name, mover, fallback, _conc = load_movers(
        conf, mover_name, fallback_mover, concurrency)
    with journal.locked():
        state = journal.load()
        run, source = open_run(state, generations)
        source_host = source.host()
        try:
            on_source = live_guests(source_host)
            chosen = check_movable(mover, fallback, on_source, names, run)
        finally:
            source_host.close()
    return records.RunPlan(
        run_id=run.id if run else None, source=source.generation,
        target=target_of(state, run),
        movers={n: m.name for n, m in chosen.items()},
        uuids={n: g.spec.uuid for n, g in on_source.items()})
