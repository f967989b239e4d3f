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

"""What every driver unit test needs on top of Nova's fixtures."""

import os
import pwd
import shutil
import tempfile

import fixtures
from nova import conf as nova_conf
from nova import test
from nova.tests.unit import utils as test_utils
from nova.tests.unit.virt import test_virt_drivers as nova_suite
from nova.virt import fake
from oslo_utils import importutils

from nova_vmbeam import conf as vmbeam_conf  # noqa: F401 ([vmbeam])
from nova_vmbeam.privsep import vmbeam_pctxt
from nova_vmbeam.rpc import api as rpc_api

CONF = nova_conf.CONF

DRIVER = 'nova.virt.vmbeam.VMBeamDriver'
PRIMARY = 'qemu:///system'


def use_vmbeam(test, ram_default=True):
    """A real RAM pool on tmpfs, a private state dir, no daemons.

    The hypervisor generations are real libvirt daemons, which cannot run
    under Nova's fake libvirt: the driver is told that the active
    generation is fakelibvirt's qemu:///system. Returns the pool path.
    """
    parent = tempfile.mkdtemp(prefix='vmbeam-ut-pool-', dir='/dev/shm')
    os.chmod(parent, 0o711)
    test.addCleanup(shutil.rmtree, parent, True)
    state = test.useFixture(fixtures.TempDir()).path
    user = pwd.getpwuid(os.getuid()).pw_name
    pool = os.path.join(parent, 'ram')
    os.mkdir(pool, 0o711)
    # Pool files directly: the pagemover daemon is covered by the
    # functional tests, which run it for real.
    test.flags(ram_pool_path=pool, hugepage_pool_path=pool, qemu_user=user,
               state_path=state, ram_default=ram_default,
               ram_pool_backend='file', group='vmbeam')
    test.useFixture(fixtures.MonkeyPatch(
        'nova_vmbeam.virt.driver.VMBeamDriver._start_generations',
        lambda self: (PRIMARY, [])))
    # nova-vmbeam's privsep entrypoints run in the test's process, as
    # Nova's tests run Nova's (they refuse to start a privsep helper).
    vmbeam_pctxt.set_client_mode(False)
    test.addCleanup(vmbeam_pctxt.set_client_mode, True)
    return pool


class DriverTestCase(nova_suite._FakeDriverBackendTestCase, test.TestCase):
    """VMBeamDriver on Nova's fake libvirt, with Nova's DB and RPC fixtures.

    init_host has run; cleanup_host runs at the end.
    """

    REQUIRES_LOCKING = True
    RAM_DEFAULT = True

    def setUp(self):
        super().setUp()
        self.pool = use_vmbeam(self, ram_default=self.RAM_DEFAULT)
        self.stub_out('nova.virt.libvirt.utils.get_disk_size',
                      lambda *a, **k: 123456)
        self.stub_out('nova.virt.libvirt.utils.get_disk_backing_file',
                      lambda *a, **k: None)
        self.stub_out('nova.privsep.path.chown', lambda *a, **k: None)
        self.stub_out('os_vif.unplug', lambda a, kw: None)
        self.flags(instances_path=self.useFixture(fixtures.TempDir()).path)
        self.ctxt = test_utils.get_test_admin_context()
        # The vmbeam RPC API on oslo.messaging's in-process transport, made
        # the way clients make theirs (nova_vmbeam errors come through).
        self.transport = rpc_api.get_transport(CONF, url='fake:/')
        self.addCleanup(self.transport.cleanup)
        self.stub_out('nova.rpc.TRANSPORT', self.transport)
        self.connection = importutils.import_object(DRIVER,
                                                    fake.FakeVirtAPI())
        self.connection.init_host('myhostname')
        self.addCleanup(self.connection.cleanup_host, 'myhostname')

    def make_instance(self, extra_specs=None, system_metadata=None,
                      host=None):
        instance = test_utils.get_test_instance(self.ctxt, obj=True)
        if extra_specs:
            instance.flavor.extra_specs = extra_specs
        if system_metadata:
            instance.system_metadata.update(system_metadata)
        instance.host = host or CONF.host
        instance.save()
        return instance

    def spawn(self, instance):
        network_info = test_utils.get_test_network_info()
        network_info[0]['network']['subnets'][0]['meta']['dhcp_server'] = \
            '1.1.1.1'
        image_meta = test_utils.get_test_image_object(None, instance)
        self.connection.spawn(self.ctxt, instance, image_meta, [], 'herp',
                              {}, network_info=network_info)
        return network_info

    def pool_file(self, instance):
        return os.path.join(self.pool, '%s.ram' % instance.uuid)
