"""Configuration of nova-vmbeam: the [vmbeam] and [vmbeam_aging] groups."""

from oslo_config import cfg

from nova_vmbeam.conf import aging
from nova_vmbeam.conf import driver
from nova_vmbeam.conf import vmbeam

CONF = cfg.CONF

vmbeam.register_opts(CONF)
aging.register_opts(CONF)
driver.register_opts(CONF)
