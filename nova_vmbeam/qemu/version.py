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

"""QEMU binary version and accelerator detection."""

import functools
import os
import re
import subprocess

from nova_vmbeam import exception


@functools.lru_cache(maxsize=None)
def qemu_version(binary):
    """(major, minor, micro) of ``binary``; InvalidInput if it won't run."""
    try:
        out = subprocess.run([binary, '--version'], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise exception.InvalidInput(
            reason='cannot run QEMU binary %r (%s). Install QEMU (on Debian '
                   '12: apt-get -t bookworm-backports install '
                   'qemu-system-x86) or set [vmbeam] qemu_binary.' %
                   (binary, exc))
    match = re.search(r'version (\d+)\.(\d+)\.(\d+)', out)
    if not match:
        raise exception.InvalidInput(
            reason='cannot tell the version of %r from %r' % (binary, out))
    return tuple(int(x) for x in match.groups())


def require(binary, needed, feature, alternatives):
    found = qemu_version(binary)
    if found < needed:
        raise exception.QemuTooOld(
            feature=feature, binary=binary,
            needed='.'.join(map(str, needed)),
            found='.'.join(map(str, found)),
            alternatives=', '.join(alternatives))
    return found


def kvm_usable():
    """True when /dev/kvm can run stock guest kernels.

    PVM (kvm_pvm), as found in some nested clouds, opens /dev/kvm but only
    boots PVM-enabled guest kernels, so it does not count.
    """
    if os.path.exists('/sys/module/kvm_pvm'):
        return False
    return os.access('/dev/kvm', os.R_OK | os.W_OK)


def resolve_accel(accel):
    if accel == 'auto':
        return 'kvm' if kvm_usable() else 'tcg'
    return accel
