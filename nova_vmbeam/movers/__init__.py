"""Page movers: plugins in the ``nova_vmbeam.movers`` namespace."""

from stevedore import driver
from stevedore import exception as stevedore_exc
from stevedore import extension

from nova_vmbeam import exception

NAMESPACE = 'nova_vmbeam.movers'


def available():
    """Names of the installed movers, sorted."""
    return sorted(extension.ExtensionManager(NAMESPACE).names())


def load(name, conf):
    """An instance of mover ``name``; UnknownMover lists the choices."""
    try:
        manager = driver.DriverManager(NAMESPACE, name, invoke_on_load=True,
                                       invoke_args=(conf,))
    except stevedore_exc.NoMatches:
        raise exception.UnknownMover(name=name,
                                     available=', '.join(available()))
    return manager.driver
