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

"""Build the L1 appliance: a hypervisor VM image from pinned Debian packages.

The nested sibling runs each hypervisor generation as a VM (L1). Its image
is a Debian kernel plus one initramfs, built here without any disk-image
tooling and without installing anything:

1. ``packages.lock`` (next to this file) pins every package of the
   dependency closure of QEMU 10, libvirt 11 and qemu-guest-agent
   (bookworm + bookworm-backports) and the kernel, as ``name=version``.
   ``vmbeam appliance lock`` computes it again (apt's resolver against an
   empty package database, so the whole closure is listed).
2. Each pinned package is fetched with ``apt-get download name=version``
   (cached; the archive's checksums are checked by apt) and unpacked with
   ``dpkg -x`` into a staging tree.
3. From the staging tree only what the L1 needs is taken: the daemons'
   binaries, the libvirt QEMU driver (dlopen'ed), firmware and data, and
   the shared libraries they need (their DT_NEEDED closure, resolved in
   the staging tree, never on the build host). Every binary is then run
   once in a chroot of the result (``--version``): a missing library fails
   the build, not the boot.
4. busybox-static (the host's), ``init.sh`` as /init, the daemons'
   configuration and the kernel modules for virtio are added, plus the
   caller's extra files if any (the dev tools add the test guest image and
   the bench's bandwidth probe that way: the production appliance carries
   no test payload), and the whole is written as an uncompressed newc cpio
   (uncompressed: unpacking it under TCG is a memcpy, not minutes of
   inflate). Entries have uid 0 and mtime 0: the same inputs give the
   same bytes, and the manifest records the SHA-256.

Cache layout (under ``imagekit.default_cache_dir()``)::

    appliance/debs/<name>_<version>_<arch>.deb
    appliance/image-<key>/initrd.img     the root filesystem
    appliance/image-<key>/manifest.json  written last; packages with
                                         versions and .deb SHA-256s,
                                         kernel, initrd SHA-256
"""

import collections
import dataclasses
import glob
import hashlib
import json
import os
import shutil
import tempfile

from oslo_log import log as logging

from nova_vmbeam import imagekit
from nova_vmbeam.nested import pki

LOG = logging.getLogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))
LOCK_FILE = os.path.join(HERE, 'packages.lock')
INIT_SRC = os.path.join(HERE, 'init.sh')
# 2: no test payload of its own (extra files instead)
# 3: libvirtd on TLS only, QEMU not root
FORMAT_VERSION = '3'

#: what the appliance is for; their closure is pinned in packages.lock
ROOT_PACKAGES = ('qemu-system-x86', 'libvirt-daemon',
                 'libvirt-daemon-driver-qemu',
                 'libvirt-daemon-driver-secret', 'libvirt-daemon-log',
                 'qemu-guest-agent')
SUITE = 'bookworm-backports'
KERNEL_PREFIX = 'linux-image-'
#: drivers the L1 loads at boot (their dependencies are added)
L1_MODULES = ('virtio_pci', 'virtio_net', 'virtio_console',
              # guests' host bridges, re-made in the L1, and their taps
              # (nested/uplinks.py)
              'bridge', 'tun',
              # guests' kernels and initrds, read from a disk plugged for
              # the copy (nested/bootfiles.py)
              'virtio_blk',
              # guests' pools plugged as virtio-pmem and mapped as
              # device-DAX ([vmbeam_nested] bar_mapping = dax)
              'virtio_pmem', 'nd_pmem', 'dax_pmem', 'device_dax')

#: executables and dlopen'ed objects taken from the staging tree; their
#: shared libraries are added by following DT_NEEDED
EXECUTABLES = ('usr/sbin/libvirtd', 'usr/sbin/virtlogd',
               'usr/bin/qemu-system-x86_64', 'usr/sbin/qemu-ga',
               # libvirtd reads the SMBIOS tables with it
               'usr/sbin/dmidecode')
PLUGINS = tuple('usr/lib/x86_64-linux-gnu/libvirt/connection-driver/'
                'libvirt_driver_%s.so' % name
                # secret: guests' volume keys, carried into each generation
                for name in ('qemu', 'secret'))
#: data trees copied whole (firmware, CPU models, keymaps, and the NICs'
#: option ROMs: Debian's QEMU looks for them in usr/lib/ipxe/qemu, and a
#: NIC that Nova's domain XML gives no <rom enabled='no'/> needs its ROM)
DATA_TREES = ('usr/share/qemu', 'usr/share/seabios', 'usr/share/libvirt',
              'usr/lib/ipxe/qemu')
