"""The nested sibling: each hypervisor generation is a VM (L1) on L0.

sibling    the sibling plugin (NestedSibling) and the L0 daemon
mover      the page mover between L1s (NestedMover)
appliance  the L1 image, built from pinned Debian packages
host       the L1's libvirtd as a move target, its guests
agent      commands in an L1 through its qemu-guest-agent
network    the private L0 bridge and the L1s' addresses
"""
