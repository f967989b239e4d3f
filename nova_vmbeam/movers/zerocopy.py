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

"""zerocopy: guest RAM in a named RAM-pool file, x-ignore-shared migration.

Source and destination map the same file; with x-ignore-shared QEMU sends
no shared RAM at all, only device state.
"""

from nova_vmbeam import exception
from nova_vmbeam import guest as guest_mod
from nova_vmbeam.movers import migration
from nova_vmbeam.privsep import daemons as privsep_daemons
from nova_vmbeam.qemu import procfs


class ZeroCopyMover(migration.QmpMigrationMover):
    name = 'zerocopy'
    ram_backing = guest_mod.RAM_FILE
    capabilities = ('x-ignore-shared',)

    def check(self, spec):
        if spec.ram.kind != guest_mod.RAM_FILE:
            raise exception.RamNotShareable(
                guest=spec.name, mover=self.name,
                reason='its RAM is %s, not a file in the RAM pool' %
                spec.ram.kind,
                fix='Start the guest with its RAM in the pool '
                    '([vmbeam] ram_pool_path), or move it with precopy%s.'
                    % (' or cpr' if spec.ram.kind == guest_mod.RAM_MEMFD
                       else ''))

    def check_source(self, ctx):
        # The source must map the pool file it claims; checked before the
        # move, so the guest's pause only pays for the destination's check.
        self._check_maps(ctx, ctx.source, 'source')

    def verify_ram(self, ctx):
        self._check_maps(ctx, ctx.destination, 'destination')

    @staticmethod
    def _check_maps(ctx, endpoint, role):
        """``endpoint`` must map the source's RAM file, whatever it says."""
        spec = ctx.source.spec
        identity = procfs.file_identity(spec.ram.path)
        try:
            mapped = procfs.maps_identity(endpoint.pid, identity,
                                          spec.ram_bytes)
        except PermissionError:
            # The QEMU user's process, and nova-compute is not root: read
            # by the privsep daemon (a round trip more, in the pause).
            mapped = privsep_daemons.maps_shared_file(
                endpoint.pid, identity.dev, identity.inode, spec.ram_bytes)
        if not mapped:
            raise exception.VerificationFailed(
                guest=spec.name,
                reason='%s QEMU (pid %d) does not map the RAM file %s' %
                (role, endpoint.pid, spec.ram.path))