LIBRARY_DIRS = ('lib/x86_64-linux-gnu', 'usr/lib/x86_64-linux-gnu',
                'lib64', 'usr/lib64', 'lib', 'usr/lib')
INTERPRETER = 'lib64/ld-linux-x86-64.so.2'
#: libvirtd's TLS port in the L1; it has no other listener
LIBVIRT_TLS_PORT = 16514
#: the unprivileged user (and its group) QEMU runs as in the L1
QEMU_USER = 'libvirt-qemu'
QEMU_UID = 64055
KVM_GID = 64054

# TLS only, with a client certificate required and checked against this
# node's CA, and only L0's client name accepted (nested/pki.py explains
# the choice). auth_tls "none" adds no SASL step on top: the client
# certificate is the authentication. The files are delivered by L0
# through the guest agent before /init starts libvirtd.
LIBVIRTD_CONF = '''\
# nova-vmbeam L1 appliance: TLS, client certificates required.
listen_tls = 1
listen_tcp = 0
tls_port = "%(port)d"
auth_tls = "none"
tls_no_verify_certificate = 0
tls_allowed_dn_list = ["%(dn)s"]
ca_file = "/%(ca)s"
cert_file = "/%(cert)s"
key_file = "/%(key)s"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
''' % {'port': LIBVIRT_TLS_PORT, 'dn': pki.L0_CLIENT_DN,
       'ca': pki.L1_CA_CERT, 'cert': pki.L1_SERVER_CERT,
       'key': pki.L1_SERVER_KEY}

QEMU_CONF = '''\
# nova-vmbeam L1 appliance: QEMU runs as %(user)s (not root), with no
# cgroups, no per-domain /dev namespace and no MAC security driver
# (none exist here); libvirt's DAC driver still drops QEMU to that user.
# dynamic_ownership off: the BAR files in /sys are not libvirt's to
# chown (the nested sibling gives each to %(user)s as it enables
# it).
user = "%(user)s"
group = "%(user)s"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
# Guests' disks are L0's NBD exports, in TLS: the client certificate is
# the L1's migration one (nested/disks.py, nested/pki.py).
nbd_tls_x509_cert_dir = "/%(migration)s"
''' % {'user': QEMU_USER, 'migration': pki.L1_MIGRATION_DIR}

Appliance = collections.namedtuple('Appliance',
                                   ['kernel', 'initrd', 'manifest'])


@dataclasses.dataclass(frozen=True)
class ExtraFile:
    """A file a caller adds to the appliance's root filesystem."""

    #: path inside the L1, relative to / (e.g. "opt/vmbeam/guest/vmlinux")
    dest: str
    #: the file on this host whose bytes go there
    source: str
    mode: int = 0o644


class ApplianceError(imagekit.ImageBuildError):
    msg_fmt = 'Cannot build the L1 appliance: %(reason)s. %(fix)s'


def _run(cmd, fix, cwd=None):
    return imagekit.run(cmd, fix, cwd=cwd, error=ApplianceError)


# --- the lock file ----------------------------------------------------------

def read_lock(path=LOCK_FILE):
    """[(name, version)] from a lock file (comments and blanks skipped)."""
    pins = []
    try:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                line = line.split('#', 1)[0].strip()
                if not line:
                    continue
                name, sep, version = line.partition('=')
                if not sep or not name or not version:
                    raise ApplianceError(
                        reason='%s line %d is not name=version: %r'
                        % (path, number, line),
                        fix='Run "vmbeam appliance lock" to write it again.')
                pins.append((name, version))
    except OSError as exc:
        raise ApplianceError(reason='cannot read %s: %s' % (path, exc),
                             fix='Run "vmbeam appliance lock".')
    if not any(name.startswith(KERNEL_PREFIX) for name, _ in pins):
        raise ApplianceError(reason='%s pins no %s* package' %
                             (path, KERNEL_PREFIX),
                             fix='Run "vmbeam appliance lock".')
    return pins


