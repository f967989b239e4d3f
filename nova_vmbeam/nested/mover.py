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

"""nested: zerocopy between two L1 hypervisor VMs (the nested sibling).

The guest's RAM is an L0 pool attached to both L1s as an ivshmem-plain
device; in each L1 the guest's QEMU maps that device's BAR as its RAM
(``memory-backend-file,mem-path=/sys/bus/pci/devices/<bdf>/resource2,
share=on``), or, with [vmbeam_nested] bar_mapping = dax, as a virtio-pmem
device whose device-DAX it maps (``mem-path=/dev/daxN.M``; the source L1
keeps that device, which cannot be unplugged, until it retires). With
x-ignore-shared only device state crosses, over TCP on the private L0
network. What differs from zerocopy:

  prepare    the pool is attached to the target L1 first and its BAR
             enabled; the destination maps the target's BAR path (the BDF
             differs per L1), which is checked inside the L1
  transfer   tcp:<target L1>:<port> instead of a unix socket, in TLS
             (QEMU's tls-creds-x509 on both ends, each verifying its
             peer's certificate against this node's CA, nested/pki.py;
             the destination's tls-authz names the source L1): a local
             user of L0 can reach the L1 network, so an unauthenticated
             stream could be fed to a waiting destination
  verify     at L0: vmbeam-pagemoverd confirms the target L1's QEMU maps
             this very pool (device and inode), plus zerocopy's checks
             of migration state and destination state
  switchover as zerocopy; then the pool is detached from the source L1
             (its QEMU for the guest is gone by then)

A destination prepared ahead (``vmbeam standby``: the next L1 booted and
every guest's destination waiting in it) is adopted when QEMU says it
still listens on the guest's port.
"""

import dataclasses
import uuid as uuid_mod

from oslo_log import log as logging

from nova_vmbeam import exception
from nova_vmbeam import guest as guest_mod
from nova_vmbeam import hypervisor as hypervisor_mod
from nova_vmbeam.libvirt import config as libvirt_config
from nova_vmbeam.movers import base
from nova_vmbeam.movers import zerocopy
from nova_vmbeam.nested import pki
from nova_vmbeam import pool as pool_mod
from nova_vmbeam.pool import base as pool_base

LOG = logging.getLogger(__name__)

PORTS = 500
#: QEMU objects of the migration's TLS credentials, one per role: a QEMU
#: that came in by a move (server) later leaves by one (client)
TLS_INCOMING = 'vmbeam-tls-incoming'
TLS_OUTGOING = 'vmbeam-tls-outgoing'
#: the destination's list of the one source it accepts
TLS_AUTHZ = 'vmbeam-tls-authz'


