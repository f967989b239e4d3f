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

"""The vmbeam-pagemoverd wire protocol, client side.

A message is a 12-byte header (magic ``VBPM``, version, kind, two reserved
bytes, big-endian payload length) and a JSON object; a reply may carry one
descriptor (SCM_RIGHTS). docs/design/pagemover-protocol.md describes it;
native/include/vmbeam_pagemover.h is the daemon's side.
"""

import array
import json
import os
import socket
import struct

from nova_vmbeam import exception

MAGIC = b'VBPM'
VERSION = 1
KIND_REQUEST = 0
KIND_REPLY = 1
MAX_PAYLOAD = 65536
HEADER = struct.Struct('>4sBBHI')

# Error codes of failed replies (the "error" field).
MALFORMED = 'malformed'
UNSUPPORTED_VERSION = 'unsupported_version'
UNKNOWN_OP = 'unknown_op'
BAD_ARGUMENT = 'bad_argument'
UNKNOWN_POOL = 'unknown_pool'
SIZE_MISMATCH = 'size_mismatch'
WRONG_OWNER = 'wrong_owner'
OVER_BUDGET = 'over_budget'
NO_SPACE = 'no_space'
BAD_FILESYSTEM = 'bad_filesystem'
POOL_DIR_MISSING = 'pool_dir_missing'
IN_USE = 'in_use'
PERMISSION_DENIED = 'permission_denied'
UNLINKED = 'unlinked'
POOL_DIR_LOCKED = 'pool_dir_locked'
QMP_ERROR = 'qmp_error'
SYSTEM_ERROR = 'system_error'


def encode(request):
    """Header and payload of a request (a dict)."""
    payload = json.dumps(request, separators=(',', ':')).encode('ascii')
    if len(payload) > MAX_PAYLOAD:
        raise ValueError('request of %d bytes is too large' % len(payload))
    return HEADER.pack(MAGIC, VERSION, KIND_REQUEST, 0, len(payload)) + \
        payload


def decode_header(header, socket_path):
    """Payload length of a reply header; ProtocolError if it is not one."""
    magic, version, kind, reserved, length = HEADER.unpack(header)
    if magic != MAGIC or kind != KIND_REPLY or reserved or \
            length > MAX_PAYLOAD:
        raise exception.ProtocolError(socket=socket_path, version=VERSION,
                                      detail='bad reply header %r' % header)
    if version != VERSION:
        raise exception.ProtocolError(socket=socket_path, version=VERSION,
                                      detail='reply of version %d' % version)
    return length


def _recv_exactly(sock, size, fds):
    """``size`` bytes; descriptors that come along are added to ``fds``."""
    chunks = []
    while size:
        ancillary = socket.CMSG_SPACE(4 * array.array('i').itemsize)
        data, ancdata, _flags, _addr = sock.recvmsg(size, ancillary)
        for level, kind, cmsg in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                got = array.array('i')
                got.frombytes(cmsg[:len(cmsg) - len(cmsg) % got.itemsize])
                fds.extend(got)
        if not data:
            raise ConnectionResetError('pagemoverd closed the connection')
        chunks.append(data)
        size -= len(data)
    return b''.join(chunks)


def call(socket_path, request, timeout=30.0):
    """Send one request; returns (reply dict, descriptor or None).

    Connection errors (no daemon) propagate as OSError. A failed reply is
    raised as exception.DaemonError. The caller owns a returned descriptor.
    """
    fds = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(encode(request))
        try:
            length = decode_header(
                _recv_exactly(sock, HEADER.size, fds), socket_path)
            reply = json.loads(_recv_exactly(sock, length, fds))
        except BaseException:
            for fd in fds:
                _close(fd)
            raise
    fd = fds.pop(0) if fds else None
    for extra in fds:
        _close(extra)
    if not reply.get('ok'):
        if fd is not None:
            _close(fd)
        raise exception.DaemonError(reply.get('error', SYSTEM_ERROR),
                                    reply.get('message', 'request refused'))
    return reply, fd


def _close(fd):
    try:
        os.close(fd)
    except OSError:
        pass
