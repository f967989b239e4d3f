"""Configuration of nova-vmbeam: [vmbeam], [vmbeam_aging], [vmbeam_nested]."""

from oslo_config import cfg

from nova_vmbeam.conf import aging
from nova_vmbeam.conf import driver
from nova_vmbeam.conf import nested
from nova_vmbeam.conf import vmbeam

CONF = cfg.CONF

vmbeam.register_opts(CONF)
aging.register_opts(CONF)
driver.register_opts(CONF)
nested.register_opts(CONF)
