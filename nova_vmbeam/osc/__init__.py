"""The openstack command's VMBeam commands (an OSC plugin).

plugin.py is the plugin module (entry-point group openstack.cli.extension),
client.py what the commands talk to (the vmbeam RPC API, and Nova and
Placement for the checks), v1/ the commands (openstack.vmbeam.v1),
migrate_hook.py the ``server migrate --rejuvenate`` hook
(openstack.cli.server_migrate), defaults.py the defaults both plugin.py
and client.py use. Design: docs/design/cli.md.
"""
