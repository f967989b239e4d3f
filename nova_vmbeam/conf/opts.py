"""Entry point for oslo-config-generator (oslo.config.opts)."""

from nova_vmbeam.conf import aging
from nova_vmbeam.conf import driver
from nova_vmbeam.conf import nested
from nova_vmbeam.conf import vmbeam


def list_opts():
    groups = dict(vmbeam.list_opts())
    groups.update(aging.list_opts())
    groups.update(nested.list_opts())
    return [(group, opts + (driver.driver_opts if group.name == 'vmbeam'
                            else []))
            for group, opts in groups.items()]
