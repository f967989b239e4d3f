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

"""The vmbeam RPC endpoint, and starting and stopping its server.

The endpoint only passes plain primitives between the wire and a manager
(VMBeamDriver's HostRejuvenation); errors it raises travel back as
nova_vmbeam.exception classes, which the client re-raises.
"""

import oslo_messaging as messaging
from oslo_messaging.rpc import dispatcher

from nova_vmbeam import exception
from nova_vmbeam import rpc


# Errors of the caller's making go back to it; the server logs them quietly.
_expected = messaging.expected_exceptions(exception.InvalidInput,
                                          exception.RejuvenationRunning,
                                          exception.InstanceMoveFailed)


class VMBeamEndpoint:
    """RPC methods of a compute host running VMBeamDriver (version 1.0)."""

    target = messaging.Target(version=rpc.VERSION)

    def __init__(self, manager):
        self.manager = manager

    @_expected
    def rejuvenate_host(self, context, concurrency=None, mover=None):
        if concurrency is not None and (
                isinstance(concurrency, bool) or
                not isinstance(concurrency, int) or concurrency < 1):
            raise exception.InvalidInput(
                reason='concurrency must be a whole number, 1 or more, not '
                       '%r' % (concurrency,))
        return self.manager.rejuvenate_host(context, concurrency=concurrency,
                                            mover=mover)

    @_expected
    def rejuvenate_instance(self, context, instance_uuid, mover=None):
        return self.manager.rejuvenate_instance(context, instance_uuid,
                                                mover=mover)

    def status(self, context):
        return self.manager.status(context)


def start(transport, host, manager, serializer=None):
    """Serve ``manager`` on topic "vmbeam", server ``host``; started.

    oslo.messaging picks its threading executor (nova-compute 34 runs on
    native threads). ``serializer`` turns the request context into the
    caller's context class (Nova passes its RequestContextSerializer).
    """
    target = messaging.Target(topic=rpc.TOPIC, server=host)
    server = messaging.get_rpc_server(
        transport, target, [VMBeamEndpoint(manager)], serializer=serializer,
        access_policy=dispatcher.DefaultRPCAccessPolicy)
    server.start()
    return server


def stop(server):
    """Stop taking requests and wait for those under way."""
    server.stop()
    server.wait()
