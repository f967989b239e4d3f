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

"""Nova's generic virt-driver suite, run against VMBeamDriver.

Every guest gets VMBeam-ready RAM here ([vmbeam] ram_default), so spawn,
reboot, rescue, snapshot, attach, migration and the rest all run through
the XML hook and the RAM pool. The suite wraps each test in
catch_notimplementederror: a passing test does not prove a method works
end to end; the functional tests do that on a real libvirt.
"""

import os

from nova.tests.unit.virt import test_virt_drivers as nova_suite

from tests.nova.unit import base


class VMBeamConnTestCase(nova_suite.LibvirtConnTestCase):

    # LibvirtConnTestCase.setUp assigns driver_module before calling its
    # base; a data descriptor keeps it pointing at VMBeamDriver.
    driver_module = property(lambda self: base.DRIVER,
                             lambda self, value: None)

    def setUp(self):
        self.pool = None
        super().setUp()
        # init_host serves the vmbeam RPC API: stop it at the end, as
        # nova-compute's cleanup_host does.
        self.addCleanup(self.connection.cleanup_host, 'myhostname')

    def _setup_fakelibvirt(self):
        super()._setup_fakelibvirt()
        self.pool = base.use_vmbeam(self)

    def test_driver_is_vmbeam_with_pool_ram(self):
        self.assertEqual('VMBeamDriver', type(self.connection).__name__)
        instance, _network_info = self._get_running_instance()
        self.assertTrue(self.connection.instance_exists(instance))
        self.assertTrue(os.path.exists(os.path.join(
            self.pool, '%s.ram' % instance.uuid)))
