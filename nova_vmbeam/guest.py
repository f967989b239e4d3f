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

"""What a guest is, independent of the hypervisor that runs it."""

import dataclasses
import typing

# Where a guest's RAM lives. Only RAM that outlives the QEMU process and can
# be mapped by a second one can be moved without copying it.
RAM_ANONYMOUS = 'anonymous'   # private QEMU memory: must be copied
RAM_FILE = 'file'             # named file in the RAM pool (zerocopy)
RAM_MEMFD = 'memfd'           # memfd passed over SCM_RIGHTS (cpr)


@dataclasses.dataclass(frozen=True)
class RamBacking:
    kind: str = RAM_ANONYMOUS
    path: typing.Optional[str] = None   # pool file, for RAM_FILE

    def __post_init__(self):
        if self.kind not in (RAM_ANONYMOUS, RAM_FILE, RAM_MEMFD):
            raise ValueError('unknown RAM backing %r' % self.kind)
        if (self.kind == RAM_FILE) != bool(self.path):
            raise ValueError('a file RAM backing needs a path, and only it')


@dataclasses.dataclass(frozen=True)
class GuestSpec:
    """A guest as QEMU needs to know it, on the source and the destination.

    The destination of a move is started from the very same spec, so it
    maps the same RAM and sees the same devices.
    """

    name: str
    uuid: str
    ram_mib: int
    ram: RamBacking = RamBacking()
    vcpus: int = 1
    kernel: typing.Optional[str] = None
    initrd: typing.Optional[str] = None
    cmdline: str = ''
    console_log: typing.Optional[str] = None
    #: the libvirt domain XML, for guests that run under libvirt; the
    #: destination of a move is created from it
    domain_xml: typing.Optional[str] = dataclasses.field(default=None,
                                                         repr=False)

    @property
    def ram_bytes(self):
        return self.ram_mib * 1024 * 1024

    def with_ram(self, ram):
        return dataclasses.replace(self, ram=ram)
