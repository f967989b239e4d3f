#!/usr/bin/env python3
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

"""An all-in-one OpenStack cloud around VMBeamDriver, for one machine.

    aio.py start     install the configuration, start every service, make
                     the image and flavors (safe to run again)
    aio.py stop      stop everything start started, guests included
    aio.py status    which services run, where the logs are

Run by tools/run-cloud.sh with the cloud's own venv (keystone, placement,
glance, neutron and nova from PyPI; nova-vmbeam and its shim). MariaDB,
RabbitMQ and memcached are Debian's, each run as a private instance with
its state under the cloud directory (VMBEAM_CLOUD_DIR, default
/var/lib/vmbeam-cloud); no systemd is needed. The API services are served
by gunicorn. Neutron runs its API only (ML2, no agents): servers boot with
``--nic none``, and Nova still asks Neutron for an instance's ports on
delete, reboot and start.

Everything an operator needs afterwards is in the cloud directory:
``openrc`` and ``clouds.yaml`` (cloud ``vmbeam``, admin), ``logs/``.
This is development tooling; nothing here ships to compute nodes.
"""

import configparser
import dataclasses
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from nova_vmbeam.qemu import procfs

CLOUD_DIR = os.path.abspath(os.environ.get('VMBEAM_CLOUD_DIR',
                                           '/var/lib/vmbeam-cloud'))
VENV = os.path.join(CLOUD_DIR, 'venv')
ETC = os.path.join(CLOUD_DIR, 'etc')
LOGS = os.path.join(CLOUD_DIR, 'logs')
RUN = os.path.join(CLOUD_DIR, 'run')
DATA = os.path.join(CLOUD_DIR, 'data')
SECRETS = os.path.join(CLOUD_DIR, 'secrets.json')
#: in a directory of the mysql user's, who runs mariadbd
MYSQL_SOCK = os.path.join(RUN, 'mysqld', 'mysqld.sock')
REGION = 'RegionOne'
HOST = '127.0.0.1'
#: guest RAM of VMBeam flavors lives here (tmpfs)
RAM_POOL = os.environ.get('VMBEAM_CLOUD_RAM_POOL', '/dev/shm/vmbeam-cloud')
#: the power-state sync of nova-compute, in seconds (Nova's default: 600)
SYNC_POWER_STATE_INTERVAL = int(os.environ.get(
    'VMBEAM_CLOUD_SYNC_POWER_STATE_INTERVAL', '600'))
#: 1: a second compute host that is not VMBeam (Nova's fake driver), for
#: the tests of what the VMBeam commands refuse there
PLAIN_COMPUTE = os.environ.get('VMBEAM_CLOUD_PLAIN_COMPUTE') == '1'
PLAIN_HOST = socket.gethostname() + '-plain'
#: nova-compute runs as this user, not root (tools/run-cloud.sh makes it);
#: its privsep daemons (Nova's, os-brick's, os-vif's, nova-vmbeam's)
#: start through sudo, as on a packaged compute node
COMPUTE_USER = os.environ.get('VMBEAM_CLOUD_COMPUTE_USER', 'nova')
#: what nova-compute (and the vmbeam command on the node) may write
COMPUTE_STATE = os.path.join(DATA, 'vmbeam')
COMPUTE_LOCKS = os.path.join(DATA, 'locks-compute')
#: the sudo rule that lets COMPUTE_USER start privsep-helper, per cloud
SUDOERS = '/etc/sudoers.d/vmbeam-cloud-%s' % hashlib.sha256(
    CLOUD_DIR.encode()).hexdigest()[:8]


def _port(name, default):
    return int(os.environ.get('VMBEAM_CLOUD_%s_PORT' % name.upper(),
                              default))


PORTS = {
    'mariadb': _port('mariadb', 3306),
    'rabbitmq': _port('rabbitmq', 5672),
    'memcached': _port('memcached', 11211),
    'keystone': _port('keystone', 5000),
    'placement': _port('placement', 8778),
    'glance': _port('glance', 9292),
    'neutron': _port('neutron', 9696),
    'nova-api': _port('nova_api', 8774),
    'vmbeam-api': _port('vmbeam_api', 8797),
}
#: rabbitmq's Erlang distribution and epmd ports: private, so that the
#: broker neither meets nor disturbs another one on the machine
RABBIT_DIST_PORT = _port('rabbitmq_dist', 25672)
RABBIT_EPMD_PORT = _port('rabbitmq_epmd', 24369)

#: the services that get a Keystone user, their catalog type and endpoint
CATALOG = {
    'glance': ('image', 'http://%s:%d' % (HOST, PORTS['glance'])),
    'placement': ('placement', 'http://%s:%d' % (HOST, PORTS['placement'])),
    'neutron': ('network', 'http://%s:%d' % (HOST, PORTS['neutron'])),
    'nova': ('compute', 'http://%s:%d/v2.1' % (HOST, PORTS['nova-api'])),
    # vmbeam-api: its service user asks Nova and Placement (admin role).
    'vmbeam': ('hypervisor-rejuvenation',
               'http://%s:%d' % (HOST, PORTS['vmbeam-api'])),
}

#: flavors: name -> (RAM MiB, vCPUs, disk GiB, extra specs)
FLAVORS = {
    'vmbeam.small': (256, 1, 1, {'vmbeam:ram': 'true'}),
    'vmbeam.medium': (384, 1, 1, {'vmbeam:ram': 'true'}),
    'plain.small': (256, 1, 1, {}),
}
IMAGE = 'vmbeam-test-guest'
#: what the test guest's memory worker does (see vmbeam_devtools.guestimage)
GUEST_WORK_MIB = 64
GUEST_DIRTY_MIB_S = 8
#: seconds Nova waits for the guest to shut down by itself (image property)
GUEST_SHUTDOWN_TIMEOUT = 10


