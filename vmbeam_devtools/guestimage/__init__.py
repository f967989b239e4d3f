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

"""Reproducible test guest for proving moves lose or corrupt no memory.

A Debian kernel plus a busybox initramfs whose /init runs memworker, which
dirties memory at a set rate, keeps verifying all of it, and reports on the
serial console.  On request (kernel_cmdline(ip=..., disk=...)) the guest
also brings up its virtio network card (answering ping and a TCP port) and
runs diskworker, which writes and verifies records on its virtio disk.  See
builder.py for the cache layout and console.py for reading the console log.
"""

from vmbeam_devtools.guestimage.builder import build  # noqa: F401
from vmbeam_devtools.guestimage.builder import default_cache_dir  # noqa: F401
from vmbeam_devtools.guestimage.builder import GuestImage  # noqa: F401
from vmbeam_devtools.guestimage.builder import GuestImageError  # noqa: F401
from vmbeam_devtools.guestimage.builder import kernel_cmdline  # noqa: F401
from vmbeam_devtools.guestimage.console import ConsoleLog  # noqa: F401
