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

"""Primitives for building boot images from Debian packages.

Shared by the nested sibling's L1 appliance (``nova_vmbeam.nested.appliance``)
and the project's test guest image (dev tooling): fetching a Debian kernel
package and the closure of the modules a set of drivers needs, turning a
bzImage into a PVH vmlinux, a reproducible newc cpio writer, static
compilation, atomic file writes and an flock around a build.

Nothing here knows what goes into an image; the builders decide.
"""

import contextlib
import fcntl
import glob
import gzip
import hashlib
import io
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
from nova_vmbeam import files

LOG = logging.getLogger(__name__)

#: a kernel of the user's own instead of Debian's (named in error fixes)
KERNEL_ENV = 'VMBEAM_GUEST_KERNEL'
CACHE_ENV = 'VMBEAM_CACHE_DIR'
KERNEL_METAPACKAGE = 'linux-image-amd64'
BUSYBOX = '/bin/busybox'


class ImageBuildError(exception.VMBeamError):
    msg_fmt = 'Cannot build a VM image: %(reason)s. %(fix)s'


@contextlib.contextmanager
def errors_as(error):
    """Report these primitives' failures as ``error``, the image's own.

    Usable as a decorator of a builder's entry point: its caller sees
    which image could not be built.
    """
    try:
        yield
    except ImageBuildError as exc:
        if isinstance(exc, error):
            raise
        raise error(**exc.kwargs) from exc


