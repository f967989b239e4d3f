"""nova-vmbeam's development tools: demo, bench, testbed, test guest image.

Nothing of the runtime (nova_vmbeam) imports this package; the `vmbeam`
command finds its commands through entry points (vmbeam_devtools.cli).
"""