class CloudError(Exception):
    """A step failed; the message names the fix."""


def log(msg):
    print('run-cloud: %s' % msg, flush=True)


# --- processes ---------------------------------------------------------------

@dataclasses.dataclass
class Service:
    name: str
    argv: list
    env: dict = dataclasses.field(default_factory=dict)
    port: int = None
    #: an HTTP URL that answers once the service is up
    url: str = None
    cwd: str = None

    @property
    def pidfile(self):
        return os.path.join(RUN, self.name + '.pid')

    @property
    def logfile(self):
        return os.path.join(LOGS, self.name + '.log')


def _cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            return f.read().split(b'\0')
    except OSError:
        return None


def running_process(service):
    """The service's process if it runs (a procfs.ProcessIdentity).

    Its pid file holds pid and start time, so a reused pid is never taken
    (or signalled) for the service.
    """
    process = procfs.ProcessIdentity.from_pidfile(service.pidfile)
    return process if process is not None and process.alive() else None


def running_pid(service):
    process = running_process(service)
    return process.pid if process else None


def port_holder(port):
    """Who listens on ``port`` (ss's line), or None if it is free."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
            return None
        except OSError:
            pass
    out = subprocess.run(['ss', '-Hltnp', 'sport = :%d' % port],
                         capture_output=True, text=True).stdout.strip()
    return out or 'an unknown process'


def _tail(path, lines=25):
    try:
        with open(path, errors='replace') as f:
            return ''.join(f.readlines()[-lines:])
    except OSError:
        return ''


def _http_up(url):
    try:
        urllib.request.urlopen(url, timeout=5).close()
        return True
    except urllib.error.HTTPError:
        return True   # it answered (401/300 are answers)
    except (OSError, ValueError):
        return False


def _port_up(port):
    try:
        with socket.create_connection((HOST, port), 1):
            return True
    except OSError:
        return False


def start_service(service, ready=None, timeout=180.0):
    """Start ``service`` unless it runs; wait until it is ready."""
    if running_pid(service):
        return False
    if service.port:
        holder = port_holder(service.port)
        if holder:
            raise CloudError(
                'port %d, which %s needs, is taken: %s. Stop that process, '
                'or give %s another port with VMBEAM_CLOUD_%s_PORT.' % (
                    service.port, service.name, holder, service.name,
                    service.name.upper().replace('-', '_')))
    env = dict(os.environ, **service.env)
    with open(service.logfile, 'ab') as out:
        proc = subprocess.Popen(
            service.argv, env=env, cwd=service.cwd or CLOUD_DIR,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    process = procfs.ProcessIdentity.of(proc.pid)
    if process is not None:   # else it exited already: said below
        process.write_pidfile(service.pidfile)
    ready = ready or (lambda: (_http_up(service.url) if service.url
                               else _port_up(service.port)))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CloudError('%s exited with status %s; its log %s ends:\n%s'
                             % (service.name, proc.returncode,
                                service.logfile, _tail(service.logfile)))
        if ready():
            log('%s is up (pid %d)' % (service.name, proc.pid))
            return True
        time.sleep(0.5)
    raise CloudError('%s did not come up within %.0f s; its log %s ends:\n%s'
                     % (service.name, timeout, service.logfile,
                        _tail(service.logfile)))


def stop_service(service, timeout=60.0):
    process = running_process(service)
    if process:
        # The service's whole process group (gunicorn's workers, the
        # broker's Erlang VM): it leads the session it was started in.
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while process.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        if process.alive():
            os.killpg(process.pid, signal.SIGKILL)
        log('stopped %s' % service.name)
    try:
        os.unlink(service.pidfile)
    except FileNotFoundError:
        pass


def run(argv, fix, **kwargs):
    """Run a set-up command; a failure names ``fix``."""
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if proc.returncode:
        # The command's own words come last: a log cut to its tail (CI's)
        # still shows why.
        raise CloudError('%s\n%s failed (%d): %s' % (
            fix, ' '.join(argv), proc.returncode,
            (proc.stderr or proc.stdout).strip()[-3000:]))
    return proc.stdout


def venv_bin(name):
    return os.path.join(VENV, 'bin', name)


def as_compute_user(argv):
    """``argv`` run as COMPUTE_USER (nova-compute, and vmbeam on the node)."""
    return ['setpriv', '--reuid', COMPUTE_USER, '--regid', COMPUTE_USER,
            '--init-groups', '--'] + list(argv)


def privsep_helper_command(conf_file):
    """[<context>] helper_command for an unprivileged nova-compute.

    sudo's secure_path does not hold the venv: the helper by full path,
    which the sudo rule (init_compute_user) names.
    """
    return 'sudo %s --config-file %s' % (venv_bin('privsep-helper'),
                                         conf_file)


# --- configuration -----------------------------------------------------------

def load_secrets():
    if os.path.exists(SECRETS):
        with open(SECRETS) as f:
            return json.load(f)
    values = {name: secrets.token_hex(12) for name in (
        'admin', 'service', 'database', 'rabbit', 'erlang_cookie')}
    fd = os.open(SECRETS, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'w') as f:
        json.dump(values, f)
    return values


def write_ini(path, sections):
    """Write ``sections`` ({section: {key: value}}) as an ini file."""
    parser = configparser.RawConfigParser()
    parser.optionxform = str
    for section, values in sections.items():
        if section != 'DEFAULT':
            parser.add_section(section)
        for key, value in values.items():
            parser.set(section, key, str(value))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path + '.tmp', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        parser.write(f)
    os.replace(path + '.tmp', path)


def db_url(pw, name):
    return 'mysql+pymysql://%s:%s@%s:%d/%s?charset=utf8' % (
        name if name not in ('nova_api', 'nova_cell0') else 'nova', pw,
        HOST, PORTS['mariadb'], name)


def rabbit_url(pw):
    return 'rabbit://vmbeam:%s@%s:%d/' % (pw, HOST, PORTS['rabbitmq'])


def keystone_url():
    return 'http://%s:%d' % (HOST, PORTS['keystone'])


def authtoken(pw, user):
    return {
        'www_authenticate_uri': keystone_url(),
        'auth_url': keystone_url(),
        'memcached_servers': '%s:%d' % (HOST, PORTS['memcached']),
        'auth_type': 'password', 'project_domain_name': 'Default',
        'user_domain_name': 'Default', 'project_name': 'service',
        'username': user, 'password': pw,
        'service_token_roles_required': 'true',
    }


def service_auth(pw, user):
    return {
        'auth_url': keystone_url(), 'auth_type': 'password',
        'project_domain_name': 'Default', 'user_domain_name': 'Default',
        'project_name': 'service', 'username': user, 'password': pw,
        'region_name': REGION,
    }


def conf_path(service, name):
    return os.path.join(ETC, service, name)


def write_configs(sec):
    svc, dbpw = sec['service'], sec['database']
    lock = {'lock_path': os.path.join(DATA, 'locks')}
    write_ini(conf_path('keystone', 'keystone.conf'), {
        'DEFAULT': {},
        'database': {'connection': db_url(dbpw, 'keystone')},
        'token': {'provider': 'fernet'},
        'fernet_tokens': {'key_repository': conf_path('keystone',
                                                      'fernet-keys')},
        'credential': {'key_repository': conf_path('keystone',
                                                   'credential-keys')},
        'cache': {'enabled': 'true', 'backend': 'oslo_cache.memcache_pool',
                  'memcache_servers': '%s:%d' % (HOST, PORTS['memcached'])},
    })
    write_ini(conf_path('placement', 'placement.conf'), {
        'DEFAULT': {},
        'placement_database': {'connection': db_url(dbpw, 'placement')},
        'api': {'auth_strategy': 'keystone'},
        'keystone_authtoken': authtoken(svc, 'placement'),
    })
    glance_data = os.path.join(DATA, 'glance')
    write_ini(conf_path('glance', 'glance-api.conf'), {
        'DEFAULT': {'enabled_backends': 'fs:file'},
        'database': {'connection': db_url(dbpw, 'glance')},
        'keystone_authtoken': authtoken(svc, 'glance'),
        'paste_deploy': {'flavor': 'keystone'},
        'glance_store': {'default_backend': 'fs'},
        'fs': {'filesystem_store_datadir': os.path.join(glance_data,
                                                        'images')},
        'os_glance_staging_store': {
            'filesystem_store_datadir': os.path.join(glance_data, 'staging')},
        'os_glance_tasks_store': {
            'filesystem_store_datadir': os.path.join(glance_data, 'tasks')},
        'oslo_concurrency': lock,
    })
    shutil.copy(os.path.join(VENV, 'etc/glance/glance-api-paste.ini'),
                conf_path('glance', 'glance-api-paste.ini'))
    write_ini(conf_path('neutron', 'neutron.conf'), {
        'DEFAULT': {
            'core_plugin': 'ml2',
            # get_ports reads the port forwardings: their models load
            # with these plugins (they need no agent).
            'service_plugins': 'router,port_forwarding',
            'auth_strategy': 'keystone',
            'transport_url': rabbit_url(sec['rabbit']),
            'api_paste_config': conf_path('neutron', 'api-paste.ini'),
            'notify_nova_on_port_status_changes': 'false',
            'notify_nova_on_port_data_changes': 'false',
            'state_path': os.path.join(DATA, 'neutron'),
        },
        'database': {'connection': db_url(dbpw, 'neutron')},
        'keystone_authtoken': authtoken(svc, 'neutron'),
        # The API only: no agents, no tenant networks. Servers boot with
        # --nic none; Nova asks Neutron for their (no) ports.
        'ml2': {'type_drivers': 'flat', 'tenant_network_types': '',
                'mechanism_drivers': '', 'extension_drivers': ''},
        'oslo_concurrency': lock,
    })
    shutil.copy(os.path.join(VENV, 'etc/neutron/api-paste.ini'),
                conf_path('neutron', 'api-paste.ini'))

    nova = {
        'DEFAULT': {
            'transport_url': rabbit_url(sec['rabbit']),
            'my_ip': HOST,
            'state_path': os.path.join(DATA, 'nova'),
            'instances_path': os.path.join(DATA, 'nova', 'instances'),
            # One compute node: a resize can only stay on it.
            'allow_resize_to_same_host': 'true',
        },
        'api': {'auth_strategy': 'keystone'},
        'api_database': {'connection': db_url(dbpw, 'nova_api')},
        'database': {'connection': db_url(dbpw, 'nova')},
        'keystone_authtoken': authtoken(svc, 'nova'),
        'placement': service_auth(svc, 'placement'),
        'neutron': service_auth(svc, 'neutron'),
        'glance': {'region_name': REGION},
        'scheduler': {'discover_hosts_in_cells_interval': '-1',
                      'workers': '1'},
        'conductor': {'workers': '1'},
        'wsgi': {'api_paste_config': conf_path('nova', 'api-paste.ini')},
        'vnc': {'enabled': 'false'},
        'oslo_concurrency': lock,
        'oslo_messaging_notifications': {'driver': 'messagingv2'},
        'notifications': {'notification_format': 'versioned'},
    }
    write_ini(conf_path('nova', 'nova.conf'), nova)
    shutil.copy(os.path.join(VENV, 'etc/nova/api-paste.ini'),
                conf_path('nova', 'api-paste.ini'))
    # nova-compute's own file: no database (it reaches it through the
    # conductor), and the compute node's VMBeam settings, written by the
    # same command an operator (or the devstack plugin) uses.
    compute = {k: dict(v) for k, v in nova.items()
               if k not in ('database', 'api_database')}
    compute['DEFAULT']['sync_power_state_interval'] = str(
        SYNC_POWER_STATE_INTERVAL)
    # The compute node is what this cloud is for: its periodic tasks and
    # the driver's decisions are in its log.
    compute['DEFAULT']['debug'] = 'true'
    compute['libvirt'] = {
        'virt_type': 'qemu',
        # The test guest ignores ACPI: a soft reboot waits this long for
        # it to go down by itself, then Nova reboots it hard (default 120).
        'wait_soft_reboot_seconds': str(GUEST_SHUTDOWN_TIMEOUT)}
    # nova-compute runs as COMPUTE_USER: every privsep daemon it needs
    # starts through sudo (a packaged Nova goes through rootwrap's
    # privsep-helper filter instead; the sudo rule is the same idea).
    helper = privsep_helper_command(conf_path('nova', 'nova-compute.conf'))
    for context in ('nova_sys_admin', 'privsep_osbrick',
                    'vif_plug_ovs_privileged',
                    'vif_plug_linux_bridge_privileged', 'vmbeam_privsep'):
        compute[context] = {'helper_command': helper}
    # Lock files of its own: the other services (root) share lock_path.
    compute['oslo_concurrency'] = {'lock_path': COMPUTE_LOCKS}
    # The pool daemon is started by root (privsep) from the tree's build:
    # named by path, found whether or not the compute user reads the tree.
    compute['vmbeam'] = {'pagemoverd_binary': os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))), 'native', 'build',
        'vmbeam-pagemoverd')}
    write_ini(conf_path('nova', 'nova-compute.conf'), compute)
    configure_compute_node(conf_path('nova', 'nova-compute.conf'))
    plain = {k: dict(v) for k, v in compute.items()
             if k not in ('vmbeam', 'vmbeam_privsep')}
    # The plain host (Nova's fake driver) runs as root: no privsep.
    for context in ('nova_sys_admin', 'privsep_osbrick',
                    'vif_plug_ovs_privileged',
                    'vif_plug_linux_bridge_privileged'):
        plain.pop(context, None)
    plain['oslo_concurrency'] = dict(lock)
    plain['DEFAULT'].update(
        host=PLAIN_HOST, compute_driver='fake.FakeDriverWithoutFakeNodes',
        state_path=os.path.join(DATA, 'nova-plain'),
        instances_path=os.path.join(DATA, 'nova-plain', 'instances'))
    write_ini(conf_path('nova', 'nova-compute-plain.conf'), plain)
    write_ini(conf_path('vmbeam', 'vmbeam-api.conf'), {
        'DEFAULT': {'transport_url': rabbit_url(sec['rabbit']),
                    'debug': 'true'},
        'keystone_authtoken': authtoken(svc, 'vmbeam'),
        'nova': service_auth(svc, 'vmbeam'),
        'placement': {'region_name': REGION},
        # Read again by vmbeam-api whenever it changes.
        'oslo_policy': {'policy_file': conf_path('vmbeam', 'policy.yaml')},
    })


def configure_compute_node(path):
    run([venv_bin('vmbeam'), 'compute-node', 'configure',
         '--nova-conf', path,
         '--state-path', os.path.join(DATA, 'vmbeam'),
         '--ram-pool-path', RAM_POOL,
         '--pagemoverd-socket', os.path.join(DATA, 'vmbeam',
                                             'pagemoverd.sock'),
         '--virt-type', 'qemu',
         '--instances-path', os.path.join(DATA, 'nova', 'instances'),
         '--aging-action', 'report'],
        'The compute node configuration was refused; see the message.')


def gunicorn(name, app, port, env):
    """A gunicorn service serving ``app`` on ``port``."""
    path = os.path.join(ETC, 'gunicorn', name + '.py')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(
            '# gunicorn settings of the all-in-one cloud\'s %s\n'
            'import sys\n'
            '# The application parses sys.argv with oslo.config; these are\n'
            '# gunicorn\'s arguments, not the application\'s.\n'
            'sys.argv[1:] = []\n'
            'wsgi_app = %r\n'
            'bind = %r\n'
            'workers = 1\n'
            'threads = 4\n'
            'timeout = 300\n'
            # Longer than any client's pause between requests: a
            # keep-alive connection closed by the server just as a client
            # reuses it fails that request (gunicorn's default is 2 s).
            'keepalive = 75\n'
            'proc_name = %r\n'
            'raw_env = %r\n' % (
                name, app, '%s:%d' % (HOST, port), 'vmbeam-cloud-' + name,
                ['%s=%s' % kv for kv in sorted(env.items())]))
    return Service(name, [venv_bin('gunicorn'), '-c', path], env=env,
                   port=port, url='http://%s:%d/' % (HOST, port))


def services(sec):
    """Every service of the cloud, in start order."""
    mysql_sock = MYSQL_SOCK
    rabbit_base = os.path.join(DATA, 'rabbitmq')
    rabbit_env = {
        'HOME': rabbit_base,
        'RABBITMQ_NODENAME': 'vmbeam-cloud@localhost',
        'RABBITMQ_NODE_IP_ADDRESS': HOST,
        'RABBITMQ_NODE_PORT': str(PORTS['rabbitmq']),
        'RABBITMQ_DIST_PORT': str(RABBIT_DIST_PORT),
        'RABBITMQ_MNESIA_BASE': os.path.join(rabbit_base, 'mnesia'),
        'RABBITMQ_LOG_BASE': LOGS,
        'RABBITMQ_PID_FILE': os.path.join(rabbit_base, 'rabbit.pid'),
        'RABBITMQ_ENABLED_PLUGINS_FILE': os.path.join(rabbit_base,
                                                      'enabled_plugins'),
        'RABBITMQ_CONF_ENV_FILE': os.path.join(rabbit_base, 'none.conf'),
        'RABBITMQ_CONFIG_FILE': os.path.join(rabbit_base, 'rabbitmq'),
        'ERL_EPMD_PORT': str(RABBIT_EPMD_PORT),
    }
    nova_env = {'OS_NOVA_CONFIG_DIR': os.path.join(ETC, 'nova')}
    nova_conf = conf_path('nova', 'nova.conf')
    return [
        Service('mariadb', ['/usr/sbin/mariadbd', '--no-defaults',
                            '--datadir=' + os.path.join(DATA, 'mysql'),
                            '--socket=' + mysql_sock,
                            '--bind-address=' + HOST,
                            '--port=%d' % PORTS['mariadb'],
                            '--pid-file=' + os.path.join(
                                os.path.dirname(MYSQL_SOCK), 'mysqld.pid'),
                            '--user=mysql', '--skip-name-resolve',
                            '--innodb-buffer-pool-size=128M',
                            '--max-connections=1000',
                            '--character-set-server=utf8mb4'],
                port=PORTS['mariadb']),
        Service('rabbitmq', ['/usr/lib/rabbitmq/bin/rabbitmq-server'],
                env=rabbit_env, port=PORTS['rabbitmq'], cwd=rabbit_base),
        Service('memcached', ['/usr/bin/memcached', '-u', 'memcache',
                              '-l', HOST, '-p', str(PORTS['memcached']),
                              '-m', '64'],
                port=PORTS['memcached']),
        gunicorn('keystone', 'keystone.wsgi.api:application',
                 PORTS['keystone'],
                 {'OS_KEYSTONE_CONFIG_DIR': os.path.join(ETC, 'keystone'),
                  'OS_KEYSTONE_CONFIG_FILES': 'keystone.conf'}),
        gunicorn('placement', 'placement.wsgi.api:application',
                 PORTS['placement'],
                 {'OS_PLACEMENT_CONFIG_DIR': os.path.join(ETC, 'placement')}),
        gunicorn('glance', 'glance.wsgi.api:application', PORTS['glance'],
                 {'OS_GLANCE_CONFIG_DIR': os.path.join(ETC, 'glance')}),
        gunicorn('neutron', 'neutron.wsgi.api:application', PORTS['neutron'],
                 {'OS_NEUTRON_CONFIG_DIR': os.path.join(ETC, 'neutron'),
                  'OS_NEUTRON_CONFIG_FILES': 'neutron.conf'}),
        gunicorn('nova-api', 'nova.wsgi.osapi_compute:application',
                 PORTS['nova-api'], nova_env),
        gunicorn('vmbeam-api', 'nova_vmbeam.wsgi.api:application',
                 PORTS['vmbeam-api'],
                 {'OS_VMBEAM_API_CONFIG_FILES': conf_path(
                     'vmbeam', 'vmbeam-api.conf')}),
        Service('nova-conductor', [venv_bin('nova-conductor'),
                                   '--config-file', nova_conf]),
        Service('nova-scheduler', [venv_bin('nova-scheduler'),
                                   '--config-file', nova_conf]),
        Service('nova-compute', as_compute_user([
            venv_bin('nova-compute'), '--config-file',
            conf_path('nova', 'nova-compute.conf')]),
            env={'HOME': os.path.join(DATA, 'nova')}),
        # Started only with VMBEAM_CLOUD_PLAIN_COMPUTE=1; always stopped.
        Service('nova-compute-plain', [
            venv_bin('nova-compute'), '--config-file',
            conf_path('nova', 'nova-compute-plain.conf')]),
    ]


def service_named(sec, name):
    for service in services(sec):
        if service.name == name:
            return service
    raise CloudError('no service %s; the services are: %s' % (
        name, ', '.join(s.name for s in services(sec))))


# --- the steps of start ------------------------------------------------------

def mysql(sql, database=None):
    argv = ['mariadb', '--socket=' + MYSQL_SOCK,
            '-uroot', '-e', sql]
    if database:
        argv.append(database)
    return run(argv, 'MariaDB refused the statement; see %s.' %
               os.path.join(LOGS, 'mariadb.log'))


def mariadb_ready():
    """True once MariaDB answers a query on its socket.

    The socket file alone says too little: a server killed earlier leaves
    it behind, and a starting server creates it before it accepts.
    """
    if not os.path.exists(MYSQL_SOCK):
        return False
    proc = subprocess.run(['mariadb', '--socket=' + MYSQL_SOCK, '-uroot',
                           '--connect-timeout=5', '-e', 'SELECT 1'],
                          capture_output=True)
    return proc.returncode == 0


def init_mariadb():
    datadir = os.path.join(DATA, 'mysql')
    os.makedirs(os.path.dirname(MYSQL_SOCK), exist_ok=True)
    shutil.chown(os.path.dirname(MYSQL_SOCK), 'mysql', 'mysql')
    if os.path.isdir(os.path.join(datadir, 'mysql')):
        return
    os.makedirs(datadir, exist_ok=True)
    shutil.chown(datadir, 'mysql', 'mysql')
    run(['mariadb-install-db', '--no-defaults', '--datadir=' + datadir,
         '--user=mysql', '--auth-root-authentication-method=socket',
         '--skip-test-db'],
        'Is mariadb-server installed? tools/run-cloud.sh installs it.')


def init_databases(sec):
    pw = sec['database']
    statements = []
    for db in ('keystone', 'placement', 'glance', 'neutron', 'nova_api',
               'nova', 'nova_cell0'):
        statements.append('CREATE DATABASE IF NOT EXISTS %s' % db)
    for user, dbs in (('keystone', ['keystone']),
                      ('placement', ['placement']),
                      ('glance', ['glance']), ('neutron', ['neutron']),
                      ('nova', ['nova_api', 'nova', 'nova_cell0'])):
        statements.append("CREATE USER IF NOT EXISTS '%s'@'%s' "
                          "IDENTIFIED BY '%s'" % (user, HOST, pw))
        for db in dbs:
            statements.append("GRANT ALL ON %s.* TO '%s'@'%s'" % (
                db, user, HOST))
    mysql('; '.join(statements))


def init_rabbitmq(sec):
    base = os.path.join(DATA, 'rabbitmq')
    os.makedirs(base, exist_ok=True)
    cookie = os.path.join(base, '.erlang.cookie')
    if not os.path.exists(cookie):
        fd = os.open(cookie, os.O_WRONLY | os.O_CREAT, 0o400)
        with os.fdopen(fd, 'w') as f:
            f.write(sec['erlang_cookie'])
    with open(os.path.join(base, 'enabled_plugins'), 'w') as f:
        f.write('[].\n')


def rabbitmq_ready(service):
    def ready():
        return _port_up(PORTS['rabbitmq']) and 'Starting broker... completed' \
            in _tail(service.logfile, 200)
    return ready


def init_rabbit_user(sec, service):
    ctl = ['/usr/lib/rabbitmq/bin/rabbitmqctl', '-n',
           service.env['RABBITMQ_NODENAME']]
    env = dict(os.environ, **service.env)
    users = run(ctl + ['list_users', '-q'], 'rabbitmqctl failed', env=env)
    if 'vmbeam' not in users.split():
        run(ctl + ['add_user', 'vmbeam', sec['rabbit']], 'rabbitmqctl',
            env=env)
    run(ctl + ['set_permissions', 'vmbeam', '.*', '.*', '.*'], 'rabbitmqctl',
        env=env)
    if 'guest' in users.split():
        # The well-known guest login is not left on the bus.
        run(ctl + ['delete_user', 'guest'], 'rabbitmqctl', env=env)


def manage(argv, what):
    run(argv, '%s failed: see the message above; the database is at '
        '127.0.0.1:%d (tools/run-cloud.sh status).' % (
            what, PORTS['mariadb']))


def init_compute_user():
    """Let COMPUTE_USER run nova-compute: its sudo rule, its files."""
    try:
        pw = pwd.getpwnam(COMPUTE_USER)
    except KeyError:
        raise CloudError(
            'there is no user %s, whom nova-compute runs as: '
            'tools/run-cloud.sh start makes it (or name another with '
            'VMBEAM_CLOUD_COMPUTE_USER).' % COMPUTE_USER)
    helper = venv_bin('privsep-helper')
    # rlimit_core=user: sudo gives its command a core size limit of 0
    # (hard too) by default, which the generations' libvirtd would inherit
    # and then fail to lift for every QEMU it starts (libvirt sets the
    # limit of each QEMU it starts, max_core).
    rule = ('# tools/run-cloud.sh, the cloud in %s: nova-compute (%s) '
            'starts its privsep daemons\n'
            'Defaults!%s rlimit_core=user\n'
            '%s ALL=(root) NOPASSWD: %s *\n' % (
                CLOUD_DIR, COMPUTE_USER, helper, COMPUTE_USER, helper))
    staged = SUDOERS + '.new'   # sudo skips names with a dot
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o440)
    with os.fdopen(fd, 'w') as f:
        f.write(rule)
    run(['visudo', '-c', '-q', '-f', staged],
        'sudo refused the rule for %s; is sudo installed (bindep)?' %
        staged)
    os.replace(staged, SUDOERS)
    # Its configuration, as a package ships nova.conf: root's, readable by
    # nova's group (it holds the bus password).
    conf = conf_path('nova', 'nova-compute.conf')
    os.chown(conf, 0, pw.pw_gid)
    os.chmod(conf, 0o640)
    for path in (os.path.join(DATA, 'nova'), COMPUTE_STATE, COMPUTE_LOCKS):
        os.makedirs(path, exist_ok=True)
        give_to_compute_user(path, pw)


def give_to_compute_user(top, pw):
    """chown to ``pw`` what root:root owns below ``top`` (made before it ran).

    A nova-compute run as root earlier (an older cloud) left its state,
    generations included, as root's. Not what others own (QEMU's files,
    the RAM pool, the QEMU user's directories), and not
    vmbeam-pagemoverd's socket, pid and log. Root's daemons do not mind
    owning less: they are root.
    """
    def give(path):
        st = os.lstat(path)
        if st.st_uid == 0 and st.st_gid == 0 and not os.path.islink(path):
            os.chown(path, pw.pw_uid, pw.pw_gid)

    give(top)
    for directory, dirs, files in os.walk(top):
        for name in dirs + files:
            if directory == COMPUTE_STATE and name in (
                    'pagemoverd.sock', 'pagemoverd.pid', 'pagemoverd.log'):
                continue   # the daemon's own (its start lock is nova's)
            give(os.path.join(directory, name))


def init_keystone(sec):
    conf = ['--config-file', conf_path('keystone', 'keystone.conf')]
    km = venv_bin('keystone-manage')
    manage([km] + conf + ['db_sync'], 'keystone db_sync')
    for setup in ('fernet_setup', 'credential_setup'):
        manage([km] + conf + [setup, '--keystone-user', 'root',
                              '--keystone-group', 'root'], setup)
    manage([km] + conf + [
        'bootstrap', '--bootstrap-password', sec['admin'],
        '--bootstrap-admin-url', keystone_url() + '/v3/',
        '--bootstrap-internal-url', keystone_url() + '/v3/',
        '--bootstrap-public-url', keystone_url() + '/v3/',
        '--bootstrap-region-id', REGION], 'keystone bootstrap')


def write_client_files(sec):
    clouds = {'clouds': {'vmbeam': {
        'auth': {'auth_url': keystone_url() + '/v3',
                 'username': 'admin', 'password': sec['admin'],
                 'project_name': 'admin', 'user_domain_name': 'Default',
                 'project_domain_name': 'Default'},
        'region_name': REGION, 'identity_api_version': 3}}}
    path = os.path.join(CLOUD_DIR, 'clouds.yaml')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        json.dump(clouds, f, indent=2)   # JSON is YAML
    fd = os.open(os.path.join(CLOUD_DIR, 'openrc'),
                 os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write('# source this: the all-in-one cloud, as its admin\n'
                'export OS_CLIENT_CONFIG_FILE=%s\n'
                'export OS_CLOUD=vmbeam\n'
                'export PATH=%s:$PATH\n' % (
                    path, os.path.join(VENV, 'bin')))


def sdk():
    import openstack
    os.environ['OS_CLIENT_CONFIG_FILE'] = os.path.join(CLOUD_DIR,
                                                       'clouds.yaml')
    return openstack.connect(cloud='vmbeam')


def init_catalog(sec):
    conn = sdk()
    project = conn.identity.find_project('service') or \
        conn.identity.create_project(name='service', domain_id='default',
                                     description='the services\' project')
    admin_role = conn.identity.find_role('admin')
    service_role = conn.identity.find_role('service') or \
        conn.identity.create_role(name='service')
    for name, (stype, url) in CATALOG.items():
        user = conn.identity.find_user(name, domain_id='default')
        if user is None:
            user = conn.identity.create_user(
                name=name, password=sec['service'], domain_id='default')
        for role in (admin_role, service_role):
            conn.identity.assign_project_role_to_user(project, user, role)
        service = conn.identity.find_service(name)
        if service is None:
            service = conn.identity.create_service(name=name, type=stype)
        have = {e.interface for e in conn.identity.endpoints(
            service_id=service.id)}
        for interface in ('public', 'internal'):
            if interface not in have:
                conn.identity.create_endpoint(
                    service_id=service.id, interface=interface, url=url,
                    region_id=REGION)


def warm_up_neutron():
    """List networks once, so that Neutron's ORM mappers are configured.

    Neutron's get_ports reads Port.port_forwardings, a backref that exists
    only once SQLAlchemy has configured the mappers, which the first query
    of any kind does. With agents, something queries at start; with the
    API alone, a port listing (Nova's first call) would fail with 500.
    """
    conn = sdk()
    list(conn.network.networks())


def init_nova_databases():
    nm = [venv_bin('nova-manage'), '--config-file',
          conf_path('nova', 'nova.conf')]
    manage(nm + ['api_db', 'sync'], 'nova-manage api_db sync')
    manage(nm + ['cell_v2', 'map_cell0'], 'nova-manage cell_v2 map_cell0')
    cells = run(nm + ['cell_v2', 'list_cells'], 'nova-manage list_cells')
    if ' cell1 ' not in cells:
        manage(nm + ['cell_v2', 'create_cell', '--name', 'cell1'],
               'nova-manage cell_v2 create_cell')
    manage(nm + ['db', 'sync'], 'nova-manage db sync')


def discover_compute_host(compute, host=None, timeout=240.0):
    """Map the compute node ``host`` into cell1 once it is up."""
    conn = sdk()
    deadline = time.monotonic() + timeout
    host = host or socket.gethostname()
    while time.monotonic() < deadline:
        if not running_pid(compute):
            raise CloudError('nova-compute exited; its log %s ends:\n%s' % (
                compute.logfile, _tail(compute.logfile)))
        try:
            up = [s for s in conn.compute.services(binary='nova-compute')
                  if s.state == 'up' and s.host == host]
        except Exception as exc:   # keystoneauth's ConnectFailure and kin
            log('nova-api not answering yet: %s' % exc)
            up = []
        if up:
            host = up[0].host
            break
        time.sleep(2)
    else:
        raise CloudError('nova-compute did not report up within %.0f s; '
                         'see %s' % (timeout,
                                     os.path.join(LOGS, 'nova-compute.log')))
    run([venv_bin('nova-manage'), '--config-file',
         conf_path('nova', 'nova.conf'), 'cell_v2', 'discover_hosts'],
        'nova-manage cell_v2 discover_hosts failed')
    while time.monotonic() < deadline:
        if any(h.name.split('.')[0] == host.split('.')[0] or
               h.name == host for h in conn.compute.hypervisors()):
            return host
        time.sleep(2)
    raise CloudError('no hypervisor listed for %s within %.0f s' % (
        host, timeout))


def init_image_and_flavors():
    from vmbeam_devtools import guestimage
    built = guestimage.build()
    conn = sdk()
    if conn.image.find_image(IMAGE) is None:
        ids = {}
        for key, path, fmt in (('kernel', built.kernel, 'aki'),
                               ('ramdisk', built.initrd, 'ari')):
            image = conn.image.create_image(
                name='%s-%s' % (IMAGE, key), filename=path,
                disk_format=fmt, container_format=fmt, visibility='public',
                validate_checksum=False)
            ids[key] = image.id
        disk = os.path.join(DATA, 'root.raw')
        with open(disk, 'wb') as f:
            f.truncate(1 << 20)
        conn.image.create_image(
            name=IMAGE, filename=disk, disk_format='raw',
            container_format='bare', visibility='public',
            validate_checksum=False,
            kernel_id=ids['kernel'], ramdisk_id=ids['ramdisk'],
            # The test guest has no ACPI power button handler: a graceful
            # stop or soft reboot waits this long, then Nova powers off.
            os_shutdown_timeout=GUEST_SHUTDOWN_TIMEOUT,
            os_command_line=guestimage.kernel_cmdline(
                GUEST_WORK_MIB, GUEST_DIRTY_MIB_S, 500,
                verify_mib_s=2 * GUEST_WORK_MIB, hostname='nova-guest'))
        log('image %s uploaded to Glance' % IMAGE)
    for name, (ram, vcpus, disk, specs) in FLAVORS.items():
        flavor = conn.compute.find_flavor(name)
        if flavor is None:
            flavor = conn.compute.create_flavor(name=name, ram=ram,
                                                vcpus=vcpus, disk=disk)
            if specs:
                conn.compute.create_flavor_extra_specs(flavor, specs)


def start(args):
    t0 = time.monotonic()
    for d in (ETC, LOGS, RUN, DATA, os.path.join(DATA, 'locks'),
              os.path.join(DATA, 'vmbeam'),
              os.path.join(DATA, 'nova', 'instances'),
              os.path.join(DATA, 'nova-plain', 'instances'),
              os.path.join(DATA, 'neutron')):
        os.makedirs(d, exist_ok=True)
    os.chmod(CLOUD_DIR, 0o755)   # QEMU (libvirt-qemu) reaches instances
    sec = load_secrets()
    write_configs(sec)
    started = []
    by_name = {s.name: s for s in services(sec)}
    try:
        def up(name, ready=None):
            if start_service(by_name[name], ready):
                started.append(by_name[name])

        init_mariadb()
        up('mariadb', mariadb_ready)
        init_databases(sec)
        init_rabbitmq(sec)
        up('rabbitmq', rabbitmq_ready(by_name['rabbitmq']))
        init_rabbit_user(sec, by_name['rabbitmq'])
        up('memcached')
        init_keystone(sec)
        up('keystone')
        write_client_files(sec)
        init_catalog(sec)
        manage([venv_bin('placement-manage'), '--config-file',
                conf_path('placement', 'placement.conf'), 'db', 'sync'],
               'placement-manage db sync')
        up('placement')
        manage([venv_bin('glance-manage'), '--config-file',
                conf_path('glance', 'glance-api.conf'), 'db_sync'],
               'glance-manage db_sync')
        up('glance')
        manage([venv_bin('neutron-db-manage'), '--config-file',
                conf_path('neutron', 'neutron.conf'), 'upgrade', 'heads'],
               'neutron-db-manage upgrade heads')
        up('neutron')
        warm_up_neutron()
        init_nova_databases()
        up('nova-api')
        up('vmbeam-api')
        up('nova-conductor', lambda: True)
        up('nova-scheduler', lambda: True)
        init_compute_user()
        run(as_compute_user([venv_bin('vmbeam'), '--config-file',
                             conf_path('nova', 'nova-compute.conf'),
                             'pool', 'init']),
            'The RAM pool could not be made; see the message.')
        up('nova-compute', lambda: True)
        if PLAIN_COMPUTE:
            up('nova-compute-plain', lambda: True)
        host = discover_compute_host(by_name['nova-compute'])
        if PLAIN_COMPUTE:
            discover_compute_host(by_name['nova-compute-plain'], PLAIN_HOST)
        init_image_and_flavors()
    except BaseException:
        # Nothing half-started: what this call started is stopped again.
        for service in reversed(started):
            stop_service(service)
        raise
    log('cloud ready in %.0f s: compute host %s' % (
        time.monotonic() - t0, host))
    log('use it:  source %s/openrc; openstack server list' % CLOUD_DIR)
    log('logs in %s' % LOGS)


def stop(args):
    sec = load_secrets() if os.path.exists(SECRETS) else None
    if sec is None:
        log('nothing to stop: no cloud in %s' % CLOUD_DIR)
        return
    for service in reversed(services(sec)):
        stop_service(service)
    stop_generations()
    subprocess.run(['epmd', '-port', str(RABBIT_EPMD_PORT), '-kill'],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_generations():
    """Stop the hypervisor generations nova-compute started, guests too.

    They outlive nova-compute on purpose (a restart must not touch a
    guest); stopping the cloud is the one time they go.
    """
    state = os.path.join(DATA, 'vmbeam')
    victims = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        cmdline = _cmdline(int(entry))
        if cmdline and any(os.fsencode(state) in arg or
                           os.fsencode(RAM_POOL) in arg for arg in cmdline):
            victims.append(int(entry))
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if victims:
        log('stopped %d hypervisor and guest processes' % len(victims))
    # The guests' RAM files hold memory on tmpfs; no QEMU maps them now.
    if os.path.isdir(RAM_POOL):
        shutil.rmtree(RAM_POOL)
        log('freed the guest RAM pool %s' % RAM_POOL)


def status(args):
    if not os.path.exists(SECRETS):
        log('no cloud in %s' % CLOUD_DIR)
        return 1
    sec = load_secrets()
    rc = 0
    for service in services(sec):
        pid = running_pid(service)
        optional = service.name == 'nova-compute-plain'
        if optional and not (pid or PLAIN_COMPUTE):
            continue
        print('%-18s %-9s %s' % (service.name,
                                 'pid %d' % pid if pid else 'stopped',
                                 service.logfile))
        rc = rc or (0 if pid else 3)
    print('openrc: %s/openrc' % CLOUD_DIR)
    return rc


def restart(args):
    sec = load_secrets()
    service = service_named(sec, args[0])
    stop_service(service)
    start_service(service, lambda: True)


def main(argv):
    commands = {'start': start, 'stop': stop, 'status': status,
                'restart': restart}
    if not argv or argv[0] not in commands:
        print('usage: aio.py start|stop|status|restart SERVICE',
              file=sys.stderr)
        return 2
    try:
        return commands[argv[0]](argv[1:]) or 0
    except CloudError as exc:
        print('run-cloud: ERROR: %s' % exc, file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