def default_cache_dir():
    """$VMBEAM_CACHE_DIR, else $XDG_CACHE_HOME/nova-vmbeam (~/.cache/...)."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    xdg = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')
    return os.path.join(xdg, 'nova-vmbeam')


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def locked(path):
    with open(path, 'a') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run(cmd, fix, cwd=None, error=ImageBuildError):
    """stdout of ``cmd``; ``error`` (reason, fix) if it fails or is missing."""
    try:
        return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True,
                              text=True).stdout
    except FileNotFoundError:
        raise error(reason='%s is not installed' % cmd[0], fix=fix)
    except subprocess.CalledProcessError as e:
        # apt-get download names every package: the head says enough.
        shown = ' '.join(cmd[:8]) + (' ...' if len(cmd) > 8 else '')
        raise error(
            reason='%s failed (exit %d): %s' % (
                shown, e.returncode,
                (e.stderr or e.stdout or '').strip()[-2000:]),
            fix=fix)


def resolve_kernel_package():
    """The concrete kernel package (name, version) linux-image-amd64 wants."""
    fix = ('Run "apt-get update" (Debian 12 amd64 with the main archive '
           'configured), or set %s to the path of a kernel image.'
           % KERNEL_ENV)
    out = run(['apt-cache', 'depends', KERNEL_METAPACKAGE], fix)
    package = None
    for line in out.splitlines():
        what, _, dep = line.strip().partition(':')
        dep = dep.strip()
        if what == 'Depends' and dep.startswith('linux-image-'):
            package = dep
            break
    if package is None:
        raise ImageBuildError(
            reason='apt-cache depends %s names no linux-image-* package:\n%s'
            % (KERNEL_METAPACKAGE, out), fix=fix)
    out = run(['apt-cache', 'show', '--no-all-versions', package], fix)
    for line in out.splitlines():
        if line.startswith('Version:'):
            return package, line.split(':', 1)[1].strip()
    raise ImageBuildError(reason='apt-cache show %s gave no version'
                          % package, fix=fix)


def fetch_kernel(root, kdir, package, version, modules):
    """The cached bzImage and modules of a kernel package.

    Returns (vmlinuz path, [(module name, .ko path)] in load order).  What
    is not cached yet is taken from the package (apt-get download + dpkg
    -x).
    """
    vmlinuz = os.path.join(kdir, 'vmlinuz')
    mod_dir = os.path.join(kdir, 'modules-%s' % hashlib.sha256(
        ','.join(modules).encode()).hexdigest()[:12])
    module_files = cached_modules(mod_dir)
    if os.path.exists(vmlinuz) and module_files is not None:
        return vmlinuz, module_files
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        # apt-get download writes into the current directory.
        run(['apt-get', 'download', '%s=%s' % (package, version)],
            cwd=tmp,
            fix='Run "apt-get update" so apt can find %s %s (needs '
            'access to the Debian archive), or set %s to the path of a '
            'kernel image.' % (package, version, KERNEL_ENV))
        debs = glob.glob(os.path.join(tmp, '*.deb'))
        if len(debs) != 1:
            raise ImageBuildError(
                reason='apt-get download %s left %s' % (package, debs),
                fix='Report a bug.')
        extract = os.path.join(tmp, 'x')
        run(['dpkg', '-x', debs[0], extract],
            fix='Install dpkg, or set %s.' % KERNEL_ENV)
        found = glob.glob(os.path.join(extract, 'boot', 'vmlinuz-*'))
        if len(found) != 1:
            raise ImageBuildError(
                reason='%s holds no single boot/vmlinuz-*: %s' % (
                    os.path.basename(debs[0]), found),
                fix='Set %s to the path of a kernel image.' % KERNEL_ENV)
        if not os.path.exists(vmlinuz):
            atomic_copy(found[0], vmlinuz)
        if module_files is None:
            module_files = extract_modules(extract, modules, mod_dir, tmp)
    return vmlinuz, module_files


def module_name(name):
    """Module name as the kernel spells it: a/virtio-net.ko.xz: virtio_net"""
    return os.path.basename(name).split('.ko')[0].replace('-', '_')


def cached_modules(mod_dir):
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


def extract_modules(extract, modules, mod_dir, tmp):
    """Copy modules and their dependencies out of an unpacked package.

    Modules the kernel has built in (modules.builtin) are left out.  The
    files are stored uncompressed: busybox's insmod may not read .ko.xz.
    Returns [(name, path)] in load order, dependencies first.
    """
    trees = (glob.glob(os.path.join(extract, 'lib', 'modules', '*')) +
             glob.glob(os.path.join(extract, 'usr', 'lib', 'modules', '*')))
    if len(trees) != 1:
        raise ImageBuildError(
            reason='the kernel package holds no single lib/modules/*: %s'
            % trees, fix='Set %s to a kernel with the virtio drivers '
            'built in.' % KERNEL_ENV)
    tree = trees[0]
    builtin = set()
    with contextlib.suppress(OSError), \
            open(os.path.join(tree, 'modules.builtin')) as f:
        builtin = set(module_name(line.strip()) for line in f)
    available = {}
    for path in glob.glob(os.path.join(tree, 'kernel', '**', '*.ko*'),
                          recursive=True):
        available[module_name(path)] = path

    order, data = [], {}

    def add(name, wanted_by):
        if name in data or name in builtin:
            return
        if name not in available:
            raise ImageBuildError(
                reason='kernel module %s (wanted by %s) is not in %s'
                % (name, wanted_by, tree), fix='Pass other modules.')
        data[name] = read_module(available[name])
        for dep in modinfo(data[name]).get('depends', '').split(','):
            if dep:
                add(module_name(dep), name)
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
    return cached_modules(mod_dir)


def read_module(path):
    with open(path, 'rb') as f:
        data = f.read()
    if path.endswith('.xz'):
        return lzma.decompress(data)
    if path.endswith('.gz'):
        return gzip.decompress(data)
    if not path.endswith('.ko'):
        raise ImageBuildError(
            reason='cannot decompress kernel module %s' % path,
            fix='Set %s to a kernel with the virtio drivers built in.'
            % KERNEL_ENV)
    return data


def modinfo(elf):
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


def pvh_kernel(kernel, kdir):
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
    elf = bzimage_payload(data)
    if elf is None or not has_pvh_note(elf):
        LOG.info('%s: no PVH vmlinux inside, booting it as a bzImage '
                 '(slower under TCG)', kernel)
        return kernel
    atomic_write(vmlinux, elf)
    return vmlinux


def bzimage_payload(data):
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


def has_pvh_note(elf):
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


def find_busybox():
    # A dynamically linked busybox would need its libc in the initramfs.
    try:
        with open(BUSYBOX, 'rb') as f:
            elf = f.read(1 << 20)
    except OSError:
        elf = b''
    if not elf.startswith(b'\x7fELF') or b'ld-linux' in elf:
        raise ImageBuildError(
            reason='%s is missing or not statically linked' % BUSYBOX,
            fix='Run "apt-get install busybox-static".')
    return BUSYBOX


def compile_static(src, dest):
    run(['gcc', '-static', '-O2', '-Wall', '-o', dest, src],
        fix='Run "apt-get install gcc libc6-dev" (static glibc is in '
        'libc6-dev).')
    run(['strip', dest], fix='Run "apt-get install binutils".')


def busybox_applets(busybox):
    out = run([busybox, '--list-full'],
              fix='Run "apt-get install busybox-static".')
    return sorted(set(line.strip() for line in out.splitlines()
                      if line.strip()))


class NewcWriter(object):
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


def atomic_write(path, data):
    """Replace ``path`` with ``data`` (bytes), durably, mode 0644.

    Readable by all: QEMU reads the images as its own user.
    """
    files.replace(path, data, durable=True, mode=0o644)


def atomic_copy(src, path):
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
