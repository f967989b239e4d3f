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


"""L0's disk server for nested guests: a real qemu-storage-daemon.

No L1 boots here (seconds, not minutes): the NBD client is qemu-io on
this host, holding the credentials an L1 would hold (a migration
certificate of the node's CA), or others that must be refused.
test_nested runs an L2 on these exports and moves it.
"""

import os
import pwd
import signal
import subprocess
import tempfile

from nova_vmbeam.conf import nested as nested_conf
from nova_vmbeam.nested import disks
from nova_vmbeam.nested import network
from nova_vmbeam.nested import pki
from nova_vmbeam.qemu import procfs
from nova_vmbeam import waiting
from tests.functional import base


class TestStorageDaemon(base.PrivateStateTestCase):

    REQUIRED = ('qemu-storage-daemon', 'qemu-io', 'qemu-img', 'ip')

    def setUp(self):
        super().setUp()
        nested_conf.register_opts(self.conf)
        self.conf.set_override('bridge', 'vmbnd%d' % os.getpid(),
                               'vmbeam_nested')
        self.conf.set_override('network_cidr', '192.168.%d.0/24' %
                               (160 + os.getpid() % 30), 'vmbeam_nested')
        self.conf.set_override('disk_export_port',
                               20000 + os.getpid() % 10000, 'vmbeam_nested')
        network.ensure_bridge(self.conf)
        self.addCleanup(network.remove_bridge, self.conf)
        self.daemon = disks.StorageDaemon(self.conf)
        self.addCleanup(self.daemon.stop)
        self.address = self.daemon.address
        self.port = self.conf.vmbeam_nested.disk_export_port
        # The instance's disk: a qcow2 over a raw backing file, as Nova's
        # image cache makes them.
        self.state = self.conf.vmbeam.state_path
        self.backing = os.path.join(self.state, 'base.raw')
        self._run('qemu-img', 'create', '-q', '-f', 'raw', self.backing,
                  '4M')
        self._run('qemu-io', '-f', 'raw', '-c', 'write -P 0x11 1M 64k',
                  self.backing)
        self.disk = os.path.join(self.state, 'disk')
        self._run('qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'raw',
                  '-b', self.backing, self.disk)
        os.chown(self.disk, *self._qemu_ids())
        os.chown(self.backing, *self._qemu_ids())

    def _qemu_ids(self):
        pw = pwd.getpwnam(self.conf.vmbeam.qemu_user)
        return pw.pw_uid, pw.pw_gid

    @staticmethod
    def _run(*argv, check=True):
        return subprocess.run(argv, capture_output=True, text=True,
                              check=check, timeout=60)

    def _client_dir(self, files):
        directory = tempfile.mkdtemp(dir=self.state)
        for name, data in files.items():
            with open(os.path.join(directory, name), 'wb') as f:
                f.write(data)
        return directory

    def _l1_client(self, name='gen7'):
        """What an L1's NBD client holds (its migration certificate)."""
        l1 = pki.l1_files(self.conf, '192.0.2.7', name)
        prefix = pki.L1_MIGRATION_DIR + '/'
        return self._client_dir({
            path[len(prefix):]: data for path, data in l1.items()
            if path.startswith(prefix) and 'server' not in path})

    def _io(self, export, commands, creds=None):
        """qemu-io on the export over NBD; (exit status, output)."""
        opts = ['driver=raw', 'file.driver=nbd', 'file.server.type=inet',
                'file.server.host=%s' % self.address,
                'file.server.port=%d' % self.port, 'file.export=%s' % export]
        argv = ['qemu-io']
        if creds:
            argv += ['--object', 'tls-creds-x509,id=c,endpoint=client,'
                     'dir=%s' % creds]
            opts.append('file.tls-creds=c')
        argv += ['--image-opts', ','.join(opts)]
        for command in commands:
            argv += ['-c', command]
        done = self._run(*argv, check=False)
        return done.returncode, done.stdout + done.stderr

    def _serve(self):
        xml = ("<domain><name>g</name>"
               "<uuid>6f1c2d3e-4f5a-4b6c-8d7e-0123456789ab</uuid><devices>"
               "<disk type='file' device='disk'>"
               "<driver name='qemu' type='qcow2' cache='none'/>"
               "<source file='%s'/><target dev='vda' bus='virtio'/></disk>"
               "</devices></domain>" % self.disk)
        return disks.serve(self.conf, xml)

    def test_serves_an_l1_in_tls_as_the_qemu_user_only(self):
        xml = self._serve()
        export = disks.export_name('6f1c2d3e-4f5a-4b6c-8d7e-0123456789ab',
                                   'vda')
        self.assertIn("<source protocol=\"nbd\" name=\"%s\" tls=\"yes\">"
                      % export, xml)
        self.assertEqual([export], self.daemon.exports())
        process = self.daemon.process()
        self.assertIsNotNone(process)
        with open('/proc/%d/status' % process.pid) as f:
            uids = [line.split()[1:3] for line in f
                    if line.startswith('Uid:')][0]
        self.assertEqual([str(self._qemu_ids()[0])] * 2, uids)
        # It listens on L0's address on the L1 network, nowhere else.
        listening = self._run('ss', '-Hltnp').stdout
        mine = [line for line in listening.splitlines()
                if 'pid=%d,' % process.pid in line]
        self.assertEqual(1, len(mine), listening)
        self.assertIn('%s:%d' % (self.address, self.port), mine[0])

        # An L1's credentials: reads the backing file's data through the
        # qcow2, writes, reads back.
        l1 = self._l1_client()
        status, out = self._io(export, ['read -P 0x11 1M 64k',
                                        'write -P 0x5a 0 64k',
                                        'read -P 0x5a 0 64k'], l1)
        self.assertEqual(0, status, out)
        self.assertNotIn('fail', out.lower())

        # Refused: no TLS; L0's own libvirt client certificate (not an
        # L1's); an L1 name from another node's CA.
        status, out = self._io(export, ['read 0 4k'])
        self.assertNotEqual(0, status)
        self.assertIn('TLS', out)
        ca_cert, ca_key = pki.node_ca(self.conf)
        cert, key = pki.issue(ca_cert, ca_key, pki.L0_CLIENT_CN, client=True)
        l0 = self._client_dir({'ca-cert.pem': pki.cert_pem(ca_cert),
                               'client-cert.pem': pki.cert_pem(cert),
                               'client-key.pem': pki.key_pem(key)})
        status, out = self._io(export, ['read 0 4k'], l0)
        self.assertNotEqual(0, status, out)
        other_ca, other_key = pki.new_ca('another node')
        cert, key = pki.issue(other_ca, other_key, pki.migration_cn('gen7'),
                              client=True)
        other = self._client_dir({'ca-cert.pem': pki.cert_pem(ca_cert),
                                  'client-cert.pem': pki.cert_pem(cert),
                                  'client-key.pem': pki.key_pem(key)})
        status, out = self._io(export, ['read 0 4k'], other)
        self.assertNotEqual(0, status, out)

        # Launching the guest again (a move's destination, a restarted
        # nova-compute) finds the daemon and its export as they are.
        pid = process.pid
        self.assertEqual(xml, self._serve())
        self.assertEqual(pid, self.daemon.process().pid)
        self.assertEqual([export], self.daemon.exports())

        # Killed (a crash, an OOM kill): started again by the next launch
        # of the guest (here a move's, whose XML names the export), it
        # serves the same exports at once, and what was written is there.
        os.kill(pid, signal.SIGKILL)
        self.assertTrue(waiting.until(lambda: not self.daemon.running(),
                                      10, 0.05, lambda: False))
        self.assertEqual(xml, disks.serve(self.conf, xml))
        self.assertNotEqual(pid, self.daemon.process().pid)
        self.assertEqual([export], self.daemon.exports())
        status, out = self._io(export, ['read -P 0x5a 0 64k'], l1)
        self.assertEqual(0, status, out)

        # Gone for good: the export and its nodes go, and the write is in
        # the instance's own qcow2 (the backing file untouched).
        self.assertEqual([export], self.daemon.unexport(
            '6f1c2d3e-4f5a-4b6c-8d7e-0123456789ab'))
        self.assertEqual([], self.daemon.exports())
        self.assertEqual([], self.daemon.recorded())
        self._run('qemu-io', '-f', 'qcow2', '-c', 'read -P 0x5a 0 64k',
                  '-c', 'read -P 0x11 1M 64k', self.disk)
        self._run('qemu-io', '-f', 'raw', '-c', 'read -P 0 0 64k',
                  self.backing)
        self.assertTrue(self.daemon.stop())
        self.assertIsNone(procfs.pidfile_process(self.daemon.pid_file))

    def _nodes(self):
        """The daemon's block nodes, and that it runs no job."""
        mon = self.daemon._monitor()
        try:
            self.assertEqual([], mon.execute('query-jobs'))
            return {n['node-name'] for n in mon.execute(
                'query-named-block-nodes', flat=True)}
        finally:
            mon.close()

    def test_a_served_disk_is_copied_as_it_was_while_it_is_written(self):
        """A running nested instance's snapshot: L0's daemon copies it."""
        self._serve()
        guest = '6f1c2d3e-4f5a-4b6c-8d7e-0123456789ab'
        export = disks.export_name(guest, 'vda')
        nodes_before = self._nodes()
        l1 = self._l1_client()
        status, out = self._io(export, ['write -P 0x5a 0 64k'], l1)
        self.assertEqual(0, status, out)
        # Nova's delta: on the disk's backing file, the QEMU user's to
        # write (the driver makes it so).
        delta = os.path.join(self.state, 'snap.delta')
        self._run('qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'raw',
                  '-b', self.backing, delta, '4M')
        os.chown(delta, *self._qemu_ids())
        written_after = []

        def started():
            # The guest writes on once the copy's point in time is set.
            written_after.append(self._io(export, ['write -P 0x77 0 64k'],
                                          l1))
        self.daemon.snapshot(self.disk, delta, started=started)
        self.assertEqual(0, written_after[0][0], written_after[0][1])
        # The copy is the disk as it was: the guest's write before, not
        # the one after; with the backing file, the whole disk.
        self._run('qemu-io', '-f', 'qcow2', '-c', 'read -P 0x5a 0 64k',
                  '-c', 'read -P 0x11 1M 64k', delta)
        # The guest's disk has its later write, and is still served.
        status, out = self._io(export, ['read -P 0x77 0 64k'], l1)
        self.assertEqual(0, status, out)
        self.assertEqual([export], self.daemon.exports())
        # The copy's nodes are gone from the daemon: nothing holds it.
        self.assertEqual(nodes_before, self._nodes())
        self.assertIn(export, nodes_before)

        # A disk it does not serve: refused with the fix, nothing added.
        error = self.assertRaises(disks.StorageDaemonError,
                                  self.daemon.snapshot, self.backing, delta)
        self.assertIn('is not one of the disks it serves', str(error))
        self.assertEqual([export], self.daemon.exports())

    def test_a_block_device_is_served_as_a_cinder_volume_would_be(self):
        image = os.path.join(self.state, 'volume.img')
        self._run('truncate', '-s', '8M', image)
        made = self._run('losetup', '--find', '--show', image, check=False)
        if made.returncode:
            self.skipTest('no loop device here: %s' % made.stderr.strip())
        device = made.stdout.strip()
        self.addCleanup(self._run, 'losetup', '-d', device, check=False)
        os.chown(device, *self._qemu_ids())
        guest = '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d'
        xml = disks.serve(self.conf, (
            "<domain><uuid>%s</uuid><devices><disk type='block' "
            "device='disk'><driver name='qemu' type='raw' cache='none'/>"
            "<source dev='%s'/><target dev='vdb' bus='virtio'/></disk>"
            "</devices></domain>" % (guest, device)))
        export = disks.export_name(guest, 'vdb')
        self.assertIn('name="%s"' % export, xml)
        status, out = self._io(export, ['write -P 0x3c 1M 64k'],
                               self._l1_client('gen8'))
        self.assertEqual(0, status, out)
        # The same guest's root disk, served too; the volume detached from
        # it (by its device): only its export goes.
        root = disks.export_name(guest, 'vda')
        disks.serve(self.conf, (
            "<domain><uuid>%s</uuid><devices><disk type='file' "
            "device='disk'><driver name='qemu' type='qcow2'/>"
            "<source file='%s'/><target dev='vda' bus='virtio'/></disk>"
            "</devices></domain>" % (guest, self.disk)))
        self.assertEqual(sorted([export, root]), self.daemon.exports())
        self.assertEqual([export], self.daemon.unexport(guest, path=device))
        self.assertEqual([root], self.daemon.exports())
        self.assertEqual([root], [e.name for e in self.daemon.recorded()])
        self.assertEqual([root], self.daemon.unexport(guest))
        # The write is on the device itself.
        self._run('qemu-io', '-f', 'raw', '-c', 'read -P 0x3c 1M 64k',
                  device)

    def test_bad_disks_are_refused_before_anything_is_served(self):
        xml = ("<domain><uuid>6f1c2d3e-4f5a-4b6c-8d7e-0123456789ab</uuid>"
               "<devices><disk type='file' device='disk'>"
               "<driver name='qemu' type='qcow2'/><source file='%s'/>"
               "<target dev='vda'/></disk>"
               "<disk type='network' device='disk'>"
               "<source protocol='rbd' name='pool/vol'/>"
               "<target dev='vdb'/></disk></devices></domain>" % self.disk)
        error = self.assertRaises(disks.DiskError, disks.serve, self.conf,
                                  xml)
        self.assertIn('vdb', str(error))
        self.assertIn('rbd', str(error))
        self.assertFalse(self.daemon.running())
