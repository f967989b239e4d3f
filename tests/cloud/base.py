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

"""The cloud tests: the all-in-one cloud (tools/run-cloud.sh), driven as an
operator drives it, through the REST API (openstacksdk) and the
``openstack`` command.

The cloud is started by the tox environment (``tox -e cloud``) before the
tests and stopped after them; these tests only use it, and restart or kill
nova-compute where a test is about that. Every check reads the cloud's
own state: server status and power state from Nova's API, instance
actions, the guests' own memory check from their console logs (``openstack
console log show``), and which QEMU runs each guest from /proc.
"""

import json
import os
import re
import signal
import subprocess
import time

import libvirt
import openstack
import testtools

from nova_vmbeam.qemu import procfs

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
CLOUD_DIR = os.environ.get('VMBEAM_CLOUD_DIR', '/var/lib/vmbeam-cloud')
VENV_BIN = os.path.join(CLOUD_DIR, 'venv', 'bin')
AIO = [os.path.join(VENV_BIN, 'python'), os.path.join(TOP, 'tools', 'cloud',
                                                      'aio.py')]
COMPUTE_LOG = os.path.join(CLOUD_DIR, 'logs', 'nova-compute.log')
STATE_PATH = os.path.join(CLOUD_DIR, 'data', 'vmbeam')
SWITCHING_DIR = os.path.join(STATE_PATH, 'journal.json.switching')
COMPUTE_CONF = os.path.join(CLOUD_DIR, 'etc', 'nova', 'nova-compute.conf')
#: whom nova-compute runs as (tools/cloud/aio.py COMPUTE_USER)
COMPUTE_USER = os.environ.get('VMBEAM_CLOUD_COMPUTE_USER', 'nova')
IMAGE = 'vmbeam-test-guest'

WORKER_RE = re.compile(r'VMBEAM-WORKER tick=(\d+) passes=(\d+) '
                       r'dirtied_mib=(\d+) errors=(\d+)')
READY = 'VMBEAM-WORKER ready'
BAD_PAGE = 'VMBEAM-WORKER ERROR'


def cloud_env():
    """The environment of an operator who sourced the cloud's openrc."""
    env = dict(os.environ)
    env.update(
        OS_CLIENT_CONFIG_FILE=os.path.join(CLOUD_DIR, 'clouds.yaml'),
        OS_CLOUD='vmbeam',
        PATH=VENV_BIN + os.pathsep + env.get('PATH', ''))
    return env


class CommandFailed(Exception):
    def __init__(self, argv, proc):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        super().__init__('%s exited %d:\n%s\n%s' % (
            ' '.join(argv), proc.returncode, proc.stdout, proc.stderr))


def on_node(argv):
    """``argv`` as an operator runs it on the compute node.

    As the user nova-compute runs as, whose state it reads and writes.
    """
    return ['setpriv', '--reuid', COMPUTE_USER, '--regid', COMPUTE_USER,
            '--init-groups', '--'] + list(argv)


