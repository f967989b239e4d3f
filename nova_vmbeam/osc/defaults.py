"""Defaults of the VMBeam commands, shared by the plugin module (which
shows them in its options' help) and the client (which applies them).

A module of their own so that neither of the two imports the other: the
plugin module is imported by every openstack command and imports the
client only when a VMBeam command runs.
"""

#: nova.conf read for the message bus settings when none is given
CONFIG_FILE = '/etc/nova/nova.conf'
#: seconds a host may take to answer before it counts as not answering
RPC_TIMEOUT = 60
