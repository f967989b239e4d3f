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

"""Sibling hypervisors: plugins in the ``nova_vmbeam.siblings`` namespace
(loaded by nova_vmbeam.plugins; the interface is base.SiblingBase)."""

from nova_vmbeam import plugins


def available():
    """Names of the installed sibling kinds, sorted."""
    return plugins.available(plugins.SIBLINGS)


def kind(name):
    """The sibling class registered as ``name``; UnknownPlugin if none."""
    return plugins.plugin_class(plugins.SIBLINGS, name)


def default_mover(conf):
    """The mover of a request that names none.

    [vmbeam] default_mover, else the one [vmbeam] sibling_kind's
    generations are made for (zerocopy between colocated daemons, nested
    between L1 VMs).
    """
    return conf.vmbeam.default_mover or kind(
        conf.vmbeam.sibling_kind).default_mover
