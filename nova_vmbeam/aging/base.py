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

"""Aging probes: the plugin base class, what a probe returns, and what it
may look at.

A probe measures one resource of the host or of its hypervisor and says
where that resource is exhausted (its limit) and from which side the value
approaches it (``FALLING`` for free memory or disk, ``RISING`` for a
daemon's size, descriptors, latency). Probes are plugins in the
``nova_vmbeam.aging`` namespace; the monitor loads the ones named in
``[vmbeam_aging] probes``.
"""

import abc
import collections
import functools

from nova_vmbeam.rejuvenation import orchestrator as orchestrator_mod

FALLING = 'falling'
RISING = 'rising'

Sample = collections.namedtuple('Sample', 'value limit')
Sample.__doc__ = ('One measurement: ``value`` and the ``limit`` at which '
                  'the resource is exhausted, in the probe\'s unit.')


class ProbeContext:
    """What one sampling round looks at, computed at most once per round.

    The hypervisor is the journal's active generation; its health report
    (daemon RSS and descriptors, per-guest QEMU overhead) is the
    orchestrator's own, so the monitor and "vmbeam status" see the same
    figures.
    """

    def __init__(self, conf, orchestrator=None):
        self.conf = conf
        self.orchestrator = orchestrator or orchestrator_mod.Orchestrator(
            conf)

    @functools.cached_property
    def _state(self):
        return self.orchestrator.state()

    @property
    def generation(self):
        """Number of the active generation, or None before "init"."""
        return self._state.active

    @functools.cached_property
    def sibling(self):
        """The active generation's sibling while its daemon runs, or None."""
        try:
            sibling = self.orchestrator.active(self._state)
        except orchestrator_mod.NotInitialized:
            return None
        return sibling if sibling.running() else None

    @functools.cached_property
    def health(self):
        """The active generation's health report, or None."""
        if self.sibling is None:
            return None
        return self.orchestrator.health(self.sibling)


class ProbeBase(metaclass=abc.ABCMeta):
    """One aging indicator.

    ``name`` is the entry-point name, ``unit`` what value and limit are in,
    ``direction`` from which side the value approaches its limit.
    """

    name = None
    unit = None
    direction = None

    def __init__(self, conf):
        self.conf = conf

    @abc.abstractmethod
    def sample(self, context):
        """A Sample, or None when there is nothing to measure now.

        Nothing to measure: no active generation, no guests.
        """

    def describe(self):
        return {'unit': self.unit, 'direction': self.direction}
