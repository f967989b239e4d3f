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

"""The nested sibling: each hypervisor generation is a VM (L1) on L0.

sibling    the sibling plugin (NestedSibling) and the L0 daemon
mover      the page mover between L1s (NestedMover)
appliance  the L1 image, built from pinned Debian packages
host       the L1's libvirtd as a move target, its guests
agent      commands in an L1 through its qemu-guest-agent
network    the private L0 bridge and the L1s' addresses
"""
