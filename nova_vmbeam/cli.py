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

"""The `vmbeam` command: the engine without any OpenStack service."""

import argparse
import json
import os
import pwd
import socket
import sys
import time

from oslo_config import cfg
from oslo_log import log as logging
from stevedore import extension

from nova_vmbeam.aging import monitor as aging_monitor
from nova_vmbeam.aging import report as aging_report
from nova_vmbeam.aging import slots as slots_mod
from nova_vmbeam.conf import CONF
from nova_vmbeam import exception
from nova_vmbeam import movers as movers_mod
from nova_vmbeam.nested import appliance as appliance_mod
from nova_vmbeam.nested.appliance import builder as appliance_builder
from nova_vmbeam import nodeconf
from nova_vmbeam import pool as pool_mod
from nova_vmbeam.rejuvenation import orchestrator as orchestrator_mod

LOG = logging.getLogger(__name__)

#: entry points whose object is called with the subparsers to add
#: commands of their own: the dev tools (vmbeam_devtools) add demo, bench
#: and image that way, so that the runtime never imports them
COMMANDS_NAMESPACE = 'vmbeam.cli_commands'


def cmd_movers(args):
    for name in movers_mod.available():
        mover = movers_mod.load(name, CONF)
        print('%-10s guest RAM: %s' % (name, mover.ram_backing or 'any'))


def cmd_appliance(args):
    if args.action == 'lock':
        pins = appliance_mod.write_lock()
        print('pinned %d packages in %s' % (len(pins),
                                            appliance_builder.LOCK_FILE))
        return 0
    image = appliance_mod.build()
    print('kernel %s\ninitrd %s\nmanifest %s' % (
        image.kernel, image.initrd, image.manifest))
    return 0


def cmd_pool(args):
    pool = pool_mod.load(CONF)
    fstype = pool.ensure() if args.action == 'init' else pool.check()
    print('RAM pool %s: %s, ok' % (pool.path, fstype))
    info = pool.daemon_info()
    if info is not None:
        print('owned by vmbeam-pagemoverd %d at %s: %d pools, %d MiB' % (
            info['pid'], info['socket'], info['pools'], info['total'] >> 20))


def _run_report(run):
    """Per-guest figures of a rejuvenation run (records.Run), a table."""
    lines = ['Run %s: generation %s -> %s, %s' % (
        run.id[:8], run.source, run.target, run.state)]
    lines.append('| guest | state | mover | total ms | downtime ms | '
                 'bytes sent |')
    lines.append('|---|---|---|---|---|---|')
    for name, entry in sorted(run.guests.items()):
        res = entry.result
        lines.append('| %s | %s | %s | %s | %s | %s |' % (
            name, entry.state, res.mover if res else run.mover,
            '%.1f' % res.total_ms if res else '-',
            '%.1f' % res.downtime_ms if res else '-',
            res.transferred_bytes if res else '-'))
        if entry.error:
            lines.append('    %s' % entry.error)
    lines.append('generation ready in %.0f ms%s; moves took %.0f ms' % (
        run.sibling_ready_ms or 0,
        ' (standby, destinations prepared ahead)' if run.standby
        else '', run.moves_ms or 0))
    if run.left:
        lines.append('not moved: %s (run "vmbeam rejuvenate" again)' %
                     ', '.join(run.left))
    return '\n'.join(lines)


def cmd_init(args):
    sibling = orchestrator_mod.Orchestrator(CONF).init()
    print('generation %d active at %s' % (sibling.generation, sibling.uri))


def cmd_status(args):
    status = orchestrator_mod.Orchestrator(CONF).status()
    print('active generation: %s' % status.active)
    for number, record in sorted(status.generations.items()):
        print('  gen%s %-8s %s' % (number, record.generation.state,
                                   record.generation.uri))
        print('    health: ' + record.health.describe())
        for name in sorted(record.health.guests):
            print('    guest %s' % name)
    if status.run:
        print(_run_report(status.run))


def cmd_rejuvenate(args):
    run = orchestrator_mod.Orchestrator(CONF).rejuvenate(
        mover_name=args.mover, concurrency=args.concurrency)
    print(_run_report(run))
    if run.aging_after:
        print('before: ' + run.aging_before.describe())
        print('after:  ' + run.aging_after.describe())
    return 0 if run.state == 'completed' else 1


