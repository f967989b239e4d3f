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

"""The plugin framework: one loader for every kind of plugin.

nova-vmbeam has four kinds of plugin, each a stevedore entry-point
namespace (setup.cfg) whose plugins derive from one base class:

  ============  =====================  ======================================
  kind          namespace              base class
  ============  =====================  ======================================
  SIBLINGS      nova_vmbeam.siblings   siblings.base.SiblingBase
  MOVERS        nova_vmbeam.movers     movers.base.MoverBase
  POOLS         nova_vmbeam.pools      pool.base.PoolBase
  PROBES        nova_vmbeam.aging      aging.base.ProbeBase
  ============  =====================  ======================================

Every plugin is found here, by kind and name; an unknown name is one error,
exception.UnknownPlugin, which names the kind and lists what is installed.
Each package keeps a short function for its callers (movers.load(),
siblings.kind(), pool.load(), aging.load_all()) that asks this module.
"""

import dataclasses

from oslo_utils import importutils
from stevedore import driver
from stevedore import exception as stevedore_exc
from stevedore import extension

from nova_vmbeam import exception


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of plugin: where it is registered and what it must be."""

    #: stevedore entry-point namespace (setup.cfg)
    namespace: str
    #: what one plugin of the kind is called in messages
    noun: str
    #: the class every plugin of the kind derives from, as a dotted path
    #: (imported when a plugin is loaded: the base modules import much of
    #: the engine, which imports this module)
    base: str
    #: how an operator picks another name
    fix: str


SIBLINGS = Kind(
    namespace='nova_vmbeam.siblings', noun='sibling kind',
    base='nova_vmbeam.siblings.base.SiblingBase',
    fix='Set [vmbeam] sibling_kind to one of them.')
MOVERS = Kind(
    namespace='nova_vmbeam.movers', noun='mover',
    base='nova_vmbeam.movers.base.MoverBase',
    fix='Pick one of them, or install the package that provides it in '
        'the nova_vmbeam.movers entry-point namespace.')
POOLS = Kind(
    namespace='nova_vmbeam.pools', noun='RAM pool backend',
    base='nova_vmbeam.pool.base.PoolBase',
    fix='Fix [vmbeam] ram_pool_backend.')
PROBES = Kind(
    namespace='nova_vmbeam.aging', noun='aging probe',
    base='nova_vmbeam.aging.base.ProbeBase',
    fix='Fix [vmbeam_aging] probes.')


def available(kind):
    """Names of the installed plugins of ``kind``, sorted."""
    return sorted(extension.ExtensionManager(kind.namespace).names())


def _unknown(kind, name):
    return exception.UnknownPlugin(kind=kind.noun, name=name,
                                   available=', '.join(available(kind)),
                                   fix=kind.fix)


def plugin_class(kind, name):
    """The class registered as ``name`` for ``kind``.

    UnknownPlugin if none is; InvalidInput if the class registered is not
    a plugin of that kind (it does not derive from the kind's base class).
    """
    try:
        cls = driver.DriverManager(kind.namespace, name).driver
    except stevedore_exc.NoMatches:
        raise _unknown(kind, name)
    base = importutils.import_class(kind.base)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise exception.InvalidInput(
            reason='%s %r in %s is %r, which does not derive from %s' %
            (kind.noun, name, kind.namespace, cls, kind.base))
    return cls


def load(kind, name, *args, **kwargs):
    """An instance of plugin ``name`` of ``kind``, made with ``args``."""
    return plugin_class(kind, name)(*args, **kwargs)


def load_all(kind, names, *args, **kwargs):
    """Instances of plugins ``names`` of ``kind``, in order.

    An unknown name fails before any is made.
    """
    installed = available(kind)
    for name in names:
        if name not in installed:
            raise _unknown(kind, name)
    return [load(kind, name, *args, **kwargs) for name in names]
