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

"""What the VMBeam commands refuse: each with an error that names the fix,
and nothing changed on any host or server."""

import json
import os
import re
import subprocess
import time

from tests.cloud import base


class BadInputTest(base.CloudTestCase):

    def snapshot(self, server_ids):
        """What must not change: generations, run, servers, actions."""
        status = self.rejuvenation_status()
        return (status['generations'], status['run_id'],
                {sid: (self.server(sid).status, self.server(sid).compute_host,
                       sorted(self.actions(sid))) for sid in server_ids})

    def assert_refused(self, args, *fragments):
        proc = base.openstack_cli(*args, check=False)
        self.assertNotEqual(0, proc.returncode, proc.stdout)
        for fragment in fragments:
            self.assertIn(fragment, proc.stderr)
        self.assertNotIn('Traceback', proc.stderr)
        return proc.stderr

    def plain_host(self):
        for service in self.conn.compute.services(binary='nova-compute'):
            if service.host != self.host and service.state == 'up':
                return service.host
        self.skipTest('no second compute host: tox -e cloud starts one '
                      '(VMBEAM_CLOUD_PLAIN_COMPUTE=1)')

    def test_server_on_a_host_that_is_not_vmbeam(self):
        plain = self.plain_host()
        image = self.conn.image.find_image(base.IMAGE)
        server = self.conn.compute.create_server(
            name='bad-plain-host', image_id=image.id, networks='none',
            flavor_id=self.conn.compute.find_flavor('plain.small').id,
            availability_zone='nova:%s' % plain)
        self.addCleanup(self.delete_server, server.id)
        self.conn.compute.wait_for_server(server, wait=120)
        before = self.snapshot([server.id])
        self.assert_refused(('server', 'migrate', '--rejuvenate', server.id),
                            'not a VMBeam host', 'CUSTOM_VMBEAM')
        self.assert_refused(('hypervisor', 'rejuvenate', plain),
                            'not a VMBeam host', 'compute_driver')
        self.assertEqual(before, self.snapshot([server.id]))

    def test_stopped_and_shelved_servers(self):
        server = self.create_server('bad-stopped')
        self.conn.compute.stop_server(server.id)
        self.wait_status(server.id, 'SHUTOFF')
        before = self.snapshot([server.id])
        # vmbeam-api refuses it from Nova's status, before the host.
        self.assert_refused(('server', 'migrate', '--rejuvenate', server.id),
                            'is SHUTOFF: only an ACTIVE server can be '
                            'rejuvenated', 'Start it', '(HTTP 409)')
        self.assertEqual(before, self.snapshot([server.id]))

        self.conn.compute.shelve_server(server.id)
        self.wait_status(server.id, 'SHELVED_OFFLOADED')
        before = self.snapshot([server.id])
        self.assert_refused(('server', 'migrate', '--rejuvenate', server.id),
                            'SHELVED_OFFLOADED')
        self.assertEqual(before, self.snapshot([server.id]))

    def test_a_second_rejuvenation_while_one_runs(self):
        servers = [self.create_server('bad-busy-1'),
                   self.create_server('bad-busy-2', flavor='plain.small')]
        generation = self.active_generation()
        # Two operators at once: a run takes seconds (a generation starts
        # first), the two requests arrive within a fraction of one.
        argv = ['openstack', 'hypervisor', 'rejuvenate', self.host,
                '-f', 'json']
        procs = [subprocess.Popen(argv, env=base.cloud_env(),
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
        results = [p.communicate(timeout=120) + (p.returncode,)
                   for p in procs]
        started = [json.loads(out) for out, err, rc in results
                   if rc == 0]
        refused = [err for out, err, rc in results if rc != 0]
        self.assertEqual(1, len(started), results)
        self.assertEqual(1, len(refused), results)
        self.assertIn('already', refused[0])
        self.assertNotIn('Traceback', refused[0])
        # The first one goes on undisturbed, to its end.
        status = self.wait_run_over(started[0]['run_id'])
        self.assertEqual(started[0]['run_id'], status['run_id'])
        self.assertEqual('completed', status['run_state'])
        self.assertEqual(generation + 1, int(status['active_generation']))
        self.assert_running_once_intact([s.id for s in servers])

    def wait_run_over(self, run_id, timeout=300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.rejuvenation_status()
            if status['run_id'] != run_id or \
                    status['run_state'] != 'running':
                return status
            time.sleep(1)
        self.fail('run %s did not end' % run_id)

    def test_unknown_host_and_server(self):
        before = self.rejuvenation_status()['generations']
        self.assert_refused(('hypervisor', 'rejuvenate', 'no-such-host'),
                            "No compute host 'no-such-host'",
                            'openstack compute service list')
        self.assert_refused(('server', 'migrate', '--rejuvenate',
                             '00000000-0000-0000-0000-000000000000'),
                            'No server')
        self.assertEqual(before, self.rejuvenation_status()['generations'])

    def test_nova_compute_refuses_to_switch_sibling_kind_in_place(self):
        # An operator sets another kind on a host whose colocated
        # generations run instances: nova-compute does not come up, says
        # why and what to set, and starts, adopts or stops no generation.
        before = self.snapshot(())
        conf = os.path.join(base.CLOUD_DIR, 'etc', 'nova',
                            'nova-compute.conf')
        with open(conf) as f:
            original = f.read()
        self.assertIn('[vmbeam]\n', original)
        self.addCleanup(self.ensure_compute_up)
        self.addCleanup(self._write_keeping_owner, conf, original)
        self._write_keeping_owner(conf, original.replace(
            '[vmbeam]\n', '[vmbeam]\nsibling_kind = nested\n', 1))
        generations = self.generation_daemons()
        offset = self.log_offset()
        base.aio('restart', 'nova-compute', check=False)
        deadline = time.monotonic() + 120
        log = ''
        while time.monotonic() < deadline:
            log = self.log_since(offset)
            if 'sibling_kind = nested' in log:
                break
            time.sleep(1)
        self.assertIn('[vmbeam] sibling_kind = nested, but this host runs '
                      'colocated generations', log)
        self.assertIn('Set [vmbeam] sibling_kind = colocated again', log)
        # The error is logged before the process has finished exiting.
        stopped = re.compile(r'^nova-compute\s+stopped', re.M)
        deadline = time.monotonic() + 60
        status = base.aio('status', check=False)
        while not stopped.search(status) and time.monotonic() < deadline:
            time.sleep(1)
            status = base.aio('status', check=False)
        self.assertRegex(status, stopped)
        # The generations' daemons it found running still run, untouched.
        self.assertEqual(generations, self.generation_daemons())
        self._write_keeping_owner(conf, original)
        self.restart_compute()
        self.assertEqual(before, self.snapshot(()))

    @staticmethod
    def _write_keeping_owner(path, text):
        st = os.stat(path)
        with open(path, 'w') as f:
            f.write(text)
        os.chown(path, st.st_uid, st.st_gid)
        os.chmod(path, st.st_mode & 0o7777)

    @staticmethod
    def generation_daemons():
        """Pids of the generations' libvirtd (their pid files)."""
        found = {}
        siblings = os.path.join(base.CLOUD_DIR, 'data', 'vmbeam', 'siblings')
        for name in sorted(os.listdir(siblings)):
            pid_file = os.path.join(siblings, name, 'run', 'libvirtd.pid')
            if os.path.exists(pid_file):
                with open(pid_file) as f:
                    found[name] = f.read().strip()
        return found
