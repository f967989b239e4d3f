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


"""An L2 guest's direct-boot kernel and initrd, copied into its L1.

Nova boots an instance from a kernel and an initrd image (AKI/ARI) by
naming files under instances_path in ``<os><kernel>``/``<initrd>``; QEMU
opens them when it starts, which for an L2 is inside the L1, where L0's
files are not. They are read once per start, so they are copied into the
L1, under L1_DIR/<guest uuid>/, and the domain names those copies.

How: each file is hot-plugged into the L1 VM as a read-only virtio disk
(through L0's libvirt), read in the L1 by its serial number, cut to the
file's size, checked by its sha256 and unplugged. A kernel may be tens of
MiB (the test guest's is 63 MiB): the guest agent's JSON channel takes
minutes for that under TCG, a virtio disk a second or two.

The L0 paths are kept in the domain's metadata: a guest moving to another
L1 starts its destination QEMU with the same command line, so the files
are copied into that L1 too, from L0.
"""

import os
import string
import time
import uuid
import xml.etree.ElementTree as ET

import libvirt
from oslo_log import log as logging

from nova_vmbeam import exception
from nova_vmbeam import imagekit
from nova_vmbeam.nested import agent

LOG = logging.getLogger(__name__)

NAMESPACE = 'https://opendev.org/openstack/nova-vmbeam/boot/1.0'
ET.register_namespace('vmbeambootfiles', NAMESPACE)
#: in the L1 (its root is in RAM; the files go with the guest or the L1)
L1_DIR = '/run/vmbeam-boot'
KINDS = ('kernel', 'initrd')
#: files the L1 appliance carries itself (its extra files go under it):
#: a kernel named there is the L1's own, not one of L0 to copy in
APPLIANCE_DIR = '/opt/vmbeam/'


class BootFileError(exception.VMBeamError):
    msg_fmt = ('The %(kind)s of guest %(guest)s in %(l1)s: %(reason)s. '
               '%(fix)s')


def _tag(name):
    return '{%s}%s' % (NAMESPACE, name)


def l1_path(guest_uuid, kind):
    # Parsed, not trusted: the path goes into commands run in the L1.
    return '%s/%s/%s' % (L1_DIR, uuid.UUID(guest_uuid), kind)


def to_l1_files(domain_xml):
    """(XML naming the L1's copies, {kind: L0 path}) for a domain.

    A domain rewritten already (a moving guest's) keeps its XML; its L0
    paths come from the metadata. One without a kernel gets ({} and) its
    XML unchanged.
    """
    domain = ET.fromstring(domain_xml)
    kept = domain.find('metadata/' + _tag('boot'))
    if kept is not None:
        return domain_xml, {kind: kept.get(kind) for kind in KINDS
                            if kept.get(kind)}
    guest_uuid = domain.findtext('uuid')
    found = {}
    for kind in KINDS:
        node = domain.find('os/' + kind)
        if node is None or not (node.text or '').strip():
            continue
        path = node.text.strip()
        if path.startswith(APPLIANCE_DIR):
            continue
        if not os.path.isabs(path):
            raise BootFileError(kind=kind, guest=guest_uuid, l1='its L1',
                                reason='%r is not an absolute path' % path,
                                fix='Name the file by its absolute path.')
        found[kind] = path
        node.text = l1_path(guest_uuid, kind)
    if not found:
        return domain_xml, {}
    metadata = domain.find('metadata')
    if metadata is None:
        metadata = ET.SubElement(domain, 'metadata')
    ET.SubElement(metadata, _tag('boot'), **found)
    return ET.tostring(domain, encoding='unicode'), found


def _l1_sha256(dom, path):
    out = agent.sh(dom, 'if [ -f %s ]; then sha256sum %s; fi' % (path, path))
    return out.split()[0] if out.strip() else None


def _disk_xml(path, target, serial, slot):
    disk = ET.Element('disk', type='file', device='disk')
    ET.SubElement(disk, 'driver', name='qemu', type='raw')
    ET.SubElement(disk, 'source', file=path)
    ET.SubElement(disk, 'target', dev=target, bus='virtio')
    ET.SubElement(disk, 'readonly')
    ET.SubElement(disk, 'serial').text = serial
    # Not left to libvirt, which does not know the slots of the pools.
    ET.SubElement(disk, 'address', type='pci', domain='0x0000',
                  bus='0x00', slot='0x%02x' % slot, function='0x0')
    return ET.tostring(disk, encoding='unicode')


