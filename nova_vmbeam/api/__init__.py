"""vmbeam-api: the operator API of nova-vmbeam (docs/api-ref.md).

A small WSGI service behind keystonemiddleware's auth_token. It authorizes
each request with oslo.policy (policies.py), finds servers and hosts
through Nova and Placement with its own service credentials (cloud.py),
and reaches the compute hosts over the vmbeam RPC API (nova_vmbeam.rpc),
so that no operator workstation needs the message bus.

    wsgi.py      what gunicorn/uwsgi load: init_application()
    app.py       the middleware pipeline and the URL map
    controllers  versions, hosts and their runs, servers
    errors.py    HTTP errors as JSON, each naming its fix
"""