def resolve_closure(packages=ROOT_PACKAGES, suite=SUITE):
    """[(name, version)]: the packages apt would install on an empty system.

    apt's own resolver, run against an empty package database (so nothing
    counts as installed), without recommends, preferring ``suite``.
    """
    fix = ('Add %s to apt\'s sources (tools/install.sh does) and run '
           '"apt-get update".' % suite)
    with tempfile.TemporaryDirectory() as tmp:
        status = os.path.join(tmp, 'status')
        open(status, 'w').close()
        out = _run(['apt-get', '-s', '-o', 'Dir::State::status=%s' % status,
                    '-o', 'APT::Install-Recommends=false', '-t', suite,
                    'install'] + list(packages), fix)
    pins = []
    for line in out.splitlines():
        # Inst NAME (VERSION SUITES [ARCH])
        if line.startswith('Inst '):
            parts = line.split()
            pins.append((parts[1], parts[2].lstrip('(')))
    if not pins:
        raise ApplianceError(reason='apt resolved nothing:\n%s' % out[-2000:],
                             fix=fix)
    return pins


@imagekit.errors_as(ApplianceError)
def write_lock(path=LOCK_FILE):
    """Pin the current closure and kernel in ``path``; return the pins."""
    pins = resolve_closure()
    kernel = imagekit.resolve_kernel_package()
    pins.append(kernel)
    lines = ['# nova-vmbeam L1 appliance packages, written by "vmbeam '
             'appliance lock".',
             '# Closure of %s from %s without recommends, plus the kernel.'
             % (' '.join(ROOT_PACKAGES), SUITE)]
    lines += ['%s=%s' % pin for pin in sorted(pins)]
    imagekit.atomic_write(path, ('\n'.join(lines) + '\n').encode())
    return sorted(pins)


# --- fetching and unpacking -------------------------------------------------

def _deb_name(name, version):
    # apt-get download names files NAME_VERSION_ARCH.deb with the epoch's
    # colon escaped as %3a.
    return '%s_%s_' % (name, version.replace(':', '%3a'))


def fetch(pins, deb_dir):
    """The .deb of every pin (downloaded if not cached): {name: path}."""
    os.makedirs(deb_dir, exist_ok=True)
    have = {}
    missing = []
    for name, version in pins:
        found = glob.glob(os.path.join(deb_dir,
                                       glob.escape(_deb_name(name, version))
                                       + '*.deb'))
        if found:
            have[name] = found[0]
        else:
            missing.append('%s=%s' % (name, version))
    if missing:
        LOG.info('Downloading %d packages for the L1 appliance',
                 len(missing))
        with tempfile.TemporaryDirectory(dir=deb_dir) as tmp:
            os.chmod(tmp, 0o755)   # apt's _apt user writes here
            _run(['apt-get', 'download'] + missing, cwd=tmp,
                 fix='A pinned version is no longer in the archive, or apt '
                 'cannot reach it: run "apt-get update", or "vmbeam '
                 'appliance lock" to pin the current versions.')
            for path in glob.glob(os.path.join(tmp, '*.deb')):
                os.rename(path, os.path.join(deb_dir,
                                             os.path.basename(path)))
        have = fetch(pins, deb_dir)
    return have


def unpack(debs, stage):
    for path in sorted(debs.values()):
        _run(['dpkg', '-x', path, stage], fix='Install dpkg.')


# --- choosing files ---------------------------------------------------------

def _needed(path):
    """DT_NEEDED names of an ELF file (empty for other files)."""
    with open(path, 'rb') as f:
        if f.read(4) != b'\x7fELF':
            return []
    out = _run(['readelf', '-d', '--wide', path],
               fix='Install binutils.')
    names = []
    for line in out.splitlines():
        if '(NEEDED)' in line and '[' in line:
            names.append(line.rsplit('[', 1)[1].rstrip(']'))
    return names


def _with_links(stage, rel, chosen):
    """Add ``rel`` and, if it is a symlink, what it points to."""
    while rel not in chosen:
        chosen.add(rel)
        path = os.path.join(stage, rel)
        if not os.path.islink(path):
            return
        target = os.readlink(path)
        if os.path.isabs(target):
            rel = target.lstrip('/')
        else:
            rel = os.path.normpath(os.path.join(os.path.dirname(rel),
                                                target))


def _find_library(stage, name):
    for directory in LIBRARY_DIRS:
        rel = os.path.join(directory, name)
        if os.path.lexists(os.path.join(stage, rel)):
            return rel
    return None


