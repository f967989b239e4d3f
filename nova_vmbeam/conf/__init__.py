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

"""Configuration of nova-vmbeam: [vmbeam], [vmbeam_aging], [vmbeam_nested]."""

from oslo_config import cfg

from nova_vmbeam.conf import aging
from nova_vmbeam.conf import driver
from nova_vmbeam.conf import nested
from nova_vmbeam.conf import vmbeam

CONF = cfg.CONF

vmbeam.register_opts(CONF)
aging.register_opts(CONF)
driver.register_opts(CONF)
nested.register_opts(CONF)
