"""compute_driver = vmbeam.VMBeamDriver (Nova imports nova.virt.<value>).

The driver itself lives in nova_vmbeam.virt.driver; this module only makes
it reachable under the name Nova loads.
"""

from nova_vmbeam.virt import driver

VMBeamDriver = driver.VMBeamDriver

__all__ = ['VMBeamDriver']