class NestedMover(zerocopy.ZeroCopyMover):
    name = 'nested'
    sibling_kind = 'nested'
    # The QEMUs run inside L1 VMs, each with a clock of its own, and are
    # reached through each L1's libvirt.
    event_clock_shared = False
    local_processes = False

    def __init__(self, conf):
        super().__init__(conf)
        self._pool = None

    @property
    def pool(self):
        if self._pool is None:
            self._pool = pool_mod.load(self.conf)
            if not isinstance(self._pool, pool_base.AttachablePool):
                raise exception.InvalidInput(
                    reason='the nested mover needs [vmbeam] '
                           'ram_pool_backend = pagemoverd (it attaches '
                           'pools to hypervisor VMs)')
        return self._pool

    def _l1(self, hypervisor, role):
        if not isinstance(hypervisor,
                          hypervisor_mod.PoolAttachingHypervisor) or \
                hypervisor.sibling is None:
            raise exception.InvalidInput(
                reason='the nested mover moves guests between nested '
                       'siblings; the %s is %s' % (role, hypervisor.name))
        return hypervisor.sibling

    def port(self, spec):
        return (self.conf.vmbeam_nested.migration_port_base +
                uuid_mod.UUID(spec.uuid).int % PORTS)

    def _configure(self, endpoint):
        super()._configure(endpoint)
        # The destination is the QEMU still waiting for its state: it
        # listens (TLS server), the source connects (TLS client).
        incoming = endpoint.status() == 'inmigrate'
        creds = TLS_INCOMING if incoming else TLS_OUTGOING
        have = {o.get('name') for o in endpoint.execute('qom-list',
                                                        path='/objects')}
        if creds not in have:
            endpoint.execute('object-add', **{
                'qom-type': 'tls-creds-x509', 'id': creds,
                'dir': '/' + pki.L1_MIGRATION_DIR,
                'endpoint': 'server' if incoming else 'client',
                'verify-peer': True})
        endpoint.execute('migrate-set-parameters', **{'tls-creds': creds})

    def _accept_only(self, destination, source_l1):
        """The destination takes a stream from the source's L1 only.

        verify-peer proves a certificate of this node's CA; every L1 has
        one. The name says which L1: root in another L1 must not be able
        to feed this destination a stream of its own.
        """
        destination.execute('object-add', **{
            'qom-type': 'authz-simple', 'id': TLS_AUTHZ,
            'identity': pki.migration_dn(source_l1.name)})
        destination.execute('migrate-set-parameters',
                            **{'tls-authz': TLS_AUTHZ})

    def check_source(self, ctx):
        # At L0: the source L1's QEMU maps this guest's pool.
        source_l1 = self._l1(ctx.source.host, 'source')
        self._l1(ctx.target, 'target')
        self._check_pool_mapped(ctx, source_l1, 'source')

    def _check_pool_mapped(self, ctx, l1, role):
        spec = ctx.source.spec
        pid = l1.l1_pid()
        if pid is None or not self.pool.verify(spec.uuid, pid):
            raise exception.VerificationFailed(
                guest=spec.name,
                reason='the %s L1 VM %s (pid %s) does not map the pool of '
                       'the guest' % (role, l1.name, pid))

    def _check_pool_layout(self, spec, l1):
        """The guest's RAM is where ``l1`` will map it in the pool.

        A pool made for device-DAX has a 2 MiB head before the RAM, one
        for a BAR none: a guest moved to an L1 of the other mapping
        ([vmbeam_nested] bar_mapping changed under running guests) would
        run on the wrong bytes.
        """
        size = self.pool.residency(spec.uuid)['size']
        head = l1.ram_mapping.pool_head_bytes
        if size != (spec.ram_mib << 20) + head:
            raise exception.InvalidInput(
                reason='the pool of %s holds %d bytes, not its %d MiB of RAM '
                       'after a head of %d bytes as %s maps it (%s): it was '
                       'made under another [vmbeam_nested] bar_mapping. Set '
                       'bar_mapping back for as long as this guest runs, or '
                       'stop and start it' % (
                           spec.name, size, spec.ram_mib, head, l1.name,
                           'device-DAX' if l1.ram_mapping.dax else
                           'a BAR'))

    def destination_spec(self, ctx):
        spec = ctx.source.spec
        self._check_pool_layout(spec, ctx.target.sibling)
        ctx.bar = ctx.target.attach_pool(self.pool, spec.uuid)
        ctx.pool_attached = True
        ram = guest_mod.RamBacking(guest_mod.RAM_FILE, ctx.bar)
        xml = libvirt_config.with_ram(spec.domain_xml, ram, spec.ram_mib)
        return dataclasses.replace(spec, ram=ram, domain_xml=xml)

    def prepare(self, ctx):
        ctx.pool_attached = False
        super().prepare(ctx)
        # Outside the guest's pause: the destination QEMU inside the
        # target L1 maps the target's BAR (it mapped it at start).
        if not ctx.target.maps_bar(ctx.source.spec.name, ctx.bar):
            raise exception.VerificationFailed(
                guest=ctx.source.spec.name,
                reason='destination QEMU in %s does not map %s' %
                (ctx.target.name, ctx.bar))

    def start_incoming(self, ctx):
        self._accept_only(ctx.destination, self._l1(ctx.source.host,
                                                    'source'))
        uri = 'tcp:%s:%d' % (ctx.target.address, self.port(ctx.source.spec))
        ctx.destination.execute('migrate-incoming', uri=uri)
        return {'uri': uri}

    def adopt(self, source, target, destination):
        """Take over a destination prepared earlier in ``target`` (standby).

        It must be alive, waiting for a migration and listening on this
        guest's port (QEMU's own query-migrate says where it listens);
        otherwise InvalidInput and nothing changed.
        """
        self.check(source.spec)
        self._l1(target, 'target')
        ctx = base.MoveContext(source, target)
        ctx.mark('prepare')
        port = self.port(source.spec)
        try:
            waiting = (destination.alive() and
                       destination.status() == 'inmigrate' and
                       any(int(addr.get('port', 0)) == port for addr in
                           destination.execute('query-migrate').get(
                               'socket-address', ())))
        except exception.MonitorError as exc:
            LOG.warning('prepared destination of %s: %s', source.spec.name,
                        exc)
            waiting = False
        if not waiting:
            raise exception.InvalidInput(
                reason='the prepared destination of %s in %s is not '
                       'waiting for a migration on port %d' %
                       (source.spec.name, target.name, port))
        ctx.destination = destination
        ctx.bar = libvirt_config.ram_backing(
            destination.spec.domain_xml).path
        ctx.pool_attached = True
        ctx.source_was_running = source.status() == 'running'
        self.check_source(ctx)
        self._configure(ctx.source)
        ctx.migrate_args = {'uri': 'tcp:%s:%d' % (target.address, port)}
        self._verify_adopted_ram(ctx)
        ctx.mark('prepared')
        return ctx

    def verify_ram(self, ctx):
        self._check_pool_mapped(ctx, ctx.target.sibling, 'target')

    def switchover(self, ctx):
        super().switchover(ctx)
        # The source QEMU is gone: its L1 may let go of the pool. The
        # guest has moved whatever happens here.
        try:
            ctx.source.host.detach_pool(self.pool, ctx.source.spec.uuid)
        except Exception as exc:
            LOG.warning('detaching the pool of %s from %s: %s (it goes '
                        'with that L1)', ctx.source.spec.name,
                        ctx.source.host.name, exc)

    def rollback(self, ctx):
        super().rollback(ctx)
        if getattr(ctx, 'pool_attached', False):
            try:
                ctx.target.detach_pool(self.pool, ctx.source.spec.uuid)
            except Exception as exc:
                LOG.warning('detaching the pool of %s from %s after a '
                            'failed move: %s', ctx.source.spec.name,
                            ctx.target.name, exc)

    def _downtime_ms(self, ctx):
        """The guest's pause, on L0's clock.

        QMP event timestamps come from each L1's own clock, and two L1
        clocks (TCG guests without time sync) disagree by more than the
        pause. So: from the source's STOP to the destination's RESUME as
        libvirt delivered them here (_event_time; each arrives later than
        QEMU emitted it by about the same delivery). Without both: the
        source's own figure from stop to completion (query-migrate
        "downtime"), plus verify and resume as timed here.
        """
        stop = self._event_at(ctx.source, 'STOP', ctx.wall_start)
        resume = stop and self._event_at(ctx.destination, 'RESUME',
                                         ctx.wall_start, timeout=1.0)
        if stop is not None and resume is not None:
            return round((resume - stop) * 1000.0, 3)
        source_ms = float(ctx.migration.get('downtime', 0))
        return round(source_ms + ctx.ms('transferred', 'resumed'), 3)
