"""Page movers: plugins in the ``nova_vmbeam.movers`` namespace (loaded by
nova_vmbeam.plugins; the interface is base.MoverBase)."""

from nova_vmbeam import plugins


def available():
    """Names of the installed movers, sorted."""
    return plugins.available(plugins.MOVERS)


def load(name, conf):
    """An instance of mover ``name``; UnknownPlugin lists the choices."""
    return plugins.load(plugins.MOVERS, name, conf)
