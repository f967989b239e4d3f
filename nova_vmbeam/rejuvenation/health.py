"""A generation's resource use: the evidence of its aging."""

import libvirt

from nova_vmbeam import exception
from nova_vmbeam.qemu import procfs
from nova_vmbeam import records


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
                # Private memory beyond guest RAM (which is shared).
                guests[name] = records.GuestUsage(
                    pid=pid, overhead_kib=procfs.status_kib(pid, 'RssAnon'))
        except (exception.VMBeamError, libvirt.libvirtError) as exc:
            # Retired (or died) while we looked: report, do not fail.
            report.error = str(exc)
        finally:
            host.close()
    report.guests = guests
    return report
