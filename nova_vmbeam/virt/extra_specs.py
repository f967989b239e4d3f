"""Validator of the vmbeam:* flavor extra specs, for nova-api.

Registered in the nova.api.extra_spec_validators entry point namespace:
with nova-vmbeam installed on the API hosts, "openstack flavor set
--property vmbeam:ram=maybe" is refused there instead of at spawn.
"""

from nova.api.validation.extra_specs import base

from nova_vmbeam.virt import ram

EXTRA_SPEC_VALIDATORS = [
    base.ExtraSpecValidator(
        name=ram.EXTRA_SPEC,
        description=(
            'Whether instances of this flavor keep their RAM in a VMBeam '
            'RAM pool file, so that a hypervisor rejuvenation moves them '
            'by sharing their RAM instead of copying it. Overrides the '
            'image property vmbeam_ram and [vmbeam] ram_default.'),
        value={'type': bool,
               'description': 'Whether to use VMBeam-ready RAM.'},
    ),
]


def register():
    return EXTRA_SPEC_VALIDATORS
