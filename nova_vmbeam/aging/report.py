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

"""The aging monitor's status as text (for "vmbeam aging")."""

import datetime


def _when(timestamp):
    if timestamp is None:
        return '-'
    return datetime.datetime.fromtimestamp(
        timestamp, datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%SZ')


def _duration(seconds):
    if seconds is None:
        return 'never'
    for unit, size in (('d', 86400), ('h', 3600), ('min', 60)):
        if seconds >= size:
            return '%.1f %s' % (seconds / size, unit)
    return '%.0f s' % seconds


def format_status(status):
    lines = ['aging monitor of %s: generation %s, %d samples, updated %s' % (
        status['host'], status['generation'], status['samples'],
        _when(status['updated_at']))]
    lines.append('| probe | value | limit | trend | p | slope/h | '
                 'exhaustion in |')
    lines.append('|---|---|---|---|---|---|---|')
    for name, p in sorted(status['probes'].items()):
        if 'value' not in p:
            lines.append('| %s | %s | | | | | |' % (
                name, p.get('error', 'not measured')))
            continue
        lines.append('| %s | %.1f %s | %.1f | %s | %s | %s | %s |' % (
            name, p['value'], p['unit'], p['limit'], p.get('trend') or '-',
            '%.3g' % p['p'] if p.get('p') is not None else '-',
            '%+.3g' % p['slope_per_hour']
            if p.get('slope_per_hour') is not None else '-',
            _duration(p.get('eta_s')) if p.get('significant')
            else '- (%s)' % (p.get('why') or 'no trend')))
    decision = status.get('decision')
    if decision:
        lines.append('decision at %s: %s: %s' % (
            _when(decision['at']), decision['action'], decision['reason']))
    last = status.get('last_rejuvenation')
    if last:
        lines.append('last rejuvenation by the monitor: %s, %s' % (
            _when(last['at']), last['result']))
    return '\n'.join(lines)
