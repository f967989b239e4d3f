"""`vmbeam bench`: every mover on the same guests, in one run.

Each measurement boots a self-checking guest whose RAM is placed the way
the mover needs, moves it back and forth between two hypervisor
generations, and counts a move as ok only if the guest's own memory check
still passes afterwards.
"""

import json
import os
import platform
import statistics
import time

from oslo_log import log as logging

from nova_vmbeam import movers as movers_mod
from nova_vmbeam.qemu import version
from nova_vmbeam import testbed as testbed_mod

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
    mover_names = mover_names or movers_mod.available()
    movers = [movers_mod.load(name, conf) for name in mover_names]
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
                record.update(result.as_dict())
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
