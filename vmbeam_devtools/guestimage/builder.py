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

"""Build the nova-vmbeam test guest: a Debian kernel plus an initramfs.

The initramfs holds busybox-static, /init (init.sh), memworker and
diskworker (built from memworker.c and diskworker.c), the TCP responder
(tcp-responder.sh) and the kernel modules for virtio disks and network
cards (``GUEST_MODULES`` and what they depend on, from the same kernel
package; Debian builds them as modules).  Everything is cached under a key
made of the inputs, so editing a source file, a new Debian kernel or
another module list rebuilds, and nothing else does.

Cache layout (``cache_dir`` defaults to ``default_cache_dir()``)::

    <cache_dir>/guestimage/
        .lock                     flock serialising builders
        kernel/<package>_<version>/vmlinuz  bzImage from the Debian package
        kernel/<package>_<version>/vmlinux  its payload: PVH ELF, boots
                                            2.5 s faster under TCG
        kernel/<package>_<version>/modules-<hash>/
                                  the modules of one module list, as
                                  uncompressed NAME.ko; "order" (written
                                  last) lists them in load order
        kernel/file-<hash>/vmlinux          same, for a $VMBEAM_GUEST_KERNEL
        image-<key>/initrd.img              gzip'ed newc cpio
        image-<key>/manifest.json           written last: image complete;
                                            names the kernel to boot

    GuestImage.kernel is the vmlinux when the kernel has a PVH entry point
    (Debian's has), else the bzImage.
"""

import collections
import gzip
import hashlib
import json
import os
import tempfile

from oslo_log import log as logging

from nova_vmbeam import imagekit

LOG = logging.getLogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))
MEMWORKER_SRC = os.path.join(HERE, 'memworker.c')
DISKWORKER_SRC = os.path.join(HERE, 'diskworker.c')
WORKER_HEADER = os.path.join(HERE, 'worker.h')   # included by both
INIT_SRC = os.path.join(HERE, 'init.sh')
RESPONDER_SRC = os.path.join(HERE, 'tcp-responder.sh')

KERNEL_ENV = imagekit.KERNEL_ENV
CACHE_ENV = imagekit.CACHE_ENV
KERNEL_METAPACKAGE = imagekit.KERNEL_METAPACKAGE
BUSYBOX = imagekit.BUSYBOX
# Drivers the guest loads at boot (their dependencies are added): virtio
# over PCI, a virtio-net card (eth0) and a virtio-blk disk (/dev/vda).
GUEST_MODULES = ('virtio_pci', 'virtio_net', 'virtio_blk')
# The guest's TCP responder (with vmbeam.ip=): every connection gets one
# line "vmbeam-guest HOSTNAME uptime=SECONDS", then EOF.
TCP_PORT = 7777
DEFAULT_DISK = '/dev/vda'

# Bump when the image layout changes in a way the inputs don't show.
FORMAT_VERSION = '3'

GuestImage = collections.namedtuple('GuestImage', ['kernel', 'initrd'])


class GuestImageError(imagekit.ImageBuildError):
    msg_fmt = 'Cannot build the test guest image: %(reason)s. %(fix)s'


default_cache_dir = imagekit.default_cache_dir


