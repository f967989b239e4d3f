"""The `vmbeam` command: the engine without any OpenStack service."""

import argparse
import sys

from oslo_log import log as logging

from nova_vmbeam import bench
from nova_vmbeam.conf import CONF
from nova_vmbeam import demo
from nova_vmbeam import exception
from nova_vmbeam import guestimage
from nova_vmbeam import movers as movers_mod
from nova_vmbeam import pool as pool_mod

LOG = logging.getLogger(__name__)


def _int_list(text):
    try:
        return [int(x) for x in text.split(',') if x]
    except ValueError:
        raise argparse.ArgumentTypeError('expected numbers separated by '
                                         'commas, got %r' % text)


def _name_list(text):
    return [x for x in text.split(',') if x]


def cmd_demo(args):
    demo.run(CONF, sys.stdout, guests=args.guests, ram_mib=args.ram_mib,
             dirty_mib_s=args.dirty_mib_s, mover=args.mover)


def cmd_bench(args):
    for name in args.movers or ():
        movers_mod.load(name, CONF)   # unknown names fail before any boot

    def emit(record):
        if args.json:
            print(bench.json_line(record), flush=True)

    started = bench.timestamp()
    records = bench.run(CONF, sizes=args.sizes, mover_names=args.movers,
                        dirty_rates=args.dirty_rates, repeat=args.repeat,
                        work_fraction=args.work_fraction, emit=emit)
    if not args.json:
        print('Machine: %s' % bench.machine_description(CONF))
        print('Run: %s, %d moves per row, guest memory check after every '
              'move\n' % (started, args.repeat))
        print(bench.format_table(bench.summarize(records)))
    return 0 if all(r['ok'] for r in records) else 1


def cmd_movers(args):
    for name in movers_mod.available():
        mover = movers_mod.load(name, CONF)
        print('%-10s guest RAM: %s' % (name, mover.ram_backing or 'any'))


def cmd_image(args):
    image = guestimage.build()
    print('kernel %s\ninitrd %s' % (image.kernel, image.initrd))


def cmd_pool(args):
    pool = pool_mod.RamPool.from_conf(CONF)
    fstype = pool.ensure() if args.action == 'init' else pool.check()
    print('RAM pool %s: %s, ok' % (pool.path, fstype))


def build_parser():
    parser = argparse.ArgumentParser(
        prog='vmbeam',
        description='In-place hypervisor rejuvenation by zero-copy guest '
                    'moves.')
    parser.add_argument('--config-file', action='append', default=[],
                        help='oslo.config file with a [vmbeam] section '
                             '(may be repeated)')
    parser.add_argument('--debug', action='store_true',
                        help='log debug messages')
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('demo', help='boot demo guests and rejuvenate their '
                                    'hypervisor under them')
    p.add_argument('--guests', type=int, default=3)
    p.add_argument('--ram-mib', type=int, default=512)
    p.add_argument('--dirty-mib-s', type=int, default=16)
    p.add_argument('--mover', help='default: [vmbeam] default_mover')
    p.set_defaults(func=cmd_demo)

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
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser('movers', help='list the installed movers')
    p.set_defaults(func=cmd_movers)

    p = sub.add_parser('image', help='build the test guest image')
    p.set_defaults(func=cmd_image)

    p = sub.add_parser('pool', help='create or check the RAM pool '
                                    'directory')
    p.add_argument('action', choices=('init', 'check'))
    p.set_defaults(func=cmd_pool)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.register_options(CONF)
    logging.set_defaults(default_log_levels=logging.get_default_log_levels()
                         + ['nova_vmbeam=WARN', 'qemu.qmp=CRITICAL'])
    cfg_args = []
    for path in args.config_file:
        cfg_args += ['--config-file', path]
    if args.debug:
        cfg_args.append('--debug')
    CONF(cfg_args, project='nova-vmbeam')
    logging.setup(CONF, 'nova-vmbeam')
    try:
        return args.func(args) or 0
    except exception.VMBeamError as exc:
        print('vmbeam: error: %s' % exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == '__main__':
    sys.exit(main())
