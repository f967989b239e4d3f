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

"""`vmbeam bench`: every mover on the same guests, in one run.

Each measurement boots a self-checking guest whose RAM is placed the way
the mover needs, moves it back and forth between two hypervisor
generations, and counts a move as ok only if the guest's own memory check
still passes afterwards.
"""

import json
import os
import platform
import shutil
import statistics
import time

import libvirt
from oslo_log import log as logging

from nova_vmbeam import guest as guest_mod
from nova_vmbeam import movers as movers_mod
from nova_vmbeam.qemu import version
from vmbeam_devtools import testbed as testbed_mod

LOG = logging.getLogger(__name__)

DEFAULT_SIZES = (512, 1024, 2048, 4096)
DEFAULT_DIRTY_RATES = (0, 64)
FIELDS = ('mover', 'ram_mib', 'dirty_mib_s', 'total_ms', 'downtime_ms',
          'transferred_bytes', 'cpu_s', 'ok')


def machine_description(conf):
    """One line saying what the figures were measured on."""
    with open('/proc/cpuinfo') as cpuinfo:
        model = next((line.split(':', 1)[1].strip() for line in cpuinfo
                      if line.startswith('model name')), 'unknown CPU')
    with open('/proc/meminfo') as meminfo:
        mem_kib = int(meminfo.readline().split()[1])
    qemu = '.'.join(map(str, version.qemu_version(conf.vmbeam.qemu_binary)))
    return ('%s, %d cores, %.0f GiB RAM, Linux %s, QEMU %s, accel %s' %
            (model, os.cpu_count(), mem_kib / 1048576.0, platform.release(),
             qemu, version.resolve_accel(conf.vmbeam.accel)))


def run(conf, sizes=DEFAULT_SIZES, mover_names=None,
        dirty_rates=DEFAULT_DIRTY_RATES, repeat=5, work_fraction=0.25,
        emit=None):
    """Measure; call ``emit(record)`` per move; return all records."""
    if mover_names:
        movers = [movers_mod.load(name, conf) for name in mover_names]
    else:
        # Every mover that works between plain QEMU processes.
        movers = [mover for mover in (movers_mod.load(name, conf) for name
                                      in movers_mod.available())
                  if mover.sibling_kind is None]
    testbed = testbed_mod.Testbed(conf, name='bench')
    records = []
    try:
        hypervisors = (testbed.new_hypervisor(), testbed.new_hypervisor())
        for ram_mib in sizes:
            work_mib = max(16, int(ram_mib * work_fraction))
            for dirty in dirty_rates:
                for mover in movers:
                    records += _measure(testbed, hypervisors, mover, ram_mib,
                                        work_mib, dirty, repeat, emit)
    finally:
        testbed.cleanup()
    return records


def _measure(testbed, hypervisors, mover, ram_mib, work_mib, dirty, repeat,
             emit):
    name = 'bench-%s-%d-%d' % (mover.name, ram_mib, dirty)
    spec = testbed.spec(name, ram_mib, mover.ram_backing, work_mib, dirty)
    guest = testbed.boot(hypervisors[0], spec)
    records = []
    try:
        for attempt in range(repeat):
            target = hypervisors[(attempt + 1) % 2]
            record = {'mover': mover.name, 'ram_mib': ram_mib,
                      'dirty_mib_s': dirty, 'work_mib': work_mib,
                      'run': attempt + 1}
            try:
                result = testbed.move(guest, mover, target)
                record.update(result.to_dict())
                testbed.check_integrity(guest, guest.moved_at)
            except Exception as exc:
                LOG.error('%s move %d failed: %s', name, attempt + 1, exc)
                record.update(ok=False, error=str(exc))
            record.pop('guest', None)
            records.append(record)
            if emit:
                emit(record)
            if not record['ok']:
                break
    finally:
        testbed.destroy(guest)
    return records


