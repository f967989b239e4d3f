"""nova-vmbeam: in-place hypervisor rejuvenation by zero-copy guest moves."""
