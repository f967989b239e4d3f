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

"""The WSGI application of vmbeam-api: middleware and the URL map.

    request_id -> auth_token (keystonemiddleware) -> Router -> V1 handler

The version document at / is answered without a token, as every
OpenStack API does, so that clients can discover the versions.
"""

import json

from keystonemiddleware import auth_token
from oslo_context import context as oslo_context
from oslo_log import log as logging
from oslo_middleware import request_id
import routes
import webob
import webob.dec

from nova_vmbeam.api import controllers
from nova_vmbeam.api import errors

LOG = logging.getLogger(__name__)

#: (method, path, handler name)
_ROUTES = [
    ('GET', '/v1/hosts/{host}', 'show_host'),
    ('GET', '/v1/hosts/{host}/rejuvenations', 'list_runs'),
    ('POST', '/v1/hosts/{host}/rejuvenations', 'rejuvenate_host'),
    ('GET', '/v1/hosts/{host}/rejuvenations/{run_id}', 'show_run'),
    ('POST', '/v1/servers/{server_id}/rejuvenation', 'rejuvenate_server'),
]


def _json(status, body, location=None):
    response = webob.Response(status=status, content_type='application/json',
                              charset='utf-8',
                              body=json.dumps(body).encode('utf-8'))
    if location:
        response.location = location
    return response


class Versions:
    """GET / and GET /v1/: the version documents, no token needed."""

    @webob.dec.wsgify
    def __call__(self, req):
        if req.method != 'GET':
            return errors.MethodNotAllowed(
                method=req.method, path=req.path, allowed='GET').response()
        doc = controllers.version_document(req.application_url)
        if req.path_info.strip('/') == 'v1':
            return _json(200, {'version': doc})
        return _json(300 if req.path_info.strip('/') else 200,
                     {'versions': [doc]})


class Router:
    """Dispatches /v1/ requests to the handlers of ``v1``."""

    def __init__(self, v1):
        self.v1 = v1
        self.mapper = routes.Mapper()
        for method, path, action in _ROUTES:
            self.mapper.connect(path, action=action,
                                conditions={'method': [method]})
        # Per path, the methods it takes: a known path with another
        # method is a 405 that names them, not a 404.
        self._methods = []
        for path in dict.fromkeys(path for _m, path, _a in _ROUTES):
            probe = routes.Mapper()
            probe.connect(path)
            self._methods.append((probe, [m for m, p, _a in _ROUTES
                                          if p == path]))

    @webob.dec.wsgify
    def __call__(self, req):
        try:
            return self._dispatch(req)
        except errors.APIError as exc:
            LOG.info('%s %s: %d %s', req.method, req.path, exc.code,
                     exc.message)
            return exc.response()
        except Exception:
            LOG.exception('%s %s failed', req.method, req.path)
            return errors.APIError().response()

    def _dispatch(self, req):
        match = self.mapper.match(environ=req.environ)
        if match is None:
            return self._unmatched(req)
        context = oslo_context.RequestContext.from_environ(req.environ)
        action = match.pop('action')
        match.pop('controller', None)
        result = getattr(self.v1, action)(req, context, **match)
        return _json(*result)

    def _unmatched(self, req):
        for probe, methods in self._methods:
            if probe.match(req.path_info) is not None:
                raise errors.MethodNotAllowed(
                    method=req.method, path=req.path,
                    allowed=', '.join(methods))
        raise errors.NotFound(
            reason='No resource %s in vmbeam-api v1. See GET / and '
                   'docs/api-ref.md.' % req.path)


class Dispatch:
    """/ and /v1/ go to Versions; everything else needs a token."""

    def __init__(self, versions, authenticated):
        self.versions = versions
        self.authenticated = authenticated

    def __call__(self, environ, start_response):
        path = environ.get('PATH_INFO', '/').strip('/')
        if path in ('', 'v1'):
            return self.versions(environ, start_response)
        return self.authenticated(environ, start_response)


def build(conf, v1, authenticate=True):
    """The application.

    ``authenticate=False`` only for unit tests, which set
    keystonemiddleware's headers themselves.
    """
    router = Router(v1)
    inner = router
    if authenticate:
        inner = auth_token.AuthProtocol(router, {'oslo_config_config': conf})
    return request_id.RequestId(Dispatch(Versions(), inner))
