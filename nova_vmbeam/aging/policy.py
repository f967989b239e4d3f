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

"""When to rejuvenate: the policy over the probes' trends.

Rejuvenate when some probe's significant trend predicts exhaustion within
the horizon, unless the last rejuvenation was less than the minimum
interval ago, or no maintenance window is open (an exhaustion sooner than
the emergency horizon does not wait for one). The cluster-wide limit is the
monitor's last step (slots), since it must be held for the whole run.
"""

import collections

from nova_vmbeam.aging import window as window_mod

REJUVENATE = 'rejuvenate'
WAIT = 'wait'          # a rejuvenation is due but not allowed yet
NONE = 'none'          # nothing is due

Decision = collections.namedtuple('Decision', 'action reason probe eta_s')


class Policy:

    def __init__(self, horizon, min_interval, schedule,
                 emergency_horizon=0.0):
        self.horizon = horizon
        self.min_interval = min_interval
        self.schedule = schedule
        self.emergency_horizon = emergency_horizon

    @classmethod
    def from_conf(cls, conf):
        opts = conf.vmbeam_aging
        return cls(opts.horizon, opts.min_interval,
                   window_mod.Schedule(opts.maintenance_windows),
                   opts.emergency_horizon)

    def decide(self, trends, now, last_rejuvenation=None):
        """A Decision from ``trends`` ({probe: Trend}) at ``now``.

        Times are epoch seconds; ``last_rejuvenation`` is when the last
        rejuvenation of this host ended.
        """
        due = sorted((t.eta_s, name) for name, t in trends.items()
                     if t.significant and t.eta_s is not None and
                     t.eta_s <= self.horizon)
        if not due:
            etas = [t.eta_s for t in trends.values()
                    if t.significant and t.eta_s is not None]
            reason = 'no probe predicts exhaustion within %.0f s' % \
                self.horizon
            if etas:
                reason += ' (soonest in %.0f s)' % min(etas)
            return Decision(NONE, reason, None, None)
        eta, name = due[0]
        what = '%s predicts exhaustion in %.0f s' % (name, eta)
        if last_rejuvenation is not None and \
                now - last_rejuvenation < self.min_interval:
            return Decision(WAIT, '%s, but the last rejuvenation ended '
                                  '%.0f s ago (minimum interval %.0f s)' %
                            (what, now - last_rejuvenation,
                             self.min_interval), name, eta)
        if not self.schedule.open_at(now):
            if eta < self.emergency_horizon:
                return Decision(REJUVENATE, '%s, sooner than the emergency '
                                            'horizon %.0f s: not waiting '
                                            'for a maintenance window' %
                                (what, self.emergency_horizon), name, eta)
            opening = self.schedule.next_opening(now)
            return Decision(WAIT, '%s; no maintenance window is open (the '
                                  'next opens in %.0f s)' %
                            (what, opening - now), name, eta)
        return Decision(REJUVENATE, what, name, eta)
