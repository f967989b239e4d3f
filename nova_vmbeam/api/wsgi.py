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

"""Building vmbeam-api's application (nova_vmbeam.wsgi.api serves it).

The configuration files are those of OS_VMBEAM_API_CONFIG_FILES (a
comma-separated list), else /etc/vmbeam/vmbeam-api.conf.
"""

import os
import sys

from oslo_config import cfg
from oslo_log import log as logging

from nova_vmbeam.api import app
from nova_vmbeam.api import cloud
from nova_vmbeam.api import controllers
from nova_vmbeam.api import policy
from nova_vmbeam.conf import api as api_conf
from nova_vmbeam.rpc import api as rpc_api

DEFAULT_CONFIG_FILE = '/etc/vmbeam/vmbeam-api.conf'


def _config_files():
    files = os.environ.get('OS_VMBEAM_API_CONFIG_FILES')
    if files:
        return [f for f in files.split(',') if f]
    return [DEFAULT_CONFIG_FILE]


def init_application(conf=None):
    conf = conf or cfg.CONF
    api_conf.register_opts(conf)
    logging.register_options(conf)
    files = _config_files()
    missing = [f for f in files if not os.access(f, os.R_OK)]
    if missing:
        sys.exit('vmbeam-api: cannot read %s; write it (see '
                 'etc/vmbeam-api.conf.sample) or name the files in '
                 'OS_VMBEAM_API_CONFIG_FILES.' % ', '.join(missing))
    conf(args=[], project='vmbeam', prog='vmbeam-api',
         default_config_files=files)
    logging.setup(conf, 'vmbeam-api')
    return build_application(conf)


def build_application(conf, transport=None, authenticate=True):
    """The application on an already loaded ``conf``.

    ``transport`` is the RPC transport to the compute hosts (by default
    [DEFAULT] transport_url's); ``authenticate=False`` only for tests that
    set keystonemiddleware's headers themselves.
    """
    policy.get_enforcer(conf)
    rpcapi = rpc_api.VMBeamAPI(
        transport or rpc_api.get_transport(conf),
        timeout=conf.vmbeam_api.rpc_timeout,
        monitor_timeout=conf.vmbeam_api.heartbeat_timeout,
        version_cap=conf.upgrade_levels.vmbeam)
    v1 = controllers.V1(cloud.Cloud(conf), rpcapi, conf.vmbeam_api)
    return app.build(conf, v1, authenticate=authenticate)
