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

"""The test guest image builds, boots under TCG and its workers report."""

import gzip
import os
import shutil
import subprocess
import sys
import tempfile

import testtools

from nova_vmbeam import imagekit
from vmbeam_devtools import guestimage
from vmbeam_devtools.guestimage import builder
from vmbeam_devtools.guestimage import console as console_mod

QEMU = 'qemu-system-x86_64'
BOOT_TIMEOUT = 120
# The devices test's private network (inside its own network namespace).
HOST_IP = '10.251.0.1/24'
GUEST_IP = '10.251.0.11'
GUEST_HOSTNAME = 'vmbeam-gi-test'
# Run inside the namespace: one line from the guest's TCP responder.
FETCH = ('import socket, sys\n'
         's = socket.create_connection((sys.argv[1], int(sys.argv[2])), 10)\n'
         's.settimeout(10)\n'
         'data = b""\n'
         'while True:\n'
         '    chunk = s.recv(4096)\n'
         '    if not chunk:\n'
         '        break\n'
         '    data += chunk\n'
         'sys.stdout.write(data.decode())\n')


def _newc_files(archive):
    """{name: data} of a newc cpio archive (as builder._NewcWriter)."""
    files, pos = {}, 0
    while True:
        fields = [int(archive[pos + 6 + i * 8:pos + 14 + i * 8], 16)
                  for i in range(13)]
        size, namesize = fields[6], fields[11]
        name = archive[pos + 110:pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) // 4 * 4
        if name == 'TRAILER!!!':
            return files
        files[name] = archive[pos:pos + size]
        pos = (pos + size + 3) // 4 * 4


