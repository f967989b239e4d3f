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


"""Guests' console ports (nested/consoles.py) in a real L1, without an L2.

One L1 boot, no TCG inside TCG: what the port carries is written from
inside the L1, by the QEMU user, into the device the guest's serial port
would use, and must land in the log file on L0, appended; the port goes
when its guest leaves the L1. The move test (test_nested) runs a whole L2
through it where the machine is fast enough for that.
"""

import os
import pwd
import re
import uuid

from nova_vmbeam.nested import agent
from nova_vmbeam.nested.appliance import builder
from nova_vmbeam.nested import consoles
from tests.functional import test_nested
from vmbeam_devtools.guestimage import console as console_log


class TestConsolePort(test_nested.NestedTestCase):

    BOOTS_L2 = False

    def _write_in_l1(self, sibling, port, line):
        """As the guest's QEMU would: the QEMU user writes the device."""
        agent.sh(sibling.l1_domain(), "su -s /bin/sh -c 'echo %s > %s/%s' "
                 "%s" % (line, consoles.PORTS_DIR, port, builder.QEMU_USER))

    def test_port_appends_to_the_log_on_l0_and_goes_with_its_guest(self):
        sibling = self.testbed.start_sibling(1)
        guest_uuid = str(uuid.uuid4())
        log = os.path.join(self.conf.vmbeam.state_path, 'console.log')
        # Nova's log of an earlier boot of the instance stays.
        with open(log, 'w') as f:
            f.write('from an earlier boot\n')
        pw = pwd.getpwnam(self.conf.vmbeam.qemu_user)
        port = consoles.ensure_port(sibling, guest_uuid, log,
                                    (pw.pw_uid, pw.pw_gid),
                                    builder.QEMU_USER)
        self.assertEqual(consoles.port_name(guest_uuid), port)
        # Plugged again (a retried launch): the same port, no second one.
        consoles.ensure_port(sibling, guest_uuid, log,
                             (pw.pw_uid, pw.pw_gid), builder.QEMU_USER)
        self.assertEqual(1, sibling.l1_domain().XMLDesc().count(port))
        self._write_in_l1(sibling, port, 'VMBEAM-GUEST booted via port')
        console_log.ConsoleLog(log).wait_for(
            '^%s$' % re.escape('VMBEAM-GUEST booted via port'), 60)
        with open(log) as f:
            self.assertEqual('from an earlier boot\n', f.readline())
        # The device is the QEMU user's only.
        mode = agent.sh(sibling.l1_domain(), 'stat -L -c "%%U %%a" %s/%s' % (
            consoles.PORTS_DIR, port)).split()
        self.assertEqual([builder.QEMU_USER, '600'], mode)

        consoles.remove_port(sibling, guest_uuid, log)
        self.assertNotIn(port, sibling.l1_domain().XMLDesc())
        # Gone twice is fine (a retire falling back to destroy).
        consoles.remove_port(sibling, guest_uuid, log)
