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

"""Consoles of guests inside L1 VMs, collected on L0.

A guest's serial port is a TCP client (QEMU chardev, reconnecting) that
connects to a collector on the host's bridge address; everything it sends
is appended to one local file per guest. The source and the destination
of a move connect to the same collector, so the guest's console reads as
one log across moves, exactly as a file console of a local guest does.
"""

import socket
import threading

from oslo_log import log as logging

LOG = logging.getLogger(__name__)


class ConsoleCollector:
    """One listening socket; every connection appends to ``path``."""

    def __init__(self, address, path):
        self.path = path
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((address, 0))
        self._sock.listen(8)
        self.address, self.port = self._sock.getsockname()
        self._lock = threading.Lock()
        self._closed = False
        open(path, 'ab').close()
        threading.Thread(target=self._accept, daemon=True,
                         name='vmbeam-console-%d' % self.port).start()

    def _accept(self):
        while not self._closed:
            try:
                conn, _peer = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._copy, args=(conn,), daemon=True,
                             name='vmbeam-console-conn').start()

    def _copy(self, conn):
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                with self._lock, open(self.path, 'ab') as f:
                    f.write(data)

    def close(self):
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


def serial_xml(address, port):
    """<serial> element (text) sending a guest's console to a collector."""
    return ("<serial type='tcp'><source mode='connect' host='%s' "
            "service='%d'><reconnect enabled='yes' timeout='1'/></source>"
            "<protocol type='raw'/><target port='0'/></serial>"
            % (address, port))