def kernel_cmdline(ram_mib, dirty_mib_s, report_ms=500, verify_mib_s=0,
                   ip=None, disk=False, hostname=None, boot_messages=False):
    """Kernel command line for the test guest running the given workload.

    :param ram_mib: MiB the worker owns; at most the guest RAM - 96 MiB
        (160 of 256 works, 192 is OOM-killed).
    :param dirty_mib_s: MiB/s rewritten; 0 only verifies.
    :param report_ms: interval of the "VMBEAM-WORKER tick=" and
        "VMBEAM-DISK seq=" lines.
    :param verify_mib_s: verification rate; 0 is as fast as the CPU goes
        (the guest then keeps a host CPU busy).
    :param ip: "ADDR/PREFIX" for eth0, the first virtio-net card; the guest
        then answers ping and serves TCP_PORT, and prints "VMBEAM-GUEST net
        ip=ADDR/PREFIX port=TCP_PORT".  None: no network set up.
    :param disk: True (= /dev/vda) or a device path: run the disk worker on
        it, which OVERWRITES its first MiB.  False: leave disks alone.
    :param hostname: the guest's hostname (default "vmbeam"), also in the
        TCP responder's answer.
    :param boot_messages: the kernel's boot messages (loglevel 6) on the
        console, which show how far a slow boot got; /init silences the
        console once it runs, so they never cut into the workers' lines.
    """
    extra = []
    if ip:
        extra.append('vmbeam.ip=%s' % ip)
    if disk:
        extra.append('vmbeam.disk=%s' % (
            DEFAULT_DISK if disk is True else disk))
    if hostname:
        extra.append('vmbeam.hostname=%s' % hostname)
    return ' '.join([
        'console=ttyS0',
        # Boot speed under TCG (measured: 5.0 s -> 1.9 s to "ready" with
        # the PVH vmlinux; these options are worth ~0.2 s of it): no
        # console chatter over the emulated UART, no timer/TSC checks, no
        # speculation mitigations, no probing of a PS/2 keyboard and mouse.
        'loglevel=6' if boot_messages else 'quiet loglevel=3',
        'mitigations=off', 'no_timer_check',
        'tsc=reliable', 'nokaslr', 'i8042.noaux', 'i8042.nokbd',
        # Reboot at once on a panic: with QEMU's -no-reboot that ends QEMU
        # instead of leaving a dead guest for the test to time out on.
        'panic=-1',
        'vmbeam.ram_mib=%d' % ram_mib,
        'vmbeam.dirty_mib_s=%d' % dirty_mib_s,
        'vmbeam.report_ms=%d' % report_ms,
        'vmbeam.verify_mib_s=%d' % verify_mib_s,
    ] + extra)


@imagekit.errors_as(GuestImageError)
def build(cache_dir=None, kernel=None, modules=None):
    """Build (or reuse) the test guest image and return a GuestImage.

    :param cache_dir: where to cache; default ``default_cache_dir()``.
    :param kernel: path of a kernel to use instead of Debian's; default
        $VMBEAM_GUEST_KERNEL, else the kernel linux-image-amd64 points to,
        fetched with ``apt-get download``.
    :param modules: names of the kernel modules the guest loads at boot,
        default GUEST_MODULES; their dependencies are added, built-in ones
        left out.  Taken from Debian's kernel package; with a kernel of
        your own there are none (build the drivers in).
    """
    cache_dir = os.path.abspath(cache_dir or default_cache_dir())
    root = os.path.join(cache_dir, 'guestimage')
    os.makedirs(root, exist_ok=True)
    kernel = kernel or os.environ.get(KERNEL_ENV) or None
    if modules is None:
        modules = GUEST_MODULES
    modules = tuple(sorted(set(imagekit.module_name(m) for m in modules)))

    with imagekit.locked(os.path.join(root, '.lock')):
        if kernel:
            kernel = os.path.abspath(kernel)
            if not os.path.isfile(kernel):
                raise GuestImageError(
                    reason='kernel %s (from %s or the kernel argument) does '
                    'not exist' % (kernel, KERNEL_ENV),
                    fix='Point %s at a bzImage or vmlinux, or unset it to '
                    "use Debian's %s." % (KERNEL_ENV, KERNEL_METAPACKAGE))
            st = os.stat(kernel)
            kernel_id = 'file:%s:%d:%d' % (kernel, st.st_size, st.st_mtime_ns)
            kdir = os.path.join(root, 'kernel', 'file-%s' % hashlib.sha256(
                kernel_id.encode()).hexdigest()[:16])
            if modules:
                LOG.info('Kernel %s: the guest gets no modules (%s); it '
                         'needs them built in for virtio disks and network',
                         kernel, ', '.join(modules))
                modules = ()
        else:
            package, version = imagekit.resolve_kernel_package()
            kernel_id = 'deb:%s=%s' % (package, version)
            kdir = os.path.join(root, 'kernel', '%s_%s' % (package, version))

        busybox = imagekit.find_busybox()
        key = _cache_key(kernel_id, busybox, modules)
        image_dir = os.path.join(root, 'image-%s' % key)
        manifest_path = os.path.join(image_dir, 'manifest.json')
        image = _load_manifest(manifest_path)
        if image:
            return image

        LOG.info('Building test guest image %s (%s)', image_dir, kernel_id)
        os.makedirs(kdir, exist_ok=True)
        module_files = []
        if not kernel:
            kernel, module_files = imagekit.fetch_kernel(
                root, kdir, package, version, modules)
        image = GuestImage(imagekit.pvh_kernel(kernel, kdir),
                           os.path.join(image_dir, 'initrd.img'))
        os.makedirs(image_dir, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            programs = {}
            for name, src in (('memworker', MEMWORKER_SRC),
                              ('diskworker', DISKWORKER_SRC)):
                programs[name] = os.path.join(tmp, name)
                imagekit.compile_static(src, programs[name])
            initrd = _make_initrd(busybox, programs, module_files)
        imagekit.atomic_write(image.initrd, initrd)
        manifest = {'format': FORMAT_VERSION, 'key': key,
                    'kernel_id': kernel_id, 'kernel': image.kernel,
                    'modules': [name for name, _ in module_files],
                    'initrd': image.initrd,
                    'initrd_sha256': hashlib.sha256(initrd).hexdigest()}
        # Written last: its presence means the image is complete.
        imagekit.atomic_write(manifest_path,
                              json.dumps(manifest, indent=1).encode())
        return image


def _load_manifest(path):
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    image = GuestImage(manifest.get('kernel'), manifest.get('initrd'))
    if all(p and os.path.exists(p) for p in image):
        return image
    return None


def _cache_key(kernel_id, busybox, modules):
    h = hashlib.sha256()
    h.update(('format=%s\nkernel=%s\nmodules=%s\n' % (
        FORMAT_VERSION, kernel_id, ','.join(modules))).encode())
    for path in (MEMWORKER_SRC, DISKWORKER_SRC, WORKER_HEADER, INIT_SRC,
                 RESPONDER_SRC, busybox):
        with open(path, 'rb') as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:16]


