"""`vmbeam demo`: rejuvenate a hypervisor under running guests.

Boots a few self-checking guests on hypervisor generation 1, starts a fresh
sibling (generation 2) on the same host, moves every guest onto it with a
zero-copy mover, shows the per-guest figures, proves the guests still run
with their memory intact, and retires the empty generation 1.
"""

from nova_vmbeam import movers as movers_mod
from nova_vmbeam import testbed as testbed_mod


def _rss_mib(pid):
    with open('/proc/%d/status' % pid) as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return 0.0


def run(conf, out, guests=3, ram_mib=512, dirty_mib_s=16, mover=None):
    mover = movers_mod.load(mover or conf.vmbeam.default_mover, conf)
    testbed = testbed_mod.Testbed(conf, name='demo')
    say = out.write
    try:
        say('Building the test guest image (Debian kernel + memworker)...\n')
        image = testbed.image
        say('  kernel %s\n  initrd %s\n' % (image.kernel, image.initrd))
        gen1 = testbed.new_hypervisor()
        say('\nHypervisor %s (%s): booting %d guests of %d MiB, each '
            'dirtying %d MiB/s and checking its own memory...\n' %
            (gen1.name, testbed.accel, guests, ram_mib, dirty_mib_s))
        booted = []
        for index in range(guests):
            spec = testbed.spec('demo-%d' % (index + 1), ram_mib,
                                mover.ram_backing, max(16, ram_mib // 4),
                                dirty_mib_s)
            booted.append(testbed.boot(gen1, spec, wait=False))
        for guest in booted:
            testbed.wait_ready(guest)
            say('  %s running, QEMU pid %d, RAM %s\n' %
                (guest.name, guest.endpoint.pid,
                 guest.spec.ram.path or guest.spec.ram.kind))

        gen2 = testbed.new_hypervisor()
        say('\nRejuvenation: fresh sibling hypervisor %s; moving every '
            'guest with the %s mover...\n\n' % (gen2.name, mover.name))
        rows = []
        for guest in booted:
            rows.append(testbed.move(guest, mover, gen2))
        say('| guest | mover | total ms | downtime ms | bytes sent | '
            'dest start ms |\n|---|---|---|---|---|---|\n')
        for r in rows:
            say('| %s | %s | %.1f | %.1f | %d | %.0f |\n' %
                (r.guest, r.mover, r.total_ms, r.downtime_ms,
                 r.transferred_bytes, r.prepare_ms))

        say('\nGuests on %s after the move:\n' % gen2.name)
        for guest in booted:
            status = testbed.check_integrity(guest, guest.moved_at)
            say('  %s: %s, QEMU pid %d (RSS %.0f MiB), memory check: %d '
                'full passes since the move, %d errors\n' %
                (guest.name, guest.endpoint.status(), guest.endpoint.pid,
                 _rss_mib(guest.endpoint.pid),
                 status['new_passes'],
                 status['errors']))
        testbed.retire_empty()
        say('\nHypervisor %s is empty and retired; %s runs all %d guests.\n'
            % (gen1.name, gen2.name, len(booted)))
        return rows
    finally:
        testbed.cleanup()
