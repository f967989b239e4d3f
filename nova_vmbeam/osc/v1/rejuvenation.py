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

"""openstack hypervisor rejuvenate / hypervisor rejuvenation show."""

import argparse
import time

from cliff import columns
from osc_lib.command import command
from osc_lib import exceptions

#: per-guest figures, in the order shown
GUEST_FIELDS = ('name', 'uuid', 'state', 'mover', 'downtime_ms',
                'total_ms', 'transferred_bytes', 'error')
#: seconds between two status polls while waiting
POLL_INTERVAL = 1.0
DEFAULT_WAIT_TIMEOUT = 3600


def guests_of(run):
    """A run's guests as flat records: GUEST_FIELDS, sorted by name."""
    rows = []
    for name, entry in sorted(((run or {}).get('guests') or {}).items()):
        result = entry.get('result') or {}
        rows.append({
            'name': name,
            'uuid': entry.get('uuid'),
            'state': entry.get('state'),
            'mover': result.get('mover') or entry.get('mover'),
            'downtime_ms': result.get('downtime_ms'),
            'total_ms': result.get('total_ms'),
            'transferred_bytes': result.get('transferred_bytes'),
            'error': entry.get('error') or result.get('error'),
        })
    return rows


def _figure(value):
    if value is None:
        return '-'
    if isinstance(value, float):
        return '%.1f' % value
    return str(value)


class GuestsColumn(columns.FormattableColumn):
    """Per-guest figures: one line per guest in a table, a list in JSON."""

    def human_readable(self):
        if not self._value:
            return ''
        return '\n'.join(
            '%s %s %s mover=%s downtime_ms=%s total_ms=%s bytes=%s%s' % (
                g['name'], g['uuid'], g['state'], _figure(g['mover']),
                _figure(g['downtime_ms']), _figure(g['total_ms']),
                _figure(g['transferred_bytes']),
                ' error=%s' % g['error'] if g['error'] else '')
            for g in self._value)

    def machine_readable(self):
        return [dict(g) for g in self._value or ()]


class DictColumn(columns.FormattableColumn):
    """A nested record (aging state, running request): key=value lines."""

    def human_readable(self):
        if not self._value:
            return ''
        return '\n'.join('%s=%s' % (k, v)
                         for k, v in sorted(self._value.items()))

    def machine_readable(self):
        return self._value


def moved_count(run):
    guests = guests_of(run)
    return '%d/%d' % (sum(g['state'] == 'moved' for g in guests),
                      len(guests))


def run_fields(run, prefix='run_'):
    """The fields shown for one run (current or last)."""
    run = run or {}
    return {
        prefix + 'id': run.get('id'),
        prefix + 'state': run.get('state'),
        prefix + 'from_generation': run.get('from'),
        prefix + 'to_generation': run.get('to'),
        prefix + 'mover': run.get('mover'),
        prefix + 'started': run.get('started'),
        prefix + 'finished': run.get('finished'),
        prefix + 'moved': moved_count(run) if run else None,
        prefix + 'guests': GuestsColumn(guests_of(run)),
    }


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            'must be a whole number, 1 or more, not %r' % text)
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(
            'must be a number of seconds above 0, not %r' % text)
    return value


