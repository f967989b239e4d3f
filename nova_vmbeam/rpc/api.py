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

"""Client of the vmbeam RPC API (see docs/design/rpc.md).

    api = VMBeamAPI()                        # transport from [DEFAULT]
    api.rejuvenate_host(ctxt, 'compute-1')   # {'run_id', 'state', ...}

Errors raised on the compute host (bad input, a run already going) are
re-raised here as their nova_vmbeam.exception classes.
"""

from oslo_config import cfg
import oslo_messaging as messaging

from nova_vmbeam import rpc

#: modules whose exceptions the client re-raises as themselves
ALLOWED_EXMODS = ['nova_vmbeam.exception']

#: seconds a synchronous call may take; a single move starts the next
#: generation's daemon first when no run is open
DEFAULT_TIMEOUT = 300


def get_transport(conf=None, url=None):
    """An RPC transport that lets nova_vmbeam's errors through."""
    return messaging.get_rpc_transport(conf or cfg.CONF, url=url,
                                       allowed_remote_exmods=ALLOWED_EXMODS)


class _ContextSerializer(messaging.NoOpSerializer):
    """Request contexts travel as dicts (oslo.context's to_dict)."""

    def serialize_context(self, context):
        if context is None:
            return {}
        if not hasattr(context, 'to_dict'):
            return dict(context)
        values = context.to_dict()
        # oslo.context's to_dict names the user "user" and leaves the names
        # out; Nova's RequestContext.from_dict reads "user_id" (and would
        # take None over "user"), so the instance action's and the
        # notifications' record of who asked needs these keys.
        for key in ('user_id', 'project_id', 'user_name', 'project_name'):
            values.setdefault(key, getattr(context, key, None))
        return values

    def deserialize_context(self, context):
        return context


class VMBeamAPI:
    """Calls to the vmbeam endpoint of one compute host at a time.

    Pass ``transport`` to reuse one (made with get_transport(), or with
    ALLOWED_EXMODS among its allowed_remote_exmods, so that errors arrive
    as themselves); by default one is made from cfg.CONF.
    """

    def __init__(self, transport=None, timeout=DEFAULT_TIMEOUT,
                 monitor_timeout=None, version_cap=None):
        self.transport = transport or get_transport()
        target = messaging.Target(topic=rpc.TOPIC, version=rpc.VERSION)
        #: the highest version sent; during a rolling upgrade, the oldest
        #: compute host's ([upgrade_levels] vmbeam of vmbeam-api)
        self.version_cap = version_cap
        self.client = messaging.get_rpc_client(
            self.transport, target, serializer=_ContextSerializer(),
            version_cap=version_cap)
        self.timeout = timeout
        #: with a long ``timeout``, give up once the host has sent no
        #: heartbeat for this many seconds (oslo.messaging's
        #: call_monitor_timeout), rather than wait the whole timeout
        self.monitor_timeout = monitor_timeout

    def can_send_version(self, version):
        """Whether the version cap allows sending ``version``."""
        return self.client.can_send_version(version)

    def _call(self, context, host, method, version='1.0', timeout=None,
              **kwargs):
        cctxt = self.client.prepare(server=host, version=version,
                                    timeout=timeout or self.timeout,
                                    call_monitor_timeout=self.monitor_timeout)
        return cctxt.call(context, method, **kwargs)

    def rejuvenate_host(self, context, host, concurrency=None, mover=None):
        """Start rejuvenating ``host``; returns at once.

        {'run_id': str, 'state': 'running', 'generation': int}. Raises
        RejuvenationRunning if a rejuvenation runs there already, and
        InvalidInput (or a subclass) for a bad mover, concurrency, or a
        guest the mover cannot move.
        """
        return self._call(context, host, 'rejuvenate_host',
                          concurrency=concurrency, mover=mover)

    def rejuvenate_instance(self, context, host, instance_uuid, mover=None,
                            timeout=None):
        """Move one instance to the next generation; waits for it.

        Returns its figures: instance_uuid, name, state ('moved'), mover,
        total_ms, downtime_ms, prepare_ms, retire_ms, transferred_bytes,
        cpu_s, run_id, generation.
        """
        return self._call(context, host, 'rejuvenate_instance',
                          timeout=timeout, instance_uuid=instance_uuid,
                          mover=mover)

    def status(self, context, host):
        """Generations (with their health), the current or last run."""
        return self._call(context, host, 'status')
