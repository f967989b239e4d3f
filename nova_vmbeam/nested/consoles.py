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


"""Guests' console logs of a nested sibling, written on L0 where Nova reads.

An L2 guest's QEMU runs inside its L1, where the console log path Nova
gives it (``<serial>`` with ``<log file=...>``, or a file serial) does not
exist. Each such guest gets a virtio-serial port of its L1 VM, hot-plugged
through L0's libvirt, whose L0 end is a file chardev appending to the
guest's console log on L0; inside the L1 the guest's serial port writes to
that port's device (``/dev/virtio-ports/<port>``, made by the L1's agent:
the appliance has no udev). No network and no daemon of its own: the
L1's QEMU on L0 writes the file.

The L0 path is kept in the domain's metadata: a guest moving to another
L1 gets a port of its own there on the same file (both append; the source
stops writing when it stops running), and the source's port goes when the
guest leaves it (``remove_port``) or with its L1.

One virtio-serial controller holds 31 ports, one of them the guest
agent's: at most 30 guests with a console log per L1.
"""

import os
import stat
import xml.etree.ElementTree as ET

import libvirt
from oslo_log import log as logging

from nova_vmbeam import exception
from nova_vmbeam.nested import agent
from nova_vmbeam.privsep import files as privsep_files

LOG = logging.getLogger(__name__)

#: the namespace of the metadata element that keeps the L0 log path
NAMESPACE = 'https://opendev.org/openstack/nova-vmbeam/console/1.0'
PORT_PREFIX = 'vmbeam.console.'
PORTS_DIR = '/dev/virtio-ports'
ET.register_namespace('vmbeam', NAMESPACE)

#: run by the L1's agent: the port's device, found by its name, given to
#: the QEMU user and linked under its name (as udev would)
LINK_SCRIPT = '''set -e
i=0
while [ $i -lt 200 ]; do
    for p in /sys/class/virtio-ports/*; do
        if [ "$(cat "$p/name" 2>/dev/null)" = "%(port)s" ]; then
            dev=/dev/${p##*/}
            chown %(user)s "$dev"
            chmod 0600 "$dev"
            mkdir -p -m 0755 %(dir)s
            chmod 0755 %(dir)s
            ln -sfn "$dev" %(dir)s/%(port)s
            exit 0
        fi
    done
    usleep 50000
    i=$((i + 1))
done
echo "no virtio-serial port named %(port)s" >&2
exit 1
'''


class ConsoleError(exception.VMBeamError):
    msg_fmt = ('The console log of guest %(guest)s in %(l1)s: %(reason)s. '
               '%(fix)s')


def port_name(guest_uuid):
    """The name of a guest's console port in its L1."""
    return PORT_PREFIX + guest_uuid.replace('-', '')[:16]


def _tag(name):
    return '{%s}%s' % (NAMESPACE, name)


def log_path(domain_xml):
    """The L0 console log a domain (as given, or moved) writes, or None."""
    domain = ET.fromstring(domain_xml)
    kept = domain.find('metadata/' + _tag('console'))
    if kept is not None:
        return kept.get('path')
    serial = domain.find('devices/serial')
    if serial is None:
        return None
    log = serial.find('log')
    if log is not None:
        return log.get('file')
    source = serial.find('source')
    if serial.get('type') == 'file' and source is not None:
        return source.get('path')
    return None