def cmd_standby(args):
    orch = orchestrator_mod.Orchestrator(CONF)
    if args.discard:
        count = orch.discard_standby()
        print('standby discarded (%d prepared destinations destroyed)' %
              count)
        return 0
    generation = orch.standby(mover_name=args.mover)
    prepared = generation.prepared
    print('standby generation at %s: ready in %.0f ms, %d prepared '
          'destinations' % (generation.uri, generation.ready_ms or 0,
                            len(prepared)))
    for name, destination in sorted(prepared.items()):
        print('  %s: %s, prepared in %.0f ms' % (
            name, destination.mover, destination.prepare_ms))
    return 0


def cmd_move(args):
    run = orchestrator_mod.Orchestrator(CONF).move(args.guest,
                                                   mover_name=args.mover)
    print(_run_report(run))
    entry = run.guests.get(args.guest)
    return 0 if entry and entry.state == 'moved' else 1


def cmd_aging(args):
    if args.action == 'status':
        status = aging_monitor.read_status(CONF)
        if status is None:
            # No monitor has run here: one sample now, without a trend.
            monitor = aging_monitor.AgingMonitor(
                CONF, socket.gethostname(), None, persist=False)
            monitor.run_once()
            status = monitor.status()
        print(json.dumps(status, indent=1, sort_keys=True) if args.json
              else aging_report.format_status(status))
        return
    orchestrator = orchestrator_mod.Orchestrator(CONF)

    def rejuvenate():
        run = orchestrator.rejuvenate()
        print(_run_report(run), flush=True)
        if run.state != 'completed':
            raise exception.VMBeamError('rejuvenation ended %s' %
                                        run.state)

    # The flag decides, whatever [vmbeam_aging] action says: watching
    # never rejuvenates unless asked to here.
    CONF.set_override('action', 'rejuvenate' if args.rejuvenate
                      else 'report', 'vmbeam_aging')
    if args.rejuvenate:
        slots_mod.require_fleet_limit(
            CONF, what='vmbeam aging watch --rejuvenate')
    # Only a monitor that acts keeps the host's history and status.
    monitor = aging_monitor.AgingMonitor(
        CONF, socket.gethostname(), rejuvenate, persist=args.rejuvenate,
        orchestrator=orchestrator)
    rounds = 0
    try:
        while True:
            monitor.run_once()
            print(aging_report.format_status(monitor.status()) + '\n',
                  flush=True)
            rounds += 1
            if args.rounds and rounds >= args.rounds:
                return
            time.sleep(CONF.vmbeam_aging.interval)
    finally:
        monitor.slots.stop()


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

    p = sub.add_parser('init', help='start hypervisor generation 1 (a '
                                    'sibling libvirt daemon) if none is '
                                    'active')
    p.set_defaults(func=cmd_init)

    p = sub.add_parser('status', help='generations, their health and the '
                                      'last rejuvenation')
    p.set_defaults(func=cmd_status)

    p = sub.add_parser('rejuvenate', help='move every guest onto a fresh '
                                          'sibling and retire the old one')
    p.add_argument('--mover', help='default: [vmbeam] default_mover, else the '
                   'one [vmbeam] sibling_kind is made for')
    p.add_argument('--concurrency', type=int,
                   help='guests moved at once (default: [vmbeam] '
                        'rejuvenation_concurrency)')
    p.set_defaults(func=cmd_rejuvenate)

    p = sub.add_parser('standby', help='start the next generation ahead '
                                       'of time, with a paused destination '
                                       'prepared for every guest; the next '
                                       'rejuvenate only switches guests')
    p.add_argument('--mover', help='default: [vmbeam] default_mover, else the '
                   'one [vmbeam] sibling_kind is made for')
    p.add_argument('--discard', action='store_true',
                   help='instead: stop the standby generation and its '
                        'prepared destinations')
    p.set_defaults(func=cmd_standby)

    p = sub.add_parser('move', help='move one guest onto the next '
                                    'generation')
    p.add_argument('guest')
    p.add_argument('--mover', help='default: [vmbeam] default_mover, else the '
                   'one [vmbeam] sibling_kind is made for')
    p.set_defaults(func=cmd_move)

    p = sub.add_parser('aging', help='the aging monitor: its last status, '
                                     'or watch the probes in the '
                                     'foreground')
    p.add_argument('action', choices=('status', 'watch'))
    p.add_argument('--json', action='store_true',
                   help='status: the whole status as JSON')
    p.add_argument('--rounds', type=int, default=0,
                   help='watch: stop after this many samples (default: '
                        'until interrupted)')
    p.add_argument('--rejuvenate', action='store_true',
                   help='watch: rejuvenate when the policy says so and a '
                        'slot of [vmbeam_aging] backend_url is free '
                        '(refused unless that backend is shared by the '
                        'compute hosts or [vmbeam_aging] single_node is '
                        'true; default: only report what it would do)')
    p.set_defaults(func=cmd_aging)

    p = sub.add_parser('movers', help='list the installed movers')
    p.set_defaults(func=cmd_movers)

    p = sub.add_parser('appliance', help='the L1 appliance of the nested '
                       'sibling: build it from the pinned Debian packages '
                       '(cached), or pin the current versions (lock)')
    p.add_argument('action', choices=('build', 'lock'))
    p.set_defaults(func=cmd_appliance)

    p = sub.add_parser('pool', help='create or check the RAM pool '
                                    'directory')
    p.add_argument('action', choices=('init', 'check'))
    p.set_defaults(func=cmd_pool)

    nodeconf.add_parser(sub)
    _add_installed_commands(sub)
    return parser


