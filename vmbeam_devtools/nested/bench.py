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

"""Benchmarks of the nested sibling (vmbeam bench --nested[-bandwidth]).

--nested: one L2 test guest (memworker, integrity checked after every
move) in a nested generation run by the orchestrator; rejuvenate without
a standby (the L1 boot is part of the run), then with a pre-warmed
standby (``vmbeam standby``: next L1 booted, the destination waiting in
it). Each row: L1 boot, per-guest total, downtime and bytes on the wire,
rejuvenation end to end.

--nested-bandwidth: memory bandwidth inside an L1 of anonymous memory
against the guest-RAM BAR mapped as ``resource2`` and ``resource2_wc``
(docs/design/nested.md, "Caching").
"""

import os
import shutil
import time
import uuid

from oslo_log import log as logging

from nova_vmbeam.nested import agent
from nova_vmbeam.nested import sibling as nested_sibling
from nova_vmbeam.rejuvenation import orchestrator as orchestrator_mod
from vmbeam_devtools.nested import appliance as devappliance
from vmbeam_devtools.nested import testbed as nested_testbed

LOG = logging.getLogger(__name__)

BWPROBE = devappliance.BWPROBE


def _isolated(conf, name):
    state_path = os.path.join(conf.vmbeam.state_path, name)
    conf.set_override('state_path', state_path, 'vmbeam')
    if os.path.isdir(state_path):
        shutil.rmtree(state_path)
    return state_path


def run_nested(conf, ram_mib=128, emit=None):
    """Rejuvenate a nested generation without and with standby."""
    base_state = conf.vmbeam.state_path
    conf.set_override('sibling_kind', 'nested', 'vmbeam')
    conf.set_override('default_mover', 'nested', 'vmbeam')
    _isolated(conf, 'bench-nested')
    rows = []
    tb = nested_testbed.NestedTestbed(conf, name='bench')
    try:
        orch = orchestrator_mod.Orchestrator(conf)
        started = time.monotonic()
        gen1 = orch.init()
        l1_boot_ms = (time.monotonic() - started) * 1000.0
        tb.siblings.append(gen1)
        host = gen1.host()
        guest = tb.boot(host, tb.spec('bn1', host, ram_mib=ram_mib))
        for method in ('nested', 'nested-standby'):
            standby_ms = 0.0
            if method == 'nested-standby':
                started = time.monotonic()
                orch.standby('nested')
                standby_ms = (time.monotonic() - started) * 1000.0
            run = orch.rejuvenate('nested')
            tb.siblings.append(orch.active())
            result = run.guests['bn1'].result
            new_host = orch.active().host()
            guest.endpoint = new_host.guest('bn1')
            integrity = tb.check_integrity(guest, guest.console.offset(),
                                           passes=1, timeout=600)
            row = {
                'kind': 'nested', 'method': method, 'ram_mib': ram_mib,
                'ok': run.state == 'completed' and bool(result and result.ok)
                and guest.endpoint is not None,
                'l1_boot_ms': round(l1_boot_ms, 1),
                'standby_ms': round(standby_ms, 1),
                'sibling_ready_ms': round(run.sibling_ready_ms or 0, 1),
                'end_to_end_ms': round((run.emptied - run.begun)
                                       * 1000.0, 1),
                'retire_ms': round((run.finished - run.emptied)
                                   * 1000.0, 1),
                'total_ms': result and result.total_ms,
                'downtime_ms': result and result.downtime_ms,
                'transferred_bytes': result and result.transferred_bytes,
                'standby': result and result.standby,
                'integrity_errors': integrity['errors'],
            }
            rows.append(row)
            if emit:
                emit(row)
            host.close()
            host = new_host
        host.close()
    finally:
        try:
            tb.cleanup()
        finally:
            _stop_l0(conf)
            conf.set_override('state_path', base_state, 'vmbeam')
    return rows


def _stop_l0(conf):
    nested_sibling.stop_all(conf)


def format_nested_table(rows):
    head = ('method', 'L1 boot ms', 'standby ms', 'L1 ready ms (run)',
            'end-to-end ms', 'total ms', 'downtime ms', 'bytes', 'ok')
    lines = [' | '.join(head), ' | '.join('---' for _ in head)]
    for r in rows:
        lines.append(' | '.join(str(v) for v in (
            r['method'], r['l1_boot_ms'], r['standby_ms'],
            r['sibling_ready_ms'], r['end_to_end_ms'], r['total_ms'],
            r['downtime_ms'], r['transferred_bytes'], r['ok'])))
    return '\n'.join(lines)


def run_bandwidth(conf, mib=64, emit=None):
    """Bandwidth in an L1: anonymous memory vs the guest-RAM BAR."""
    base_state = conf.vmbeam.state_path
    _isolated(conf, 'bench-nested-bw')
    tb = nested_testbed.NestedTestbed(conf, name='bench')
    rows = []
    guest_uuid = str(uuid.uuid4())
    try:
        sibling = tb.start_sibling(1)
        host = sibling.host()
        try:
            tb.pool.ensure()
            tb.pool.allocate(guest_uuid, mib << 20)
            bar = host.attach_pool(tb.pool, guest_uuid)
            directory = os.path.dirname(bar)
            dom = sibling.l1_domain()
            for target in ('anon', directory + '/resource2',
                           directory + '/resource2_wc'):
                out = agent.sh(dom, '%s %s %d' % (BWPROBE, target, mib),
                               timeout=600)
                fields = dict(kv.split('=', 1) for kv in out.split()[1:])
                row = {'kind': 'nested-bandwidth', 'target': target,
                       'mib': mib, 'accel': 'tcg',
                       'write_mb_s': float(fields['write_mb_s']),
                       'read_mb_s': float(fields['read_mb_s'])}
                rows.append(row)
                if emit:
                    emit(row)
        finally:
            host.close()
    finally:
        try:
            tb.cleanup()
        finally:
            _stop_l0(conf)
            # Only now: the L1 QEMU has let go of the pool.
            tb.pool.release(guest_uuid)
            conf.set_override('state_path', base_state, 'vmbeam')
    return rows
