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

"""The pagemover protocol client: framing, replies, descriptors, errors.

The daemon itself is exercised by native/tests (C) and
tests/functional/test_pagemover.py; here a scripted peer on a real unix
socket checks the client's side of the wire format.
"""

import json
import os
import shutil
import socket
import struct
import tempfile
import threading

import testtools

from nova_vmbeam import exception
from nova_vmbeam import pool as pool_mod
from nova_vmbeam.pool import daemon
from nova_vmbeam.pool import pagemoverd
from nova_vmbeam.pool import protocol
from tests.unit import fakes


class ScriptedPeer:
    """Accepts one connection, records the request, sends ``reply``."""

    def __init__(self, path, reply_bytes, fd=None):
        self.request = None
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(1)
        self.reply_bytes = reply_bytes
        self.fd = fd
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.server.accept()
        with conn:
            header = conn.recv(protocol.HEADER.size, socket.MSG_WAITALL)
            magic, version, kind, _res, length = protocol.HEADER.unpack(
                header)
            body = conn.recv(length, socket.MSG_WAITALL) if length else b''
            self.request = (magic, version, kind, json.loads(body))
            if self.fd is not None:
                socket.send_fds(conn, [self.reply_bytes[:1]], [self.fd])
                conn.sendall(self.reply_bytes[1:])
            else:
                conn.sendall(self.reply_bytes)
        self.server.close()


def reply(obj, version=protocol.VERSION, kind=protocol.KIND_REPLY):
    body = json.dumps(obj).encode()
    return struct.pack('>4sBBHI', b'VBPM', version, kind, 0,
                       len(body)) + body


class TestProtocol(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix='vmbeam-proto-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.sock = os.path.join(self.dir, 'sock')

    def test_encode_has_versioned_header(self):
        data = protocol.encode({'op': 'hello'})
        self.assertEqual(b'VBPM', data[:4])
        self.assertEqual(1, data[4])
        self.assertEqual(0, data[5])
        self.assertEqual(len(data) - 12, struct.unpack('>I', data[8:12])[0])
        self.assertEqual({'op': 'hello'}, json.loads(data[12:]))

    def test_oversized_request_is_refused_before_sending(self):
        self.assertRaises(ValueError, protocol.encode,
                          {'op': 'x', 'pad': 'y' * 70000})

    def test_call_round_trip_with_descriptor(self):
        read_end, write_end = os.pipe()
        self.addCleanup(os.close, read_end)
        peer = ScriptedPeer(self.sock, reply({'ok': True, 'path': '/p'}),
                            fd=write_end)
        answer, fd = protocol.call(self.sock, {'op': 'fd', 'uuid': 'u1'})
        peer.thread.join(5)
        os.close(write_end)
        self.assertEqual((b'VBPM', 1, 0, {'op': 'fd', 'uuid': 'u1'}),
                         peer.request)
        self.assertEqual('/p', answer['path'])
        self.assertIsNotNone(fd)
        # It is the peer's pipe: what we write comes out at its other end.
        os.write(fd, b'same pipe')
        os.close(fd)
        self.assertEqual(b'same pipe', os.read(read_end, 64))

    def test_error_reply_raises_with_code_and_message(self):
        ScriptedPeer(self.sock, reply({
            'ok': False, 'error': 'over_budget',
            'message': 'RAM pool /x: 256 MiB more would exceed the budget. '
                       'Raise [vmbeam] ram_pool_budget_mib.'}))
        exc = self.assertRaises(exception.DaemonError, protocol.call,
                                self.sock, {'op': 'allocate'})
        self.assertEqual(protocol.OVER_BUDGET, exc.code)
        self.assertIn('ram_pool_budget_mib', str(exc))
        self.assertIsInstance(exc, exception.PoolError)

    def test_reply_of_another_version_is_a_protocol_error(self):
        ScriptedPeer(self.sock, reply({'ok': True}, version=2))
        exc = self.assertRaises(exception.ProtocolError, protocol.call,
                                self.sock, {'op': 'hello'})
        self.assertIn('version 2', str(exc))

    def test_garbage_reply_is_a_protocol_error(self):
        ScriptedPeer(self.sock, b'HTTP/1.0 400 Bad Request\r\n\r\n')
        self.assertRaises(exception.ProtocolError, protocol.call, self.sock,
                          {'op': 'hello'})

    def test_no_daemon_is_an_oserror(self):
        self.assertRaises(FileNotFoundError, protocol.call, self.sock,
                          {'op': 'hello'})


class TestBackendChoice(testtools.TestCase):

    def test_default_backend_is_the_daemon(self):
        conf = fakes.make_conf(ram_pool_path='/dev/shm/x')
        self.assertIsInstance(pool_mod.load(conf), pagemoverd.PagemoverdPool)

    def test_file_backend(self):
        conf = fakes.make_conf(ram_pool_backend='file',
                               ram_pool_path='/dev/shm/x')
        self.assertIsInstance(pool_mod.load(conf), pool_mod.RamPool)

    def test_unknown_backend_names_the_choices(self):
        conf = fakes.make_conf(ram_pool_backend='nope')
        exc = self.assertRaises(exception.InvalidInput, pool_mod.load, conf)
        self.assertIn('file, pagemoverd', str(exc))
        self.assertIn('ram_pool_backend', str(exc))

    def test_one_daemon_socket_per_pool_directory(self):
        a = fakes.make_conf(ram_pool_path='/dev/shm/a', state_path='/s1')
        b = fakes.make_conf(ram_pool_path='/dev/shm/a', state_path='/s2')
        c = fakes.make_conf(ram_pool_path='/dev/shm/b', state_path='/s1')
        self.assertEqual(daemon.socket_path(a), daemon.socket_path(b))
        self.assertNotEqual(daemon.socket_path(a), daemon.socket_path(c))
        d = fakes.make_conf(pagemoverd_socket='/tmp/pm.sock')
        self.assertEqual('/tmp/pm.sock', daemon.socket_path(d))

    def test_missing_binary_names_the_build_command(self):
        conf = fakes.make_conf(pagemoverd_binary='/nonexistent/pagemoverd')
        exc = self.assertRaises(exception.DaemonNotFound, daemon.find_binary,
                                conf)
        self.assertIn('make -C native', str(exc))
