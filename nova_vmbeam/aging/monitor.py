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

"""The periodic aging monitor.

Every ``[vmbeam_aging] interval`` seconds a thread samples each probe,
tests each probe's series for a trend, asks the policy and, when the policy
says so and a cluster slot is free, calls ``rejuvenate()`` and waits for it.
The history is per hypervisor generation: a new generation (from this
monitor or from anyone else) starts every series afresh. The history and
the last status are kept in ``<[vmbeam] state_path>/aging/`` so that a
restarted nova-compute goes on where it stopped and ``vmbeam aging status``
can show what the monitor saw.

Inside nova-compute the driver builds ``AgingMonitor(conf, host,
rejuvenate)`` in init_host, calls ``start()`` there and ``stop()`` in
cleanup_host.
"""

import collections
import json
import os
import threading
import time

from oslo_log import log as logging

from nova_vmbeam import aging as aging_mod
from nova_vmbeam.aging import base
from nova_vmbeam.aging import policy as policy_mod
from nova_vmbeam.aging import slots as slots_mod
from nova_vmbeam.aging import trend as trend_mod
from nova_vmbeam import exception
from nova_vmbeam import files
from nova_vmbeam.rejuvenation import orchestrator as orchestrator_mod

LOG = logging.getLogger(__name__)

HISTORY_FILE = 'history.json'
STATUS_FILE = 'status.json'


def state_dir(conf):
    return os.path.join(conf.vmbeam.state_path, 'aging')


