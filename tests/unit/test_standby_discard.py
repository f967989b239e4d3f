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

"""Discarding a prepared destination (rejuvenation/standby.discard)."""

from unittest import mock

import testtools

from nova_vmbeam import exception
from nova_vmbeam import hypervisor
from nova_vmbeam.rejuvenation import standby


def _endpoint(host_class, state='inmigrate'):
    endpoint = mock.Mock()
    endpoint.alive.return_value = True
    endpoint.status.return_value = state
    endpoint.name = 'g1'
    endpoint.spec.uuid = '6f1e0c56-7a2b-4c3d-9e8f-0a1b2c3d4e5f'
    endpoint.host = mock.Mock(spec=host_class)
    endpoint.host.name = 'gen2'
    return endpoint


class TestDiscard(testtools.TestCase):

    def test_a_vm_that_had_the_guests_ram_attached_lets_go_of_it(self):
        endpoint, pool = _endpoint(hypervisor.PoolAttachingHypervisor), \
            mock.Mock()
        standby.discard(endpoint, pool)
        endpoint.destroy.assert_called_once_with()
        endpoint.host.detach_pool.assert_called_once_with(
            pool, endpoint.spec.uuid)

    def test_without_a_pool_the_ram_stays_attached(self):
        # A destination prepared again at once (a stale one): its
        # replacement maps the same RAM.
        endpoint = _endpoint(hypervisor.PoolAttachingHypervisor)
        standby.discard(endpoint)
        endpoint.destroy.assert_called_once_with()
        endpoint.host.detach_pool.assert_not_called()

    def test_a_daemon_on_this_kernel_has_nothing_to_detach(self):
        endpoint = _endpoint(hypervisor.Hypervisor)
        standby.discard(endpoint, mock.Mock())
        endpoint.destroy.assert_called_once_with()
        self.assertFalse(hasattr(endpoint.host, 'detach_pool'))

    def test_a_guest_that_runs_is_left_alone(self):
        endpoint = _endpoint(hypervisor.PoolAttachingHypervisor,
                             state='running')
        exc = self.assertRaises(exception.VMBeamError, standby.discard,
                                endpoint, mock.Mock())
        self.assertIn('not a prepared destination', str(exc))
        endpoint.destroy.assert_not_called()
        endpoint.host.detach_pool.assert_not_called()
