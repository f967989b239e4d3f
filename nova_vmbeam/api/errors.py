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

"""HTTP errors of vmbeam-api: a status and a message that names the fix.

The body is JSON, {"error": {"code": 409, "title": "Conflict",
"message": "..."}}, the shape the other OpenStack APIs use.
"""

import json

import webob


class APIError(Exception):
    """An error answered as ``code`` with ``message``."""

    code = 500
    title = 'Internal Server Error'
    msg_fmt = 'vmbeam-api failed; see its log.'

    def __init__(self, message=None, **kwargs):
        if message is None:
            message = self.msg_fmt % kwargs
        super().__init__(message)
        self.message = message

    def response(self):
        body = {'error': {'code': self.code, 'title': self.title,
                          'message': self.message}}
        return webob.Response(
            status=self.code, content_type='application/json',
            charset='utf-8', body=json.dumps(body).encode('utf-8'))


class BadRequest(APIError):
    code = 400
    title = 'Bad Request'
    msg_fmt = '%(reason)s'


class Forbidden(APIError):
    code = 403
    title = 'Forbidden'
    msg_fmt = ('Policy does not allow %(action)s. It is an admin\'s action '
               'by default; an operator can grant it to another role in '
               'vmbeam-api\'s policy file ([oslo_policy] policy_file).')


class NotFound(APIError):
    code = 404
    title = 'Not Found'
    msg_fmt = '%(reason)s'


class MethodNotAllowed(APIError):
    code = 405
    title = 'Method Not Allowed'
    msg_fmt = '%(method)s is not allowed on %(path)s; allowed: %(allowed)s.'


class Conflict(APIError):
    code = 409
    title = 'Conflict'
    msg_fmt = '%(reason)s'


class UnsupportedMediaType(APIError):
    code = 415
    title = 'Unsupported Media Type'
    msg_fmt = ('The request body must be JSON: send it with '
               'Content-Type: application/json.')


class BadGateway(APIError):
    code = 502
    title = 'Bad Gateway'
    msg_fmt = '%(reason)s'


class ServiceUnavailable(APIError):
    code = 503
    title = 'Service Unavailable'
    msg_fmt = '%(reason)s'


class GatewayTimeout(APIError):
    code = 504
    title = 'Gateway Timeout'
    msg_fmt = '%(reason)s'
