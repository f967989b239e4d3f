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

"""The openstack command against VMBeamDriver on real libvirt and RabbitMQ.

The real ``openstack`` executable (python-openstackclient with this
package's plugin and server migrate hook, installed in the tox env) runs
as a subprocess. It finds vmbeam-api in the catalog, served by this test
process (nova_vmbeam.api, its real application), which reaches the
driver's vmbeam RPC server, served by VMBeamDriver.init_host on a private
rabbitmq-server; the driver moves a real TCG guest between real libvirt
daemons.

Keystone, the Nova API and Placement cannot reasonably run here (no
database server, no WSGI deployment, 2 cores shared with other work):
tests.unit.fake_cloud stands in for them over HTTP. What it says about the
compute node's traits comes from the real driver: the traits that
VMBeamDriver.update_provider_tree puts on a real Nova ProviderTree.
"""

import json
import os
import subprocess
import sys
import time

from nova.compute import provider_tree as nova_provider_tree
from oslo_utils import uuidutils
import testtools.content

from nova_vmbeam import rpc
from tests.nova.functional import test_driver
from tests.unit import fake_cloud

HOST = test_driver.HOST
OPENSTACK = os.path.join(os.path.dirname(sys.executable), 'openstack')


class TestOpenStackCommand(test_driver.DriverOnLibvirtTestCase):

    def setUp(self):
        super().setUp()
        if not os.access(OPENSTACK, os.X_OK):
            self.skipTest('%s is missing: python-openstackclient is in '
                          'test-requirements.txt' % OPENSTACK)
        self.cloud = self.useFixture(fake_cloud.FakeCloud())
        node_uuid = self.cloud.add_host(HOST)
        self.cloud.traits[node_uuid] = sorted(self._driver_traits(
            node_uuid))
        self.api_conf = self.cloud.start_api(self.broker.url,
                                             rpc_timeout=120)

    def _driver_traits(self, node_uuid):
        """The traits VMBeamDriver reports for its compute node."""
        tree = nova_provider_tree.ProviderTree()
        nodename = self.driver.get_available_nodes()[0]
        tree.new_root(nodename, node_uuid)
        self.driver.update_provider_tree(tree, nodename)
        return tree.data(nodename).traits

    def openstack(self, *argv, user='admin', rpc_timeout=120):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith('OS_')}
        env.update(self.cloud.env(user))
        self.api_conf.set_override('rpc_timeout', rpc_timeout,
                                   group='vmbeam_api')
        started = time.monotonic()
        done = subprocess.run([OPENSTACK] + list(argv), env=env,
                              capture_output=True, text=True, timeout=600)
        self.addDetail('openstack %s' % ' '.join(argv),
                       testtools.content.text_content(
                           'rc=%d in %.1f s\nstdout:\n%s\nstderr:\n%s' % (
                               done.returncode, time.monotonic() - started,
                               done.stdout, done.stderr)))
        return done.returncode, done.stdout, done.stderr

    def nova_migrations(self):
        return self.cloud.calls('POST', r'/servers/[^/]+/action$')

    def test_migrate_rejuvenate_then_host_rejuvenate_and_show(self):
        self.assertIn(rpc.HOST_TRAIT, self.cloud.traits[
            self.cloud.hypervisors[0]['id']])
        instance, image_meta = self.make_instance()
        console = self.spawn(instance, image_meta)
        self.wait_ready(console)
        self.cloud.add_server(HOST, name='vm1', server_id=instance.uuid)
        self.assertEqual([1], self.generation_of(instance))

        # Without --rejuvenate: python-openstackclient's own migrate, a
        # request to Nova; the guest does not move.
        rc, out, err = self.openstack('server', 'migrate', instance.uuid)
        self.assertEqual(0, rc, err)
        self.assertEqual([{'migrate': None}],
                         [r[3] for r in self.nova_migrations()])
        self.assertEqual([1], self.generation_of(instance))
        del self.cloud.requests[:]

        # Bad requests: clear errors, nothing moves.
        rc, out, err = self.openstack('server', 'migrate', '--rejuvenate',
                                      instance.uuid, user='demo')
        self.assertEqual(1, rc)
        self.assertIn('Policy does not allow vmbeam:server:rejuvenate', err)
        missing = uuidutils.generate_uuid()
        rc, out, err = self.openstack('server', 'migrate', '--rejuvenate',
                                      missing)
        self.assertEqual(1, rc)
        self.assertIn('No server %s' % missing, err)
        self.assertIn('(HTTP 404)', err)
        rc, out, err = self.openstack('hypervisor', 'rejuvenate', HOST,
                                      '--mover', 'warp')
        self.assertEqual(1, rc)
        self.assertIn("Unknown mover 'warp'", err)
        self.assertNotIn('Traceback', err)
        self.assertEqual([1], self.generation_of(instance))

        # --rejuvenate: the guest moves on its host, through the RPC
        # server of the driver; Nova is not asked to migrate.
        mark = console.offset()
        rc, out, err = self.openstack('server', 'migrate', '--rejuvenate',
                                      instance.uuid)
        self.assertEqual(0, rc, err)
        self.assertIn('Server %s moved on host %s to hypervisor generation '
                      '2 with the zerocopy mover' % (instance.uuid, HOST),
                      out)
        self.assertEqual([], self.nova_migrations())
        self.assertEqual([2], self.generation_of(instance))
        self.assertEqual(1, len(self.qemus_of(instance)))
        self.wait_idle()

        # The whole host, waited for: progress, figures, exit status 0.
        rc, out, err = self.openstack('hypervisor', 'rejuvenate', HOST,
                                      '--wait', '-f', 'json')
        self.assertEqual(0, rc, err)
        shown = json.loads(out)
        self.assertEqual('completed', shown['state'])
        self.assertEqual('1/1', shown['moved'])
        guest, = shown['guests']
        self.assertEqual(instance.uuid, guest['uuid'])
        self.assertEqual('moved', guest['state'])
        self.assertGreater(guest['downtime_ms'], 0)
        self.assertLess(guest['transferred_bytes'], 64 << 20)
        self.assertIn('%s: %s moved (1/1 moved)' % (HOST, instance.name),
                      err)
        generation = shown['active_generation']
        self.assertEqual([generation], self.generation_of(instance))
        self.assertEqual(1, len(self.qemus_of(instance)))
        self.assert_intact(console, mark)

        rc, out, err = self.openstack('hypervisor', 'rejuvenation', 'show',
                                      HOST, '-f', 'json')
        self.assertEqual(0, rc, err)
        shown = json.loads(out)
        self.assertEqual(generation, shown['active_generation'])
        self.assertEqual('completed', shown['run_state'])
        self.assertIsNone(shown['running'])
        guest, = shown['run_guests']
        self.assertEqual(('moved', 'zerocopy'),
                         (guest['state'], guest['mover']))
        self.assertGreater(guest['total_ms'], guest['downtime_ms'])

        # A host that is in Nova, with the trait, but not answering.
        self.cloud.add_host('vmbeam-ft-silent', vmbeam=True)
        rc, out, err = self.openstack('hypervisor', 'rejuvenation', 'show',
                                      'vmbeam-ft-silent', rpc_timeout=3)
        self.assertEqual(1, rc)
        self.assertIn('Host vmbeam-ft-silent did not answer', err)
        self.assertIn('nova-compute log', err)