class TestConsoleLog(testtools.TestCase):
    """Parsing of the worker's console lines (no QEMU needed)."""

    def setUp(self):
        super().setUp()
        fd, self.path = tempfile.mkstemp(prefix='vmbeam-console-')
        os.close(fd)
        self.addCleanup(os.unlink, self.path)
        self.log = guestimage.ConsoleLog(self.path)

    def append(self, text):
        with open(self.path, 'ab') as f:
            f.write(text.encode())

    def test_status_and_offsets(self):
        self.assertIsNone(self.log.worker_status()['tick'])
        self.append('SeaBIOS\r\nVMBEAM-WORKER ready ram_mib=64 dirty_mib_s=8'
                    '\nVMBEAM-WORKER tick=1 passes=3 dirtied_mib=4 errors=0'
                    '\r\n')
        mark = self.log.offset()
        self.append('VMBEAM-WORKER tick=2 passes=7 dirtied_mib=8 errors=0\n'
                    'VMBEAM-WORKER tick=3 passes=9 dirti')  # half a line
        status = self.log.worker_status()
        self.assertEqual(
            (2, 7, 8, 0),
            tuple(status[k] for k in ('tick', 'passes', 'dirtied_mib',
                                      'errors')))
        self.assertTrue(status['ready'])
        self.assertFalse(status['error_seen'])
        self.assertFalse(self.log.worker_status(status['end_offset'])['ready'])
        ticks = self.log.wait_for_ticks(1, 1, mark)
        self.assertEqual(2, ticks[0]['tick'])
        self.append('VMBEAM-WORKER ERROR page=5 expected_seq=3 found_seq=2 '
                    'reason=seq\n')
        status = self.log.worker_status(mark)
        self.assertTrue(status['error_seen'])
        self.assertIn('page=5', status['error_lines'][0])

    def test_wait_for_timeout_shows_tail(self):
        self.append('kernel said something\n')
        e = self.assertRaises(TimeoutError, self.log.wait_for,
                              'VMBEAM-WORKER ready', 0.3)
        self.assertIn('kernel said something', str(e))

    def test_kernel_cmdline(self):
        cmdline = guestimage.kernel_cmdline(64, 8, report_ms=250).split()
        self.assertIn('console=ttyS0', cmdline)
        self.assertIn('vmbeam.ram_mib=64', cmdline)
        self.assertIn('vmbeam.dirty_mib_s=8', cmdline)
        self.assertIn('vmbeam.report_ms=250', cmdline)
        self.assertFalse([a for a in cmdline if a.startswith(
            ('vmbeam.ip=', 'vmbeam.disk=', 'vmbeam.hostname='))])

    def test_kernel_cmdline_devices(self):
        cmdline = guestimage.kernel_cmdline(
            64, 8, ip='10.251.0.11/24', disk=True, hostname='g1').split()
        self.assertIn('vmbeam.ip=10.251.0.11/24', cmdline)
        self.assertIn('vmbeam.disk=/dev/vda', cmdline)
        self.assertIn('vmbeam.hostname=g1', cmdline)
        cmdline = guestimage.kernel_cmdline(64, 8, disk='/dev/vdb').split()
        self.assertIn('vmbeam.disk=/dev/vdb', cmdline)

    def test_disk_status(self):
        self.assertIsNone(self.log.disk_status()['seq'])
        self.append('VMBEAM-GUEST net ip=10.251.0.11/24 port=7777\n'
                    'VMBEAM-DISK ready dev=/dev/vda slots=256 direct=1\n'
                    'VMBEAM-DISK seq=1 ok errors=0 retries=0 io_ms=3\n')
        mark = self.log.offset()
        self.append('VMBEAM-DISK seq=2 ok errors=0 retries=1 io_ms=900\n'
                    'VMBEAM-DISK seq=3 ok errors=0 ret')  # half a line
        net = self.log.search(console_mod.NET_RE)
        self.assertEqual(('10.251.0.11/24', '7777'), net.groups())
        status = self.log.disk_status()
        self.assertEqual(
            (2, 2, 0, 1, 900, 0, True),
            tuple(status[k] for k in ('seq', 'ok', 'guest_errors',
                                      'retries', 'io_ms', 'errors',
                                      'ready')))
        self.assertFalse(status['error_seen'])
        later = self.log.disk_status(mark)
        self.assertEqual((2, 1, False), (later['seq'], later['ok'],
                                         later['ready']))
        oks = self.log.wait_for_disk_ok(1, 1, mark)
        self.assertEqual(2, oks[0]['seq'])
        self.append('VMBEAM-DISK seq=3 ERROR op=verify slot=2 '
                    'expected_seq=3 found_seq=0 reason=magic\n'
                    'VMBEAM-DISK seq=4 ok errors=1 retries=1 io_ms=4\n'
                    'VMBEAM-DISK seq=5 ERROR op=write slot=4 attempts=5 '
                    'reason=Input/output error\n')
        status = self.log.disk_status(mark)
        self.assertEqual((5, 2, 2, 1), (status['seq'], status['ok'],
                                        status['errors'],
                                        status['guest_errors']))
        self.assertTrue(status['error_seen'])
        self.assertIn('reason=magic', status['error_lines'][0])
        self.append('VMBEAM-DISK ERROR no device /dev/vda\n')
        self.assertEqual(3, self.log.disk_status(mark)['errors'])


class QemuTestCase(testtools.TestCase):
    """Builds the image (cached) and boots it with TCG."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.image = None
        if shutil.which(QEMU):
            cls.image = guestimage.build(guestimage.default_cache_dir())

    def setUp(self):
        super().setUp()
        if self.image is None:
            self.skipTest('%s is not installed (apt-get install '
                          'qemu-system-x86)' % QEMU)
        self.tmp = tempfile.mkdtemp(prefix='vmbeam-guestimage-')
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def boot(self, ram_mib, dirty_mib_s, mem_mib=256, extra_args=(),
             wrapper=(), **cmdline_kwargs):
        """Start QEMU (as self.qemu) and return the guest's ConsoleLog."""
        log = os.path.join(self.tmp, 'console.log')
        cmd = list(wrapper) + [
            QEMU, '-accel', 'tcg', '-machine', 'q35', '-m', str(mem_mib),
            '-nographic', '-nodefaults', '-no-reboot',
            '-kernel', self.image.kernel, '-initrd', self.image.initrd,
            '-append', guestimage.kernel_cmdline(ram_mib, dirty_mib_s,
                                                 **cmdline_kwargs),
            '-chardev', 'file,id=serial0,path=%s,append=on' % log,
            '-serial', 'chardev:serial0'] + list(extra_args)
        with open(os.path.join(self.tmp, 'qemu.out'), 'wb') as out:
            self.qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=out,
                                         stderr=subprocess.STDOUT)
        self.addCleanup(self._kill, self.qemu)
        return guestimage.ConsoleLog(log)

    @staticmethod
    def _kill(proc):
        if proc.poll() is None:
            proc.kill()
        proc.wait()


