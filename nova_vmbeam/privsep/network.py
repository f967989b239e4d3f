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


"""The nested sibling's bridge on the host (privsep entrypoints).

Bridge names and addresses are checked here and passed to ``ip`` and
``ss`` as arguments of their own.
"""

import ipaddress
import re
import subprocess

from nova_vmbeam.privsep import vmbeam_pctxt

# A network interface's name: at most 15 characters (IFNAMSIZ - 1).
_IFNAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$')


def _ip(*args):
    return subprocess.run(('ip',) + args, capture_output=True, text=True)


def _check_bridge(bridge):
    if not isinstance(bridge, str) or not _IFNAME.match(bridge):
        raise ValueError('not an interface name: %r' % (bridge,))


@vmbeam_pctxt.entrypoint
def ensure_bridge(bridge, address, prefix):
    """Create ``bridge`` with ``address``/``prefix`` unless it exists.

    Returns None, or why the bridge could not be created.
    """
    _check_bridge(bridge)
    interface = ipaddress.IPv4Interface('%s/%d' % (
        ipaddress.IPv4Address(address), int(prefix)))
    if _ip('link', 'show', 'dev', bridge).returncode != 0:
        done = _ip('link', 'add', 'name', bridge, 'type', 'bridge')
        if done.returncode != 0 and 'exists' not in done.stderr:
            return done.stderr.strip()
    have = _ip('-4', '-o', 'addr', 'show', 'dev', bridge).stdout
    if ' %s ' % interface.with_prefixlen not in have:
        _ip('addr', 'add', interface.with_prefixlen, 'dev', bridge)
    _ip('link', 'set', bridge, 'up')
    return None


@vmbeam_pctxt.entrypoint
def remove_bridge(bridge):
    _check_bridge(bridge)
    _ip('link', 'del', bridge)


@vmbeam_pctxt.entrypoint
def kill_sockets_to(address):
    """Close this host's TCP sockets to ``address`` (a retired L1's)."""
    subprocess.run(['ss', '-K', 'dst', str(ipaddress.ip_address(address))],
                   capture_output=True)
