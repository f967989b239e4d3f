#!/usr/bin/env python3
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

"""The cost of the whole stack over the engine, on the all-in-one cloud.

    tools/cloud/bench.py [--counts 4,8] [--rounds 3] [--json]

For each count N: boots N servers like `vmbeam bench --host`'s guests
(512 MiB of VMBeam RAM, a memory worker on a quarter of it dirtying
16 MiB/s), then times `openstack hypervisor rejuvenate HOST --wait` as an
operator runs it, ROUNDS times. Each row gives the command's wall time,
the run's own time in nova-compute (from its journal: started to
finished), the difference (CLI start, Keystone, Nova and Placement checks,
RPC, the --wait polling), and the moves' downtime. Run `vmbeam bench
--host 4,8 --host-methods zerocopy` right after, on the same machine, for
the engine alone. The servers are deleted afterwards.

Run it with the cloud's venv python on a running cloud
(tools/run-cloud.sh start); development tooling.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aio  # noqa: E402  (the cloud's own paths and client files)

RAM_MIB = 512
WORK_MIB = RAM_MIB // 4
DIRTY_MIB_S = 16
FLAVOR = 'vmbeam.bench'
IMAGE = 'vmbeam-bench-guest'


def ensure_flavor_and_image(conn):
    from vmbeam_devtools import guestimage
    if conn.compute.find_flavor(FLAVOR) is None:
        flavor = conn.compute.create_flavor(name=FLAVOR, ram=RAM_MIB,
                                            vcpus=1, disk=1)
        conn.compute.create_flavor_extra_specs(flavor, {'vmbeam:ram': 'true'})
    if conn.image.find_image(IMAGE) is None:
        base = conn.image.find_image(aio.IMAGE)
        disk = os.path.join(aio.DATA, 'root.raw')
        conn.image.create_image(
            name=IMAGE, filename=disk, disk_format='raw',
            container_format='bare', validate_checksum=False,
            kernel_id=base.kernel_id,
            ramdisk_id=base.ramdisk_id,
            os_command_line=guestimage.kernel_cmdline(
                WORK_MIB, DIRTY_MIB_S, 500, hostname='bench-guest'))


def boot(conn, host, count):
    image = conn.image.find_image(IMAGE)
    flavor = conn.compute.find_flavor(FLAVOR)
    servers = [conn.compute.create_server(
        name='bench-%d-%d' % (count, i), image_id=image.id,
        flavor_id=flavor.id, networks='none',
        availability_zone='nova:%s' % host) for i in range(count)]
    servers = [conn.compute.wait_for_server(s, wait=600) for s in servers]
    deadline = time.monotonic() + 600
    for server in servers:
        while 'VMBEAM-WORKER ready' not in \
                conn.compute.get_server_console_output(server)['output']:
            if time.monotonic() > deadline:
                raise RuntimeError('%s not READY' % server.name)
            time.sleep(2)
    return servers


def rejuvenate(host):
    env = dict(os.environ, OS_CLIENT_CONFIG_FILE=os.path.join(
        aio.CLOUD_DIR, 'clouds.yaml'), OS_CLOUD='vmbeam')
    t0 = time.monotonic()
    proc = subprocess.run([aio.venv_bin('openstack'), 'hypervisor',
                           'rejuvenate', host, '--wait', '-f', 'json'],
                          env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    run = json.loads(proc.stdout)
    return wall, run


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--counts', default='4,8')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args(argv)
    conn = aio.sdk()
    host = next(h.service_details['host']
                for h in conn.compute.hypervisors(details=True)
                if h.hypervisor_type == 'QEMU')
    ensure_flavor_and_image(conn)
    rows = []
    for count in (int(c) for c in args.counts.split(',')):
        servers = boot(conn, host, count)
        try:
            for round_no in range(args.rounds):
                wall, run = rejuvenate(host)
                moved = [g for g in run['guests'] if g['state'] == 'moved']
                engine = run['finished'] - run['started']
                row = {'servers': count, 'round': round_no + 1,
                       'cli_wall_s': round(wall, 2),
                       'run_s': round(engine, 2),
                       'stack_s': round(wall - engine, 2),
                       'moved': len(moved),
                       'downtime_p50_ms': round(statistics.median(
                           g['downtime_ms'] for g in moved), 1),
                       'downtime_max_ms': round(max(
                           g['downtime_ms'] for g in moved), 1)}
                rows.append(row)
                if args.json:
                    print(json.dumps(dict(row, guests=run['guests'])),
                          flush=True)
        finally:
            for server in servers:
                conn.compute.delete_server(server)
            for server in servers:
                conn.compute.wait_for_delete(server, wait=300)
    if not args.json:
        print('| servers | round | `--wait` wall s | run in nova-compute s '
              '| stack s | moved | downtime p50 / max ms |')
        print('|---|---|---|---|---|---|---|')
        for r in rows:
            print('| %(servers)d | %(round)d | %(cli_wall_s).2f | %(run_s).2f '
                  '| %(stack_s).2f | %(moved)d | %(downtime_p50_ms).1f / '
                  '%(downtime_max_ms).1f |' % r)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
