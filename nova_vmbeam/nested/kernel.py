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

"""The L1's own kernel, read inside it: the nested sibling's KernelHealth.

What shows that a nested rejuvenation renewed the hypervisor's kernel (its
boot id and uptime) and what the aging monitor watches of that kernel (its
available memory and unreclaimable slab). Read through the L1's guest
agent, as everything inside the L1 is (agent.py): one busybox ``cat``.
"""

from oslo_log import log as logging

from nova_vmbeam.nested import agent
from nova_vmbeam import records

LOG = logging.getLogger(__name__)

#: boot id (one line), uptime ("<seconds> <idle seconds>"), then meminfo
SCRIPT = 'cat /proc/sys/kernel/random/boot_id /proc/uptime /proc/meminfo'
_MEMINFO_KEYS = {'MemTotal': 'mem_total_kib',
                 'MemAvailable': 'mem_available_kib',
                 'SUnreclaim': 'slab_unreclaimable_kib'}


def parse(text):
    """records.KernelHealth from SCRIPT's output; ValueError if it is not."""
    lines = text.splitlines()
    if len(lines) < 3:
        raise ValueError('expected a boot id, an uptime and meminfo, got '
                         '%r' % text[:200])
    boot_id = lines[0].strip()
    uptime_s = float(lines[1].split()[0])
    values = {}
    for line in lines[2:]:
        key, _, rest = line.partition(':')
        if key in _MEMINFO_KEYS:
            values[_MEMINFO_KEYS[key]] = int(rest.split()[0])
    missing = sorted(set(_MEMINFO_KEYS.values()) - set(values))
    if not boot_id or missing:
        raise ValueError('no %s in %r' % (', '.join(missing) or 'boot id',
                                          text[:200]))
    return records.KernelHealth(boot_id=boot_id, uptime_s=uptime_s,
                                **values)


def measure(dom, timeout=10):
    """The L1 ``dom``'s KernelHealth, or None if its agent cannot tell.

    None rather than an error: the health report is aging evidence, and an
    L1 whose agent does not answer still has its daemon figures.
    """
    try:
        return parse(agent.sh(dom, SCRIPT, timeout=timeout))
    except (agent.AgentError, ValueError) as exc:
        LOG.warning('the kernel of L1 %s could not be read: %s',
                    dom.name(), exc)
        return None