def read_status(conf):
    """The status a monitor last wrote on this host, or None."""
    try:
        with open(os.path.join(state_dir(conf), STATUS_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _last_run_end(state):
    """When the journal's newest rejuvenation ended (or began, if open)."""
    runs = state.history + ([state.run] if state.run else [])
    times = [r.finished or r.started for r in runs]
    times = [t for t in times if t]
    return max(times) if times else None


class AgingMonitor:
    """Samples probes, follows their trends and rejuvenates in time.

    ``rejuvenate`` is a callable that rejuvenates this host and returns
    when it is done (or raises). ``probes``, ``clock``, ``slots`` and
    ``persist`` exist for the engine's own tools and tests; Nova passes
    only the first three arguments.
    """

    def __init__(self, conf, host, rejuvenate, probes=None, clock=time.time,
                 slots=None, persist=None, orchestrator=None):
        self.conf = conf
        self.host = host
        self._rejuvenate = rejuvenate
        opts = conf.vmbeam_aging
        # Unknown probe names and bad windows fail here, before any thread.
        self.probes = probes if probes is not None else \
            aging_mod.load_all(opts.probes, conf)
        self.policy = policy_mod.Policy.from_conf(conf)
        self.slots = slots or slots_mod.Slots.from_conf(conf, host)
        self.persist = opts.persist if persist is None else persist
        self.orchestrator = orchestrator or \
            orchestrator_mod.Orchestrator(conf)
        self._clock = clock
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = None
        self._generation = None
        self._rows = collections.deque(maxlen=opts.window)
        self._latest = {}
        self._trends = {}
        self._errors = {}
        self._decision = None
        self._last = None          # {'at', 'result'} of our last trigger
        if self.persist:
            self._load()

    # --- persistence --------------------------------------------------------

    def _path(self, name):
        return os.path.join(state_dir(self.conf), name)

    def _load(self):
        try:
            with open(self._path(HISTORY_FILE)) as f:
                saved = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            LOG.warning('aging history %s unreadable (%s); starting afresh',
                        self._path(HISTORY_FILE), exc)
            return
        self._generation = saved.get('generation')
        self._rows.extend(saved.get('rows', []))
        self._last = saved.get('last_rejuvenation')

    def _save(self):
        # No fsync: the history is evidence for trends, and a round lost
        # to a host crash is as good as a round not sampled.
        files.replace_json(self._path(HISTORY_FILE),
                           {'generation': self._generation,
                            'rows': list(self._rows),
                            'last_rejuvenation': self._last},
                           indent=1, sort_keys=True)
        files.replace_json(self._path(STATUS_FILE), self.status(),
                           indent=1, sort_keys=True)

    # --- one round ----------------------------------------------------------

    def _sample(self, now):
        context = base.ProbeContext(self.conf, self.orchestrator)
        generation = context.generation
        if generation != self._generation:
            if self._rows:
                LOG.info('hypervisor generation %s -> %s: aging history '
                         'starts afresh', self._generation, generation)
            self._rows.clear()
            self._generation = generation
        values = {}
        for probe in self.probes:
            try:
                sample = probe.sample(context)
            except Exception as exc:
                LOG.warning('aging probe %s failed: %s', probe.name, exc)
                self._errors[probe.name] = str(exc)
                continue
            self._errors.pop(probe.name, None)
            if sample is None:
                self._latest.pop(probe.name, None)
                continue
            values[probe.name] = [sample.value, sample.limit]
            self._latest[probe.name] = sample
        self._rows.append({'t': now, 'v': values})

    def _analyse(self):
        opts = self.conf.vmbeam_aging
        trends = {}
        for probe in self.probes:
            series = [(row['t'], row['v'][probe.name][0]) for row in
                      self._rows if probe.name in row['v']]
            if probe.name not in self._latest or not series:
                continue
            trends[probe.name] = trend_mod.analyse(
                [t for t, _ in series], [v for _, v in series],
                self._latest[probe.name].limit, probe.direction,
                method=opts.trend_test, alpha=opts.significance,
                min_samples=opts.min_samples)
        return trends

    def last_rejuvenation(self):
        """When this host last rejuvenated: by us, or by anyone (journal)."""
        times = [self._last['at']] if self._last else []
        journal_end = _last_run_end(self.orchestrator.state())
        if journal_end:
            times.append(journal_end)
        return max(times) if times else None

    def run_once(self):
        """Sample, analyse, decide and act once; returns the Decision."""
        now = self._clock()
        with self._lock:
            self._sample(now)
            self._trends = self._analyse()
            decision = self.policy.decide(self._trends, now,
                                          self.last_rejuvenation())
            if decision.action == policy_mod.REJUVENATE:
                decision = self._trigger(decision)
            self._decision = dict(decision._asdict(), at=now)
            if self.persist:
                self._save()
        return decision

    def _trigger(self, decision):
        opts = self.conf.vmbeam_aging
        if opts.action != 'rejuvenate':
            LOG.warning('aging: would rejuvenate %s now: %s ([vmbeam_aging] '
                        'action = report)', self.host, decision.reason)
            return decision._replace(
                action=policy_mod.WAIT,
                reason='report only: ' + decision.reason)
        # start() refuses this already; a caller that only runs rounds
        # (run_once) must not get past it either.
        unsafe = slots_mod.fleet_problem(opts.backend_url, opts.single_node)
        if unsafe is not None:
            LOG.error('aging: not rejuvenating %s: %s', self.host, unsafe)
            return decision._replace(
                action=policy_mod.WAIT,
                reason='%s; not rejuvenating: %s (set a shared '
                       'backend_url or single_node)' %
                (decision.reason, unsafe))
        try:
            slot = self.slots.try_acquire()
        except exception.CoordinationUnavailable as exc:
            LOG.warning('aging: no rejuvenation slot for %s: %s', self.host,
                        exc)
            return decision._replace(
                action=policy_mod.WAIT,
                reason='%s; %s' % (decision.reason, exc))
        if slot is None:
            return decision._replace(
                action=policy_mod.WAIT,
                reason='%s; all %d cluster rejuvenation slots are taken' %
                (decision.reason, self.slots.count))
        LOG.warning('aging: rejuvenating %s: %s', self.host, decision.reason)
        self._decision = dict(decision._asdict(), action='rejuvenating',
                              at=self._clock())
        try:
            self._rejuvenate()
            result = 'completed'
        except Exception as exc:
            LOG.exception('aging: rejuvenation of %s failed', self.host)
            result = 'failed: %s' % exc
        finally:
            slot.release()
        # Failures count too: a failing rejuvenation is not retried at
        # every sample.
        self._last = {'at': self._clock(), 'result': result,
                      'reason': decision.reason}
        self._rows.clear()
        return decision._replace(reason='%s; rejuvenation %s' %
                                 (decision.reason, result))

    # --- the thread ---------------------------------------------------------

    def _loop(self):
        interval = self.conf.vmbeam_aging.interval
        while not self._stopped.is_set():
            try:
                self.run_once()
            except Exception:
                # The monitor must outlive one bad round.
                LOG.exception('aging monitor round failed')
            self._stopped.wait(interval)

    def start(self):
        """Start the sampling thread.

        Nothing happens if [vmbeam_aging] enabled is false or the thread
        runs already. With action = rejuvenate, UnsafeFleetConfig or
        BackendNotInstalled (slots.require_fleet_limit) before anything
        starts. The backend itself is first reached from the thread, when
        a rejuvenation is due: a redis that does not answer keeps tooz
        retrying for about a minute, which must not hold up
        nova-compute's start.
        """
        if not self.conf.vmbeam_aging.enabled:
            LOG.info('aging monitor disabled ([vmbeam_aging] enabled)')
            return
        if self._thread is not None and self._thread.is_alive():
            return
        if self.conf.vmbeam_aging.action == 'rejuvenate':
            slots_mod.require_fleet_limit(self.conf)
        self._stopped.clear()
        self._thread = threading.Thread(target=self._loop,
                                        name='vmbeam-aging', daemon=True)
        self._thread.start()
        LOG.info('aging monitor of %s started: probes %s every %.0f s',
                 self.host, ', '.join(p.name for p in self.probes),
                 self.conf.vmbeam_aging.interval)

    def stop(self, timeout=None):
        """Stop the thread; a rejuvenation in progress is waited for."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.slots.stop()

    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def status(self):
        """What the monitor knows, as a dict.

        Per probe the latest value, trend, slope and predicted exhaustion;
        the last decision and why; the last rejuvenation.
        """
        probes = {}
        for probe in self.probes:
            entry = dict(probe.describe())
            sample = self._latest.get(probe.name)
            if sample is not None:
                entry.update(value=sample.value, limit=sample.limit)
            trend = self._trends.get(probe.name)
            if trend is not None:
                entry.update(
                    samples=trend.samples, trend=trend.trend, p=trend.p,
                    slope_per_hour=(trend.slope_per_s * 3600.0
                                    if trend.slope_per_s is not None
                                    else None),
                    significant=trend.significant, why=trend.reason,
                    eta_s=trend.eta_s,
                    exhaustion_at=(self._rows[-1]['t'] + trend.eta_s
                                   if trend.eta_s is not None and self._rows
                                   else None))
            if probe.name in self._errors:
                entry['error'] = self._errors[probe.name]
            probes[probe.name] = entry
        return {'host': self.host,
                'enabled': self.conf.vmbeam_aging.enabled,
                'action': self.conf.vmbeam_aging.action,
                'running': self.running(),
                'generation': self._generation,
                'samples': len(self._rows),
                'updated_at': self._rows[-1]['t'] if self._rows else None,
                'probes': probes,
                'decision': self._decision,
                'last_rejuvenation': self._last}