def _free_target(dom):
    used = {t.get('dev') for t in ET.fromstring(dom.XMLDesc()).findall(
        'devices/disk/target')}
    for letter in reversed(string.ascii_lowercase):
        if 'vd' + letter not in used:
            return 'vd' + letter
    raise ValueError('no free virtio disk name')


#: run by the L1's agent: the disk with this serial, read into the file
COPY_SCRIPT = '''set -e
dev=
i=0
while [ -z "$dev" ] && [ $i -lt 200 ]; do
    for b in /sys/block/vd*; do
        if [ "$(cat "$b/serial" 2>/dev/null)" = "%(serial)s" ]; then
            dev=/dev/${b##*/}
        fi
    done
    [ -n "$dev" ] || usleep 50000
    i=$((i + 1))
done
[ -n "$dev" ] || { echo "no disk with serial %(serial)s" >&2; exit 1; }
mkdir -p %(dir)s
chmod 0755 %(top)s %(dir)s
dd if="$dev" of=%(partial)s bs=1M 2>/dev/null
truncate -s %(size)d %(partial)s
sha256sum %(partial)s
'''


def _copy(sibling, dom, guest_uuid, kind, source, want):
    target = l1_path(guest_uuid, kind)
    partial = target + '.part'
    serial = 'vmbeamboot-' + want[:8]
    xml = _disk_xml(source, _free_target(dom), serial,
                    sibling.free_pci_slot('a boot file'))
    try:
        dom.attachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError as exc:
        raise BootFileError(kind=kind, guest=guest_uuid, l1=sibling.name,
                            reason='%s was not plugged into the L1: %s' %
                                   (source, exc),
                            fix='Check that the QEMU user may read it.')
    try:
        out = agent.sh(dom, COPY_SCRIPT % {
            'serial': serial, 'dir': os.path.dirname(target), 'top': L1_DIR,
            'partial': partial, 'size': os.path.getsize(source)},
            timeout=300)
    finally:
        try:
            dom.detachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as exc:
            LOG.warning('the disk of %s stays plugged into %s: %s', source,
                        sibling.name, exc)
    got = out.split()[0] if out.strip() else None
    if got != want:
        raise BootFileError(kind=kind, guest=guest_uuid, l1=sibling.name,
                            reason='its copy has sha256 %s, %s has %s'
                                   % (got, source, want),
                            fix='Retry; if it happens again, check the '
                                'L1\'s free memory.')
    agent.sh(dom, 'chmod 0644 %s && mv -f %s %s' % (
        partial, partial, target))


def ensure(sibling, guest_uuid, files):
    """Copy L0 ``files`` ({kind: path}) into ``sibling``'s L1.

    A copy there with the same sha256 is kept (a reboot, a retry). The
    copy is written beside its place and renamed once checked, readable
    by the L1's QEMU user.
    """
    if not files:
        return
    dom = sibling.l1_domain()
    for kind, source in sorted(files.items()):
        try:
            want = imagekit.sha256_file(source)
        except OSError as exc:
            raise BootFileError(kind=kind, guest=guest_uuid, l1=sibling.name,
                                reason='cannot read %s on this host: %s' %
                                       (source, exc),
                                fix='Check that the instance directory '
                                    'holds its %s.' % kind)
        if dom is None:
            raise BootFileError(kind=kind, guest=guest_uuid, l1=sibling.name,
                                reason='the L1 VM does not run',
                                fix='Start the sibling first.')
        if _l1_sha256(dom, l1_path(guest_uuid, kind)) == want:
            continue
        started = time.monotonic()
        _copy(sibling, dom, guest_uuid, kind, source, want)
        LOG.info('%s of %s copied into %s in %.1f s', kind, guest_uuid,
                 sibling.name, time.monotonic() - started)


def remove(sibling, guest_uuid):
    """Delete the guest's copies from ``sibling``'s L1 (best effort)."""
    try:
        dom = sibling.l1_domain()
        if dom is not None:
            agent.sh(dom, 'rm -rf %s/%s' % (L1_DIR, uuid.UUID(guest_uuid)))
    except exception.VMBeamError as exc:
        LOG.warning('boot files of %s stay in %s: %s', guest_uuid,
                    sibling.name, exc)
