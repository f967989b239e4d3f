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

"""cpr: QEMU >= 10 cpr-transfer, guest RAM in a memfd.

The destination starts with two incoming channels; the source sends the
RAM descriptors over the ``cpr`` unix channel (SCM_RIGHTS), so the
destination maps the very same memfd and only device state is migrated.
"""

from nova_vmbeam import exception
from nova_vmbeam import guest as guest_mod
from nova_vmbeam.movers import migration
from nova_vmbeam.qemu import cmdline
from nova_vmbeam.qemu import procfs
from nova_vmbeam.qemu import version

MIN_QEMU = (10, 0, 0)


class CprMover(migration.QmpMigrationMover):
    name = 'cpr'
    ram_backing = guest_mod.RAM_MEMFD
    parameters = {'mode': 'cpr-transfer'}
    monitor_before_migrate = False
    # The destination receives the memfd over the cpr channel.
    ram_mapped_at_start = False

    def check(self, spec):
        version.require(self.conf.vmbeam.qemu_binary, MIN_QEMU,
                        'The cpr mover (cpr-transfer)',
                        ['zerocopy', 'precopy'])
        if spec.ram.kind != guest_mod.RAM_MEMFD:
            raise exception.RamNotShareable(
                guest=spec.name, mover=self.name,
                reason='its RAM is %s, not a shared memfd' % spec.ram.kind,
                fix='Start the guest with memory-backend-memfd,share=on '
                    'and -machine aux-ram-share=on, or move it with %s.' %
                    ('zerocopy' if spec.ram.kind == guest_mod.RAM_FILE
                     else 'precopy'))

    def _channels(self, ctx):
        return [cmdline.unix_channel('main', self._socket_path(ctx, 'main')),
                cmdline.unix_channel('cpr', self._socket_path(ctx, 'cpr'))]

    def incoming(self, ctx):
        return self._channels(ctx)

    def start_incoming(self, ctx):
        # The destination listens on its channels once it has started; its
        # monitor is not up yet, so watch for the socket instead.
        self.wait_listening(ctx, self._socket_path(ctx, 'cpr'))
        return {'channels': self._channels(ctx)}

    def prepare(self, ctx):
        # The source's RAM identity, read before the move: the memfd has
        # no name in the filesystem to stat later.
        ctx.source_ram = procfs.shared_ram(ctx.source.pid,
                                           ctx.source.spec.ram_bytes)
        super().prepare(ctx)

    def verify_ram(self, ctx):
        spec = ctx.source.spec
        dest_ram = procfs.shared_ram(ctx.destination.pid, spec.ram_bytes)
        if not ctx.source_ram or not ctx.source_ram & dest_ram:
            raise exception.VerificationFailed(
                guest=spec.name,
                reason='destination QEMU (pid %d) does not map the memfd '
                       'of the source' % ctx.destination.pid)