def summarize(records):
    """Median figures per (mover, ram_mib, dirty_mib_s), in run order."""
    groups = {}
    for rec in records:
        key = (rec['mover'], rec['ram_mib'], rec['dirty_mib_s'])
        groups.setdefault(key, []).append(rec)
    rows = []
    for (mover, ram_mib, dirty), recs in groups.items():
        good = [r for r in recs if r['ok']]

        def med(field, good=good):
            return statistics.median(r[field] for r in good) if good \
                else float('nan')

        rows.append({'mover': mover, 'ram_mib': ram_mib,
                     'dirty_mib_s': dirty, 'moves': len(recs),
                     'ok': len(good), 'total_ms': med('total_ms'),
                     'downtime_ms': med('downtime_ms'),
                     'transferred_mib': med('transferred_bytes') / 2 ** 20,
                     'cpu_s': med('cpu_s'),
                     'prepare_ms': med('prepare_ms')})
    precopy = {(r['ram_mib'], r['dirty_mib_s']): r['total_ms']
               for r in rows if r['mover'] == 'precopy'}
    for row in rows:
        base = precopy.get((row['ram_mib'], row['dirty_mib_s']))
        row['speedup'] = (base / row['total_ms']
                          if base and row['total_ms'] else None)
    return rows


def format_table(rows):
    header = ('| mover | RAM MiB | dirty MiB/s | ok | total ms (p50) | '
              'downtime ms (p50) | transferred MiB | CPU s | '
              'vs precopy | dest start ms |')
    lines = [header, '|' + '---|' * 10]
    for r in rows:
        lines.append('| %s | %d | %d | %d/%d | %.1f | %.1f | %.2f | %.3f | '
                     '%s | %.0f |' % (
                         r['mover'], r['ram_mib'], r['dirty_mib_s'], r['ok'],
                         r['moves'], r['total_ms'], r['downtime_ms'],
                         r['transferred_mib'], r['cpu_s'],
                         '%.0fx' % r['speedup'] if r['speedup'] else '-',
                         r['prepare_ms']))
    return '\n'.join(lines)


def json_line(record):
    return json.dumps(record, sort_keys=True)


def timestamp():
    return time.strftime('%Y-%m-%d %H:%M:%S %Z')


# --- host rejuvenation against libvirt's own migration -----------------------

def _percentile(values, pct):
    values = sorted(values)
    if not values:
        return float('nan')
    index = min(len(values) - 1, int(round(pct / 100.0 * (len(values) - 1))))
    return values[index]


