"""A generation's resource use: the evidence of its aging."""

import libvirt

from nova_vmbeam import exception
from nova_vmbeam import records


def qemu_overhead_kib(pid):
    """Private memory of a QEMU beyond guest RAM (RssAnon)."""
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('RssAnon:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(sibling):
    """records.HealthReport of a generation: daemons and per-guest QEMU."""
    report = sibling.health()
    guests = {}
    if sibling.running():
        host = sibling.host()
        try:
            for name in host.domains():
                try:
                    pid = host.qemu_pid(name, timeout=0.5)
                except exception.VMBeamError:
                    continue
                guests[name] = records.GuestUsage(
                    pid=pid, overhead_kib=qemu_overhead_kib(pid))
        except (exception.VMBeamError, libvirt.libvirtError) as exc:
            # Retired (or died) while we looked: report, do not fail.
            report.error = str(exc)
        finally:
            host.close()
    report.guests = guests
    return report
