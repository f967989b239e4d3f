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

"""The resources of vmbeam-api v1 (docs/api-ref.md).

Each handler authorizes first, then checks its input, then asks Nova or a
compute host; a refusal at any step changes nothing.
"""

import oslo_messaging as messaging

from nova_vmbeam.api import errors
from nova_vmbeam.api import policies
from nova_vmbeam.api import policy
from nova_vmbeam import exception

VERSION = '1.0'
#: The fields a rejuvenation request may carry, and their checks.
_MOVER_FIELD = ('mover', 'the name of a mover, e.g. "zerocopy"')
_CONCURRENCY_FIELD = ('concurrency', 'a whole number, 1 or more')


def version_document(url):
    return {'id': 'v' + VERSION, 'status': 'CURRENT',
            'min_version': VERSION, 'max_version': VERSION,
            'links': [{'rel': 'self', 'href': url.rstrip('/') + '/v1/'}]}


def _body(req, allowed):
    """The request's JSON object, with only ``allowed`` fields."""
    if not req.body:
        return {}
    if req.content_type != 'application/json':
        raise errors.UnsupportedMediaType()
    try:
        body = req.json_body
    except ValueError as exc:
        raise errors.BadRequest(reason='The body is not valid JSON (%s).' %
                                exc)
    if not isinstance(body, dict):
        raise errors.BadRequest(reason='The body must be a JSON object, '
                                       'e.g. {"mover": "zerocopy"}.')
    names = dict(allowed)
    unknown = sorted(set(body) - set(names))
    if unknown:
        raise errors.BadRequest(
            reason='Unknown field(s) %s. Allowed: %s.' % (
                ', '.join(unknown),
                '; '.join('%s (%s)' % item for item in allowed)))
    mover = body.get('mover')
    if mover is not None and (not isinstance(mover, str) or not mover):
        raise errors.BadRequest(reason='mover must be %s, not %r.' % (
            _MOVER_FIELD[1], mover))
    concurrency = body.get('concurrency')
    if concurrency is not None and (
            isinstance(concurrency, bool) or
            not isinstance(concurrency, int) or concurrency < 1):
        raise errors.BadRequest(reason='concurrency must be %s, not %r.' % (
            _CONCURRENCY_FIELD[1], concurrency))
    return body


class V1:
    """The handlers.

    ``cloud`` is api.cloud.Cloud, ``rpcapi`` the vmbeam RPC client,
    ``timeouts`` the [vmbeam_api] group.
    """

    def __init__(self, cloud, rpcapi, timeouts):
        self.cloud = cloud
        self.rpcapi = rpcapi
        self.timeouts = timeouts

    def _host_call(self, context, host, method, **kwargs):
        """An RPC call to ``host``; its errors as HTTP errors."""
        try:
            return getattr(self.rpcapi, method)(context, host, **kwargs)
        except exception.RejuvenationRunning as exc:
            raise errors.Conflict(
                reason='%s: %s Follow it with GET /v1/hosts/%s/'
                       'rejuvenations ("openstack hypervisor rejuvenation '
                       'show %s").' % (host, _message(exc), host, host))
        except (exception.InstanceNotRunning, exception.HostNotReady) as exc:
            raise errors.Conflict(reason='%s: %s' % (host, _message(exc)))
        except exception.InvalidInput as exc:
            raise errors.BadRequest(reason='%s: %s' % (host, _message(exc)))
        except exception.VMBeamError as exc:
            raise errors.Conflict(reason='%s: %s' % (host, _message(exc)))
        except messaging.MessagingTimeout:
            raise errors.GatewayTimeout(
                reason='Host %s did not answer in time. Check "openstack '
                       'compute service list --host %s" and its '
                       'nova-compute log; a rejuvenation may still have '
                       'started: GET /v1/hosts/%s/rejuvenations.' % (
                           host, host, host))
        except messaging.MessagingException as exc:
            raise errors.ServiceUnavailable(
                reason='The message bus failed for host %s (%s): check '
                       'vmbeam-api\'s [DEFAULT] transport_url and that the '
                       'bus runs.' % (host, exc))

    def show_host(self, req, context, host):
        policy.authorize(context, policies.HOST_SHOW)
        self.cloud.check_vmbeam_host(host)
        return 200, {'host': self._host_call(context, host, 'status')}

    def _runs(self, context, host):
        status = self._host_call(context, host, 'status')
        runs = list(status.get('history') or [])
        current = status.get('run')
        if current and all(run.get('id') != current.get('id')
                           for run in runs):
            runs.append(current)
        return runs

    def list_runs(self, req, context, host):
        policy.authorize(context, policies.RUN_LIST)
        self.cloud.check_vmbeam_host(host)
        return 200, {'rejuvenations': self._runs(context, host)}

    def show_run(self, req, context, host, run_id):
        policy.authorize(context, policies.RUN_SHOW)
        self.cloud.check_vmbeam_host(host)
        for run in self._runs(context, host):
            if run.get('id') == run_id:
                return 200, {'rejuvenation': run}
        raise errors.NotFound(
            reason='Host %s has no rejuvenation %s. List them with GET '
                   '/v1/hosts/%s/rejuvenations.' % (host, run_id, host))

    def rejuvenate_host(self, req, context, host):
        policy.authorize(context, policies.HOST_REJUVENATE)
        body = _body(req, [_MOVER_FIELD, _CONCURRENCY_FIELD])
        self.cloud.check_vmbeam_host(host)
        started = self._host_call(context, host, 'rejuvenate_host',
                                  mover=body.get('mover'),
                                  concurrency=body.get('concurrency'))
        location = '%s/v1/hosts/%s/rejuvenations/%s' % (
            req.application_url, host, started['run_id'])
        return 202, {'rejuvenation': dict(started, host=host)}, location

    def rejuvenate_server(self, req, context, server_id):
        policy.authorize(context, policies.SERVER_REJUVENATE)
        body = _body(req, [_MOVER_FIELD])
        status, host = self.cloud.server(server_id)
        if status != 'ACTIVE' or not host:
            raise errors.Conflict(
                reason='Server %s is %s: only an ACTIVE server can be '
                       'rejuvenated. Start it or wait for it first.' % (
                           server_id, status))
        self.cloud.check_vmbeam_host(host)
        moved = self._host_call(
            context, host, 'rejuvenate_instance', instance_uuid=server_id,
            mover=body.get('mover'), timeout=self.timeouts.move_timeout)
        return 200, {'rejuvenation': dict(moved, host=host)}


def _message(exc):
    """A remote error's own message, without the host's traceback."""
    if exc.args and isinstance(exc.args[0], str):
        return exc.args[0].split('\n', 1)[0]
    return str(exc).split('\n', 1)[0]
