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

"""The aging monitor: probes (plugins in ``nova_vmbeam.aging``, loaded by
nova_vmbeam.plugins; the interface is base.ProbeBase), trend tests, the
rejuvenation policy and the periodic loop."""

from nova_vmbeam import plugins


def available():
    """Names of the installed probes, sorted."""
    return plugins.available(plugins.PROBES)


def load(name, conf):
    """An instance of probe ``name``; UnknownPlugin lists the choices."""
    return plugins.load(plugins.PROBES, name, conf)


def load_all(names, conf):
    """Probes ``names`` in order; an unknown name fails before any loads."""
    return plugins.load_all(plugins.PROBES, names, conf)