class RejuvenateHost(command.ShowOne):
    _description = (
        'Rejuvenate a compute host: start a fresh hypervisor generation '
        'on it and move every running guest onto it in place (VMBeam). '
        'Returns once the run has started; with --wait, shows the '
        'progress and each guest\'s figures at the end, and exits '
        'non-zero if a guest was not moved.')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            'host', metavar='<host>',
            help='Compute host (as "openstack compute service list" names '
                 'it) running nova-compute with VMBeamDriver')
        parser.add_argument(
            '--wait', action='store_true',
            help='Wait for the run to finish, showing progress on stderr')
        parser.add_argument(
            '--concurrency', metavar='<n>', type=_positive_int,
            help='Guests moved at once (default: the host\'s [vmbeam] '
                 'rejuvenation_concurrency)')
        parser.add_argument(
            '--mover', metavar='<name>',
            help='Mover to use: zerocopy, cpr or precopy (default: the '
                 'host\'s [vmbeam] default_mover)')
        parser.add_argument(
            '--timeout', metavar='<seconds>', type=_positive_float,
            default=DEFAULT_WAIT_TIMEOUT,
            help='With --wait: give up waiting after this many seconds '
                 '(the run goes on), default %d' % DEFAULT_WAIT_TIMEOUT)
        return parser

    def take_action(self, parsed_args):
        client = self.app.client_manager.vmbeam
        host = parsed_args.host
        started = client.rejuvenate_host(
            host, concurrency=parsed_args.concurrency,
            mover=parsed_args.mover)
        self.failed = False
        fields = {'host': host, 'run_id': started['run_id'],
                  'state': started['state'],
                  'generation': started['generation']}
        if parsed_args.wait:
            status = self._wait(client, host, started['run_id'],
                                parsed_args.timeout)
            run = _run_of(status, started['run_id'])
            request = status.get('last_request') or {}
            guests = guests_of(run)
            fields.update(run_fields(run, prefix=''))
            fields.update(host=host, run_id=started['run_id'],
                          generation=started['generation'],
                          active_generation=status.get('active_generation'),
                          state=(run or {}).get('state') or
                          request.get('state'),
                          error=request.get('error'))
            self.failed = bool(
                request.get('state') not in (None, 'completed') or
                any(g['state'] not in ('moved', 'gone') for g in guests) or
                (run or {}).get('state') != 'completed')
        names = sorted(fields)
        return names, [fields[n] for n in names]

    def run(self, parsed_args):
        result = super().run(parsed_args)
        if getattr(self, 'failed', False):
            self.app.stderr.write(
                'Rejuvenation of %s did not move every guest: see the '
                'guests\' errors above; the guests not moved still run on '
                'the old generation.\n' % parsed_args.host)
            return 1
        return result

    def _wait(self, client, host, run_id, timeout):
        """Poll the host until the run is over; progress on stderr."""
        deadline = time.monotonic() + timeout
        seen = {}
        out = self.app.stderr
        while True:
            status = client.status(host)
            run = _run_of(status, run_id)
            guests = guests_of(run)
            for guest in guests:
                if seen.get(guest['name']) != guest['state']:
                    seen[guest['name']] = guest['state']
                    out.write('%s: %s %s (%s moved)\n' % (
                        host, guest['name'], guest['state'],
                        moved_count(run)))
                    out.flush()
            running = status.get('running')
            if not running or running.get('run_id') != run_id:
                return status
            if time.monotonic() > deadline:
                raise exceptions.CommandError(
                    'Rejuvenation %s of %s still runs after %.0f s (%s '
                    'moved); it goes on. Follow it with "openstack '
                    'hypervisor rejuvenation show %s".' % (
                        run_id, host, timeout, moved_count(run), host))
            time.sleep(POLL_INTERVAL)


def _run_of(status, run_id):
    """The journal's record of run ``run_id`` (current run or history)."""
    for run in [status.get('run')] + list(status.get('history') or []):
        if run and run.get('id') == run_id:
            return run
    return None


class ShowRejuvenation(command.ShowOne):
    _description = (
        'Show the rejuvenation state of a compute host: its active '
        'hypervisor generation, the current or last run with each guest\'s '
        'figures, the request under way and the aging monitor\'s state.')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            'host', metavar='<host>',
            help='Compute host running nova-compute with VMBeamDriver')
        return parser

    def take_action(self, parsed_args):
        client = self.app.client_manager.vmbeam
        host = parsed_args.host
        status = client.status(host)
        fields = {
            'host': status.get('host', host),
            'active_generation': status.get('active_generation'),
            'generations': ', '.join(
                '%s:%s' % (gen, (record or {}).get('state'))
                for gen, record in sorted(
                    (status.get('generations') or {}).items(),
                    key=lambda item: int(item[0]))),
            'connection': status.get('connection'),
            'running': DictColumn(status.get('running')),
            'last_request': DictColumn(status.get('last_request')),
            'aging': DictColumn(status.get('aging')),
            'runs_in_history': len(status.get('history') or ()),
        }
        fields.update(run_fields(status.get('run')))
        names = sorted(fields)
        return names, [fields[n] for n in names]