def select(stage):
    """Relative paths of everything the L1 needs from the staging tree."""
    chosen = set()
    queue = []
    for rel in EXECUTABLES + PLUGINS + (INTERPRETER,):
        if not os.path.lexists(os.path.join(stage, rel)):
            raise ApplianceError(reason='no %s in the unpacked packages' %
                                 rel, fix='Run "vmbeam appliance lock".')
        queue.append(rel)
    for tree in DATA_TREES:
        for dirpath, dirnames, filenames in os.walk(os.path.join(stage,
                                                                 tree)):
            for name in filenames + [d for d in dirnames if os.path.islink(
                    os.path.join(dirpath, d))]:
                queue.append(os.path.relpath(os.path.join(dirpath, name),
                                             stage))
    seen_libs = set()
    while queue:
        rel = queue.pop()
        before = set(chosen)
        _with_links(stage, rel, chosen)
        for added in chosen - before:
            path = os.path.join(stage, added)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            for lib in _needed(path):
                if lib in seen_libs:
                    continue
                seen_libs.add(lib)
                found = _find_library(stage, lib)
                if found is None:
                    raise ApplianceError(
                        reason='%s needs %s, which no pinned package has'
                        % (added, lib),
                        fix='Run "vmbeam appliance lock".')
                queue.append(found)
    return sorted(r for r in chosen if os.path.lexists(os.path.join(stage,
                                                                    r)))


