"""Sibling hypervisors: plugins in the ``nova_vmbeam.siblings`` namespace
(loaded by nova_vmbeam.plugins; the interface is base.SiblingBase)."""

from nova_vmbeam import plugins


def available():
    """Names of the installed sibling kinds, sorted."""
    return plugins.available(plugins.SIBLINGS)


def kind(name):
    """The sibling class registered as ``name``; UnknownPlugin if none."""
    return plugins.plugin_class(plugins.SIBLINGS, name)
