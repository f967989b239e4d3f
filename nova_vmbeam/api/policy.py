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

"""Policy enforcement of vmbeam-api (the rules are in policies.py)."""

from oslo_policy import policy

from nova_vmbeam.api import errors
from nova_vmbeam.api import policies

_ENFORCER = None


def get_enforcer(conf=None):
    """The enforcer.

    Also oslo.policy.enforcer's entry point, so that oslopolicy-checker
    and oslopolicy-policy-generator see the defaults.
    """
    global _ENFORCER
    if _ENFORCER is None:
        from nova_vmbeam.conf import CONF
        _ENFORCER = policy.Enforcer(conf or CONF)
        _ENFORCER.register_defaults(policies.list_rules())
    return _ENFORCER


def reset():
    global _ENFORCER
    _ENFORCER = None


def authorize(context, action, target=None):
    """Raise errors.Forbidden unless the caller may do ``action``.

    The enforcer loads the policy file again when it changed on disk, so a
    new grant takes effect with the next request.
    """
    enforcer = get_enforcer()
    target = target or {'project_id': context.project_id}
    try:
        enforcer.authorize(action, target, context.to_policy_values(),
                           do_raise=True, exc=errors.Forbidden,
                           action=action)
    except policy.InvalidScope:
        raise errors.Forbidden(action=action)
