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
import contextlib
import fcntl
import glob
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import stat
import struct
import subprocess
import tempfile
import zlib

from oslo_log import log as logging

from nova_vmbeam import exception

LOG = logging.getLogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))
MEMWORKER_SRC = os.path.join(HERE, 'memworker.c')
DISKWORKER_SRC = os.path.join(HERE, 'diskworker.c')
WORKER_HEADER = os.path.join(HERE, 'worker.h')   # included by both
INIT_SRC = os.path.join(HERE, 'init.sh')
RESPONDER_SRC = os.path.join(HERE, 'tcp-responder.sh')

KERNEL_ENV = 'VMBEAM_GUEST_KERNEL'
CACHE_ENV = 'VMBEAM_CACHE_DIR'
KERNEL_METAPACKAGE = 'linux-image-amd64'
BUSYBOX = '/bin/busybox'
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


class GuestImageError(exception.VMBeamError):
    msg_fmt = 'Cannot build the test guest image: %(reason)s. %(fix)s'


def default_cache_dir():
    """$VMBEAM_CACHE_DIR, else $XDG_CACHE_HOME/nova-vmbeam (~/.cache/...)."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    xdg = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')
    return os.path.join(xdg, 'nova-vmbeam')


def kernel_cmdline(ram_mib, dirty_mib_s, report_ms=500, verify_mib_s=0,
                   ip=None, disk=False, hostname=None):
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
        'quiet', 'loglevel=3', 'mitigations=off', 'no_timer_check',
        'tsc=reliable', 'nokaslr', 'i8042.noaux', 'i8042.nokbd',
        # Reboot at once on a panic: with QEMU's -no-reboot that ends QEMU
        # instead of leaving a dead guest for the test to time out on.
        'panic=-1',
        'vmbeam.ram_mib=%d' % ram_mib,
        'vmbeam.dirty_mib_s=%d' % dirty_mib_s,
        'vmbeam.report_ms=%d' % report_ms,
        'vmbeam.verify_mib_s=%d' % verify_mib_s,
    ] + extra)


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
    modules = tuple(sorted(set(_module_name(m) for m in modules)))

    with _locked(os.path.join(root, '.lock')):
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
            package, version = _resolve_kernel_package()
            kernel_id = 'deb:%s=%s' % (package, version)
            kdir = os.path.join(root, 'kernel', '%s_%s' % (package, version))

        busybox = _find_busybox()
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
            kernel, module_files = _fetch_kernel(root, kdir, package,
                                                 version, modules)
        image = GuestImage(_pvh_kernel(kernel, kdir),
                           os.path.join(image_dir, 'initrd.img'))
        os.makedirs(image_dir, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            programs = {}
            for name, src in (('memworker', MEMWORKER_SRC),
                              ('diskworker', DISKWORKER_SRC)):
                programs[name] = os.path.join(tmp, name)
                _compile(src, programs[name])
            initrd = _make_initrd(busybox, programs, module_files)
        _atomic_write(image.initrd, initrd)
        manifest = {'format': FORMAT_VERSION, 'key': key,
                    'kernel_id': kernel_id, 'kernel': image.kernel,
                    'modules': [name for name, _ in module_files],
                    'initrd': image.initrd,
                    'initrd_sha256': hashlib.sha256(initrd).hexdigest()}
        # Written last: its presence means the image is complete.
        _atomic_write(manifest_path, json.dumps(manifest, indent=1).encode())
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


@contextlib.contextmanager
def _locked(path):
    with open(path, 'a') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(cmd, fix, cwd=None):
    try:
        return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True,
                              text=True).stdout
    except FileNotFoundError:
        raise GuestImageError(reason='%s is not installed' % cmd[0], fix=fix)
    except subprocess.CalledProcessError as e:
        raise GuestImageError(
            reason='%s failed (exit %d): %s' % (
                ' '.join(cmd), e.returncode,
                (e.stderr or e.stdout or '').strip()[-2000:]),
            fix=fix)


def _resolve_kernel_package():
    """The concrete kernel package (name, version) linux-image-amd64 wants."""
    fix = ('Run "apt-get update" (Debian 12 amd64 with the main archive '
           'configured), or set %s to the path of a kernel image.'
           % KERNEL_ENV)
    out = _run(['apt-cache', 'depends', KERNEL_METAPACKAGE], fix)
    package = None
    for line in out.splitlines():
        what, _, dep = line.strip().partition(':')
        dep = dep.strip()
        if what == 'Depends' and dep.startswith('linux-image-'):
            package = dep
            break
    if package is None:
        raise GuestImageError(
            reason='apt-cache depends %s names no linux-image-* package:\n%s'
            % (KERNEL_METAPACKAGE, out), fix=fix)
    out = _run(['apt-cache', 'show', '--no-all-versions', package], fix)
    for line in out.splitlines():
        if line.startswith('Version:'):
            return package, line.split(':', 1)[1].strip()
    raise GuestImageError(reason='apt-cache show %s gave no version'
                          % package, fix=fix)


def _fetch_kernel(root, kdir, package, version, modules):
    """The cached bzImage and modules of a kernel package.

    Returns (vmlinuz path, [(module name, .ko path)] in load order).  What
    is not cached yet is taken from the package (apt-get download + dpkg
    -x).
    """
    vmlinuz = os.path.join(kdir, 'vmlinuz')
    mod_dir = os.path.join(kdir, 'modules-%s' % hashlib.sha256(
        ','.join(modules).encode()).hexdigest()[:12])
    module_files = _cached_modules(mod_dir)
    if os.path.exists(vmlinuz) and module_files is not None:
        return vmlinuz, module_files
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        # apt-get download writes into the current directory.
        _run(['apt-get', 'download', '%s=%s' % (package, version)],
             cwd=tmp,
             fix='Run "apt-get update" so apt can find %s %s (needs '
             'access to the Debian archive), or set %s to the path of a '
             'kernel image.' % (package, version, KERNEL_ENV))
        debs = glob.glob(os.path.join(tmp, '*.deb'))
        if len(debs) != 1:
            raise GuestImageError(
                reason='apt-get download %s left %s' % (package, debs),
                fix='Report a bug.')
        extract = os.path.join(tmp, 'x')
        _run(['dpkg', '-x', debs[0], extract],
             fix='Install dpkg, or set %s.' % KERNEL_ENV)
        found = glob.glob(os.path.join(extract, 'boot', 'vmlinuz-*'))
        if len(found) != 1:
            raise GuestImageError(
                reason='%s holds no single boot/vmlinuz-*: %s' % (
                    os.path.basename(debs[0]), found),
                fix='Set %s to the path of a kernel image.' % KERNEL_ENV)
        if not os.path.exists(vmlinuz):
            _atomic_copy(found[0], vmlinuz)
        if module_files is None:
            module_files = _extract_modules(extract, modules, mod_dir, tmp)
    return vmlinuz, module_files


def _module_name(name):
    """Module name as the kernel spells it: a/virtio-net.ko.xz: virtio_net"""
    return os.path.basename(name).split('.ko')[0].replace('-', '_')


def _cached_modules(mod_dir):
    """[(name, path)] from a complete modules-<hash> directory, or None."""
    try:
        with open(os.path.join(mod_dir, 'order')) as f:
            names = f.read().split()
    except OSError:
        return None
    files = [(n, os.path.join(mod_dir, '%s.ko' % n)) for n in names]
    if all(os.path.exists(p) for _, p in files):
        return files
    return None


def _extract_modules(extract, modules, mod_dir, tmp):
    """Copy modules and their dependencies out of an unpacked package.

    Modules the kernel has built in (modules.builtin) are left out.  The
    files are stored uncompressed: busybox's insmod may not read .ko.xz.
    Returns [(name, path)] in load order, dependencies first.
    """
    trees = (glob.glob(os.path.join(extract, 'lib', 'modules', '*')) +
             glob.glob(os.path.join(extract, 'usr', 'lib', 'modules', '*')))
    if len(trees) != 1:
        raise GuestImageError(
            reason='the kernel package holds no single lib/modules/*: %s'
            % trees, fix='Set %s to a kernel with the virtio drivers '
            'built in.' % KERNEL_ENV)
    tree = trees[0]
    builtin = set()
    with contextlib.suppress(OSError), \
            open(os.path.join(tree, 'modules.builtin')) as f:
        builtin = set(_module_name(line.strip()) for line in f)
    available = {}
    for path in glob.glob(os.path.join(tree, 'kernel', '**', '*.ko*'),
                          recursive=True):
        available[_module_name(path)] = path

    order, data = [], {}

    def add(name, wanted_by):
        if name in data or name in builtin:
            return
        if name not in available:
            raise GuestImageError(
                reason='kernel module %s (wanted by %s) is not in %s'
                % (name, wanted_by, tree), fix='Pass other modules.')
        data[name] = _read_module(available[name])
        for dep in _modinfo(data[name]).get('depends', '').split(','):
            if dep:
                add(_module_name(dep), name)
        order.append(name)

    for name in modules:
        add(name, 'the guest')
    # Fill a fresh directory and rename it into place: never half a set.
    stage = os.path.join(tmp, 'modules')
    os.makedirs(stage)
    for name in order:
        with open(os.path.join(stage, '%s.ko' % name), 'wb') as f:
            f.write(data[name])
    with open(os.path.join(stage, 'order'), 'w') as f:
        f.write(''.join('%s\n' % name for name in order))
    shutil.rmtree(mod_dir, ignore_errors=True)
    os.rename(stage, mod_dir)
    LOG.info('Guest kernel modules: %s', ' '.join(order) or '(built in)')
    return _cached_modules(mod_dir)


def _read_module(path):
    with open(path, 'rb') as f:
        data = f.read()
    if path.endswith('.xz'):
        return lzma.decompress(data)
    if path.endswith('.gz'):
        return gzip.decompress(data)
    if not path.endswith('.ko'):
        raise GuestImageError(
            reason='cannot decompress kernel module %s' % path,
            fix='Set %s to a kernel with the virtio drivers built in.'
            % KERNEL_ENV)
    return data


def _modinfo(elf):
    """The key=value strings of a kernel module's .modinfo section."""
    if elf[:5] != b'\x7fELF\x02':  # ELF64
        return {}
    shoff, = struct.unpack_from('<Q', elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from('<HHH', elf, 0x3a)

    def section(i):
        # sh_name, sh_offset and sh_size of section header i.
        name, = struct.unpack_from('<I', elf, shoff + i * shentsize)
        offset, size = struct.unpack_from('<QQ', elf,
                                          shoff + i * shentsize + 0x18)
        return name, offset, size

    _, names_off, _ = section(shstrndx)
    for i in range(shnum):
        name, offset, size = section(i)
        if elf[names_off + name:].startswith(b'.modinfo\0'):
            info = {}
            for item in elf[offset:offset + size].split(b'\0'):
                key, sep, value = item.decode('latin-1').partition('=')
                if sep:
                    info.setdefault(key, value)
            return info
    return {}


def _pvh_kernel(kernel, kdir):
    """The kernel to boot: an uncompressed PVH vmlinux if we can get one.

    QEMU boots an ELF vmlinux with a PVH entry note directly, skipping
    SeaBIOS' real-mode boot and the kernel decompressing itself, which
    under TCG takes ~2.5 s of the ~5 s boot.  Falls back to the bzImage.
    """
    vmlinux = os.path.join(kdir, 'vmlinux')
    if os.path.exists(vmlinux):
        return vmlinux
    with open(kernel, 'rb') as f:
        data = f.read()
    if data[:4] == b'\x7fELF':
        return kernel
    elf = _bzimage_payload(data)
    if elf is None or not _has_pvh_note(elf):
        LOG.info('%s: no PVH vmlinux inside, booting it as a bzImage '
                 '(slower under TCG)', kernel)
        return kernel
    _atomic_write(vmlinux, elf)
    return vmlinux


def _bzimage_payload(data):
    """The decompressed payload (vmlinux) of a bzImage, or None."""
    # x86 boot protocol >= 2.08: payload_offset/length at 0x248/0x24c,
    # relative to the protected-mode code after the setup sectors.
    if len(data) < 0x250 or data[0x202:0x206] != b'HdrS':
        return None
    setup_sects = data[0x1f1] or 4
    off, length = struct.unpack_from('<II', data, 0x248)
    start = (setup_sects + 1) * 512 + off
    payload = data[start:start + length]
    try:
        if payload.startswith(b'\xfd7zXZ\x00'):
            dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
            elf = dec.decompress(payload)
        elif payload.startswith(b'\x1f\x8b'):
            elf = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
        else:
            return None  # zstd/lz4/...: not in the stdlib
    except (lzma.LZMAError, zlib.error):
        return None
    return elf if elf[:4] == b'\x7fELF' else None


def _has_pvh_note(elf):
    """Whether an ELF64 has the XEN_ELFNOTE_PHYS32_ENTRY note QEMU needs."""
    if elf[4] != 2:  # ELFCLASS64
        return False
    phoff, = struct.unpack_from('<Q', elf, 0x20)
    phentsize, phnum = struct.unpack_from('<HH', elf, 0x36)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(
            '<IIQQQQ', elf, phoff + i * phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from('<III', elf, pos)
            name = elf[pos + 12:pos + 12 + namesz]
            if name == b'Xen\x00' and ntype == 18:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _find_busybox():
    # A dynamically linked busybox would need its libc in the initramfs.
    try:
        with open(BUSYBOX, 'rb') as f:
            elf = f.read(1 << 20)
    except OSError:
        elf = b''
    if not elf.startswith(b'\x7fELF') or b'ld-linux' in elf:
        raise GuestImageError(
            reason='%s is missing or not statically linked' % BUSYBOX,
            fix='Run "apt-get install busybox-static".')
    return BUSYBOX


def _cache_key(kernel_id, busybox, modules):
    h = hashlib.sha256()
    h.update(('format=%s\nkernel=%s\nmodules=%s\n' % (
        FORMAT_VERSION, kernel_id, ','.join(modules))).encode())
    for path in (MEMWORKER_SRC, DISKWORKER_SRC, WORKER_HEADER, INIT_SRC,
                 RESPONDER_SRC, busybox):
        with open(path, 'rb') as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:16]


def _compile(src, dest):
    _run(['gcc', '-static', '-O2', '-Wall', '-o', dest, src],
         fix='Run "apt-get install gcc libc6-dev" (static glibc is in '
         'libc6-dev).')
    _run(['strip', dest], fix='Run "apt-get install binutils".')


def _busybox_applets(busybox):
    out = _run([busybox, '--list-full'],
               fix='Run "apt-get install busybox-static".')
    return sorted(set(line.strip() for line in out.splitlines()
                      if line.strip()))


def _make_initrd(busybox, programs, module_files):
    """Return the gzip'ed newc cpio archive of the guest's root fs.

    :param programs: {name: path} of binaries for /bin.
    :param module_files: [(name, path)] of kernel modules in load order,
        stored as /lib/modules/NAME.ko; /lib/modules/order lists them.
    """
    cpio = _NewcWriter()
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
    for applet in _busybox_applets(busybox):
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


class _NewcWriter(object):
    """Minimal writer of the cpio "newc" format the kernel unpacks.

    Every entry has uid/gid 0 and mtime 0 so the archive is reproducible.
    """

    def __init__(self):
        self._buf = io.BytesIO()
        self._ino = 0
        self._names = set()

    def _entry(self, name, mode, data=b'', rdev=(0, 0), nlink=1):
        if name in self._names:
            return
        self._names.add(name)
        self._ino += 1
        name_b = name.encode() + b'\0'
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0,
                  rdev[0], rdev[1], len(name_b), 0)
        hdr = b'070701' + b''.join(b'%08X' % v for v in fields)
        self._buf.write(hdr + name_b)
        self._pad()
        self._buf.write(data)
        self._pad()

    def _pad(self):
        self._buf.write(b'\0' * (-self._buf.tell() % 4))

    def add_dir(self, name, perm=0o755):
        self._entry(name, stat.S_IFDIR | perm, nlink=2)

    def add_file(self, name, data, perm=0o644):
        self._entry(name, stat.S_IFREG | perm, data)

    def add_symlink(self, name, target):
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def add_chardev(self, name, major, minor, perm):
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def finish(self):
        self._entry('TRAILER!!!', 0)
        return self._buf.getvalue()


def _atomic_write(path, data):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path),
                               prefix='.%s.' % os.path.basename(path))
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _atomic_copy(src, path):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path),
                               prefix='.%s.' % os.path.basename(path))
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
