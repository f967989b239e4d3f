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
