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

"""QEMU command lines for guests started by nova-vmbeam."""

import json

from nova_vmbeam import guest as guest_mod

# The memory-backend object id; also used by the libvirt path, where the
# guest XML carries the same object through <qemu:commandline>.
RAM_OBJECT_ID = 'vmbeam-ram'


#: device-DAX character devices (a guest's RAM in an L1, nested/caching.py)
DAX_DEVICE_PREFIX = '/dev/dax'


def ram_args(spec):
    """Arguments that place the guest's RAM according to its backing."""
    size = '%dM' % spec.ram_mib
    backing = spec.ram
    if backing.kind == guest_mod.RAM_FILE:
        obj = ('memory-backend-file,id=%s,size=%s,mem-path=%s,share=on' %
               (RAM_OBJECT_ID, size, backing.path))
        if backing.path.startswith(DAX_DEVICE_PREFIX):
            # A device-DAX maps only at its own alignment (the L1 made it
            # 2 MiB), which QEMU cannot read from the device.
            obj += ',align=2M'

        machine = 'memory-backend=%s' % RAM_OBJECT_ID
    elif backing.kind == guest_mod.RAM_MEMFD:
        obj = ('memory-backend-memfd,id=%s,size=%s,share=on' %
               (RAM_OBJECT_ID, size))
        # aux-ram-share puts ROMs and other auxiliary RAM in memfds too, so
        # cpr-transfer can hand over every RAM block by descriptor.
        machine = 'memory-backend=%s,aux-ram-share=on' % RAM_OBJECT_ID
    else:
        return ['-m', size], ''
    return ['-m', size, '-object', obj], machine


def unix_channel(kind, path):
    """A migration channel (QAPI MigrationChannel) on a unix socket."""
    return {'channel-type': kind,
            'addr': {'transport': 'socket', 'type': 'unix', 'path': path}}


def build(spec, qmp_socket, accel, incoming=(), paused=False,
          machine='pc'):
    """The full argv for ``spec``.

    ``incoming`` is a list of -incoming values (``defer``, or migration
    channels as dicts); with ``paused`` the guest does not run until told to
    (``-S``), which keeps a migration destination from ever running before
    it has been verified.
    """
    ram, machine_ram = ram_args(spec)
    machine_opt = machine + (',' + machine_ram if machine_ram else '')
    argv = ['-name', 'guest=%s,debug-threads=on' % spec.name,
            '-uuid', spec.uuid,
            '-machine', machine_opt,
            '-accel', accel,
            '-smp', str(spec.vcpus)] + ram + [
            '-nodefaults', '-no-user-config', '-display', 'none',
            # A guest that panics or reboots stops instead of rebooting
            # unseen, so a test sees the failure.
            '-no-reboot',
            '-qmp', 'unix:%s,server=on,wait=off' % qmp_socket]
    if spec.kernel:
        argv += ['-kernel', spec.kernel]
    if spec.initrd:
        argv += ['-initrd', spec.initrd]
    if spec.cmdline:
        argv += ['-append', spec.cmdline]
    if spec.console_log:
        # append=on: source and destination write the same log in turn.
        argv += ['-chardev', 'file,id=serial0,path=%s,append=on' %
                 spec.console_log, '-serial', 'chardev:serial0']
    for value in incoming:
        argv += ['-incoming',
                 value if isinstance(value, str) else json.dumps(value)]
    if paused:
        argv.append('-S')
    return argv
