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
