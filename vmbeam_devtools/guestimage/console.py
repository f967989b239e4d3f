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

"""Read the test guest's serial console log.

Lines of interest (see init.sh, memworker.c, diskworker.c):
``VMBEAM-GUEST`` from /init, ``VMBEAM-WORKER`` from the memory worker,
``VMBEAM-DISK`` from the disk worker; the regexes below parse them.

QEMU appends the guest's serial output to a file (``-chardev
file,id=serial0,path=LOG,append=on -serial chardev:serial0``); during a move
the source and then the destination QEMU append to the same file.

The file is decoded as latin-1 (one character per byte, never fails) and
"\\r" is read as "\\n", so character offsets are file offsets and every
``offset()`` / ``match.end()`` can be handed back as ``after_offset``.
"""

import os
import re
import time

READY_RE = re.compile(
    r'VMBEAM-WORKER ready ram_mib=(\d+) dirty_mib_s=(\d+)')
# Only complete lines count: the worker may be half way through a line.
TICK_RE = re.compile(
    r'VMBEAM-WORKER tick=(\d+) passes=(\d+) dirtied_mib=(\d+) '
    r'errors=(\d+)[^\n]*\n')
ERROR_RE = re.compile(r'VMBEAM-WORKER ERROR [^\n]*')
# "VMBEAM-GUEST net ip=ADDR/PREFIX port=N": eth0 is up, the TCP responder
# listens.
NET_RE = re.compile(r'VMBEAM-GUEST net ip=(\S+) port=(\d+)')
# A guest-side failure outside the workers (insmod, network set-up).
GUEST_ERROR_RE = re.compile(r'VMBEAM-GUEST ERROR [^\n]*')
# The disk worker (vmbeam.disk=).
DISK_READY_RE = re.compile(
    r'VMBEAM-DISK ready dev=(\S+) slots=(\d+) direct=(\d)')
DISK_OK_RE = re.compile(
    r'VMBEAM-DISK seq=(\d+) ok errors=(\d+) retries=(\d+) '
    r'io_ms=(\d+)[^\n]*\n')
# With or without "seq=N ": "VMBEAM-DISK ERROR ..." is a worker that cannot
# use its device at all.
DISK_ERROR_RE = re.compile(r'VMBEAM-DISK (?:seq=(\d+) )?ERROR [^\n]*')
TAIL_CHARS = 2000


