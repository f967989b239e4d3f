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

"""Which instances get VMBeam-ready RAM, and which pool it lives in.

VMBeam-ready RAM is a file in the RAM pool named after the instance UUID,
shared by the QEMU of each generation in turn. It is asked for by the
flavor extra spec ``vmbeam:ram``, else by the image property
``vmbeam_ram`` (Nova copies image properties into the instance's system
metadata as ``image_<name>``; ImageMetaProps has no field for it), else by
``[vmbeam] ram_default``.
"""

import dataclasses
import os

from oslo_log import log as logging
from oslo_utils import strutils

from nova_vmbeam import exception
from nova_vmbeam import pool as pool_mod
from nova_vmbeam.pool import guard

LOG = logging.getLogger(__name__)

EXTRA_SPEC = 'vmbeam:ram'
IMAGE_PROPERTY = 'vmbeam_ram'
_SMALL_PAGE_KIB = 4


@dataclasses.dataclass(frozen=True)
class RamPlan:
    """Where one instance's RAM goes."""

    pool: object   # a RAM pool (nova_vmbeam.pool)
    size_bytes: int
    #: flavor huge pages: the pool is on hugetlbfs
    hugepages: bool = False
    page_size_kib: int = _SMALL_PAGE_KIB

    def path(self, instance_uuid):
        return self.pool.file_path(instance_uuid)


def _flag(value, where):
    try:
        return strutils.bool_from_string(value, strict=True)
    except ValueError:
        raise exception.InvalidInput(
            reason='%s=%r is not a boolean; use true or false' %
                   (where, value))


def requested(instance, conf):
    """(wanted, source): does the instance ask for VMBeam-ready RAM."""
    value = (instance.flavor.extra_specs or {}).get(EXTRA_SPEC)
    if value is not None:
        return _flag(value, 'flavor extra spec ' + EXTRA_SPEC), 'flavor'
    value = (instance.system_metadata or {}).get('image_' + IMAGE_PROPERTY)
    if value is not None:
        return _flag(value, 'image property ' + IMAGE_PROPERTY), 'image'
    return conf.vmbeam.ram_default, '[vmbeam] ram_default'


def plan(instance, conf):
    """The RamPlan of ``instance``, or None for plain libvirt RAM.

    A guest NUMA topology of more than one node, or pinned CPUs, cannot be
    combined with one RAM backend ("-machine memory-backend" and
    "-numa memdev" exclude each other in QEMU): refused if the flavor or
    image asked for VMBeam RAM, plain RAM if only the default did.
    """
    wanted, source = requested(instance, conf)
    if not wanted:
        return None
    page_kib = _SMALL_PAGE_KIB
    topology = instance.numa_topology
    if topology is not None and topology.cells:
        reason = None
        if len(topology.cells) > 1:
            reason = 'its flavor asks for %d guest NUMA nodes' % len(
                topology.cells)
        elif topology.cpu_policy in ('dedicated', 'mixed'):
            reason = 'its flavor pins CPUs (hw:cpu_policy=dedicated)'
        if reason:
            if source.startswith('['):
                LOG.info('instance %s gets plain RAM: %s', instance.uuid,
                         reason)
                return None
            raise exception.RamConflict(uuid=instance.uuid, source=source,
                                        reason=reason)
        page_kib = topology.cells[0].pagesize or _SMALL_PAGE_KIB
    hugepages = page_kib > _SMALL_PAGE_KIB
    path = conf.vmbeam.hugepage_pool_path if hugepages \
        else conf.vmbeam.ram_pool_path
    pool = pool_at(conf, path)
    return RamPlan(pool=pool, size_bytes=instance.flavor.memory_mb << 20,
                   hugepages=hugepages, page_size_kib=page_kib)


def pool_at(conf, path):
    """The RAM pool in directory ``path``.

    [vmbeam] ram_pool_path is served by [vmbeam] ram_pool_backend (the
    pagemover daemon by default), like every other user of that pool; the
    huge-page pool is a plain directory of files.
    """
    if os.path.abspath(path) == os.path.abspath(conf.vmbeam.ram_pool_path):
        return pool_mod.load(conf)
    return pool_mod.RamPool(path, conf.vmbeam.qemu_user,
                            conf.vmbeam.ram_pool_reserve_mib,
                            lock_dir=guard.directory_for(conf, path))


def allocate(ram_plan, instance_uuid):
    """A fresh RAM file for a guest that is about to be created.

    A leftover file of an earlier incarnation (hard reboot, rebuild) is
    released first, so no guest starts on old RAM contents; that is
    refused while any QEMU still maps it. Both in one hold of the guest's
    lock, and the new file is kept from other callers' releases until
    its QEMU has used it (pool.guard).
    """
    if ram_plan.hugepages:
        have = ram_plan.pool.page_size() >> 10
        if have != ram_plan.page_size_kib:
            raise exception.PoolError(
                path=ram_plan.pool.path,
                reason='has %d KiB huge pages, the flavor asks for %d KiB'
                       % (have, ram_plan.page_size_kib),
                fix='Point [vmbeam] hugepage_pool_path at a hugetlbfs '
                    'mount with pagesize=%dK.' % ram_plan.page_size_kib)
    return ram_plan.pool.reallocate(instance_uuid, ram_plan.size_bytes)


def release(conf, instance_uuid):
    """Free an instance's RAM file in either pool, unless still mapped."""
    for path in (conf.vmbeam.ram_pool_path, conf.vmbeam.hugepage_pool_path):
        pool = pool_at(conf, path)
        try:
            pool.release(instance_uuid)
        except exception.PoolError as exc:
            # Mapped: a QEMU still runs on it (a move in progress, or a
            # guest Nova did not manage to stop), or about to be: another
            # thread allocated it for a QEMU that is starting. Freeing
            # would corrupt it.
            LOG.warning('keeping the RAM of %s: %s', instance_uuid, exc)


def allocate_path(conf, path, instance_uuid, size_bytes):
    """A fresh RAM file at ``path``, as a domain's XML names it."""
    pool = pool_at(conf, os.path.dirname(path))
    if pool.file_path(instance_uuid) != path:
        raise exception.PoolError(
            path=pool.path, reason='the guest XML names RAM file %s, not '
                                   'one named after instance %s' %
                                   (path, instance_uuid),
            fix='Hard reboot the instance so that its XML is written anew.')
    return pool.reallocate(instance_uuid, size_bytes)
