"""Guests under libvirt: connection (host), domain (guest), XML (config).

Split the way Nova's libvirt driver splits it: host.py owns a connection
and its event loop, guest.py wraps one domain, config.py writes domain XML.
"""