class ConsoleLog(object):

    def __init__(self, path):
        self.path = path

    def read(self):
        """The whole log so far ('' if QEMU has not created it yet)."""
        try:
            with open(self.path, 'rb') as f:
                data = f.read()
        except FileNotFoundError:
            return ''
        return data.decode('latin-1').replace('\r', '\n')

    def offset(self):
        """Current end of the log; pass as after_offset to see newer lines."""
        try:
            return os.path.getsize(self.path)
        except FileNotFoundError:
            return 0

    def tail(self, chars=TAIL_CHARS):
        return self.read()[-chars:]

    def search(self, regex, after_offset=None):
        """re.search(regex) over the log after after_offset, or None.

        Offsets of the match are file offsets.  ``^`` matches at line
        starts (re.MULTILINE).
        """
        if isinstance(regex, str):
            regex = re.compile(regex, re.MULTILINE)
        return regex.search(self.read(), after_offset or 0)

    def wait_for(self, regex, timeout, after_offset=None, interval=0.1):
        """Poll until regex matches after after_offset; return the match.

        :raises TimeoutError: after timeout seconds, with the log's tail.
        """
        deadline = time.monotonic() + timeout
        while True:
            m = self.search(regex, after_offset)
            if m:
                return m
            if time.monotonic() >= deadline:
                pattern = getattr(regex, 'pattern', regex)
                raise TimeoutError(
                    'No %r in guest console log %s after offset %d within '
                    '%ss. Last %d characters of the log:\n%s' % (
                        pattern, self.path, after_offset or 0, timeout,
                        TAIL_CHARS, self.tail()))
            time.sleep(interval)

    def worker_status(self, after_offset=None):
        """The memworker's latest state after after_offset.

        Returns a dict:
          tick, passes, dirtied_mib, errors: ints from the latest complete
              "VMBEAM-WORKER tick=" line, or None if there is none yet
          end_offset: file offset just past that line (or after_offset)
          ready: a "VMBEAM-WORKER ready" line was seen
          error_seen: a "VMBEAM-WORKER ERROR" line was seen
          error_lines: those lines
        """
        text = self.read()
        last = None
        for last in TICK_RE.finditer(text, after_offset or 0):
            pass
        return self._status(text, after_offset, last)

    @staticmethod
    def _status(text, after_offset, tick_match):
        start = after_offset or 0
        status = {'tick': None, 'passes': None, 'dirtied_mib': None,
                  'errors': None, 'end_offset': start,
                  'ready': READY_RE.search(text, start) is not None,
                  'error_lines': ERROR_RE.findall(text, start)}
        status['error_seen'] = bool(status['error_lines'])
        if tick_match:
            status.update(tick=int(tick_match.group(1)),
                          passes=int(tick_match.group(2)),
                          dirtied_mib=int(tick_match.group(3)),
                          errors=int(tick_match.group(4)),
                          end_offset=tick_match.end())
        return status

    def wait_for_ticks(self, count, timeout, after_offset=None):
        """Wait for count more tick lines after after_offset.

        Returns one worker_status()-like dict per tick line, oldest first;
        error_lines/error_seen cover everything after after_offset.
        :raises TimeoutError: with the log's tail.
        """
        deadline = time.monotonic() + timeout
        offset = after_offset or 0
        result = []
        while len(result) < count:
            m = self.wait_for(TICK_RE, max(0, deadline - time.monotonic()),
                              offset)
            offset = m.end()
            result.append(self._status(m.string, after_offset, m))
        return result

    def disk_status(self, after_offset=None):
        """The disk worker's latest state after after_offset.

        Returns a dict:
          seq: sequence number of the latest complete ok line or ERROR
              line, or None if there is none yet
          ok: number of "VMBEAM-DISK seq=N ok" lines
          errors: number of "VMBEAM-DISK ... ERROR" lines (the guest prints
              at most 100; guest_errors counts on)
          error_lines: those lines
          error_seen: bool(error_lines)
          guest_errors, retries, io_ms: from the latest ok line (the first
              two count from the worker's start), or None
          ready: a "VMBEAM-DISK ready" line was seen
          end_offset: file offset just past the latest ok line (or
              after_offset)
        """
        text = self.read()
        start = after_offset or 0
        oks = list(DISK_OK_RE.finditer(text, start))
        status = self._disk_status(text, after_offset,
                                   oks[-1] if oks else None)
        status['ok'] = len(oks)
        for m in DISK_ERROR_RE.finditer(text, start):
            if m.group(1) and (status['seq'] is None or
                               int(m.group(1)) > status['seq']):
                status['seq'] = int(m.group(1))
        return status

    @staticmethod
    def _disk_status(text, after_offset, ok_match):
        start = after_offset or 0
        status = {'seq': None, 'ok': None, 'guest_errors': None,
                  'retries': None, 'io_ms': None, 'end_offset': start,
                  'ready': DISK_READY_RE.search(text, start) is not None,
                  'error_lines': [m.group(0) for m in
                                  DISK_ERROR_RE.finditer(text, start)]}
        status['errors'] = len(status['error_lines'])
        status['error_seen'] = bool(status['error_lines'])
        if ok_match:
            status.update(seq=int(ok_match.group(1)),
                          guest_errors=int(ok_match.group(2)),
                          retries=int(ok_match.group(3)),
                          io_ms=int(ok_match.group(4)),
                          end_offset=ok_match.end())
        return status

    def wait_for_disk_ok(self, count, timeout, after_offset=None):
        """Wait for count more disk ok lines after after_offset.

        Returns one disk_status()-like dict per ok line, oldest first
        ('ok' is its number, 1..count); errors/error_lines cover
        everything after after_offset up to that line's arrival.
        :raises TimeoutError: with the log's tail.
        """
        deadline = time.monotonic() + timeout
        offset = after_offset or 0
        result = []
        while len(result) < count:
            m = self.wait_for(DISK_OK_RE,
                              max(0, deadline - time.monotonic()), offset)
            offset = m.end()
            status = self._disk_status(m.string, after_offset, m)
            status['ok'] = len(result) + 1
            result.append(status)
        return result
