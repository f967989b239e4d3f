"""The test guest image builds, boots under TCG and its worker reports."""

import os
import shutil
import subprocess
import tempfile

import testtools

from nova_vmbeam import guestimage

QEMU = 'qemu-system-x86_64'
BOOT_TIMEOUT = 120


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


class TestGuestImage(testtools.TestCase):
    """Build the image (cached), boot it with TCG, watch the worker."""

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

    def test_build_is_cached(self):
        again = guestimage.build(guestimage.default_cache_dir())
        self.assertEqual(self.image, again)
        self.assertGreater(os.path.getsize(again.kernel), 1 << 20)
        self.assertGreater(os.path.getsize(again.initrd), 1 << 20)

    def boot(self, ram_mib, dirty_mib_s, mem_mib=256):
        log = os.path.join(self.tmp, 'console.log')
        cmd = [QEMU, '-accel', 'tcg', '-machine', 'q35', '-m', str(mem_mib),
               '-nographic', '-nodefaults', '-no-reboot',
               '-kernel', self.image.kernel, '-initrd', self.image.initrd,
               '-append', guestimage.kernel_cmdline(ram_mib, dirty_mib_s),
               '-chardev', 'file,id=serial0,path=%s,append=on' % log,
               '-serial', 'chardev:serial0']
        with open(os.path.join(self.tmp, 'qemu.out'), 'wb') as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)
        self.addCleanup(self._kill, proc)
        return guestimage.ConsoleLog(log)

    @staticmethod
    def _kill(proc):
        if proc.poll() is None:
            proc.kill()
        proc.wait()

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
