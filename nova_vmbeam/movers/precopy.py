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

"""precopy: the conventional path, RAM copied over the migration stream.

What a Nova live migration does; the measured baseline and the explicit
fallback for guests whose RAM is not shareable.
"""

from nova_vmbeam import exception
from nova_vmbeam import guest as guest_mod
from nova_vmbeam.movers import migration


class PrecopyMover(migration.QmpMigrationMover):
    name = 'precopy'
    ram_backing = guest_mod.RAM_ANONYMOUS

    def check(self, spec):
        if spec.ram.kind == guest_mod.RAM_FILE:
            # Both QEMUs would map the one file, and the destination would
            # write copies of pages the running source keeps changing.
            raise exception.RamNotShareable(
                guest=spec.name, mover=self.name,
                reason='its RAM is a shared pool file that source and '
                       'destination would both map, so copying it would '
                       'overwrite live pages',
                fix='Move it with zerocopy, which shares that file '
                    'instead of copying it.')
