"""Hypervisor VMs (L1) for the nested sibling: the L0 side of them."""
