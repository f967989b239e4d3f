"""The L1 appliance: the hypervisor VM image of the nested sibling."""

from nova_vmbeam.nested.appliance.builder import Appliance  # noqa: F401
from nova_vmbeam.nested.appliance.builder import ApplianceError  # noqa: F401
from nova_vmbeam.nested.appliance.builder import build  # noqa: F401
from nova_vmbeam.nested.appliance.builder import write_lock  # noqa: F401
