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

"""Maintenance windows: when the aging monitor may rejuvenate.

Syntax of one window (``[vmbeam_aging] maintenance_windows``), in UTC:
``DAYS HH:MM-HH:MM`` where DAYS is ``*`` (every day), a day name (Mon ..
Sun) or a range of days (``Mon-Fri``, ``Fri-Mon`` wraps over the week's
end). DAYS names the day a window opens; a window whose end is not after
its start runs past midnight into the next day (``Sat 23:00-01:00``).
"""

import datetime
import re

from nova_vmbeam import exception

DAYS = ('mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun')
_SYNTAX = re.compile(r'^\s*(\*|[a-z]{3}(?:-[a-z]{3})?)\s+'
                     r'(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$',
                     re.IGNORECASE)


class InvalidWindow(exception.InvalidInput):
    msg_fmt = ('Invalid maintenance window %(text)r in [vmbeam_aging] '
               'maintenance_windows: %(why)s. Write "DAYS HH:MM-HH:MM" in '
               'UTC, DAYS being *, a day (Mon..Sun) or a range (Mon-Fri), '
               'e.g. "Sat 02:00-04:00".')


def _day(text, window):
    try:
        return DAYS.index(text.lower())
    except ValueError:
        raise InvalidWindow(text=window, why='unknown day %r' % text)


class Window:
    """One weekly window: the days it opens and its minutes of the day."""

    def __init__(self, text):
        match = _SYNTAX.match(text)
        if not match:
            raise InvalidWindow(text=text, why='not in the form DAYS '
                                               'HH:MM-HH:MM')
        days, h1, m1, h2, m2 = match.groups()
        if days == '*':
            self.days = set(range(7))
        elif '-' in days:
            first, last = (_day(d, text) for d in days.split('-'))
            self.days = {(first + i) % 7
                         for i in range((last - first) % 7 + 1)}
        else:
            self.days = {_day(days, text)}
        for hour, minute in ((h1, m1), (h2, m2)):
            if int(hour) > 24 or int(minute) > 59 or \
                    (int(hour) == 24 and int(minute)):
                raise InvalidWindow(text=text, why='%s:%s is not a time of '
                                                   'day' % (hour, minute))
        self.start = int(h1) * 60 + int(m1)
        self.end = int(h2) * 60 + int(m2)
        self.length = (self.end - self.start) % 1440 or 1440
        self.text = text.strip()

    def opening_before(self, when):
        """The latest opening at or before ``when`` (aware UTC datetime)."""
        midnight = when.replace(hour=0, minute=0, second=0, microsecond=0)
        for back in range(8):
            day = midnight - datetime.timedelta(days=back)
            opens = day + datetime.timedelta(minutes=self.start)
            if day.weekday() in self.days and opens <= when:
                return opens
        return None

    def contains(self, when):
        opens = self.opening_before(when)
        return opens is not None and \
            when < opens + datetime.timedelta(minutes=self.length)

    def next_opening(self, when):
        midnight = when.replace(hour=0, minute=0, second=0, microsecond=0)
        for ahead in range(8):
            day = midnight + datetime.timedelta(days=ahead)
            opens = day + datetime.timedelta(minutes=self.start)
            if day.weekday() in self.days and opens > when:
                return opens
        return None


class Schedule:
    """All configured windows; no windows means any time."""

    def __init__(self, texts):
        self.windows = [Window(t) for t in texts if t.strip()]

    @staticmethod
    def _utc(timestamp):
        return datetime.datetime.fromtimestamp(timestamp,
                                               datetime.timezone.utc)

    def open_at(self, timestamp):
        if not self.windows:
            return True
        when = self._utc(timestamp)
        return any(w.contains(when) for w in self.windows)

    def next_opening(self, timestamp):
        """Epoch seconds of the next opening after ``timestamp``."""
        when = self._utc(timestamp)
        openings = [w.next_opening(when) for w in self.windows]
        openings = [o for o in openings if o is not None]
        return min(openings).timestamp() if openings else None
