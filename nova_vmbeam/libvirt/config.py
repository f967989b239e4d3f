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

"""Domain XML for VMBeam guests.

libvirt has no element for a memory-backend-file that two QEMUs share, nor
for x-ignore-shared or a deferred incoming migration, so those go through
<qemu:commandline>. The extra "-machine memory-backend=vmbeam-ram" makes
QEMU use our backend as guest RAM; libvirt's own pc.ram object is then
unused.
"""

import xml.etree.ElementTree as ET

from nova_vmbeam import guest as guest_mod
from nova_vmbeam.qemu import cmdline

QEMU_NS = 'http://libvirt.org/schemas/domain/qemu/1.0'
ET.register_namespace('qemu', QEMU_NS)


def sub_element(parent, tag, text=None, **attrib):
    """A child element of ``parent`` with ``text`` (made a string)."""
    element = ET.SubElement(parent, tag, attrib)
    if text is not None:
        element.text = str(text)
    return element


def new_domain(name, uuid, ram_mib, vcpus, kernel=None, initrd=None,
               cmdline=None, accel='tcg',
               emulator='/usr/bin/qemu-system-x86_64', on_reboot='restart'):
    """A domain element booting ``kernel``; its <devices> holds the emulator.

    Add devices to ``domain.find('devices')``; ``to_xml()`` gives the text.
    """
    domain = ET.Element('domain', type='kvm' if accel == 'kvm' else 'qemu')
    sub_element(domain, 'name', name)
    sub_element(domain, 'uuid', uuid)
    sub_element(domain, 'memory', ram_mib, unit='MiB')
    sub_element(domain, 'vcpu', vcpus)
    os_el = sub_element(domain, 'os')
    sub_element(os_el, 'type', 'hvm', arch='x86_64', machine='pc')
    if kernel:
        sub_element(os_el, 'kernel', kernel)
    if initrd:
        sub_element(os_el, 'initrd', initrd)
    if cmdline:
        sub_element(os_el, 'cmdline', cmdline)
    features = sub_element(domain, 'features')
    sub_element(features, 'acpi')
    sub_element(domain, 'on_poweroff', 'destroy')
    sub_element(domain, 'on_reboot', on_reboot)
    sub_element(domain, 'on_crash', 'destroy')
    devices = sub_element(domain, 'devices')
    sub_element(devices, 'emulator', emulator)
    return domain


def add_memory_slots(domain, slots, max_mib):
    """Memory-device slots (hot-plugged DIMMs, virtio-pmem) for a domain.

    libvirt enables them only with a NUMA topology: one cell holding all
    the domain's vCPUs and memory, which changes nothing else for it.
    """
    ram_mib = int(domain.find('memory').text)
    vcpus = int(domain.find('vcpu').text)
    sub_element(domain, 'maxMemory', max(max_mib, ram_mib),
                slots=str(slots), unit='MiB')
    cpu = domain.find('cpu')
    if cpu is None:
        cpu = sub_element(domain, 'cpu')
    numa = sub_element(cpu, 'numa')
    sub_element(numa, 'cell', id='0', cpus='0-%d' % (vcpus - 1),
                memory=str(ram_mib), unit='MiB')


def add_bridge_nic(devices, bridge, mac, tap=None):
    """A virtio NIC on ``bridge``; its tap is named ``tap`` when given."""
    nic = sub_element(devices, 'interface', type='bridge')
    sub_element(nic, 'source', bridge=bridge)
    sub_element(nic, 'mac', address=mac)
    sub_element(nic, 'model', type='virtio')
    # No iPXE ROM: the guest boots from a kernel, and SeaBIOS would
    # spend seconds running the ROM under TCG.
    sub_element(nic, 'rom', enabled='no')
    if tap:
        sub_element(nic, 'target', dev=tap)
    return nic


def add_file_serial(devices, path):
    """The first serial port, appended to the file ``path``."""
    serial = sub_element(devices, 'serial', type='file')
    sub_element(serial, 'source', path=path, append='on')
    sub_element(serial, 'target', port='0')
    return serial


def to_xml(domain):
    return ET.tostring(domain, encoding='unicode')


def domain_xml(spec, accel='tcg', emulator='/usr/bin/qemu-system-x86_64',
               disks=(), bridges=(), tap_prefix=None):
    """A libvirt domain for ``spec``.

    ``disks`` are qcow2 paths (virtio); ``bridges`` are (bridge, mac) pairs,
    each a virtio NIC whose tap is named ``<tap_prefix><n>`` when given (two
    daemons must not pick the same tap name).
    """
    domain = new_domain(spec.name, spec.uuid, spec.ram_mib, spec.vcpus,
                        kernel=spec.kernel, initrd=spec.initrd,
                        cmdline=spec.cmdline, accel=accel,
                        emulator=emulator)
    devices = domain.find('devices')
    for index, path in enumerate(disks):
        disk = sub_element(devices, 'disk', type='file', device='disk')
        sub_element(disk, 'driver', name='qemu', type='qcow2', cache='none')
        sub_element(disk, 'source', file=path)
        sub_element(disk, 'target', dev='vd' + chr(ord('a') + index),
                    bus='virtio')
    for index, (bridge, mac) in enumerate(bridges):
        add_bridge_nic(devices, bridge, mac, tap='%s%d' % (tap_prefix, index)
                       if tap_prefix else None)
    if spec.console_log:
        add_file_serial(devices, spec.console_log)
    sub_element(devices, 'memballoon', model='none')
    set_ram_backend(domain, spec.ram, spec.ram_mib)
    return to_xml(domain)


