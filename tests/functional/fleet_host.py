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

"""One compute host of the fleet test, as a process of its own.

The real AgingMonitor (policy, trend test, slots on the given tooz backend)
with a probe that replays an injected leak against a fast clock, so it is
due after a dozen rounds; the rejuvenation is a stub that writes when it
starts and ends and holds the slot meanwhile. No QEMU, no libvirt.

    python -m tests.functional.fleet_host --host NAME --state DIR \\
        --record FILE --max-concurrent K [--backend-url URL] \\
        [--single-node] [--hold SECONDS]

It prints "ready" once its monitor is built, waits for a line on stdin,
runs rounds until it has rejuvenated once (or --deadline passes) and
prints a JSON summary. Record lines are JSON: {"host", "event": "start" or
"end", "t"}; "t" is time.monotonic(), which on Linux is the one
CLOCK_MONOTONIC of the machine and so comparable across processes.
"""

import argparse
import json
import os
import random
import sys
import time
import zlib

from nova_vmbeam.aging import base
from nova_vmbeam.aging import monitor as monitor_mod
from nova_vmbeam.aging import slots as slots_mod
from nova_vmbeam.conf import aging as aging_conf
from tests.unit import fakes

STEP = 60.0            # test-clock seconds per round
ROUND_PAUSE = 0.05     # real seconds between rounds
LIMIT_MIB = 1024.0


class FastClock:
    """Epoch seconds that advance STEP per round, not per second."""

    def __init__(self):
        self.now = 1795392000.0     # 2026-11-23 00:00 UTC, a Monday

    def __call__(self):
        return self.now


class InjectedLeak(base.ProbeBase):
    """A daemon that grows 20 MiB a (test-clock) minute, with noise."""

    name = 'injected_leak'
    unit = 'MiB'
    direction = base.RISING

    def __init__(self, conf, clock, seed):
        super().__init__(conf)
        self.clock = clock
        self.start = clock()
        self.rng = random.Random(seed)

    def sample(self, context):
        minutes = (self.clock() - self.start) / 60.0
        return base.Sample(200.0 + 20.0 * minutes + self.rng.gauss(0, 5.0),
                           LIMIT_MIB)


class Recorder:
    def __init__(self, path, host):
        self.path = path
        self.host = host

    def write(self, event):
        line = json.dumps({'host': self.host, 'event': event,
                           't': time.monotonic()}) + '\n'
        # One write(2) per line, O_APPEND: the line is in the file before
        # the next statement runs, even if the process is killed then.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                     0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def build_conf(args):
    conf = fakes.make_conf(state_path=args.state)
    aging_conf.register_opts(conf)
    for name, value in (('action', 'rejuvenate'),
                        ('backend_url', args.backend_url),
                        ('single_node', args.single_node),
                        ('max_concurrent', args.max_concurrent),
                        ('min_samples', 10), ('horizon', 6 * 3600.0),
                        # One rejuvenation per host in this test.
                        ('min_interval', 365 * 86400.0),
                        ('persist', False)):
        conf.set_override(name, value, 'vmbeam_aging')
    return conf


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument('--host', required=True)
    parser.add_argument('--state', required=True)
    parser.add_argument('--record', required=True)
    parser.add_argument('--backend-url')
    parser.add_argument('--single-node', action='store_true')
    parser.add_argument('--max-concurrent', type=int, required=True)
    parser.add_argument('--hold', type=float, default=1.0,
                        help='seconds the stub rejuvenation holds its slot')
    parser.add_argument('--deadline', type=float, default=120.0)
    args = parser.parse_args(argv)

    conf = build_conf(args)
    recorder = Recorder(args.record, args.host)
    clock = FastClock()

    def rejuvenate():
        recorder.write('start')
        time.sleep(args.hold)
        recorder.write('end')

    leak = InjectedLeak(conf, clock, seed=zlib.crc32(args.host.encode()))
    monitor = monitor_mod.AgingMonitor(conf, args.host, rejuvenate,
                                       probes=[leak], clock=clock)
    # What AgingMonitor.start() does before its thread: the fleet check
    # and the connection. The rounds are run here, at test speed.
    slots_mod.require_fleet_limit(conf)
    monitor.slots.start()
    print('ready', flush=True)
    sys.stdin.readline()

    rounds = waits_for_slot = 0
    deadline = time.monotonic() + args.deadline
    result = 'deadline passed'
    try:
        while time.monotonic() < deadline:
            clock.now += STEP
            decision = monitor.run_once()
            rounds += 1
            if 'rejuvenation slots are taken' in decision.reason:
                waits_for_slot += 1
            last = monitor.status()['last_rejuvenation']
            if last:
                result = last['result']
                break
            time.sleep(ROUND_PAUSE)
    finally:
        monitor.slots.stop()
    print(json.dumps({'host': args.host, 'rounds': rounds,
                      'waits_for_slot': waits_for_slot, 'result': result}),
          flush=True)
    return 0 if result == 'completed' else 1


if __name__ == '__main__':
    sys.exit(main())
