"""Sibling hypervisors: plugins in the ``nova_vmbeam.siblings`` namespace."""

from stevedore import driver
from stevedore import exception as stevedore_exc
from stevedore import extension

from nova_vmbeam import exception

NAMESPACE = 'nova_vmbeam.siblings'


def available():
    return sorted(extension.ExtensionManager(NAMESPACE).names())


def kind(name):
    """The sibling class registered as ``name``."""
    try:
        return driver.DriverManager(NAMESPACE, name).driver
    except stevedore_exc.NoMatches:
        raise exception.InvalidInput(
            reason='unknown sibling kind %r; available: %s. Set '
                   '[vmbeam] sibling_kind to one of them.' %
                   (name, ', '.join(available())))