def _commandline(domain):
    element = domain.find('{%s}commandline' % QEMU_NS)
    if element is None:
        element = ET.SubElement(domain, '{%s}commandline' % QEMU_NS)
    return element


def commandline_args(domain):
    """The values of the domain's <qemu:commandline> arguments."""
    element = domain.find('{%s}commandline' % QEMU_NS)
    if element is None:
        return []
    return [arg.get('value') for arg in element.findall('{%s}arg' % QEMU_NS)]


def add_commandline_args(domain, args):
    """Append ``args`` to the domain's <qemu:commandline>."""
    _set_args(domain, commandline_args(domain) + list(args))


def _set_args(domain, args):
    element = _commandline(domain)
    for arg in list(element):
        if arg.tag == '{%s}arg' % QEMU_NS:
            element.remove(arg)
    for value in args:
        ET.SubElement(element, '{%s}arg' % QEMU_NS, value=value)
    if not len(element):
        domain.remove(element)


def ram_backend_args(ram, ram_mib):
    """<qemu:commandline> arguments that put guest RAM on ``ram``.

    Empty for anonymous RAM; the Nova driver adds the same ones to the
    domains it defines.
    """
    if ram.kind == guest_mod.RAM_ANONYMOUS:
        return []
    if ram.kind != guest_mod.RAM_FILE:
        raise ValueError('under libvirt guest RAM is anonymous or a pool '
                         'file, not %s' % ram.kind)
    spec_args, machine = cmdline.ram_args(
        guest_mod.GuestSpec(name='x', uuid='x', ram_mib=ram_mib, ram=ram))
    # ram_args() gives "-m SIZE -object ..."; libvirt sets -m itself.
    return spec_args[2:] + ['-machine', machine]


def set_ram_backend(domain, ram, ram_mib):
    args = ram_backend_args(ram, ram_mib)
    if args:
        add_commandline_args(domain, args)


def with_ram(xml, ram, ram_mib):
    """``xml`` with its guest RAM backend replaced by ``ram``."""
    domain = ET.fromstring(xml)
    args = commandline_args(domain)
    kept = []
    skip = False
    for flag, value in zip(args, args[1:] + [None]):
        if skip:
            skip = False
            continue
        if flag in ('-object', '-machine') and value is not None and (
                'id=%s' % cmdline.RAM_OBJECT_ID in value or
                'memory-backend=%s' % cmdline.RAM_OBJECT_ID in value):
            skip = True
            continue
        kept.append(flag)
    _set_args(domain, kept + ram_backend_args(ram, ram_mib))
    return ET.tostring(domain, encoding='unicode')


def ram_backing(xml):
    """The RamBacking a domain's XML gives its guest."""
    args = commandline_args(ET.fromstring(xml))
    for flag, value in zip(args, args[1:]):
        if flag == '-object' and value.startswith('memory-backend-file,') \
                and 'id=%s' % cmdline.RAM_OBJECT_ID in value:
            opts = dict(kv.split('=', 1) for kv in value.split(',')[1:]
                        if '=' in kv)
            if opts.get('share') == 'on':
                return guest_mod.RamBacking(guest_mod.RAM_FILE,
                                            opts['mem-path'])
    return guest_mod.RamBacking()


def with_incoming(xml, incoming):
    """``xml`` plus -incoming values (a migration destination)."""
    domain = ET.fromstring(xml)
    args = commandline_args(domain)
    for value in incoming:
        if not isinstance(value, str):
            raise ValueError('through libvirt only "-incoming defer" works: '
                             'libvirt talks to the monitor at start-up, '
                             'before any cpr channel could be read')
        args += ['-incoming', value]
    _set_args(domain, args)
    return ET.tostring(domain, encoding='unicode')


def for_destination(xml, incoming):
    """The XML a migration destination is created from.

    ``incoming`` is added, and tap names are dropped: the source's taps
    still exist while the destination starts, so libvirt must pick new
    ones (on the same bridges). Console logs are appended to.
    """
    domain = ET.fromstring(with_incoming(xml, incoming))
    for nic in domain.findall('devices/interface'):
        target = nic.find('target')
        if target is not None:
            nic.remove(target)
    # A console log that the source's virtlogd kept writing: the new
    # generation's virtlogd would truncate it (Nova sets append='off').
    for log in domain.findall('devices/*/log'):
        log.set('append', 'on')
    return ET.tostring(domain, encoding='unicode')


def without_incoming(xml):
    domain = ET.fromstring(xml)
    args = commandline_args(domain)
    kept = []
    skip = False
    for value in args:
        if skip:
            skip = False
            continue
        if value == '-incoming':
            skip = True
            continue
        kept.append(value)
    _set_args(domain, kept)
    return ET.tostring(domain, encoding='unicode')


def guest_spec(xml):
    """A GuestSpec (with the XML) describing a libvirt domain."""
    domain = ET.fromstring(xml)
    memory = domain.find('memory')
    unit = memory.get('unit', 'KiB')
    factor = {'KiB': 1.0 / 1024, 'MiB': 1, 'GiB': 1024}.get(unit, 1.0 / 1024)
    serial = domain.find("devices/serial[@type='file']/source")
    return guest_mod.GuestSpec(
        name=domain.findtext('name'), uuid=domain.findtext('uuid'),
        ram_mib=int(int(memory.text) * factor), ram=ram_backing(xml),
        vcpus=int(domain.findtext('vcpu') or 1),
        kernel=domain.findtext('os/kernel'),
        initrd=domain.findtext('os/initrd'),
        cmdline=domain.findtext('os/cmdline') or '',
        console_log=serial.get('path') if serial is not None else None,
        domain_xml=xml)