def _make_initrd(busybox, programs, module_files):
    """Return the gzip'ed newc cpio archive of the guest's root fs.

    :param programs: {name: path} of binaries for /bin.
    :param module_files: [(name, path)] of kernel modules in load order,
        stored as /lib/modules/NAME.ko; /lib/modules/order lists them.
    """
    cpio = imagekit.NewcWriter()
    for d in ('bin', 'dev', 'lib', 'lib/modules', 'proc', 'sbin', 'sys',
              'tmp', 'usr', 'usr/bin', 'usr/sbin'):
        cpio.add_dir(d)
    # The kernel opens /dev/console for /init's stdio before /init can
    # mount devtmpfs, so it must be in the archive.  newc carries device
    # numbers, so no mknod (or root) is needed.
    cpio.add_chardev('dev/console', 5, 1, 0o600)
    cpio.add_chardev('dev/null', 1, 3, 0o666)
    with open(busybox, 'rb') as f:
        cpio.add_file('bin/busybox', f.read(), 0o755)
    # Applet links made here rather than with "busybox --install" at boot,
    # which needs /proc mounted and costs boot time.
    for applet in imagekit.busybox_applets(busybox):
        applet = applet.lstrip('/')
        if applet != 'bin/busybox' and applet != 'linuxrc':
            cpio.add_symlink(applet, '/bin/busybox')
    for name, path in sorted(programs.items()):
        with open(path, 'rb') as f:
            cpio.add_file('bin/%s' % name, f.read(), 0o755)
    for name, path in module_files:
        with open(path, 'rb') as f:
            cpio.add_file('lib/modules/%s.ko' % name, f.read())
    cpio.add_file('lib/modules/order', ''.join(
        '%s\n' % name for name, _ in module_files).encode())
    with open(RESPONDER_SRC, 'rb') as f:
        cpio.add_file('bin/vmbeam-tcp', f.read(), 0o755)
    with open(INIT_SRC, 'rb') as f:
        cpio.add_file('init', f.read(), 0o755)
    # mtime=0 keeps the output byte-for-byte reproducible.
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)
