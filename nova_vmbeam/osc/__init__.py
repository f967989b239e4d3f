"""The openstack command's VMBeam commands (an OSC plugin).

plugin.py is the plugin module (entry-point group openstack.cli.extension),
client.py what the commands talk to (vmbeam-api, found in the Keystone
catalog), v1/ the commands (openstack.vmbeam.v1), migrate_hook.py the
``server migrate --rejuvenate`` hook (openstack.cli.server_migrate).
Design: docs/design/cli.md.
"""
