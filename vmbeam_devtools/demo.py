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

"""`vmbeam demo`: rejuvenate a libvirt hypervisor under running guests.

Starts hypervisor generation 1 (a libvirt daemon in its own mount
namespace), boots a few self-checking guests in it, then rejuvenates: a
fresh sibling daemon (generation 2) starts on the same host, every guest
moves onto it with a zero-copy mover, generation 1 is retired. It shows the
per-guest figures, the hypervisor's resource use before and after, and
proves the guests still run with their memory intact. Everything it
started is stopped at the end; it uses its own state directory, so it does
not touch a real installation's journal.
"""

import os
import shutil

from nova_vmbeam import movers as movers_mod
from nova_vmbeam import siblings as siblings_mod
from vmbeam_devtools import testbed as testbed_mod


def run(conf, out, guests=3, ram_mib=512, dirty_mib_s=16, mover=None,
        concurrency=None):
    mover_name = mover or siblings_mod.default_mover(conf)
    mover_obj = movers_mod.load(mover_name, conf)
    state = os.path.join(conf.vmbeam.state_path, 'demo')
    # The demo's own generations and journal, begun afresh every time.
    shutil.rmtree(state, ignore_errors=True)
    conf.set_override('state_path', state, 'vmbeam')
    testbed = testbed_mod.LibvirtTestbed(conf, name='demo')
    orchestrator = testbed.orchestrator
    say = out.write
    try:
        say('Building the test guest image (Debian kernel + memworker)...\n')
        image = testbed.image
        say('  kernel %s\n  initrd %s\n' % (image.kernel, image.initrd))
        gen1 = orchestrator.init()
        say('\nHypervisor generation 1: libvirtd pid %s in its own mount '
            'namespace, %s\n' % (gen1.pids()['libvirtd'], gen1.uri))
        say('Booting %d guests of %d MiB (%s), each dirtying %d MiB/s and '
            'checking its own memory...\n' %
            (guests, ram_mib, testbed.accel, dirty_mib_s))
        booted = []
        for index in range(guests):
            spec = testbed.spec('demo-%d' % (index + 1), ram_mib,
                                mover_obj.ram_backing, max(16, ram_mib // 4),
                                dirty_mib_s)
            booted.append(testbed.boot_libvirt(spec, wait=False))
        for guest in booted:
            testbed.wait_ready(guest)
            say('  %s running, QEMU pid %d, RAM %s\n' %
                (guest.name, guest.endpoint.pid,
                 guest.spec.ram.path or guest.spec.ram.kind))
        marks = {g.name: g.console.offset() for g in booted}

        say('\nRejuvenating with the %s mover...\n\n' % mover_name)
        record = orchestrator.rejuvenate(mover_name, concurrency)
        say('| guest | mover | total ms | downtime ms | bytes sent |\n'
            '|---|---|---|---|---|\n')
        for name, entry in sorted(record.guests.items()):
            res = entry.result
            say('| %s | %s | %.1f | %.1f | %d |\n' % (
                name, res.mover, res.total_ms, res.downtime_ms,
                res.transferred_bytes)
                if res else '| %s | %s | failed: %s |\n' %
                (name, entry.state, entry.error))
        say('\nGeneration %d ready in %.0f ms; all moves took '
            '%.0f ms; run %s.\n' % (record.target,
                                    record.sibling_ready_ms,
                                    record.moves_ms, record.state))
        say('Hypervisor resources (aging evidence):\n')
        for label, number, report in (
                ('before', record.source, record.aging_before),
                ('after ', record.target, record.aging_after)):
            if report:
                say('  %s (gen%d): %s\n' % (label, number,
                                            report.describe()))

        say('\nGuests after the rejuvenation:\n')
        for guest in booted:
            generation = testbed.locate(guest)
            status = testbed.check_integrity(guest, marks[guest.name])
            say('  %s: %s on generation %s, QEMU pid %d, memory check: %d '
                'full passes since the move, %d errors\n' %
                (guest.name, guest.endpoint.status(), generation,
                 guest.endpoint.pid, status['new_passes'],
                 status['errors']))
        say('\nGeneration %d is retired; generation %d is active.\n' %
            (record.source, orchestrator.state().active))
        return record
    finally:
        testbed.cleanup()
        shutil.rmtree(state, ignore_errors=True)
        conf.clear_override('state_path', 'vmbeam')