def _copy_selected(stage, root, chosen):
    for rel in chosen:
        src, dst = os.path.join(stage, rel), os.path.join(root, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
        elif os.path.isdir(src):
            os.makedirs(dst, exist_ok=True)
        else:
            shutil.copy2(src, dst)


def _smoke_test(root):
    """Run every daemon once in a chroot of ``root``.

    A library missing from the closure fails the build, not the boot.
    """
    for rel in EXECUTABLES:
        _run(['chroot', root, '/' + rel, '--version'],
             fix='The closure misses something %s needs; report a bug.'
             % rel)


# --- the image --------------------------------------------------------------

def _cache_key(pins, extra_files):
    h = hashlib.sha256()
    h.update(('format=%s\n' % FORMAT_VERSION).encode())
    h.update(''.join('%s=%s\n' % pin for pin in sorted(pins)).encode())
    for path in (INIT_SRC, imagekit.BUSYBOX):
        with open(path, 'rb') as f:
            h.update(hashlib.sha256(f.read()).digest())
    for extra in extra_files:
        h.update(('extra=%s mode=%o\n' % (extra.dest, extra.mode)).encode())
        h.update(bytes.fromhex(imagekit.sha256_file(extra.source)))
    h.update((LIBVIRTD_CONF + QEMU_CONF + ','.join(
        L1_MODULES + EXECUTABLES + PLUGINS + DATA_TREES)).encode())
    return h.hexdigest()[:16]


def default_dir(cache_dir=None):
    return os.path.join(os.path.abspath(
        cache_dir or imagekit.default_cache_dir()), 'appliance')


@imagekit.errors_as(ApplianceError)
def build(cache_dir=None, lock_file=LOCK_FILE, extra_files=()):
    """Build (or reuse) the L1 appliance; returns an Appliance.

    :param extra_files: ExtraFile objects added to the root filesystem;
        they are part of the cache key, so an appliance with them is
        another image than one without.
    """
    cache_dir = os.path.abspath(cache_dir or imagekit.default_cache_dir())
    top = default_dir(cache_dir)
    os.makedirs(top, exist_ok=True)
    pins = read_lock(lock_file)
    extra_files = tuple(sorted(extra_files, key=lambda e: e.dest))
    with imagekit.locked(os.path.join(top, '.lock')):
        key = _cache_key(pins, extra_files)
        image_dir = os.path.join(top, 'image-%s' % key)
        manifest_path = os.path.join(image_dir, 'manifest.json')
        found = load(manifest_path)
        if found:
            return found
        LOG.info('Building the L1 appliance %s', image_dir)
        kernel_pin = [p for p in pins if p[0].startswith(KERNEL_PREFIX)][0]
        user_pins = [p for p in pins if p is not kernel_pin]
        # The kernel cache the test guest image uses too (same layout):
        # one download of a kernel package serves both.
        guest_root = os.path.join(cache_dir, 'guestimage')
        kdir = os.path.join(guest_root, 'kernel', '%s_%s' % kernel_pin)
        os.makedirs(kdir, exist_ok=True)
        vmlinuz, module_files = imagekit.fetch_kernel(
            guest_root, kdir, kernel_pin[0], kernel_pin[1],
            tuple(sorted(L1_MODULES)))
        kernel = imagekit.pvh_kernel(vmlinuz, kdir)
        debs = fetch(user_pins, os.path.join(top, 'debs'))
        os.makedirs(image_dir, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=top) as tmp:
            stage = os.path.join(tmp, 'stage')
            root = os.path.join(tmp, 'root')
            unpack(debs, stage)
            chosen = select(stage)
            _copy_selected(stage, root, chosen)
            _smoke_test(root)
            initrd = os.path.join(image_dir, 'initrd.img')
            size = _write_initrd(root, module_files, extra_files, initrd)
        manifest = {
            'format': FORMAT_VERSION, 'key': key,
            'kernel': kernel, 'kernel_package': '%s=%s' % kernel_pin,
            'modules': [name for name, _ in module_files],
            'initrd': initrd, 'initrd_bytes': size,
            'initrd_sha256': imagekit.sha256_file(initrd),
            'files': len(chosen),
            'extra_files': ['/' + extra.dest for extra in extra_files],
            'packages': {name: {'version': version,
                                'sha256': imagekit.sha256_file(debs[name])}
                         for name, version in user_pins}}
        imagekit.atomic_write(manifest_path, json.dumps(
            manifest, indent=1, sort_keys=True).encode())
        return load(manifest_path)


def load(manifest_path):
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    if not all(os.path.exists(manifest.get(k) or '')
               for k in ('kernel', 'initrd')):
        return None
    return Appliance(manifest['kernel'], manifest['initrd'], manifest_path)


def _write_initrd(root, module_files, extra_files, dest):
    cpio = imagekit.NewcWriter()
    for d in ('bin', 'dev', 'etc', 'etc/libvirt', 'lib', 'lib/modules',
              'proc', 'root', 'run', 'sbin', 'sys', 'tmp', 'usr', 'usr/bin',
              'usr/sbin', 'var', 'var/lib', 'var/log', 'var/cache', 'opt'):
        cpio.add_dir(d)
    cpio.add_chardev('dev/console', 5, 1, 0o600)
    cpio.add_chardev('dev/null', 1, 3, 0o666)
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir != '.':
            cpio.add_dir(rel_dir)
        for name in sorted(filenames) + [d for d in dirnames if
                                         os.path.islink(os.path.join(
                                             dirpath, d))]:
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if os.path.islink(path):
                cpio.add_symlink(rel, os.readlink(path))
            else:
                with open(path, 'rb') as f:
                    cpio.add_file(rel, f.read(),
                                  os.stat(path).st_mode & 0o7777)
    busybox = imagekit.find_busybox()
    with open(busybox, 'rb') as f:
        cpio.add_file('bin/busybox', f.read(), 0o755)
    for applet in imagekit.busybox_applets(busybox):
        applet = applet.lstrip('/')
        if applet not in ('bin/busybox', 'linuxrc') and \
                not os.path.lexists(os.path.join(root, applet)):
            cpio.add_symlink(applet, '/bin/busybox')
    for name, path in module_files:
        with open(path, 'rb') as f:
            cpio.add_file('lib/modules/%s.ko' % name, f.read())
    cpio.add_file('lib/modules/order', ''.join(
        '%s\n' % name for name, _ in module_files).encode())
    for name, text in (
            # QEMU's user; in the kvm group for /dev/kvm where the L1
            # has one.
            ('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n'
             '%s:x:%d:%d::/var/lib/libvirt:/bin/false\n'
             % (QEMU_USER, QEMU_UID, QEMU_UID)),
            ('etc/group', 'root:x:0:\nkvm:x:%d:%s\n%s:x:%d:\n'
             % (KVM_GID, QEMU_USER, QEMU_USER, QEMU_UID)),
            ('etc/nsswitch.conf', 'passwd: files\ngroup: files\n'
             'hosts: files\n'),
            ('etc/libvirt/libvirtd.conf', LIBVIRTD_CONF),
            ('etc/libvirt/qemu.conf', QEMU_CONF)):
        cpio.add_file(name, text.encode())
    for extra in extra_files:
        parent = os.path.dirname(extra.dest)
        parents = []
        while parent:
            parents.append(parent)
            parent = os.path.dirname(parent)
        for directory in reversed(parents):
            cpio.add_dir(directory)   # once: the writer skips repeats
        with open(extra.source, 'rb') as f:
            cpio.add_file(extra.dest, f.read(), extra.mode)
    with open(INIT_SRC, 'rb') as f:
        cpio.add_file('init', f.read(), 0o755)
    data = cpio.finish()
    imagekit.atomic_write(dest, data)
    return len(data)
