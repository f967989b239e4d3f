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
import statistics
import time
import uuid

from oslo_log import log as logging

from nova_vmbeam import movers as movers_mod
from nova_vmbeam.nested import agent
from nova_vmbeam.nested import sibling as nested_sibling
from nova_vmbeam.rejuvenation import orchestrator as orchestrator_mod
from vmbeam_devtools import bench
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


def run_nested(conf, ram_mib=128, emit=None, disk_mib=0):
    """Rejuvenate a nested generation without and with standby.

    ``disk_mib``: the guest has a qcow2 disk of that size, served from L0
    over NBD (nested/disks.py), on which its disk worker writes and reads
    back; the disk's errors are counted after each move.
    """
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
        guest = tb.boot(host, tb.spec('bn1', host, ram_mib=ram_mib,
                                      disk_mib=disk_mib))
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
            moved_at = guest.console.offset()
            integrity = tb.check_integrity(guest, moved_at, passes=1,
                                           timeout=600)
            disk_errors = None
            if disk_mib:
                guest.console.wait_for_disk_ok(2, 600, moved_at)
                disk_errors = guest.console.disk_status(moved_at)['errors']
            row = {
                'kind': 'nested', 'method': method, 'ram_mib': ram_mib,
                'disk_mib': disk_mib, 'disk_errors': disk_errors,
                'ok': run.state == 'completed' and bool(result and result.ok)
                and guest.endpoint is not None and not disk_errors,
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
                # Where the pause went, on L0's clock (events' arrival).
                'pause_ms': result and result.pause_ms,
            }
            rows.append(row)
            if emit:
                emit(row)
            host.close()
            host = new_host
        row = _bare_move(conf, orch, tb, guest, ram_mib)
        rows.append(row)
        if emit:
            emit(row)
        host.close()
    finally:
        try:
            tb.cleanup()
        finally:
            _stop_l0(conf)
            conf.set_override('state_path', base_state, 'vmbeam')
    return rows


def _bare_move(conf, orch, tb, guest, ram_mib):
    """The same guest moved once more, by hand, between two L1s.

    The next L1 and the guest's destination in it are prepared as for a
    rejuvenation (``standby``), and the nested mover sets both QEMUs up
    (capabilities, TLS), all before the pause. The pause itself has no
    orchestration: ``migrate`` on the source, ``query-migrate`` until it
    has completed, ``cont`` on the destination, each one QMP command
    through the L1's libvirt. Timed as the mover's moves are, on L0's
    clock: from the source's STOP to the destination's RESUME as they
    reach L0. The journal is not told (the bench ends here).
    """
    mover = movers_mod.load('nested', conf)
    source_l1 = orch.active()
    record = orch.standby('nested')
    target_l1 = orch.sibling(record.number)
    tb.siblings.append(target_l1)
    source_host, target_host = source_l1.host(), target_l1.host()
    try:
        source = source_host.guest(guest.spec.name)
        destination = target_host.guest(guest.spec.name)
        ctx = mover.adopt(source, target_host, destination)
        since = time.time()
        source.execute('migrate', **ctx.migrate_args)
        status = None
        while status not in ('completed', 'failed', 'cancelled'):
            info = source.execute('query-migrate')
            status = info.get('status')
        completed_seen = time.time()
        destination.execute('cont')
        cont_done = time.time()

        def arrival(endpoint, name, status=None):
            # The mover's own reading of the events, on L0's clock.
            return mover._event_at(endpoint, name, since, status,
                                   timeout=2.0)

        stop = arrival(source, 'STOP')
        completed = arrival(source, 'MIGRATION', 'completed')
        resume = arrival(destination, 'RESUME')
        ok = status == 'completed' and None not in (stop, completed, resume)
        if ok:
            source.retire()
            guest.endpoint = destination
        integrity = tb.check_integrity(guest, guest.console.offset(),
                                       passes=1, timeout=600)
        return {
            'kind': 'nested', 'method': 'bare (QMP by hand)',
            'ram_mib': ram_mib, 'ok': ok,
            'total_ms': round((cont_done - since) * 1000.0, 3),
            'downtime_ms': ok and round((resume - stop) * 1000.0, 3),
            'transferred_bytes': info.get('ram', {}).get('transferred'),
            'integrity_errors': integrity['errors'],
            'pause_ms': ok and {
                'device_state': round((completed - stop) * 1000.0, 3),
                'notice': round((completed_seen - completed) * 1000.0, 3),
                'resume': round((resume - completed_seen) * 1000.0, 3)},
        }
    finally:
        source_host.close()
        target_host.close()


# The nested L2's workload (NestedTestbed.spec): the colocated rows of
# run_compare boot the same test guest with the same figures.
COMPARE_RAM_MIB = 128
COMPARE_WORK_MIB = 32
COMPARE_DIRTY_MIB_S = 1


