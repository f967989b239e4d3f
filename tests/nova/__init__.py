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

"""Tests of the Nova driver, with Nova's own test fixtures.

nova.tests.unit must be imported before anything that imports
oslo.messaging or nova.context: its __init__ patches the process for the
concurrency mode (native threads here, OS_NOVA_DISABLE_EVENTLET_PATCHING
is set by tox), which must happen before any such import.
"""

import nova.tests.unit  # noqa: F401