def openstack_cli(*args, check=True, timeout=600):
    """Run ``openstack ARGS`` as the operator; its completed process."""
    argv = ['openstack'] + list(args)
    proc = subprocess.run(argv, env=cloud_env(), capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode:
        raise CommandFailed(argv, proc)
    return proc


def openstack_json(*args, **kwargs):
    return json.loads(openstack_cli(*(list(args) + ['-f', 'json']),
                                    **kwargs).stdout)


def aio(*args, check=True):
    proc = subprocess.run(AIO + list(args), env=cloud_env(),
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode:
        raise CommandFailed(AIO + list(args), proc)
    return proc.stdout


def qemu_pids_by_uuid():
    """{instance uuid: [pid of each QEMU that runs it]}, read from /proc."""
    found = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % entry, 'rb') as f:
                argv = f.read().split(b'\0')
        except OSError:
            continue
        if not argv or not argv[0].endswith(b'qemu-system-x86_64'):
            continue
        if b'-uuid' in argv:
            uuid = argv[argv.index(b'-uuid') + 1].decode()
            found.setdefault(uuid, []).append(int(entry))
    return found


def running_domains_by_uuid():
    """{instance uuid: [generation whose libvirtd runs it]}.

    A QEMU may exist for a guest in two generations at once (a prepared
    destination, paused, waits for the switchover; a source is paused
    while it ends); only one of them may run.
    """
    found = {}
    siblings = os.path.join(STATE_PATH, 'siblings')
    for gen in sorted(os.listdir(siblings)):
        sock = os.path.join(siblings, gen, 'run', 'libvirt-sock')
        if not os.path.exists(sock):
            continue
        try:
            conn = libvirt.open('qemu:///system?socket=%s' % sock)
        except libvirt.libvirtError:
            continue   # a retired generation's leftover socket
        try:
            for dom in conn.listAllDomains(
                    libvirt.VIR_CONNECT_LIST_DOMAINS_RUNNING):
                if dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING:
                    found.setdefault(dom.UUIDString(), []).append(gen)
        finally:
            conn.close()
    return found


class CloudTestCase(testtools.TestCase):
    """One cloud for all tests; each test makes and deletes its servers."""

    #: seconds a server may take to become ACTIVE / its guest READY (TCG)
    BOOT_TIMEOUT = 300

    def setUp(self):
        super().setUp()
        if not os.path.exists(os.path.join(CLOUD_DIR, 'clouds.yaml')):
            self.fail('no cloud in %s: run the tests with tox -e cloud, '
                      'which starts it (tools/run-cloud.sh start)'
                      % CLOUD_DIR)
        os.environ['OS_CLIENT_CONFIG_FILE'] = os.path.join(CLOUD_DIR,
                                                           'clouds.yaml')
        self.conn = openstack.connect(cloud='vmbeam')
        self.host = self.vmbeam_host()
        self.ensure_compute_up()

    # --- the cloud -------------------------------------------------------

    def vmbeam_host(self):
        for hypervisor in self.conn.compute.hypervisors(details=True):
            if hypervisor.hypervisor_type == 'QEMU':
                return hypervisor.service_details['host']
        self.fail('no QEMU hypervisor in the cloud')

    def compute_service(self, host=None):
        for service in self.conn.compute.services(binary='nova-compute'):
            if service.host == (host or self.host):
                return service
        self.fail('no nova-compute service on %s' % (host or self.host))

    def ensure_compute_up(self):
        """nova-compute runs: a test that killed it leaves none behind."""
        status = aio('status', check=False)   # 3: a service is stopped
        if re.search(r'^nova-compute\s+stopped', status, re.M):
            aio('restart', 'nova-compute')
        self.wait_compute_up()

    def wait_compute_up(self, timeout=240):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.compute_service().state == 'up' and \
                    self.rejuvenation_status(check=False) is not None:
                return
            time.sleep(2)
        self.fail('nova-compute on %s is not up within %d s' % (
            self.host, timeout))

    def compute_pid(self):
        return procfs.pidfile_pid(
            os.path.join(CLOUD_DIR, 'run', 'nova-compute.pid'))

    def kill_compute(self, sig):
        """Signal nova-compute alone, as a crash or a restart would."""
        pid = self.compute_pid()
        os.kill(pid, sig)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if not os.path.exists('/proc/%d' % pid) or \
                    open('/proc/%d/stat' % pid).read().split(') ')[1][0] \
                    == 'Z':
                return
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)

    def restart_compute(self):
        aio('restart', 'nova-compute')
        self.wait_compute_up()

    def log_offset(self):
        return os.path.getsize(COMPUTE_LOG)

    def log_since(self, offset):
        with open(COMPUTE_LOG, errors='replace') as f:
            f.seek(offset)
            return f.read()

    # --- rejuvenation, as the operator asks for it -------------------------

    def rejuvenation_status(self, check=True):
        proc = openstack_cli('hypervisor', 'rejuvenation', 'show', self.host,
                             '-f', 'json', check=check, timeout=120)
        if proc.returncode:
            return None
        return json.loads(proc.stdout)

    def active_generation(self):
        return int(self.rejuvenation_status()['active_generation'])

    def rejuvenate_host(self, *extra):
        return openstack_json('hypervisor', 'rejuvenate', self.host,
                              '--wait', *extra)

    # --- servers -----------------------------------------------------------

    def create_server(self, name, flavor='vmbeam.small', wait_ready=True):
        image = self.conn.image.find_image(IMAGE)
        server = self.conn.compute.create_server(
            name=name, flavor_id=self.conn.compute.find_flavor(flavor).id,
            image_id=image.id, networks='none',
            availability_zone='nova:%s' % self.host)
        self.addCleanup(self.delete_server, server.id)
        server = self.conn.compute.wait_for_server(
            server, wait=self.BOOT_TIMEOUT)
        if wait_ready:
            self.wait_guest_ready(server.id)
        return server

    def delete_server(self, server_id):
        server = self.conn.compute.find_server(server_id)
        if server is None:
            return
        self.conn.compute.delete_server(server_id)
        self.conn.compute.wait_for_delete(server, wait=180)

    def server(self, server_id):
        return self.conn.compute.get_server(server_id)

    def wait_status(self, server_id, status, timeout=300):
        server = self.conn.compute.get_server(server_id)
        return self.conn.compute.wait_for_server(server, status=status,
                                                 wait=timeout)

    def console(self, server_id):
        return self.conn.compute.get_server_console_output(
            server_id)['output']

    def wait_guest_ready(self, server_id, since_ticks=None, timeout=None):
        """Wait until the guest's memory worker reports READY.

        With ``since_ticks``: until a memory-check tick newer than that.
        """
        deadline = time.monotonic() + (timeout or self.BOOT_TIMEOUT)
        while time.monotonic() < deadline:
            out = self.console(server_id)
            if since_ticks is None and READY in out:
                return
            if since_ticks is not None and self.ticks(out) > since_ticks:
                return
            time.sleep(2)
        self.fail('guest of %s not %s within the timeout; console ends:\n%s'
                  % (server_id, 'READY' if since_ticks is None else
                     'ticking', self.console(server_id)[-1500:]))

    @staticmethod
    def ticks(console):
        ticks = [int(m.group(1)) for m in WORKER_RE.finditer(console)]
        return ticks[-1] if ticks else 0

    def memory_errors(self, server_id):
        """Bad pages the guest's own memory check found, over its life."""
        out = self.console(server_id)
        errors = [int(m.group(4)) for m in WORKER_RE.finditer(out)]
        return (errors[-1] if errors else 0) + out.count(BAD_PAGE)

    def assert_qemus_untouched(self, qemus):
        """The QEMUs ``qemus`` ({uuid: [pid]}) still run, and no other.

        For while nova-compute is down: the console and the server's state
        are its to answer, /proc is not.
        """
        now = qemu_pids_by_uuid()
        self.assertEqual(qemus, {uuid: now.get(uuid, []) for uuid in qemus})

    def qemus(self, server_ids):
        found = qemu_pids_by_uuid()
        return {sid: found.get(sid, []) for sid in server_ids}

    def journal_run(self):
        """The run in nova-compute's journal (read on the node)."""
        with open(os.path.join(STATE_PATH, 'journal.json')) as f:
            return json.load(f).get('run')

    def assert_running_once_intact(self, server_ids):
        """Each server ACTIVE / Running here, one QEMU, memory intact.

        Counts the servers lost and running twice, then waits for a newer
        tick of each guest's memory check and counts its bad pages.
        """
        ticks = {sid: self.ticks(self.console(sid)) for sid in server_ids}
        running = running_domains_by_uuid()
        lost = [sid for sid in server_ids if len(running.get(sid, [])) == 0]
        twice = [sid for sid in server_ids if len(running.get(sid, [])) > 1]
        self.assertEqual(([], []), (lost, twice),
                         'servers not running / running twice: %s' % running)
        for sid in server_ids:
            # The guest goes on: a newer tick of its memory check comes.
            self.wait_guest_ready(sid, since_ticks=ticks[sid], timeout=120)
        errors = {sid: self.memory_errors(sid) for sid in server_ids}
        self.assertEqual({sid: 0 for sid in server_ids}, errors,
                         'memory-check errors per server')
        for sid in server_ids:
            server = self.server(sid)
            self.assertEqual(('ACTIVE', 1, self.host),
                             (server.status, server.power_state,
                              server.compute_host), server.name)

    def actions(self, server_id):
        return [a.action for a in
                self.conn.compute.server_actions(server_id)]