def run_compare(conf, rounds=3, emit=None):
    """Nested against colocated and libvirt precopy, one guest alike.

    One 128 MiB test guest (32 MiB worked, 1 MiB/s dirtied, its memory
    checked after every move) rejuvenated by each method in turn, in one
    run on one machine: colocated zerocopy without and with a standby
    sibling and libvirt's precopy between two colocated siblings
    (bench.run_host), then the nested rows (run_nested).
    """
    rows = bench.run_host(conf, counts=(1,), ram_mib=COMPARE_RAM_MIB,
                          dirty_mib_s=COMPARE_DIRTY_MIB_S, rounds=rounds,
                          emit=emit)
    return rows + run_nested(conf, ram_mib=COMPARE_RAM_MIB, emit=emit)


def _median(values):
    """Median of the figures that were measured (None: none was)."""
    measured = [v for v in values if v is not None]
    return statistics.median(measured) if measured else None


def compare_figures(rows):
    """One dict per method: the figures run_compare's table shows."""
    figures = []
    for r in rows:
        if r.get('kind') == 'nested':
            figures.append({
                'method': r['method'],
                'sibling_ms': r.get('l1_boot_ms') if r['method'] ==
                'nested' else None,
                'standby_ms': r.get('standby_ms'),
                'ready_in_run_ms': r.get('sibling_ready_ms'),
                'end_to_end_ms': r.get('end_to_end_ms'),
                'total_ms': r.get('total_ms'),
                'downtime_ms': r.get('downtime_ms'),
                'bytes': r.get('transferred_bytes'),
                'moves': 1, 'ok': r.get('ok')})
            continue
        per_guest = r.get('per_guest', [])
        figures.append({
            'method': 'colocated %s' % r['method'] if
            r['method'].startswith('zerocopy') else r['method'],
            'sibling_ms': None,
            'standby_ms': r.get('standby_ms'),
            'ready_in_run_ms': r.get('sibling_ready_ms'),
            'end_to_end_ms': r.get('end_to_end_ms'),
            'total_ms': _median([g.get('total_ms') for g in per_guest]),
            'downtime_ms': _median([g.get('downtime_ms')
                                    for g in per_guest]),
            'bytes': _median([g.get('transferred_bytes')
                              for g in per_guest]),
            'moves': len(per_guest), 'ok': r.get('ok')})
    return figures


def format_compare_table(rows):
    """The run's table, with each figure's ratio to libvirt precopy's."""
    figures = compare_figures(rows)
    reference = next((f for f in figures
                      if f['method'] == 'libvirt-precopy'), {})

    def cell(value, key, digits=1):
        if value is None or value is False:
            return ''
        text = '%.*f' % (digits, value)
        base = reference.get(key)
        if base and key != 'sibling_ms':
            text += ' (%.3gx)' % (value / base)
        return text

    head = ('method', 'moves', 'L1 boot ms', 'standby ahead ms',
            'sibling ready in run ms', 'end-to-end ms', 'total ms',
            'downtime ms', 'bytes', 'ok')
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for f in figures:
        lines.append('| ' + ' | '.join((
            f['method'], str(f['moves']), cell(f['sibling_ms'],
                                               'sibling_ms', 0),
            cell(f['standby_ms'], 'standby_ms', 0),
            cell(f['ready_in_run_ms'], 'ready_in_run_ms', 0),
            cell(f['end_to_end_ms'], 'end_to_end_ms', 0),
            cell(f['total_ms'], 'total_ms'),
            cell(f['downtime_ms'], 'downtime_ms'),
            cell(f['bytes'], 'bytes', 0), str(f['ok']))) + ' |')
    lines.append('')
    lines.append('(x): the figure divided by libvirt precopy\'s in the '
                 'same run; colocated rows are medians over their moves.')
    return '\n'.join(lines)


def _stop_l0(conf):
    nested_sibling.stop_all(conf)


def format_nested_table(rows):
    head = ('method', 'disk MiB', 'L1 boot ms', 'standby ms',
            'L1 ready ms (run)', 'end-to-end ms', 'total ms', 'downtime ms',
            'bytes', 'disk errors', 'ok')
    lines = [' | '.join(head), ' | '.join('---' for _ in head)]
    for r in rows:
        lines.append(' | '.join(str(r.get(k, '')) for k in (
            'method', 'disk_mib', 'l1_boot_ms', 'standby_ms',
            'sibling_ready_ms', 'end_to_end_ms', 'total_ms', 'downtime_ms',
            'transferred_bytes', 'disk_errors', 'ok')))
    return '\n'.join(lines)


def run_bandwidth(conf, mib=64, emit=None):
    """Bandwidth in an L1: anonymous memory vs the guest-RAM mapping.

    The BAR's two files, or with bar_mapping = dax the dax device.
    """
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
            tb.pool.allocate(guest_uuid, (mib << 20) +
                             sibling.ram_mapping.pool_head_bytes)
            mapped = host.attach_pool(tb.pool, guest_uuid)
            if sibling.ram_mapping.dax:
                # /dev/daxN.M (bar_mapping = dax): the BAR is not there.
                targets = ('anon', mapped)
            else:
                directory = os.path.dirname(mapped)
                targets = ('anon', directory + '/resource2',
                           directory + '/resource2_wc')
            dom = sibling.l1_domain()
            for target in targets:
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