def _skip_missing(manager, entrypoint, exc):
    # An add-on whose package is not installed (a compute node without the
    # dev tools) offers no commands; anything else broken is a bug.
    if not isinstance(exc, ImportError):
        raise exc


def _add_installed_commands(sub):
    """The commands of installed add-ons (COMMANDS_NAMESPACE)."""
    commands = extension.ExtensionManager(
        COMMANDS_NAMESPACE, on_load_failure_callback=_skip_missing)
    for ext in sorted(commands, key=lambda ext: ext.name):
        ext.plugin(sub)


# The commands that read or write the node's state (journal, locks, pool).
_STATE_COMMANDS = ('init', 'status', 'rejuvenate', 'standby', 'move',
                   'aging', 'pool')


def _refuse_foreign_state(command):
    """Refuse root on a state_path an unprivileged nova-compute owns.

    A journal or lock file root writes there would be root's: nova-compute
    could no longer read or take it. Changes nothing.
    """
    path = CONF.vmbeam.state_path
    if command not in _STATE_COMMANDS or os.geteuid() != 0:
        return
    try:
        owner = os.stat(path).st_uid
    except OSError:
        return
    if owner == 0:
        return
    try:
        name = pwd.getpwuid(owner).pw_name
    except KeyError:
        name = str(owner)
    raise exception.InvalidInput(
        reason='[vmbeam] state_path %s belongs to %s, whom nova-compute '
               'runs as: run vmbeam as that user (sudo -u %s vmbeam ...), '
               'so that what it writes stays readable to nova-compute' %
               (path, name, name))


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.register_options(CONF)
    # stdout is for results (tables, --json lines); logs go to stderr.
    CONF.set_default('use_stderr', True)
    logging.set_defaults(default_log_levels=logging.get_default_log_levels()
                         + ['nova_vmbeam=WARN', 'vmbeam_devtools=WARN',
                            # its daemon's start, said at INFO each run
                            'oslo.privsep.daemon=WARN', 'oslo_privsep=WARN',
                            'qemu.qmp=CRITICAL',
                            'stevedore=ERROR'])
    cfg_args = []
    for path in args.config_file:
        cfg_args += ['--config-file', path]
    if args.debug:
        cfg_args.append('--debug')
    try:
        CONF(cfg_args, project='nova-vmbeam')
    except cfg.Error as exc:
        # A missing or unparsable file is the caller's input: one line
        # that names it, the usual exit status for bad input.
        print('vmbeam: error: %s; give a readable nova.conf (or none: the '
              'defaults need no file) with --config-file' % exc,
              file=sys.stderr)
        return 2
    logging.setup(CONF, 'nova-vmbeam')
    try:
        _refuse_foreign_state(args.command)
        return args.func(args) or 0
    except exception.VMBeamError as exc:
        print('vmbeam: error: %s' % exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == '__main__':
    sys.exit(main())
