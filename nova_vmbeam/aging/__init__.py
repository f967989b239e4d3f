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