class TestGuestImage(QemuTestCase):
    """The image builds and caches; the memory worker runs and verifies."""

    def test_build_is_cached(self):
        again = guestimage.build(guestimage.default_cache_dir())
        self.assertEqual(self.image, again)
        self.assertGreater(os.path.getsize(again.kernel), 1 << 20)
        self.assertGreater(os.path.getsize(again.initrd), 1 << 20)

    def test_initrd_has_modules_in_order(self):
        if os.environ.get(builder.KERNEL_ENV):
            self.skipTest('%s is set: a kernel of your own gets no modules'
                          % builder.KERNEL_ENV)
        with open(self.image.initrd, 'rb') as f:
            files = _newc_files(gzip.decompress(f.read()))
        order = files['lib/modules/order'].decode().split()
        for name in ('virtio_pci', 'virtio_net', 'virtio_blk'):
            self.assertIn(name, order)
        for i, name in enumerate(order):
            info = imagekit.modinfo(files['lib/modules/%s.ko' % name])
            self.assertEqual(name, info['name'])
            for dep in filter(None, info['depends'].split(',')):
                self.assertIn(dep, order[:i], 'loaded before %s' % name)
        for name in ('bin/memworker', 'bin/diskworker', 'bin/vmbeam-tcp',
                     'init'):
            self.assertIn(name, files)

    def test_boot_and_verify(self):
        console = self.boot(ram_mib=64, dirty_mib_s=8)
        console.wait_for(r'VMBEAM-GUEST booted', BOOT_TIMEOUT)
        ready = console.wait_for(guestimage.console.READY_RE, BOOT_TIMEOUT)
        self.assertEqual(('64', '8'), ready.groups())

        first, second = console.wait_for_ticks(2, 30, ready.end())
        self.assertEqual(first['tick'] + 1, second['tick'])
        self.assertEqual(0, second['errors'])
        self.assertFalse(second['error_seen'])
        self.assertGreater(second['passes'], first['passes'])
        # 8 MiB/s for two 0.5 s ticks: the worker really dirties memory.
        later = console.wait_for_ticks(4, 30, second['end_offset'])[-1]
        self.assertGreaterEqual(later['dirtied_mib'] - first['dirtied_mib'],
                                8)
        self.assertEqual(0, later['errors'])


