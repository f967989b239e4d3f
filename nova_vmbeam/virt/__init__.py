"""VMBeamDriver: Nova's libvirt driver on rejuvenable hypervisor generations.

Laid out like nova.virt.libvirt: driver.py (the compute driver), host.py
(the generation-aware connection), config.py (the guest XML hook), ram.py
(which instances get VMBeam-ready RAM, and where), rejuvenation.py (runs
started over RPC, fenced from Nova's own operations), notifications.py.
"""