def _libvirt_precopy(source_host, target_host, name):
    """Move ``name`` with libvirt's own live migration; its figures."""
    dom = source_host.lookup(name)
    started = time.monotonic()
    moved = dom.migrate3(target_host.conn,
                         {libvirt.VIR_MIGRATE_PARAM_URI: 'tcp://127.0.0.1'},
                         libvirt.VIR_MIGRATE_LIVE |
                         libvirt.VIR_MIGRATE_PERSIST_DEST |
                         libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
    total_ms = (time.monotonic() - started) * 1000.0
    # The destination keeps the statistics of the migration it received.
    stats = moved.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    return {'mover': 'libvirt-precopy', 'total_ms': total_ms,
            'downtime_ms': float(stats.get('downtime', 0)),
            'transferred_bytes': int(stats.get('data_processed', 0)),
            'ok': True}


# zerocopy: a cold rejuvenation (the sibling starts when asked);
# zerocopy-standby: "vmbeam standby" ran first (off the clock, its time is
# reported apart), the rejuvenation only switches guests;
# libvirt-precopy: libvirt's own live migration between two siblings.
HOST_METHODS = ('zerocopy', 'zerocopy-standby', 'libvirt-precopy')
# The pause of a move, in order (QmpMigrationMover._pause_ms).
PAUSE_PHASES = ('device_state', 'load', 'notice', 'verify', 'switch',
                'resume')


def run_host(conf, counts=(4, 8), ram_mib=512, dirty_mib_s=16, rounds=3,
             methods=HOST_METHODS, emit=None):
    """Rejuvenate N guests ``rounds`` times, then move them with libvirt.

    Each zerocopy round moves every guest onto a fresh generation, so a
    row holds ``count * rounds`` moves and its p99 is not set by one run.
    libvirt's precopy moves each guest once (it is the reference, far
    from the targets either way).
    """
    base_state = conf.vmbeam.state_path
    rows = []
    for count in counts:
        for method in methods:
            state_path = os.path.join(
                base_state, 'bench-host-%d-%s' % (count, method))
            conf.set_override('state_path', state_path, 'vmbeam')
            if os.path.isdir(state_path):
                # What an interrupted earlier run left: stopped first (its
                # journal says what runs), then removed, so every row
                # starts from nothing.
                testbed_mod.LibvirtTestbed(conf, name='bench').cleanup()
                shutil.rmtree(state_path)
            testbed = testbed_mod.LibvirtTestbed(conf, name='bench')
            try:
                row = _host_row(conf, testbed, method, count, ram_mib,
                                dirty_mib_s, rounds)
                rows.append(row)
                if emit:
                    emit(row)
            finally:
                testbed.cleanup()
                conf.clear_override('state_path', 'vmbeam')
    return rows


def _zerocopy_round(orch, method):
    """One rejuvenation; its timings and per-guest results."""
    standby_ms = 0.0
    if method == 'zerocopy-standby':
        started = time.monotonic()
        orch.standby('zerocopy')
        standby_ms = (time.monotonic() - started) * 1000.0
    run = orch.rejuvenate('zerocopy')
    # From the call (the sibling's start included) until every guest runs
    # on the new generation; the old daemon's own exit comes after and is
    # reported apart.
    return {'standby_ms': standby_ms,
            'sibling_ready_ms': run.sibling_ready_ms,
            'end_to_end_ms': (run.emptied - run.begun) * 1000.0,
            'old_daemon_stop_ms': (run.finished - run.emptied) * 1000.0,
            'prepare_all_ms': run.prepare_all_ms or 0.0,
            'switch_all_ms': run.switch_all_ms or 0.0,
            'per_guest': [g.result.to_dict() if g.result else {'ok': False}
                          for g in run.guests.values()]}


def _precopy_round(conf, orch, guests):
    """libvirt's own live migration of every guest to a new sibling."""
    started = time.monotonic()
    old = orch.active()
    new = orch.generations.new_sibling(old.generation + 1)
    # In the journal first, so cleanup stops it whatever happens next.
    with orch.journal.update() as st:
        st.generations[new.generation] = orch.generations.record(
            new, 'active')
    new.start(seed_from=old)
    new.wait_ready(conf.vmbeam.sibling_start_timeout)
    ready_ms = (time.monotonic() - started) * 1000.0
    source_host, target_host = old.host(), new.host()
    per_guest = []
    try:
        for guest in guests:
            try:
                per_guest.append(_libvirt_precopy(source_host, target_host,
                                                  guest.name))
            except libvirt.libvirtError as exc:
                LOG.error('libvirt migration of %s: %s', guest.name, exc)
                per_guest.append({'ok': False})
        end_to_end = (time.monotonic() - started) * 1000.0
    finally:
        source_host.close()
        target_host.close()
    return {'standby_ms': 0.0, 'sibling_ready_ms': ready_ms,
            'end_to_end_ms': end_to_end, 'old_daemon_stop_ms': 0.0,
            'per_guest': per_guest}


def _host_row(conf, testbed, method, count, ram_mib, dirty_mib_s, rounds):
    orch = testbed.orchestrator
    orch.init()
    zerocopy = method.startswith('zerocopy')
    kind = guest_mod.RAM_FILE if zerocopy else guest_mod.RAM_ANONYMOUS
    guests = [testbed.boot_libvirt(testbed.spec(
        'bh%d' % i, ram_mib, kind, ram_mib // 4, dirty_mib_s), wait=False)
        for i in range(count)]
    for guest in guests:
        testbed.wait_ready(guest)
    marks = {g.name: g.console.offset() for g in guests}
    done = []
    for _ in range(rounds if zerocopy else 1):
        done.append(_zerocopy_round(orch, method) if zerocopy
                    else _precopy_round(conf, orch, guests))
    per_guest = [r for one in done for r in one['per_guest']]
    ok = all(r.get('ok') for r in per_guest)
    for guest in guests:
        testbed.locate(guest)
        try:
            testbed.check_integrity(guest, marks[guest.name])
        except Exception as exc:
            LOG.error('%s: %s', guest.name, exc)
            ok = False
    # The round furthest over its budget speaks for the row.
    worst = max(done, key=lambda one: one['end_to_end_ms'] -
                one['sibling_ready_ms'])
    downtimes = [r.get('downtime_ms', 0) for r in per_guest]
    slowest = max(per_guest, key=lambda r: r.get('downtime_ms', 0))
    phases = sorted({p for r in per_guest for p in r.get('pause_ms', {})})
    return {'method': method, 'guests': count, 'rounds': len(done),
            'moves': len(per_guest), 'ram_mib': ram_mib,
            'dirty_mib_s': dirty_mib_s,
            'standby_ms': max(one['standby_ms'] for one in done),
            'sibling_ready_ms': worst['sibling_ready_ms'],
            'end_to_end_ms': worst['end_to_end_ms'],
            # Of the same round: destinations started, then guests switched.
            'prepare_all_ms': worst.get('prepare_all_ms', 0.0),
            'switch_all_ms': worst.get('switch_all_ms', 0.0),
            'rounds_in_budget': sum(
                one['end_to_end_ms'] <=
                one['sibling_ready_ms'] + 100 * count for one in done),
            'old_daemon_stop_ms': max(one['old_daemon_stop_ms']
                                      for one in done),
            'downtime_p50_ms': _percentile(downtimes, 50),
            'downtime_p99_ms': _percentile(downtimes, 99),
            'pause_p50_ms': {p: _percentile(
                [r['pause_ms'][p] for r in per_guest
                 if p in r.get('pause_ms', {})], 50) for p in phases},
            'slowest_pause_ms': slowest.get('pause_ms', {}),
            # Per round, so rows with more rounds stay comparable.
            'transferred_bytes': sum(
                r.get('transferred_bytes', 0) for r in per_guest) //
            len(done),
            'ok': ok,
            # Every move's own figures, for the raw rows (--json).
            'per_guest': per_guest}


def format_host_table(rows):
    lines = ['| method | guests | moves | standby ms (ahead) | '
             'sibling ready ms | end-to-end ms | budget ms (ready + '
             '100/guest) | prepare all ms | switch all ms | '
             'rounds in budget | old daemon stop ms | '
             'downtime p50 ms | downtime p99 ms | bytes sent per round | '
             'ok |', '|' + '---|' * 15]
    for r in rows:
        lines.append('| %s | %d | %d | %.0f | %.0f | %.0f | %.0f | %.0f | '
                     '%.0f | %d/%d | %.0f | %.1f | %.1f | %d | %s |' % (
                         r['method'], r['guests'], r['moves'],
                         r['standby_ms'], r['sibling_ready_ms'],
                         r['end_to_end_ms'],
                         r['sibling_ready_ms'] + 100 * r['guests'],
                         r.get('prepare_all_ms', 0),
                         r.get('switch_all_ms', 0),
                         r['rounds_in_budget'], r['rounds'],
                         r['old_daemon_stop_ms'], r['downtime_p50_ms'],
                         r['downtime_p99_ms'], r['transferred_bytes'],
                         r['ok']))
    lines.append('')
    lines.append('Where the pause went (ms, from QEMU\'s events and the '
                 'mover\'s marks): p50 of every move, and the slowest '
                 'move of the row')
    lines.append('')
    lines.append('| method | guests | | ' + ' | '.join(PAUSE_PHASES) + ' |')
    lines.append('|' + '---|' * (3 + len(PAUSE_PHASES)))
    for r in rows:
        for label, phases in (('p50', r['pause_p50_ms']),
                              ('slowest', r['slowest_pause_ms'])):
            if phases:
                cells = [r['method'], str(r['guests']), label] + [
                    '%.1f' % phases.get(p, 0) for p in PAUSE_PHASES]
                lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
