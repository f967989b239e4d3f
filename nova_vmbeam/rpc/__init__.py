"""The vmbeam RPC API of a compute host (topic "vmbeam", server = host).

api.py is the client, server.py the endpoint that VMBeamDriver serves from
nova-compute. The contract is in docs/design/rpc.md.
"""

TOPIC = 'vmbeam'
VERSION = '1.0'
