"""The aging monitor: probes (plugins in ``nova_vmbeam.aging``), trend
tests, the rejuvenation policy and the periodic loop."""

from stevedore import driver
from stevedore import exception as stevedore_exc
from stevedore import extension

from nova_vmbeam.aging import base

NAMESPACE = 'nova_vmbeam.aging'


def available():
    """Names of the installed probes, sorted."""
    return sorted(extension.ExtensionManager(NAMESPACE).names())


def load(name, conf):
    """An instance of probe ``name``; UnknownProbe lists the choices."""
    try:
        return driver.DriverManager(NAMESPACE, name, invoke_on_load=True,
                                    invoke_args=(conf,)).driver
    except stevedore_exc.NoMatches:
        raise base.UnknownProbe(name=name,
                                available=', '.join(available()))


def load_all(names, conf):
    """Probes ``names`` in order; an unknown name fails before any loads."""
    unknown = [n for n in names if n not in available()]
    if unknown:
        raise base.UnknownProbe(name=unknown[0],
                                available=', '.join(available()))
    return [load(name, conf) for name in names]