def to_l1_console(domain_xml):
    """(XML whose first serial port writes to its L1 port, L0 log or None).

    A domain whose serial port has no log on L0 (a TCP or a pty console
    without a log) is left as it is, as is one rewritten already.
    """
    domain = ET.fromstring(domain_xml)
    if domain.find('metadata/' + _tag('console')) is not None:
        return domain_xml, log_path(domain_xml)
    path = log_path(domain_xml)
    if not path:
        return domain_xml, None
    devices = domain.find('devices')
    serial = devices.find('serial')
    target = serial.find('target')
    serial.clear()
    # A pipe, not a file: libvirt opens a file chardev itself and seeks
    # in it, which a character device refuses; QEMU opens a pipe's path
    # (the port's device, there being no .in and .out) as it is.
    serial.set('type', 'pipe')
    ET.SubElement(serial, 'source', path='%s/%s' % (
        PORTS_DIR, port_name(domain.findtext('uuid'))))
    serial.append(target if target is not None else
                  ET.Element('target', port='0'))
    # The serial console is libvirt's alias of the first serial port,
    # made again from it; a pty one left here would not match.
    for console in devices.findall('console'):
        console_target = console.find('target')
        if console_target is None or \
                console_target.get('type', 'serial') == 'serial':
            devices.remove(console)
    metadata = domain.find('metadata')
    if metadata is None:
        metadata = ET.SubElement(domain, 'metadata')
    ET.SubElement(metadata, _tag('console'), path=path)
    return ET.tostring(domain, encoding='unicode'), path


def _channel_xml(path, port):
    channel = ET.Element('channel', type='file')
    ET.SubElement(channel, 'source', path=path, append='on')
    ET.SubElement(channel, 'target', type='virtio', name=port)
    return ET.tostring(channel, encoding='unicode')


def _plugged(dom, port):
    devices = ET.fromstring(dom.XMLDesc()).findall(
        "devices/channel/target[@name='%s']" % port)
    return bool(devices)


def _prepare_log(path, qemu_ids):
    """The log file, made if missing, writable by the L1's QEMU (L0)."""
    if not os.path.isabs(path):
        raise ValueError('not an absolute path: %r' % path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL |
                     os.O_NOFOLLOW, 0o640)
        os.close(fd)
    else:
        # Made earlier (the guest's port in another L1, during a move):
        # the QEMU user's by now, which this service may not open.
        if not stat.S_ISREG(st.st_mode):
            raise ValueError('not a regular file: %r' % path)
    privsep_files.chown(path, *qemu_ids)


def ensure_port(sibling, guest_uuid, path, qemu_ids, qemu_user):
    """The guest's console port in ``sibling``'s L1, onto L0's ``path``.

    Idempotent: a port plugged already is kept (its device is linked
    again, which also repairs a link lost in the L1).
    """
    port = port_name(guest_uuid)
    dom = sibling.l1_domain()
    if dom is None:
        raise ConsoleError(guest=guest_uuid, l1=sibling.name,
                           reason='the L1 VM does not run',
                           fix='Start the sibling first.')
    if not _plugged(dom, port):
        try:
            _prepare_log(path, qemu_ids)
        except (OSError, ValueError) as exc:
            raise ConsoleError(guest=guest_uuid, l1=sibling.name,
                               reason='cannot use %s: %s' % (path, exc),
                               fix='Give the guest a console log path of '
                                   'a regular file on this host.')
        try:
            dom.attachDeviceFlags(_channel_xml(path, port),
                                  libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as exc:
            raise ConsoleError(guest=guest_uuid, l1=sibling.name,
                               reason='its port was not plugged: %s' % exc,
                               fix='An L1 holds 30 console ports: move '
                                   'guests to another generation.')
    agent.sh(dom, LINK_SCRIPT % {'port': port, 'dir': PORTS_DIR,
                                 'user': qemu_user}, timeout=30)
    return port


def remove_port(sibling, guest_uuid, path):
    """Unplug the guest's console port from ``sibling``'s L1, if there.

    Best effort: the guest has left that L1 (moved, destroyed); a port
    left behind goes with the L1.
    """
    port = port_name(guest_uuid)
    try:
        dom = sibling.l1_domain()
        if dom is not None and _plugged(dom, port):
            dom.detachDeviceFlags(_channel_xml(path, port),
                                  libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except (libvirt.libvirtError, exception.VMBeamError) as exc:
        LOG.warning('console port %s of %s stays in %s: %s', port,
                    guest_uuid, sibling.name, exc)
