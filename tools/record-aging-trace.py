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

"""Record a real aging trace for the aging monitor's replay tests.

Starts a private hypervisor generation (a colocated libvirtd) with one test
guest, samples every aging probe at a fixed interval, first while nothing
leaks ("steady") and then while a client leaks one libvirt connection per
sample ("leak": the daemon's descriptors and memory grow for real). Writes
CSV: t (seconds from the start), phase, then value and limit of each probe.

    PYTHONPATH=. .venv/bin/python tools/record-aging-trace.py OUT.csv \
        [--interval 2] [--samples 90]

as root, from the top of the tree, after tools/install.sh.
"""

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time

import libvirt

from nova_vmbeam import aging as aging_mod
from nova_vmbeam.aging import base as aging_base
from nova_vmbeam.conf import aging as aging_conf
from nova_vmbeam import guest as guest_mod
from tests.unit import fakes
from vmbeam_devtools import testbed as testbed_mod


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out')
    parser.add_argument('--interval', type=float, default=2.0)
    parser.add_argument('--samples', type=int, default=90,
                        help='samples per phase')
    args = parser.parse_args()
    state = tempfile.mkdtemp(prefix='vmbeam-trace-')
    pool = tempfile.mkdtemp(prefix='vmbeam-trace-pool-', dir='/dev/shm')
    os.chmod(pool, 0o711)
    conf = fakes.make_conf(state_path=state,
                           ram_pool_path=os.path.join(pool, 'ram'))
    aging_conf.register_opts(conf)
    conf.set_override('instances_path', state, 'vmbeam_aging')
    names = aging_mod.available()
    probes = aging_mod.load_all(names, conf)
    testbed = testbed_mod.LibvirtTestbed(conf, name='trace')
    leaked = []
    try:
        testbed.orchestrator.init()
        testbed.boot_libvirt(testbed.spec('g1', 256, guest_mod.RAM_FILE, 64,
                                          16))
        uri = testbed.orchestrator.active().uri
        start = time.monotonic()
        with open(args.out, 'w', newline='') as f:
            out = csv.writer(f)
            out.writerow(['t', 'phase'] + [
                '%s_%s' % (n, what) for n in names
                for what in ('value', 'limit')])
            for phase in ('steady', 'leak'):
                for _ in range(args.samples):
                    context = aging_base.ProbeContext(conf,
                                                      testbed.orchestrator)
                    row = ['%.2f' % (time.monotonic() - start), phase]
                    for probe in probes:
                        sample = probe.sample(context)
                        row += (['%.3f' % sample.value,
                                 '%.3f' % sample.limit]
                                if sample else ['', ''])
                    out.writerow(row)
                    f.flush()
                    if phase == 'leak':
                        leaked.append(libvirt.open(uri))
                    time.sleep(args.interval)
    finally:
        for conn in leaked:
            conn.close()
        testbed.cleanup()
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(pool, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
