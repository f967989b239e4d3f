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

"""Files replaced atomically: a reader, or a crash, sees the old or the
new content, never a part.

The new content goes to a temporary file in the same directory (oslo.utils
fileutils), which is renamed over the old one. ``durable`` also waits for
the disk (fsync of the file, then of the directory that holds its new
name) before returning, for records that must outlive a host crash, such
as the rejuvenation journal; files that only matter while this boot lasts
skip the wait.
"""

import os

from oslo_serialization import jsonutils
from oslo_utils import fileutils


def _fsync(path, flags=os.O_RDONLY):
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(path, text, durable=False, mode=0o600):
    """Replace the file at ``path`` with ``text`` (str or bytes), atomically.

    The directory is created if missing; the file gets ``mode``.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = fileutils.write_to_tempfile(
        text.encode() if isinstance(text, str) else text, path=directory,
        prefix='.%s-' % os.path.basename(path))
    try:
        if mode != 0o600:
            os.chmod(tmp, mode)
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        fileutils.delete_if_exists(tmp)
        raise
    if durable:
        _fsync(directory, os.O_RDONLY | os.O_DIRECTORY)


def replace_json(path, data, durable=False, **dumps_args):
    """Replace the file at ``path`` with ``data`` as JSON, atomically.

    ``dumps_args`` go to jsonutils.dumps (indent, sort_keys...).
    """
    replace(path, jsonutils.dumps(data, **dumps_args), durable=durable)


def searchable(directory):
    """Let others pass through ``directory`` and every directory above it.

    The search bit only (o+x, g+x): what the QEMU user must reach is then
    reachable by its path, and nothing becomes listable or readable.
    """
    while directory != '/':
        mode = os.stat(directory).st_mode
        # Only where a bit is missing: a directory above that is not this
        # process's (/tmp, say, for an unprivileged nova-compute) usually
        # has them, and could not be changed.
        if mode & 0o011 != 0o011:
            os.chmod(directory, mode | 0o011)
        directory = os.path.dirname(directory)
