"""Build the nova-vmbeam test guest: a Debian kernel plus an initramfs.

The initramfs holds busybox-static, /init (init.sh) and memworker (built
from memworker.c).  Everything is cached under a key made of the inputs, so
editing memworker.c or init.sh, or a new Debian kernel, rebuilds, and
nothing else does.

Cache layout (``cache_dir`` defaults to ``default_cache_dir()``)::

    <cache_dir>/guestimage/
        .lock                     flock serialising builders
        kernel/<package>_<version>/vmlinuz  bzImage from the Debian package
        kernel/<package>_<version>/vmlinux  its payload: PVH ELF, boots
                                            2.5 s faster under TCG
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
INIT_SRC = os.path.join(HERE, 'init.sh')

KERNEL_ENV = 'VMBEAM_GUEST_KERNEL'
CACHE_ENV = 'VMBEAM_CACHE_DIR'
KERNEL_METAPACKAGE = 'linux-image-amd64'
BUSYBOX = '/bin/busybox'

# Bump when the image layout changes in a way the inputs don't show.
FORMAT_VERSION = '2'

GuestImage = collections.namedtuple('GuestImage', ['kernel', 'initrd'])


class GuestImageError(exception.VMBeamError):
    msg_fmt = 'Cannot build the test guest image: %(reason)s. %(fix)s'


def default_cache_dir():
    """$VMBEAM_CACHE_DIR, else $XDG_CACHE_HOME/nova-vmbeam (~/.cache/...)."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    xdg = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')
    return os.path.join(xdg, 'nova-vmbeam')


def kernel_cmdline(ram_mib, dirty_mib_s, report_ms=500, verify_mib_s=0):
    """Kernel command line for the test guest running the given workload.

    :param ram_mib: MiB the worker owns; at most the guest RAM - 96 MiB
        (160 of 256 works, 192 is OOM-killed).
    :param dirty_mib_s: MiB/s rewritten; 0 only verifies.
    :param report_ms: interval of the "VMBEAM-WORKER tick=" lines.
    :param verify_mib_s: verification rate; 0 is as fast as the CPU goes
        (the guest then keeps a host CPU busy).
    """
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
    ])


def build(cache_dir=None, kernel=None):
    """Build (or reuse) the test guest image and return a GuestImage.

    :param cache_dir: where to cache; default ``default_cache_dir()``.
    :param kernel: path of a kernel to use instead of Debian's; default
        $VMBEAM_GUEST_KERNEL, else the kernel linux-image-amd64 points to,
        fetched with ``apt-get download``.
    """
    cache_dir = os.path.abspath(cache_dir or default_cache_dir())
    root = os.path.join(cache_dir, 'guestimage')
    os.makedirs(root, exist_ok=True)
    kernel = kernel or os.environ.get(KERNEL_ENV) or None

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
        else:
            package, version = _resolve_kernel_package()
            kernel_id = 'deb:%s=%s' % (package, version)
            kdir = os.path.join(root, 'kernel', '%s_%s' % (package, version))

        busybox = _find_busybox()
        key = _cache_key(kernel_id, busybox)
        image_dir = os.path.join(root, 'image-%s' % key)
        manifest_path = os.path.join(image_dir, 'manifest.json')
        image = _load_manifest(manifest_path)
        if image:
            return image

        LOG.info('Building test guest image %s (%s)', image_dir, kernel_id)
        os.makedirs(kdir, exist_ok=True)
        if not kernel:
            kernel = _fetch_kernel(root, kdir, package, version)
        image = GuestImage(_pvh_kernel(kernel, kdir),
                           os.path.join(image_dir, 'initrd.img'))
        os.makedirs(image_dir, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            memworker = os.path.join(tmp, 'memworker')
            _compile_memworker(memworker)
            initrd = _make_initrd(busybox, memworker, INIT_SRC)
        _atomic_write(image.initrd, initrd)
        manifest = {'format': FORMAT_VERSION, 'key': key,
                    'kernel_id': kernel_id, 'kernel': image.kernel,
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


def _fetch_kernel(root, kdir, package, version):
    """apt-get download + dpkg -x the kernel; return the cached bzImage."""
    vmlinuz = os.path.join(kdir, 'vmlinuz')
    if os.path.exists(vmlinuz):
        return vmlinuz
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
        _atomic_copy(found[0], vmlinuz)
    return vmlinuz


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


def _cache_key(kernel_id, busybox):
    h = hashlib.sha256()
    h.update(('format=%s\nkernel=%s\n' % (FORMAT_VERSION, kernel_id))
             .encode())
    for path in (MEMWORKER_SRC, INIT_SRC, busybox):
        with open(path, 'rb') as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:16]


def _compile_memworker(dest):
    _run(['gcc', '-static', '-O2', '-Wall', '-o', dest, MEMWORKER_SRC],
         fix='Run "apt-get install gcc libc6-dev" (static glibc is in '
         'libc6-dev).')
    _run(['strip', dest], fix='Run "apt-get install binutils".')


def _busybox_applets(busybox):
    out = _run([busybox, '--list-full'],
               fix='Run "apt-get install busybox-static".')
    return sorted(set(line.strip() for line in out.splitlines()
                      if line.strip()))


def _make_initrd(busybox, memworker, init):
    """Return the gzip'ed newc cpio archive of the guest's root fs."""
    cpio = _NewcWriter()
    for d in ('bin', 'dev', 'proc', 'sbin', 'sys', 'tmp', 'usr',
              'usr/bin', 'usr/sbin'):
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
    with open(memworker, 'rb') as f:
        cpio.add_file('bin/memworker', f.read(), 0o755)
    with open(init, 'rb') as f:
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
