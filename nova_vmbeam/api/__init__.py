# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

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
