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

"""The dev tools' `vmbeam` commands: demo, bench and image.

The runtime's command line (nova_vmbeam.cli) finds them through the
``vmbeam.cli_commands`` entry points (each adds its subparser), so it
never imports this package.
"""

import argparse
import sys

from nova_vmbeam.conf import CONF
from nova_vmbeam import movers as movers_mod
from vmbeam_devtools import bench
from vmbeam_devtools import demo
from vmbeam_devtools import guestimage
from vmbeam_devtools.nested import bench as nested_bench
from vmbeam_devtools.nested import testbed as nested_testbed


def _int_list(text):
    try:
        return [int(x) for x in text.split(',') if x]
    except ValueError:
        raise argparse.ArgumentTypeError('expected numbers separated by '
                                         'commas, got %r' % text)


def _name_list(text):
    return [x for x in text.split(',') if x]


def cmd_demo(args):
    record = demo.run(CONF, sys.stdout, guests=args.guests,
                      ram_mib=args.ram_mib, dirty_mib_s=args.dirty_mib_s,
                      mover=args.mover, concurrency=args.concurrency)
    return 0 if record.state == 'completed' else 1


def _print_run(started, detail=''):
    """The header of every bench table: the machine, and when."""
    print('Machine: %s' % bench.machine_description(CONF))
    print('Run: %s%s\n' % (started, detail))


def cmd_bench(args):
    try:
        return _bench(args)
    except nested_testbed.TooSlow as exc:
        # Nothing measured failed: no nested figure can be had here.
        print('vmbeam bench: no nested figures on this machine: %s. An L2 '
              'has %d s to boot under TCG inside TCG; run the bench on a '
              'faster or less loaded machine.' % (
                  exc, nested_testbed.L2_BOOT_BUDGET), file=sys.stderr)
        return 1


def _bench(args):
    for name in args.movers or ():
        movers_mod.load(name, CONF)   # unknown names fail before any boot

    def emit(record):
        if args.json:
            print(bench.json_line(record), flush=True)

    started = bench.timestamp()
    if args.compare:
        rows = nested_bench.run_compare(CONF, rounds=args.host_rounds,
                                        emit=emit)
        if not args.json:
            _print_run(started)
            print(nested_bench.format_compare_table(rows))
        return 0 if all(r.get('ok') for r in rows) else 1
    if args.nested or args.nested_bandwidth:
        if args.nested:
            rows = nested_bench.run_nested(CONF, emit=emit,
                                           disk_mib=args.disk_mib)
        else:
            rows = nested_bench.run_bandwidth(CONF, emit=emit)
        if not args.json:
            _print_run(started)
            if args.nested:
                print(nested_bench.format_nested_table(rows))
            else:
                for row in rows:
                    print('%(target)s: write %(write_mb_s).0f MB/s, read '
                          '%(read_mb_s).0f MB/s' % row)
        return 0 if all(r.get('ok', True) for r in rows) else 1
    if args.host:
        unknown = set(args.host_methods) - set(bench.HOST_METHODS)
        if unknown:
            print('unknown --host-methods %s; choose from %s' % (
                ','.join(sorted(unknown)), ','.join(bench.HOST_METHODS)),
                file=sys.stderr)
            return 2
        rows = bench.run_host(CONF, counts=args.host,
                              rounds=args.host_rounds,
                              methods=args.host_methods, emit=emit)
        if not args.json:
            _print_run(started)
            print(bench.format_host_table(rows))
        return 0 if all(r['ok'] for r in rows) else 1
    records = bench.run(CONF, sizes=args.sizes, mover_names=args.movers,
                        dirty_rates=args.dirty_rates, repeat=args.repeat,
                        work_fraction=args.work_fraction, emit=emit)
    if not args.json:
        _print_run(started, ', %d moves per row, guest memory check '
                   'after every move' % args.repeat)
        print(bench.format_table(bench.summarize(records)))
    return 0 if all(r['ok'] for r in records) else 1


def cmd_image(args):
    image = guestimage.build()
    print('kernel %s\ninitrd %s' % (image.kernel, image.initrd))


def add_demo(sub):
    """`vmbeam demo`."""
    p = sub.add_parser('demo', help='boot demo guests and rejuvenate their '
                                    'hypervisor under them')
    p.add_argument('--guests', type=int, default=3)
    p.add_argument('--ram-mib', type=int, default=512)
    p.add_argument('--dirty-mib-s', type=int, default=16)
    p.add_argument('--mover', help='default: [vmbeam] default_mover, else the '
                   'one [vmbeam] sibling_kind is made for')
    p.add_argument('--concurrency', type=int,
                   help='guests moved at once (default: [vmbeam] '
                        'rejuvenation_concurrency)')
    p.set_defaults(func=cmd_demo)


def add_bench(sub):
    """`vmbeam bench`."""
    p = sub.add_parser('bench', help='measure every mover on the same '
                                     'guests')
    p.add_argument('--sizes', type=_int_list,
                   default=list(bench.DEFAULT_SIZES),
                   help='guest RAM sizes in MiB (default %(default)s)')
    p.add_argument('--movers', type=_name_list,
                   help='movers to measure (default: all installed)')
    p.add_argument('--dirty-rates', type=_int_list,
                   default=list(bench.DEFAULT_DIRTY_RATES),
                   help='MiB/s the guest workload dirties; 0 = idle '
                        '(default %(default)s)')
    p.add_argument('--repeat', type=int, default=5,
                   help='moves per guest (default %(default)s)')
    p.add_argument('--work-fraction', type=float, default=0.25,
                   help='share of guest RAM the workload uses '
                        '(default %(default)s)')
    p.add_argument('--json', action='store_true',
                   help='one JSON object per line per move')
    p.add_argument('--host', type=_int_list, metavar='COUNTS',
                   help='instead: rejuvenate a libvirt host with this many '
                        'guests (e.g. 4,8), against libvirt\'s own precopy '
                        'migration of the same guests between the two '
                        'siblings')
    p.add_argument('--host-rounds', type=int, default=3,
                   help='with --host: rejuvenations in a row per row of '
                        'the table, each moving every guest (default '
                        '%(default)s)')
    p.add_argument('--host-methods', type=_name_list,
                   default=list(bench.HOST_METHODS),
                   help='with --host: the methods to run (default: %s)' %
                        ','.join(bench.HOST_METHODS))
    p.add_argument('--nested', action='store_true',
                   help='instead: rejuvenate a nested generation (an L1 '
                        'hypervisor VM) with one 128 MiB L2 guest, without '
                        'and with a pre-warmed standby L1')
    p.add_argument('--disk-mib', type=int, default=0,
                   help='with --nested: give the guest a qcow2 disk of '
                        'this many MiB, served from the host over NBD, '
                        'which it writes and reads back throughout')
    p.add_argument('--compare', action='store_true',
                   help='instead: one 128 MiB guest rejuvenated by every '
                        'method in one run: colocated zerocopy (without '
                        'and with a standby sibling, --host-rounds times '
                        'each), libvirt precopy, nested (without and with '
                        'a standby L1, and a bare move by hand)')
    p.add_argument('--nested-bandwidth', action='store_true',
                   help='instead: memory bandwidth inside an L1 of '
                        'anonymous memory against the guest RAM BAR '
                        '(resource2, resource2_wc)')
    p.set_defaults(func=cmd_bench)


def add_image(sub):
    """`vmbeam image`."""
    p = sub.add_parser('image', help='build the test guest image')
    p.set_defaults(func=cmd_image)
