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

"""Thread-safe, synchronous access to a QEMU monitor through qemu.qmp.

qemu.qmp is asyncio based. nova-compute (Nova 34) and the vmbeam engine run
on native threads, so every monitor connection is driven by one shared event
loop that runs in its own daemon thread; callers in any thread submit
coroutines to it and wait for the result with a timeout.
"""

import asyncio
import atexit
import threading
import time
import weakref

from oslo_log import log as logging
from qemu import qmp

from nova_vmbeam import exception

LOG = logging.getLogger(__name__)


class _LoopThread:
    """One asyncio loop in a daemon thread, shared by all monitors."""

    _lock = threading.Lock()
    _loop = None
    # Open monitors, closed at exit so no connection task is left pending.
    monitors = weakref.WeakSet()

    @classmethod
    def get(cls):
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever,
                                          name='vmbeam-qmp-loop',
                                          daemon=True)
                thread.start()
                cls._loop = loop
                atexit.register(cls.shutdown)
            return cls._loop

    @classmethod
    def shutdown(cls):
        for monitor in list(cls.monitors):
            monitor.close()
        if cls._loop is not None:
            cls._loop.call_soon_threadsafe(cls._loop.stop)


def _run(coro, timeout):
    loop = _LoopThread.get()
    future = asyncio.run_coroutine_threadsafe(
        asyncio.wait_for(coro, timeout), loop)
    return future.result()


def wait_event(events, who, name, timeout, since=0.0):
    """The first event ``name`` emitted at or after ``since``.

    ``events`` returns the events received so far (a monitor's, or those
    libvirt relayed for a domain); ``who`` names them in the error.
    """
    deadline = time.monotonic() + timeout
    while True:
        for event in events():
            if event['event'] == name and event_time(event) >= since:
                return event
        if time.monotonic() >= deadline:
            raise exception.MonitorError('%s: no %s event within %.1f s' %
                                         (who, name, timeout))
        time.sleep(0.0005)


def event_time(event):
    """Wall-clock time (seconds) at which QEMU emitted ``event``."""
    stamp = event['timestamp']
    return stamp['seconds'] + stamp['microseconds'] / 1e6


class Monitor:
    """A QMP connection to one QEMU process.

    Events are kept in arrival order (``events``) so a caller can measure,
    for example, downtime from the source's STOP to the destination's
    RESUME using QEMU's own timestamps.
    """

    def __init__(self, address, name, timeout=30.0):
        self.address = address
        self.name = name
        self.timeout = timeout
        self._client = None
        self._events = []
        self._lock = threading.Lock()

    def connect(self, timeout=None):
        timeout = self.timeout if timeout is None else timeout

        async def _connect():
            # The client must be created inside the loop that drives it.
            self._client = qmp.QMPClient(self.name)
            await self._client.connect(self.address)

        try:
            _run(_connect(), timeout)
            _LoopThread.monitors.add(self)
        except (qmp.QMPError, OSError, asyncio.TimeoutError) as exc:
            raise exception.MonitorError(
                'cannot connect to the QEMU monitor of %s at %s: %s' %
                (self.name, self.address, exc or type(exc).__name__))

    @property
    def connected(self):
        return (self._client is not None and
                self._client.runstate == qmp.Runstate.RUNNING)

    def execute(self, command, timeout=None, **arguments):
        """Run ``command`` and return its result; MonitorError on error."""
        if self._client is None:
            raise exception.MonitorError('monitor of %s is not connected' %
                                         self.name)
        timeout = self.timeout if timeout is None else timeout
        try:
            return _run(self._client.execute(command, arguments or None),
                        timeout)
        except qmp.ExecuteError as exc:
            raise exception.MonitorError('%s: %s failed: %s' %
                                         (self.name, command,
                                          exc.error.error.desc))
        except (qmp.QMPError, OSError, EOFError,
                asyncio.TimeoutError) as exc:
            raise exception.MonitorError('%s: %s failed: %s' %
                                         (self.name, command,
                                          exc or type(exc).__name__))

    def events(self):
        """All events received so far, oldest first."""
        if self._client is not None:
            async def _drain():
                return [dict(e) for e in self._client.events.clear()]

            try:
                fresh = _run(_drain(), self.timeout)
            except (qmp.QMPError, asyncio.TimeoutError):
                fresh = []
            with self._lock:
                self._events.extend(fresh)
        with self._lock:
            return list(self._events)

    def wait_event(self, name, timeout, since=0.0):
        return wait_event(self.events, self.name, name, timeout, since)

    def close(self):
        if self._client is None:
            return
        self.events()   # keep what arrived before the connection goes
        client, self._client = self._client, None
        _LoopThread.monitors.discard(self)
        try:
            _run(client.disconnect(), 5.0)
        except Exception as exc:
            # disconnect() re-raises whatever ended the connection, such as
            # EOF after "quit": nothing to act on while closing.
            LOG.debug('closing monitor of %s: %r', self.name, exc)
