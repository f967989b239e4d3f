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