class TestGuestDevices(QemuTestCase):
    """The guest's virtio disk and network card work.

    QEMU runs in a network namespace of the test's own, on a tap device on
    a bridge with the host side's address: nothing leaves the namespace.
    """

    def setUp(self):
        super().setUp()
        for tool in ('ip', 'qemu-img'):
            if not shutil.which(tool):
                self.skipTest('%s is not installed (apt-get install '
                              'iproute2 qemu-utils)' % tool)
        self.netns = 'vmbeam-gi-%d' % os.getpid()
        try:
            self._ip('netns', 'add', self.netns)
        except subprocess.CalledProcessError as e:
            self.skipTest('cannot create a network namespace (needs root):'
                          ' %s' % e.stderr.strip())
        self.addCleanup(subprocess.run, ['ip', 'netns', 'del', self.netns],
                        capture_output=True)
        for args in (('link', 'set', 'lo', 'up'),
                     ('link', 'add', 'vmbbr0', 'type', 'bridge'),
                     ('addr', 'add', HOST_IP, 'dev', 'vmbbr0'),
                     ('link', 'set', 'vmbbr0', 'up'),
                     ('tuntap', 'add', 'dev', 'vmbtap0', 'mode', 'tap'),
                     ('link', 'set', 'vmbtap0', 'master', 'vmbbr0'),
                     ('link', 'set', 'vmbtap0', 'up')):
            self._ip('-n', self.netns, *args)

    @staticmethod
    def _ip(*args):
        subprocess.run(('ip',) + args, check=True, capture_output=True,
                       text=True)

    def _in_netns(self, *cmd):
        return subprocess.run(
            ['ip', 'netns', 'exec', self.netns] + list(cmd),
            capture_output=True, text=True, timeout=60)

    def _ping(self):
        ping = (['ping'] if shutil.which('ping') else
                [builder.BUSYBOX, 'ping'])
        for _ in range(5):
            result = self._in_netns(*ping + ['-c', '1', '-W', '2',
                                             GUEST_IP])
            if result.returncode == 0:
                return
        self.fail('The guest does not answer ping: %s%s' % (
            result.stdout, result.stderr))

    def _fetch(self):
        result = self._in_netns(sys.executable, '-c', FETCH, GUEST_IP,
                                str(builder.TCP_PORT))
        self.assertEqual(0, result.returncode, result.stderr)
        return result.stdout

    def test_disk_and_network(self):
        disk = os.path.join(self.tmp, 'disk.qcow2')
        subprocess.run(['qemu-img', 'create', '-f', 'qcow2', disk, '64M'],
                       check=True, capture_output=True)
        console = self.boot(
            ram_mib=32, dirty_mib_s=4, report_ms=250,
            ip='%s/24' % GUEST_IP, disk=True, hostname=GUEST_HOSTNAME,
            wrapper=['ip', 'netns', 'exec', self.netns],
            extra_args=[
                '-drive', 'file=%s,if=virtio,format=qcow2' % disk,
                '-netdev', 'tap,id=n0,ifname=vmbtap0,script=no,'
                'downscript=no',
                # romfile=: no iPXE option ROM, which SeaBIOS would run.
                '-device', 'virtio-net-pci,netdev=n0,romfile='])
        net = console.wait_for(console_mod.NET_RE, BOOT_TIMEOUT)
        self.assertEqual(('%s/24' % GUEST_IP, str(builder.TCP_PORT)),
                         net.groups())
        ready = console.wait_for(console_mod.DISK_READY_RE, BOOT_TIMEOUT)
        self.assertEqual(('/dev/vda', '256', '1'), ready.groups())
        console.wait_for(console_mod.READY_RE, BOOT_TIMEOUT)

        # The kernel answers ping, the guest's userspace serves TCP, again
        # and again (the uptime it reports grows).
        self._ping()
        first = self._fetch().split()
        self.assertEqual(['vmbeam-guest', GUEST_HOSTNAME], first[:2])
        second = self._fetch().split()
        self.assertGreater(float(second[2].split('=')[1]),
                           float(first[2].split('=')[1]))

        # The disk worker writes, reads back and verifies records.
        oks = console.wait_for_disk_ok(4, 30, ready.end())
        self.assertEqual([s['seq'] + 1 for s in oks[:-1]],
                         [s['seq'] for s in oks[1:]])
        status = console.disk_status()
        self.assertEqual(0, status['errors'], status['error_lines'])
        self.assertEqual(0, status['guest_errors'])
        self.assertFalse(console.search(console_mod.GUEST_ERROR_RE),
                         console.tail())
        worker = console.worker_status()
        self.assertEqual(0, worker['errors'])
        self.assertFalse(worker['error_seen'])

        # And the records are in the disk image (QEMU flushed it on the
        # guest's fdatasync; stopping QEMU releases the image's lock).
        self._kill(self.qemu)
        raw = os.path.join(self.tmp, 'disk.raw')
        subprocess.run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw',
                        disk, raw], check=True, capture_output=True)
        with open(raw, 'rb') as f:
            first_mib = f.read(1 << 20)
        records = sum(first_mib[i:i + 8] == b'VMBEAMDK'
                      for i in range(0, len(first_mib), 4096))
        self.assertGreaterEqual(records, min(status['seq'], 256))
