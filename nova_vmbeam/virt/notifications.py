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

"""Versioned notifications vmbeam.rejuvenate.start / .end / .error.

Nova's own notification classes take only Nova's closed set of event
types, so the payload is an oslo.versionedobjects object of its own (in
the nova_vmbeam namespace, serialised with Nova's "nova_object." keys) and
goes out through Nova's versioned notifier: same transport, topics and
switches ([notifications] notification_format) as Nova's notifications.
"""

from nova import rpc
from oslo_log import log as logging
from oslo_versionedobjects import base
from oslo_versionedobjects import fields

LOG = logging.getLogger(__name__)

START = 'vmbeam.rejuvenate.start'
END = 'vmbeam.rejuvenate.end'
ERROR = 'vmbeam.rejuvenate.error'


class _Payload(base.VersionedObject):
    OBJ_SERIAL_NAMESPACE = 'nova_object'
    OBJ_PROJECT_NAMESPACE = 'nova_vmbeam'


@base.VersionedObjectRegistry.register
class GuestMovePayload(_Payload):
    """One guest of a run: where it is and what its move cost."""

    VERSION = '1.0'
    fields = {
        'instance_uuid': fields.UUIDField(nullable=True),
        'name': fields.StringField(),
        'state': fields.StringField(),
        'mover': fields.StringField(nullable=True),
        'total_ms': fields.FloatField(nullable=True),
        'downtime_ms': fields.FloatField(nullable=True),
        'prepare_ms': fields.FloatField(nullable=True),
        'retire_ms': fields.FloatField(nullable=True),
        'transferred_bytes': fields.IntegerField(nullable=True),
        'cpu_s': fields.FloatField(nullable=True),
        'error': fields.StringField(nullable=True),
    }

    @classmethod
    def from_entry(cls, name, entry):
        """From a run's records.GuestEntry."""
        result = entry.result
        return cls(instance_uuid=entry.uuid, name=name,
                   state=entry.state or 'pending',
                   mover=result.mover if result else entry.mover,
                   total_ms=result and result.total_ms,
                   downtime_ms=result and result.downtime_ms,
                   prepare_ms=result and result.prepare_ms,
                   retire_ms=result and result.retire_ms,
                   transferred_bytes=result and result.transferred_bytes,
                   cpu_s=result and result.cpu_s,
                   error=entry.error)


@base.VersionedObjectRegistry.register
class RejuvenationPayload(_Payload):
    """A rejuvenation run on one host."""

    VERSION = '1.0'
    fields = {
        'host': fields.StringField(),
        'run_id': fields.StringField(nullable=True),
        'state': fields.StringField(),
        'from_generation': fields.IntegerField(nullable=True),
        'to_generation': fields.IntegerField(nullable=True),
        'mover': fields.StringField(nullable=True),
        'guests': fields.ListOfObjectsField('GuestMovePayload'),
        'error': fields.StringField(nullable=True),
    }

    @classmethod
    def from_run(cls, host, run, state=None, error=None, only=None):
        """From a records.Run (or None); ``only``: these guest names."""
        guests = [GuestMovePayload.from_entry(name, entry)
                  for name, entry in sorted(run.guests.items())
                  if only is None or name in only] if run else []
        return cls(host=host, run_id=run.id if run else None,
                   state=state or (run.state if run else 'unknown'),
                   from_generation=run.source if run else None,
                   to_generation=run.target if run else None,
                   mover=run.mover if run else None,
                   guests=guests, error=error)


@rpc.if_notifications_enabled
def _send(context, host, event_type, payload, error):
    notifier = rpc.get_versioned_notifier('nova-compute:%s' % host)
    send = notifier.error if error else notifier.info
    send(context, event_type, payload.obj_to_primitive())


def notify(context, host, event_type, run, state=None, error=None,
           only=None):
    """Announce ``run`` (a records.Run); ``only``: these guests.

    A broken notifier or payload never breaks a run: it is logged.
    """
    try:
        payload = RejuvenationPayload.from_run(host, run, state=state,
                                               error=error, only=only)
        _send(context, host, event_type, payload, event_type == ERROR)
    except Exception:
        LOG.exception('sending %s failed', event_type)
