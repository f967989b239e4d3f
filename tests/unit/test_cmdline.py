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

import json

import testtools

from nova_vmbeam import guest
from nova_vmbeam.qemu import cmdline


def _spec(ram):
    return guest.GuestSpec(name='g', uuid='u-1', ram_mib=256, ram=ram,
                           kernel='/k', initrd='/i', cmdline='console=ttyS0',
                           console_log='/log')


def _after(argv, flag):
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


class TestCmdline(testtools.TestCase):

    def test_file_backed_ram_is_shared_pool_file(self):
        argv = cmdline.build(_spec(guest.RamBacking('file', '/pool/u.ram')),
                             '/q.sock', 'tcg')
        obj, = _after(argv, '-object')
        self.assertIn('memory-backend-file', obj)
        self.assertIn('mem-path=/pool/u.ram', obj)
        self.assertIn('share=on', obj)
        self.assertIn('size=256M', obj)
        machine, = _after(argv, '-machine')
        self.assertIn('memory-backend=vmbeam-ram', machine)
        self.assertNotIn('-S', argv)
        self.assertEqual([], _after(argv, '-incoming'))

    def test_memfd_ram_shares_auxiliary_ram_too(self):
        argv = cmdline.build(_spec(guest.RamBacking('memfd')), '/q', 'kvm')
        obj, = _after(argv, '-object')
        self.assertTrue(obj.startswith('memory-backend-memfd,'))
        self.assertIn('share=on', obj)
        machine, = _after(argv, '-machine')
        self.assertIn('aux-ram-share=on', machine)
        self.assertEqual(['kvm'], _after(argv, '-accel'))

    def test_anonymous_ram_has_no_backend_object(self):
        argv = cmdline.build(_spec(guest.RamBacking()), '/q', 'tcg')
        self.assertEqual([], _after(argv, '-object'))
        self.assertEqual(['256M'], _after(argv, '-m'))

    def test_incoming_destination_is_paused(self):
        channel = cmdline.unix_channel('cpr', '/run/x.sock')
        argv = cmdline.build(_spec(guest.RamBacking('memfd')), '/q', 'tcg',
                             incoming=['defer', channel], paused=True)
        self.assertIn('-S', argv)
        defer, chan = _after(argv, '-incoming')
        self.assertEqual('defer', defer)
        self.assertEqual({'channel-type': 'cpr',
                          'addr': {'transport': 'socket', 'type': 'unix',
                                   'path': '/run/x.sock'}},
                         json.loads(chan))

    def test_console_log_is_appended(self):
        argv = cmdline.build(_spec(guest.RamBacking()), '/q', 'tcg')
        chardev, = _after(argv, '-chardev')
        self.assertIn('append=on', chardev)
        self.assertIn('path=/log', chardev)

    def test_ram_backing_is_validated(self):
        self.assertRaises(ValueError, guest.RamBacking, 'file')
        self.assertRaises(ValueError, guest.RamBacking, 'memfd', '/x')
        self.assertRaises(ValueError, guest.RamBacking, 'swap')
