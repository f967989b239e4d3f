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

"""The L1 appliance with the dev tools' payload (tests and bench).

The production appliance carries no test payload. The nested testbed and
bench boot one with two additions, through the appliance builder's extra
files: the project's test guest image (the L2 guest they start inside an
L1) and the bandwidth probe of ``vmbeam bench --nested-bandwidth``
(``bwprobe.c``). ``use()`` points ``[vmbeam_nested] appliance_dir`` at it,
so every nested sibling started with that configuration, by the testbed
or by the orchestrator, boots it.
"""

import os

from nova_vmbeam import imagekit
from nova_vmbeam.nested.appliance import builder as appliance_builder
from nova_vmbeam.nested import bootfiles
from vmbeam_devtools import guestimage

HERE = os.path.dirname(os.path.abspath(__file__))
BWPROBE_SRC = os.path.join(HERE, 'bwprobe.c')

#: where the L2 test guest image is inside the L1
# (in the appliance's own directory: bootfiles leaves these paths alone)
GUEST_DIR = bootfiles.APPLIANCE_DIR.strip('/') + '/guest'
GUEST_KERNEL = '/%s/vmlinux' % GUEST_DIR
GUEST_INITRD = '/%s/initrd.img' % GUEST_DIR
#: the bandwidth probe inside the L1
BWPROBE = '/usr/bin/vmbeam-bwprobe'


def _bwprobe(cache_dir):
    """The compiled probe, cached by its source's SHA-256.

    Compiled once: the appliance's cache key covers the binary's bytes.
    """
    directory = os.path.join(cache_dir, 'devtools')
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, 'bwprobe-%s' %
                        imagekit.sha256_file(BWPROBE_SRC)[:16])
    with imagekit.locked(os.path.join(directory, '.lock')):
        if not os.path.exists(path):
            tmp = path + '.tmp'
            imagekit.compile_static(BWPROBE_SRC, tmp)
            os.rename(tmp, path)
    return path


def build(cache_dir=None):
    """Build (or reuse) the appliance with the test payload: an Appliance."""
    cache_dir = os.path.abspath(cache_dir or imagekit.default_cache_dir())
    guest = guestimage.build(cache_dir)
    return appliance_builder.build(cache_dir, extra_files=(
        appliance_builder.ExtraFile(GUEST_KERNEL.lstrip('/'), guest.kernel),
        appliance_builder.ExtraFile(GUEST_INITRD.lstrip('/'), guest.initrd),
        appliance_builder.ExtraFile(BWPROBE.lstrip('/'), _bwprobe(cache_dir),
                                    0o755)))


def use(conf, cache_dir=None):
    """Build it and make ``conf``'s nested siblings boot it."""
    image = build(cache_dir)
    conf.set_override('appliance_dir', os.path.dirname(image.manifest),
                      'vmbeam_nested')
    return image
