"""Tests of the Nova driver, with Nova's own test fixtures.

nova.tests.unit must be imported before anything that imports
oslo.messaging or nova.context: its __init__ patches the process for the
concurrency mode (native threads here, OS_NOVA_DISABLE_EVENTLET_PATCHING
is set by tox), which must happen before any such import.
"""

import nova.tests.unit  # noqa: F401
