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


"""nova-compute runs unprivileged; root's work is its privsep daemon's."""

import grp
import os
import pwd
import stat

from oslo_privsep import capabilities as caps

from nova_vmbeam.qemu import procfs
from tests.cloud import base


def _status(pid):
    fields = {}
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            key, _, value = line.partition(':')
            fields[key] = value.split()
    return fields


def _cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            return f.read().decode(errors='replace').split('\0')
    except OSError:
        return []


class PrivilegesTest(base.CloudTestCase):

    def test_compute_is_unprivileged_and_privsep_holds_only_its_caps(self):
        nova = pwd.getpwnam(base.COMPUTE_USER)
        compute = _status(self.compute_pid())
        # Real, effective, saved and file-system ids: all the user's.
        self.assertEqual([str(nova.pw_uid)] * 4, compute['Uid'])
        self.assertEqual(0, int(compute['CapEff'][0], 16))
        self.assertEqual(0, int(compute['CapPrm'][0], 16))

        # The host's generation runs (nova-compute started it on start):
        # through nova-vmbeam's privsep daemon, root with the context's
        # capabilities and no others.
        helpers = [pid for pid in map(int, filter(str.isdigit,
                                                  os.listdir('/proc')))
                   if 'nova_vmbeam.privsep.vmbeam_pctxt' in _cmdline(pid)
                   and os.path.basename(_cmdline(pid)[0]) != 'sudo']
        self.assertTrue(helpers, 'no privsep daemon of nova_vmbeam runs')
        expected = 0
        for cap in (caps.CAP_SYS_ADMIN, caps.CAP_CHOWN, caps.CAP_FOWNER,
                    caps.CAP_DAC_OVERRIDE, caps.CAP_DAC_READ_SEARCH,
                    caps.CAP_KILL, caps.CAP_SYS_NICE, caps.CAP_NET_ADMIN,
                    caps.CAP_SETUID, caps.CAP_SETGID, caps.CAP_SYS_PTRACE):
            expected |= 1 << cap
        for pid in helpers:
            status = _status(pid)
            self.assertEqual(['0'] * 4, status['Uid'])
            self.assertEqual(expected, int(status['CapEff'][0], 16),
                             'privsep daemon %d' % pid)

        # Its generation's libvirtd answers on a socket of nova's group
        # (no polkit), which others cannot reach.
        generation = self.active_generation()
        sock = os.path.join(base.STATE_PATH, 'siblings',
                            'gen%d' % generation, 'run', 'libvirt-sock')
        st = os.stat(sock)
        self.assertEqual(grp.getgrgid(nova.pw_gid).gr_name,
                         grp.getgrgid(st.st_gid).gr_name)
        self.assertEqual(0o770, stat.S_IMODE(st.st_mode))
        # ... and it, like every daemon, is root's, outside nova-compute.
        libvirtd = procfs.pidfile_pid(os.path.join(
            base.STATE_PATH, 'siblings', 'gen%d' % generation, 'run',
            'libvirtd.pid'))
        self.assertEqual('0', _status(libvirtd)['Uid'][1])
