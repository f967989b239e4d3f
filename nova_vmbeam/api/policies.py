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

"""The API's policy rules, in code (oslo.policy).

Every action is an admin's by default and no one else's. An operator
grants it to another role in a policy file ([oslo_policy] policy_file),
which vmbeam-api reads again when it changes; the compute hosts are not
involved. `oslopolicy-sample-generator --namespace nova_vmbeam` writes
the sample (etc/vmbeam-api-policy.yaml.sample).
"""

from oslo_policy import policy

ADMIN = 'role:admin'

RULE_ADMIN_API = 'rule:vmbeam_admin_api'

HOST_SHOW = 'vmbeam:host:show'
HOST_REJUVENATE = 'vmbeam:host:rejuvenate'
RUN_LIST = 'vmbeam:rejuvenation:list'
RUN_SHOW = 'vmbeam:rejuvenation:show'
SERVER_REJUVENATE = 'vmbeam:server:rejuvenate'

_base = [
    policy.RuleDefault(
        name='vmbeam_admin_api', check_str=ADMIN,
        description='The default of every vmbeam-api action: a user with '
                    'the admin role.'),
]


def _rule(name, description, method, path):
    return policy.DocumentedRuleDefault(
        name=name, check_str=RULE_ADMIN_API, description=description,
        operations=[{'method': method, 'path': path}],
        scope_types=['project'])


_rules = [
    _rule(HOST_SHOW, 'Show a compute host\'s hypervisor generations, '
          'aging monitor and last rejuvenation.', 'GET', '/v1/hosts/{host}'),
    _rule(HOST_REJUVENATE, 'Start rejuvenating a compute host: every '
          'guest moves to a fresh hypervisor generation.', 'POST',
          '/v1/hosts/{host}/rejuvenations'),
    _rule(RUN_LIST, 'List a compute host\'s rejuvenations.', 'GET',
          '/v1/hosts/{host}/rejuvenations'),
    _rule(RUN_SHOW, 'Show one rejuvenation of a compute host, with each '
          'guest\'s progress and figures.', 'GET',
          '/v1/hosts/{host}/rejuvenations/{run_id}'),
    _rule(SERVER_REJUVENATE, 'Move one server to its host\'s next '
          'hypervisor generation.', 'POST',
          '/v1/servers/{server_id}/rejuvenation'),
]


def list_rules():
    """Entry point oslo.policy.policies (the sample generator's)."""
    return _base + _rules
