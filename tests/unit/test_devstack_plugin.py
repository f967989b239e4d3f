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

"""devstack/plugin.sh under bash, against a stub of devstack's functions.

The stub records every devstack call (iniset, setup_develop, run_process,
sudo, ...) to a file; iniset, iniget and the local.conf merges really edit
the ini files. The ``vmbeam`` command is a stub too, except ``compute-node
configure``, which is the real command (what devstack runs). File-system
work (the shim link, the state directory, a systemd drop-in) happens for
real inside a scratch directory.

TestDevstackRun runs the phases in stack.sh's order around the rest of
devstack's work on Nova's config (a model of stack.sh and lib/nova, below)
and checks the nova-cpu.conf nova-compute really starts with.

Pagemover daemons are modelled, not run: the n-vmbeam-pm service listens
on its socket once run_process starts it, and "vmbeam pool init|check"
starts a daemon of its own (on the socket the config it reads names, by
nova_vmbeam.pool.daemon.socket_path) unless one is registered there, as
the real client does on first use.
"""

import configparser
import getpass
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap

import testtools
import yaml

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
DEVSTACK = os.path.join(TOP, 'devstack')

STUB_FUNCTIONS = textwrap.dedent('''\
    # shellcheck shell=bash
    # A stub of the devstack functions the plugin (and the model of
    # stack.sh) uses; each records its call to $STUB_CALLS.
    record() { printf '%s\\n' "$*" >> "$STUB_CALLS"; }
    stub_helper() { "$STUB_PYTHON" "$STUB_HELPER" "$@"; }
    trueorfalse() {
        local default=$1 var=$2 value
        value=${!var:-$default}
        case ${value,,} in
            1|yes|true|on) echo True ;;
            *) echo False ;;
        esac
    }
    is_service_enabled() {
        local service
        for service in "$@"; do
            [[ ",$ENABLED_SERVICES," == *",$service,"* ]] && return 0
        done
        return 1
    }
    define_plugin() { record define_plugin "$@"; }
    echo_summary() { record echo_summary "$@"; }
    setup_develop() { record setup_develop "$@"; }
    pip_install() { record pip_install "$@"; }
    install_package() { record install_package "$@"; }
    run_process() {
        record run_process "$@"
        stub_helper service-started "$@"
    }
    stop_process() { record stop_process "$@"; }
    create_service_user() { record create_service_user "$@"; }
    get_or_create_service() { record get_or_create_service "$@"; }
    get_or_create_endpoint() { record get_or_create_endpoint "$@"; }
    write_uwsgi_config() { record write_uwsgi_config "$@"; }
    remove_uwsgi_config() { record remove_uwsgi_config "$@"; }
    wait_for_service() { record wait_for_service "$@"; }
    configure_keystone_authtoken_middleware() {
        record configure_keystone_authtoken_middleware "$@"
        iniset "$1" keystone_authtoken username "$2"
    }
    iniset_rpc_backend() {
        record iniset_rpc_backend "$@"
        iniset "$2" "$3" transport_url "rabbit://stackrabbit@ctl/${4:-}"
    }
    die() { shift; echo "die: $*" >&2; exit 1; }
    sudo() { record sudo "$@"; "$@"; }
    iniset() { record iniset "$@"; stub_helper iniset "$@"; }
    iniget() { stub_helper iniget "$@"; }
    inidelete() { record inidelete "$@"; stub_helper inidelete "$@"; }
    merge_config_file() {
        local real
        record merge_config_file "$@"
        real=$(eval echo "$3")
        stub_helper merge "$1" "$2" "$3" "$real"
    }
    merge_config_group() {
        local configfile
        record merge_config_group "$@"
        for configfile in $(stub_helper meta-files "$1" "$2"); do
            merge_config_file "$1" "$2" "$configfile"
        done
    }
    ''')

# The ini files, local.conf and the pagemover daemons behind the stub.
STUB_HELPER = textwrap.dedent('''\
    import configparser
    import os
    import shlex
    import socket
    import sys

    def load(path):
        ini = configparser.RawConfigParser(strict=False)
        ini.optionxform = str
        ini.read(path)
        return ini

    def save(ini, path):
        with open(path, 'w') as f:
            ini.write(f)

    def iniset(path, section, key, value):
        ini = load(path)
        if section != 'DEFAULT' and not ini.has_section(section):
            ini.add_section(section)
        ini.set(section, key, value)
        save(ini, path)

    def iniget(path, section, key):
        ini = load(path)
        if ini.has_option(section, key):
            print(ini.get(section, key))

    def inidelete(path, section, key):
        ini = load(path)
        if ini.has_option(section, key):
            ini.remove_option(section, key)
            save(ini, path)

    def meta_sections(local_conf, group):
        """{file expression: ini text} of local.conf's [[group|file]]."""
        sections, current = {}, None
        with open(local_conf) as f:
            for line in f:
                if line.startswith('[['):
                    name, _, target = line.strip()[2:-2].partition('|')
                    current = target if name == group else None
                    if current is not None:
                        sections.setdefault(current, '')
                elif current is not None:
                    sections[current] += line
        return sections

    def merge(local_conf, group, expression, path):
        ini = configparser.RawConfigParser(strict=False)
        ini.optionxform = str
        ini.read_string(meta_sections(local_conf, group)[expression])
        for section in ini.sections():
            for key, value in ini.items(section):
                iniset(path, section, key, value)

    def daemons():
        try:
            with open(os.environ['STUB_DAEMONS']) as f:
                return dict(line.split() for line in f)
        except FileNotFoundError:
            return {}

    def start_daemon(socket_path, by):
        with open(os.environ['STUB_DAEMONS'], 'a') as f:
            f.write('%s %s\\n' % (socket_path, by))

    def service_started(name, command, *user_group):
        if name != 'n-vmbeam-pm':
            return
        argv = shlex.split(command)
        path = argv[argv.index('--socket') + 1]
        if os.environ.get('STUB_PAGEMOVERD_FAILS'):
            return      # it exits at once, as a misconfigured daemon does
        start_daemon(path, 'service')
        # It listens: the socket file is there.
        socket.socket(socket.AF_UNIX).bind(path)

    def vmbeam(*argv):
        if 'compute-node' in argv:
            from nova_vmbeam import cli
            sys.exit(cli.main(list(argv)))
        if argv[-2:] not in (('pool', 'init'), ('pool', 'check')):
            return
        from oslo_config import cfg
        from nova_vmbeam.conf import vmbeam as vmbeam_conf
        from nova_vmbeam.pool import daemon
        conf = cfg.ConfigOpts()
        vmbeam_conf.register_opts(conf)
        files = [argv[i + 1] for i, a in enumerate(argv)
                 if a == '--config-file']
        conf([], project='nova-vmbeam', default_config_files=files)
        path = daemon.socket_path(conf)
        if path not in daemons():
            # The client starts one on first use (pool/daemon.py).
            start_daemon(path, 'vmbeam-' + argv[-1])
        with open(os.environ['STUB_CALLS'], 'a') as f:
            f.write('pool %s at %s\\n' % (argv[-1], path))

    commands = {'iniset': iniset, 'iniget': iniget, 'inidelete': inidelete,
                'merge': merge, 'service-started': service_started,
                'vmbeam': vmbeam,
                'meta-files': lambda *a: print('\\n'.join(
                    meta_sections(*a)))}
    commands[sys.argv[1]](*sys.argv[2:])
    ''')

VMBEAM_COMMAND = textwrap.dedent('''\
    #!/bin/bash
    printf '%s %s\\n' "$(basename "$0")" "$*" >> "$STUB_CALLS"
    exec "$STUB_PYTHON" "$STUB_HELPER" vmbeam "$@"
    ''')

RECORDING_COMMAND = textwrap.dedent('''\
    #!/bin/bash
    printf '%s %s\\n' "$(basename "$0")" "$*" >> "$STUB_CALLS"
    ''')

# stack.sh and lib/nova of devstack (master), the steps that touch a
# compute node's Nova config or run the plugin, in their order. Each step
# names the devstack code it stands for.
DEVSTACK_MODEL = textwrap.dedent('''\
    # shellcheck shell=bash disable=SC1090,SC1091,SC2016
    set -o errexit
    source "$1"                               # functions (the stub)
    source "$DEVSTACK_PLUGIN/settings"        # run_phase source
    local_conf=$2

    # stack_install_service nova; configure_nova:
    # create_nova_conf (rm -f $NOVA_CONF, then iniset) ...
    rm -f "$NOVA_CONF"
    iniset "$NOVA_CONF" DEFAULT state_path "$NOVA_STATE_PATH"
    iniset "$NOVA_CONF" DEFAULT instances_path "$NOVA_INSTANCES_PATH"
    iniset "$NOVA_CONF" DEFAULT transport_url "rabbit://stackrabbit@ctl//"
    iniset "$NOVA_CONF" database connection "mysql+pymysql://ctl/nova_cell0"
    # ... and configure_nova_hypervisor (nova_plugins/hypervisor-libvirt)
    iniset "$NOVA_CONF" libvirt virt_type "$LIBVIRT_TYPE"
    iniset "$NOVA_CONF" libvirt live_migration_uri \\
        "qemu+ssh://$STACK_USER@%s/system"
    iniset "$NOVA_CONF" DEFAULT compute_driver libvirt.LibvirtDriver

    source "$DEVSTACK_PLUGIN/plugin.sh" stack install   # run_phase

    # init_nova; async_runfunc configure_neutron_nova: it edits $NOVA_CONF
    # (iniset: sed -i, read, write a copy, rename) while the plugins'
    # post-config runs (DEVSTACK_PARALLEL=True by default). Modelled by
    # an interleaving that happens: its last edit read the file before
    # the post-config phase and renames its copy after it. (stack.sh's
    # own edits wait for it since devstack commit 06b73524.)
    cp "$NOVA_CONF" "$NOVA_CONF.neutron"
    iniset "$NOVA_CONF.neutron" neutron region_name RegionOne

    source "$DEVSTACK_PLUGIN/plugin.sh" stack post-config   # run_phase

    mv "$NOVA_CONF.neutron" "$NOVA_CONF"
    merge_config_group "$local_conf" post-config
    # async_wait configure_neutron_nova
    iniset "$NOVA_CONF" key_manager fixed_key "$FIXED_KEY"
    iniset "$NOVA_CPU_CONF" key_manager fixed_key "$FIXED_KEY"

    # start_nova -> start_nova_compute
    cp "$NOVA_CONF" "$NOVA_CPU_CONF"
    merge_config_file "$local_conf" post-config '$NOVA_CPU_CONF'
    iniset "$NOVA_CPU_CONF" DEFAULT transport_url \\
        "rabbit://stackrabbit@ctl/nova_cell1"
    inidelete "$NOVA_CPU_CONF" database connection
    if [[ "$LIBVIRT_TYPE" == qemu ]]; then
        iniset "$NOVA_CPU_CONF" workarounds libvirt_disable_apic True
    fi
    nova_compute=$NOVA_BIN_DIR/nova-compute
    run_process n-cpu "$nova_compute --config-file $NOVA_CPU_CONF" \\
        "$LIBVIRT_GROUP"

    source "$DEVSTACK_PLUGIN/plugin.sh" stack extra     # run_phase
    ''')

# The openstack command of a devstack with one VMBeam host, for
# tools/devstack-check.sh: servers, floating IPs, instance actions and the
# vmbeam plugin's rejuvenate/show, kept in $FAKE_CLOUD (JSON).
FAKE_OPENSTACK = textwrap.dedent('''\
    import json
    import os
    import sys

    path = os.environ['FAKE_CLOUD']
    cloud = {'generation': 1, 'actions': {}, 'addresses': 0}
    if os.path.exists(path):
        with open(path) as f:
            cloud = json.load(f)
    argv = sys.argv[1:]
    with open(os.environ['STUB_CALLS'], 'a') as f:
        f.write('openstack %s [OS_VMBEAM_CONFIG_FILE=%s]\\n' % (
            ' '.join(argv), os.environ.get('OS_VMBEAM_CONFIG_FILE')))

    def opt(flag):
        return argv[argv.index(flag) + 1]

    if argv[:2] == ['image', 'list']:
        print('cirros-0.6.3-x86_64-disk')
    elif argv[:2] == ['server', 'create']:
        cloud['actions'][argv[-1]] = [{'Request ID': 'req-0',
                                       'Action': 'create'}]
    elif argv[:2] == ['server', 'show']:
        print({'status': 'ACTIVE', 'OS-EXT-SRV-ATTR:host': 'compute-1',
               'id': 'uuid-' + argv[2]}[opt('-c')])
    elif argv[:3] == ['floating', 'ip', 'create']:
        cloud['addresses'] += 1
        print('172.24.4.%d' % cloud['addresses'])
    elif argv[:3] == ['hypervisor', 'rejuvenation', 'show']:
        print(cloud['generation'])
    elif argv[:2] == ['hypervisor', 'rejuvenate']:
        cloud['generation'] += 1
        guests = []
        for name, actions in cloud['actions'].items():
            if not os.environ.get('FAKE_NO_ACTIONS'):
                actions.insert(0, {'Request ID': 'req-%d' % cloud[
                    'generation'], 'Action': 'vmbeam-rejuvenate'})
            guests.append({'uuid': 'uuid-' + name, 'state': 'moved',
                           'mover': os.environ.get('FAKE_MOVER',
                                                   'zerocopy'),
                           'downtime_ms': 2.5, 'total_ms': 40.0,
                           'transferred_bytes': 299008, 'error': None})
        print(json.dumps({'run_id': 'run-1', 'state': 'completed',
                          'from_generation': cloud['generation'] - 1,
                          'to_generation': cloud['generation'],
                          'guests': guests}))
    elif argv[:3] == ['server', 'event', 'list']:
        print(json.dumps(cloud['actions'][argv[3]]))
    elif argv[:3] == ['server', 'event', 'show']:
        print(json.dumps({'events': [{'event': 'compute_vmbeam_move',
                                      'result': 'Success'}]}))
    with open(path, 'w') as f:
        json.dump(cloud, f)
    ''')


class DevstackPluginTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.root = tempfile.mkdtemp(prefix='vmbeam-devstack-')
        self.addCleanup(shutil.rmtree, self.root, True)
        self.calls_file = os.path.join(self.root, 'calls')
        self.stub = self.add_file('stub-functions', STUB_FUNCTIONS)
        self.helper = self.add_file('stub-helper.py', STUB_HELPER)
        self.bin = os.path.join(self.root, 'bin')
        os.mkdir(self.bin)
        self.command('make')
        self.command('vmbeam', VMBEAM_COMMAND)
        self.project = self.path('opt/stack/nova-vmbeam')
        self.nova = self.path('opt/stack/nova')
        os.makedirs(os.path.join(self.nova, 'nova', 'virt'))
        self.nova_conf = self.path('etc/nova/nova.conf')
        self.conf = self.path('etc/nova/nova-cpu.conf')
        os.makedirs(os.path.dirname(self.conf))
        self.systemd = self.path('etc/systemd/system')
        os.makedirs(self.systemd)
        self.prefix = self.path('usr/local')
        self.state = self.path('var/lib/nova-vmbeam')
        self.socket = os.path.join(self.state, 'pagemover.sock')
        self.pool = self.path('dev/shm/nova-vmbeam')
        os.makedirs(self.project)
        self.env = {
            'PATH': self.bin + ':' + os.environ['PATH'],
            'HOME': self.root,
            'STUB_CALLS': self.calls_file,
            'STUB_HELPER': self.helper,
            'STUB_DAEMONS': self.path('daemons'),
            'STUB_PYTHON': sys.executable,
            'PYTHON': sys.executable,      # nova is not importable here
            'DEST': self.path('opt/stack'),
            'NOVA_DIR': self.nova,
            'NOVA_BIN_DIR': self.path('opt/stack/data/venv/bin'),
            'NOVA_CONF': self.nova_conf,
            'NOVA_CPU_CONF': self.conf,
            'NOVA_STATE_PATH': self.path('opt/stack/data/nova'),
            'NOVA_INSTANCES_PATH': self.path('opt/stack/data/nova/'
                                             'instances'),
            'ENABLED_SERVICES': 'n-cpu,n-api,key',
            'VIRT_DRIVER': 'libvirt',
            'LIBVIRT_TYPE': 'kvm',
            'LIBVIRT_GROUP': 'libvirt',
            # stack.sh runs as STACK_USER: here, whoever runs the tests
            # (the plugin gives it its config directory).
            'STACK_USER': getpass.getuser(),
            'VMBEAM_API_CONF_DIR': self.path('etc/vmbeam'),
            'SYSTEMD_DIR': self.systemd,
            'FIXED_KEY': 'bae3516c',
            'NOVA_VMBEAM_NATIVE_PREFIX': self.prefix,
            'NOVA_VMBEAM_STATE_PATH': self.state,
            'NOVA_VMBEAM_RAM_POOL': self.pool,
            'NOVA_VMBEAM_BIN': os.path.join(self.bin, 'vmbeam'),
            'NOVA_VMBEAM_PAGEMOVER_START_TIMEOUT': '1',
        }

    def path(self, relative):
        return os.path.join(self.root, relative)

    def command(self, name, script=RECORDING_COMMAND):
        path = os.path.join(self.bin, name)
        with open(path, 'w') as f:
            f.write(script)
        os.chmod(path, 0o755)
        return path

    def add_file(self, relative, text=''):
        path = os.path.join(self.root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(text)
        return path

    def add_shim(self, where='shim'):
        return self.add_file(os.path.join(
            'opt/stack/nova-vmbeam', where, 'nova/virt/vmbeam/__init__.py'),
            'from nova_vmbeam.virt.driver import VMBeamDriver\n')

    def add_daemon(self):
        daemon = self.add_file('usr/local/sbin/vmbeam-pagemoverd')
        os.chmod(daemon, 0o755)
        return daemon

    def run_phase(self, *phase, **env):
        """Source settings, then plugin.sh with ``phase``.

        As stack.sh does it, with errexit on.
        """
        script = ('set -o errexit\nsource "$1"\nsource "$2/settings"\n'
                  'shift 2\nsource "$DEVSTACK_PLUGIN/plugin.sh" "$@"\n')
        full_env = dict(self.env, DEVSTACK_PLUGIN=DEVSTACK, **env)
        return subprocess.run(['bash', '-c', script, 'stack', self.stub,
                               DEVSTACK] + list(phase),
                              env=full_env, capture_output=True, text=True,
                              timeout=120)

    def calls(self):
        try:
            with open(self.calls_file) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def daemons(self):
        """{socket: who started the daemon} of the modelled pagemovers."""
        try:
            with open(self.env['STUB_DAEMONS']) as f:
                return dict(line.split() for line in f)
        except FileNotFoundError:
            return {}

    def ini(self, path=None):
        ini = configparser.RawConfigParser(strict=False)
        ini.optionxform = str
        ini.read(path or self.conf)
        return ini

    def read(self, path):
        with open(path) as f:
            return f.read()

    def assert_vmbeam_settings(self, ini, virt_type):
        """What the configure command writes for the job's settings."""
        self.assertEqual('vmbeam.VMBeamDriver',
                         ini.get('DEFAULT', 'compute_driver'))
        self.assertEqual('unique', ini.get('libvirt', 'sysinfo_serial'))
        self.assertEqual(virt_type, ini.get('libvirt', 'virt_type'))
        self.assertEqual(self.state, ini.get('vmbeam', 'state_path'))
        self.assertEqual(self.pool, ini.get('vmbeam', 'ram_pool_path'))
        self.assertEqual('256', ini.get('vmbeam', 'ram_pool_reserve_mib'))
        self.assertEqual('libvirt-qemu', ini.get('vmbeam', 'qemu_user'))
        self.assertEqual('zerocopy', ini.get('vmbeam', 'default_mover'))
        self.assertEqual(self.socket, ini.get('vmbeam', 'pagemoverd_socket'))
        self.assertEqual('true', ini.get('vmbeam_aging', 'enabled'))
        self.assertEqual('report', ini.get('vmbeam_aging', 'action'))
        self.assertEqual(self.env['NOVA_INSTANCES_PATH'],
                         ini.get('vmbeam_aging', 'instances_path'))

    def dropin(self):
        return os.path.join(self.systemd, 'devstack@n-cpu.service.d',
                            'nova-vmbeam.conf')


class TestInstall(DevstackPluginTestCase):

    def test_installs_package_and_builds_native_parts(self):
        self.add_shim()
        self.add_file('opt/stack/nova-vmbeam/native/Makefile',
                      'all:\n\ttrue\ninstall: all\n\ttrue\n')
        out = self.run_phase('stack', 'install')
        self.assertEqual(0, out.returncode, out.stderr)
        calls = self.calls()
        self.assertIn('setup_develop %s' % self.project, calls)
        native = os.path.join(self.project, 'native')
        self.assertIn('make -C %s' % native, calls)
        self.assertIn('sudo make -C %s install PREFIX=%s' %
                      (native, self.prefix), calls)
        self.assertLess(calls.index('make -C %s' % native),
                        calls.index('sudo make -C %s install PREFIX=%s' %
                                    (native, self.prefix)))

    def test_native_makefile_without_install_target_builds_only(self):
        self.add_shim()
        self.add_file('opt/stack/nova-vmbeam/native/Makefile', 'all:\n')
        out = self.run_phase('stack', 'install')
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertIn('has no install target', out.stdout)
        native = os.path.join(self.project, 'native')
        self.assertEqual(['make -C %s' % native],
                         [c for c in self.calls() if ' -C ' in c])

    def test_without_native_sources_installs_the_package_only(self):
        self.add_shim()
        out = self.run_phase('stack', 'install')
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertIn('the pagemover daemon is not built', out.stdout)
        self.assertFalse([c for c in self.calls() if 'make' in c])

    def test_native_build_can_be_turned_off(self):
        self.add_shim()
        self.add_file('opt/stack/nova-vmbeam/native/Makefile')
        out = self.run_phase('stack', 'install',
                             NOVA_VMBEAM_BUILD_NATIVE='False')
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertFalse([c for c in self.calls() if 'make' in c])

    def test_nothing_happens_where_nova_compute_does_not_run(self):
        for phase in (('stack', 'install'), ('stack', 'post-config'),
                      ('stack', 'extra')):
            out = self.run_phase(*phase, ENABLED_SERVICES='n-api')
            self.assertEqual(0, out.returncode, out.stderr)
        self.assertEqual(['define_plugin nova-vmbeam'] * 3, self.calls())

    def test_links_shim_and_configures_nova_conf(self):
        self.add_shim()
        self.add_file('etc/nova/nova.conf', '[DEFAULT]\n# by devstack\n'
                      'compute_driver = libvirt.LibvirtDriver\n')
        out = self.run_phase('stack', 'install')
        self.assertEqual(0, out.returncode, out.stderr)
        link = os.path.join(self.nova, 'nova/virt/vmbeam')
        self.assertEqual(os.path.join(self.project, 'shim/nova/virt/vmbeam'),
                         os.readlink(link))
        configure = [c for c in self.calls() if 'compute-node' in c]
        self.assertEqual(
            ['vmbeam compute-node configure --nova-conf %s --virt-type kvm '
             '--state-path %s --ram-pool-path %s --ram-pool-reserve-mib 256 '
             '--qemu-user libvirt-qemu --mover zerocopy --pagemoverd-socket '
             '%s --instances-path %s --aging-enabled True --aging-action '
             'report --aging-max-concurrent 1 --privsep-helper-command sudo '
             '%s/privsep-helper --config-file %s' % (
                 self.nova_conf, self.state, self.pool, self.socket,
                 self.env['NOVA_INSTANCES_PATH'],
                 os.path.dirname(shutil.which(
                     'vmbeam', path=self.env['PATH'])), self.nova_conf)],
            configure)
        ini = self.ini(self.nova_conf)
        self.assert_vmbeam_settings(ini, virt_type='kvm')
        self.assertFalse(ini.has_option('vmbeam_aging', 'backend_url'))
        self.assertIn('# by devstack', self.read(self.nova_conf))
        # nova-compute runs as the stack user; its privsep daemon starts
        # through sudo, the helper by full path.
        self.assertTrue(ini.get('vmbeam_privsep', 'helper_command')
                        .startswith('sudo /'))
        # nova-cpu.conf is start_nova_compute's to build.
        self.assertFalse(os.path.exists(self.conf))

    def test_windows_and_backend_url_when_set(self):
        self.add_shim()
        out = self.run_phase(
            'stack', 'install',
            NOVA_VMBEAM_AGING_WINDOWS='Sat 02:00-04:00',
            NOVA_VMBEAM_AGING_BACKEND_URL='etcd3+http://ctl:2379')
        self.assertEqual(0, out.returncode, out.stderr)
        ini = self.ini(self.nova_conf)
        self.assertEqual('Sat 02:00-04:00',
                         ini.get('vmbeam_aging', 'maintenance_windows'))
        self.assertEqual('etcd3+http://ctl:2379',
                         ini.get('vmbeam_aging', 'backend_url'))

    def test_a_bad_setting_stops_stack_sh_and_changes_nothing(self):
        self.add_shim()
        before = self.add_file('etc/nova/nova.conf', '[DEFAULT]\ndebug = '
                               'True\n')
        out = self.run_phase('stack', 'install',
                             NOVA_VMBEAM_AGING_ACTION='reboot')
        self.assertNotEqual(0, out.returncode)
        self.assertIn("--aging-action 'reboot' is not a valid "
                      "[vmbeam_aging] action", out.stderr)
        self.assertIn('NOVA_VMBEAM_* variable', out.stderr)
        self.assertEqual('[DEFAULT]\ndebug = True\n', self.read(before))

    def test_only_the_libvirt_virt_driver_can_run_vmbeam(self):
        self.add_shim()
        out = self.run_phase('stack', 'install', VIRT_DRIVER='ironic')
        self.assertNotEqual(0, out.returncode)
        self.assertIn('VIRT_DRIVER=libvirt', out.stderr)
        self.assertFalse(os.path.exists(self.nova_conf))

    def test_shim_in_a_nova_vmbeam_shim_directory(self):
        self.add_shim('nova-vmbeam-shim')
        out = self.run_phase('stack', 'install')
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertEqual(
            os.path.join(self.project, 'nova-vmbeam-shim/nova/virt/vmbeam'),
            os.readlink(os.path.join(self.nova, 'nova/virt/vmbeam')))

    def test_nova_not_from_source_gets_the_shim_by_pip(self):
        self.add_shim()
        shutil.rmtree(os.path.join(self.nova, 'nova'))
        out = self.run_phase('stack', 'install')
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertIn('pip_install %s' % os.path.join(self.project, 'shim'),
                      self.calls())

    def test_installed_shim_is_left_alone(self):
        fake_python = self.command('python-with-shim', '#!/bin/bash\n'
                                   'exit 0\n')
        out = self.run_phase('stack', 'install', PYTHON=fake_python)
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertIn('importable already', out.stdout)
        self.assertFalse(os.path.lexists(
            os.path.join(self.nova, 'nova/virt/vmbeam')))
        self.assertEqual('vmbeam.VMBeamDriver',
                         self.ini(self.nova_conf).get('DEFAULT',
                                                      'compute_driver'))

    def test_missing_shim_names_the_fix_and_changes_nothing(self):
        out = self.run_phase('stack', 'install')
        self.assertNotEqual(0, out.returncode)
        self.assertIn('NOVA_VMBEAM_SHIM_DIR', out.stderr)
        self.assertFalse(os.path.exists(self.nova_conf))
        self.assertFalse([c for c in self.calls() if 'compute-node' in c])

    def test_missing_vmbeam_command_names_the_fix(self):
        self.add_shim()
        out = self.run_phase('stack', 'install',
                             NOVA_VMBEAM_BIN='no-such-vmbeam')
        self.assertNotEqual(0, out.returncode)
        self.assertIn('no-such-vmbeam not found; did stack install run?',
                      out.stderr)


class TestPostConfig(DevstackPluginTestCase):

    def setUp(self):
        super().setUp()
        self.add_shim()
        out = self.run_phase('stack', 'install')
        self.assertEqual(0, out.returncode, out.stderr)
        os.unlink(self.calls_file)

    def test_nova_compute_runs_as_the_stack_user_through_privsep(self):
        out = self.run_phase('stack', 'post-config', USER_UNITS='True')
        self.assertEqual(0, out.returncode, out.stderr)
        # No drop-in makes it root; its privsep daemon starts with the
        # stack user's sudo, the helper named by full path.
        self.assertFalse(os.path.exists(self.dropin()))
        helper = shlex.split(self.ini(self.nova_conf).get(
            'vmbeam_privsep', 'helper_command'))
        self.assertEqual('sudo', helper[0])
        self.assertTrue(os.path.isabs(helper[1]), helper)
        self.assertEqual('privsep-helper', os.path.basename(helper[1]))
        self.assertEqual(['--config-file', self.nova_conf], helper[2:])
        # Its state directory is the stack user's.
        self.assertEqual(os.getuid(), os.stat(self.state).st_uid)
        self.assertFalse([c for c in self.calls()
                          if c.startswith('sudo') and 'pool init' in c])

    def test_without_the_service_pool_init_starts_the_one_daemon(self):
        out = self.run_phase('stack', 'post-config')
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertTrue(os.path.isdir(self.state))
        calls = self.calls()
        self.assertIn('vmbeam --config-file %s pool init' % self.nova_conf,
                      calls)
        self.assertFalse([c for c in calls if c.startswith('run_process')])
        # On the socket nova.conf names, so nova-compute finds it there.
        self.assertEqual({self.socket: 'vmbeam-init'}, self.daemons())

    def test_pagemover_service_starts_before_pool_init_and_serves_it(self):
        daemon = self.add_daemon()
        out = self.run_phase('stack', 'post-config',
                             ENABLED_SERVICES='n-cpu,n-vmbeam-pm')
        self.assertEqual(0, out.returncode, out.stderr)
        calls = self.calls()
        runs = [c for c in calls if c.startswith('run_process')]
        self.assertEqual(
            ['run_process n-vmbeam-pm %s --socket %s --pool-dir %s --owner '
             'libvirt-qemu --reserve-mib 256 --client-uid %d --pidfile '
             '%s/pagemover.pid root root' % (
                 daemon, self.socket, self.pool, os.getuid(), self.state)],
            runs)
        init = 'vmbeam --config-file %s pool init' % self.nova_conf
        self.assertLess(calls.index(runs[0]), calls.index(init))
        self.assertIn('pool init at %s' % self.socket, calls)
        self.assertEqual({self.socket: 'service'}, self.daemons())

    def test_pagemover_service_that_does_not_listen_names_the_fix(self):
        self.add_daemon()
        out = self.run_phase('stack', 'post-config',
                             ENABLED_SERVICES='n-cpu,n-vmbeam-pm',
                             STUB_PAGEMOVERD_FAILS='1')
        self.assertNotEqual(0, out.returncode)
        self.assertIn('journalctl -u devstack@n-vmbeam-pm', out.stderr)
        self.assertFalse([c for c in self.calls() if 'pool init' in c])

    def test_pagemover_service_without_daemon_names_the_fix(self):
        out = self.run_phase('stack', 'post-config',
                             ENABLED_SERVICES='n-cpu,n-vmbeam-pm')
        self.assertNotEqual(0, out.returncode)
        self.assertIn('NOVA_VMBEAM_BUILD_NATIVE=True', out.stderr)


class TestVMBeamAPI(DevstackPluginTestCase):
    """The vmbeam-api service: configured, registered, started."""

    def api_env(self, services):
        return dict(
            ENABLED_SERVICES=services,
            SERVICE_PASSWORD='svc-secret',
            KEYSTONE_SERVICE_URI='http://ctl/identity',
            SERVICE_DOMAIN_NAME='Default', SERVICE_PROJECT_NAME='service',
            REGION_NAME='RegionOne', SERVICE_PROTOCOL='http',
            SERVICE_HOST='ctl', SERVICE_TIMEOUT='60',
            ENABLE_DEBUG_LOG_LEVEL='True')

    def test_controller_gets_the_api_configured_registered_and_started(self):
        env = self.api_env('n-api,key,vmbeam-api')
        out = self.run_phase('stack', 'post-config', **env)
        self.assertEqual(0, out.returncode, out.stderr)
        conf = configparser.ConfigParser()
        conf.read(self.path('etc/vmbeam/vmbeam-api.conf'))
        # nova-compute's bus: its cell's, as start_nova_compute sets it.
        self.assertEqual('rabbit://stackrabbit@ctl/nova_cell1',
                         conf['DEFAULT']['transport_url'])
        self.assertEqual(('password', 'vmbeam', 'svc-secret',
                          'http://ctl/identity', 'service'),
                         tuple(conf['nova'][k] for k in (
                             'auth_type', 'username', 'password',
                             'auth_url', 'project_name')))
        self.assertEqual('vmbeam', conf['keystone_authtoken']['username'])
        self.assertEqual(self.path('etc/vmbeam/policy.yaml'),
                         conf['oslo_policy']['policy_file'])
        calls = self.calls()
        ini = self.path('etc/vmbeam/vmbeam-api-uwsgi.ini')
        for call in ('create_service_user vmbeam admin',
                     'get_or_create_endpoint hypervisor-rejuvenation '
                     'RegionOne http://ctl/rejuvenation',
                     'write_uwsgi_config %s nova_vmbeam.wsgi.api:'
                     'application /rejuvenation  vmbeam-api' % ini):
            self.assertIn(call, calls)
        self.assertTrue([c for c in calls if c.startswith(
            'get_or_create_service vmbeam hypervisor-rejuvenation')])
        # Nothing of a compute node here.
        self.assertFalse([c for c in calls if 'pool init' in c])

        out = self.run_phase('stack', 'extra', **env)
        self.assertEqual(0, out.returncode, out.stderr)
        runs = [c for c in self.calls() if c.startswith('run_process')]
        self.assertEqual(1, len(runs))
        self.assertTrue(runs[0].startswith('run_process vmbeam-api '))
        self.assertTrue(runs[0].endswith('--ini %s' % ini))
        self.assertIn('wait_for_service 60 http://ctl/rejuvenation',
                      self.calls())
        out = self.run_phase('unstack', **env)
        self.assertIn('stop_process vmbeam-api', self.calls())

    def test_without_the_service_there_is_no_api(self):
        out = self.run_phase('stack', 'post-config',
                             **self.api_env('n-api,key'))
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertFalse([c for c in self.calls()
                          if 'vmbeam-api' in c or 'service_user' in c])


class TestExtraUnstackClean(DevstackPluginTestCase):

    def test_extra_checks_nova_cpu_conf_movers_and_pool(self):
        self.add_file('etc/nova/nova-cpu.conf', '[DEFAULT]\ncompute_driver '
                      '= vmbeam.VMBeamDriver\n')
        out = self.run_phase('stack', 'extra')
        self.assertEqual(0, out.returncode, out.stderr)
        calls = self.calls()
        self.assertIn('vmbeam --config-file %s movers' % self.conf, calls)
        self.assertIn('vmbeam --config-file %s pool check' % self.conf,
                      calls)

    def test_extra_stops_when_nova_compute_runs_another_driver(self):
        self.add_file('etc/nova/nova-cpu.conf', '[DEFAULT]\ncompute_driver '
                      '= libvirt.LibvirtDriver\n')
        out = self.run_phase('stack', 'extra')
        self.assertNotEqual(0, out.returncode)
        self.assertIn('compute_driver = libvirt.LibvirtDriver, not '
                      'vmbeam.VMBeamDriver', out.stderr)
        self.assertIn('local.conf', out.stderr)

    def test_unstack_stops_the_pagemover(self):
        out = self.run_phase('unstack')
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertIn('stop_process n-vmbeam-pm', self.calls())

    def test_clean_removes_link_pool_and_state(self):
        self.add_shim()
        self.assertEqual(0, self.run_phase('stack', 'install').returncode)
        self.assertEqual(0, self.run_phase('stack',
                                           'post-config').returncode)
        os.makedirs(self.pool)
        out = self.run_phase('clean')
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertFalse(os.path.lexists(
            os.path.join(self.nova, 'nova/virt/vmbeam')))
        self.assertFalse(os.path.exists(self.pool))
        self.assertFalse(os.path.exists(self.state))
        # The shim itself is untouched.
        self.assertTrue(os.path.exists(os.path.join(
            self.project, 'shim/nova/virt/vmbeam/__init__.py')))


def zuul_job():
    with open(os.path.join(TOP, '.zuul.yaml')) as f:
        config = yaml.safe_load(f)
    jobs = {e['job']['name']: e['job'] for e in config if 'job' in e}
    return config, jobs['nova-vmbeam-devstack']


class TestDevstackRun(DevstackPluginTestCase):
    """The plugin's phases inside devstack's own order (DEVSTACK_MODEL)."""

    def setUp(self):
        super().setUp()
        self.add_shim()
        self.add_daemon()

    def run_devstack(self, localrc=None, post_config=None, services=None):
        """stack.sh with this local.conf; the gate job's by default."""
        _config, job = zuul_job()
        localrc = job['vars']['devstack_localrc'] if localrc is None \
            else localrc
        post_config = job['vars']['devstack_local_conf']['post-config'] \
            if post_config is None else post_config
        services = job['vars']['devstack_services'] if services is None \
            else services
        local_conf = ['[[local|localrc]]'] + [
            '%s=%s' % item for item in localrc.items()]
        for target, sections in post_config.items():
            local_conf.append('[[post-config|%s]]' % target)
            for section, options in sections.items():
                local_conf.append('[%s]' % section)
                local_conf += ['%s = %s' % item for item in options.items()]
        path = self.add_file('opt/stack/devstack/local.conf',
                             '\n'.join(local_conf) + '\n')
        enabled = ['n-cpu', 'n-api', 'n-cond', 'n-sch', 'placement-api'] + [
            name for name, on in services.items() if on]
        env = dict(self.env, DEVSTACK_PLUGIN=DEVSTACK,
                   ENABLED_SERVICES=','.join(enabled),
                   **{k: str(v) for k, v in localrc.items()})
        out = subprocess.run(['bash', '-c', DEVSTACK_MODEL, 'stack.sh',
                              self.stub, path], env=env,
                             capture_output=True, text=True, timeout=180)
        self.assertEqual(0, out.returncode, out.stdout + out.stderr)
        return out

    def nova_compute(self):
        """The config file and user of the nova-compute devstack starts."""
        runs = [c for c in self.calls() if c.startswith('run_process n-cpu')]
        self.assertEqual(1, len(runs), runs)
        argv = shlex.split(runs[0])
        config_file = argv[argv.index('--config-file') + 1]
        user = 'stack'
        if os.path.exists(self.dropin()):
            dropin = configparser.ConfigParser()
            dropin.read(self.dropin())
            user = dropin.get('Service', 'User', fallback=user)
        return config_file, user

    def test_nova_compute_starts_with_the_vmbeam_settings(self):
        self.run_devstack()
        config_file, user = self.nova_compute()
        self.assertEqual(self.conf, config_file)
        ini = self.ini(config_file)
        self.assert_vmbeam_settings(ini, virt_type='qemu')
        # The job's local.conf post-config for nova-cpu.conf.
        self.assertEqual('10', ini.get('vmbeam_aging', 'interval'))
        # devstack's own settings are all there too.
        self.assertEqual('RegionOne', ini.get('neutron', 'region_name'))
        self.assertEqual('rabbit://stackrabbit@ctl/nova_cell1',
                         ini.get('DEFAULT', 'transport_url'))
        self.assertFalse(ini.has_option('database', 'connection'))
        # As devstack starts it: root's work is its privsep daemon's.
        self.assertEqual('stack', user)

    def test_one_pagemover_daemon_serves_the_pool(self):
        self.run_devstack()
        config_file, _user = self.nova_compute()
        socket = self.ini(config_file).get('vmbeam', 'pagemoverd_socket')
        # The service's daemon, on the socket nova-compute is told; pool
        # init and the extra phase's check talked to it and started none.
        self.assertEqual({socket: 'service'}, self.daemons())
        calls = self.calls()
        self.assertIn('pool init at %s' % socket, calls)
        self.assertIn('pool check at %s' % socket, calls)

    def test_without_the_service_pool_init_starts_the_one_daemon(self):
        self.run_devstack(services={'n-vmbeam-pm': False})
        config_file, _user = self.nova_compute()
        socket = self.ini(config_file).get('vmbeam', 'pagemoverd_socket')
        self.assertEqual({socket: 'vmbeam-init'}, self.daemons())
        self.assertFalse([c for c in self.calls()
                          if c.startswith('run_process n-vmbeam-pm')])

    def test_local_conf_post_config_wins_over_the_plugin(self):
        self.run_devstack(post_config={
            '$NOVA_CONF': {'vmbeam': {'default_mover': 'precopy'}},
            '$NOVA_CPU_CONF': {'vmbeam_aging': {'enabled': 'False'}}})
        ini = self.ini(self.nova_compute()[0])
        self.assertEqual('precopy', ini.get('vmbeam', 'default_mover'))
        self.assertEqual('False', ini.get('vmbeam_aging', 'enabled'))
        self.assertEqual('vmbeam.VMBeamDriver',
                         ini.get('DEFAULT', 'compute_driver'))


class TestDevstackCheck(DevstackPluginTestCase):
    """tools/devstack-check.sh against a fake openstack command."""

    def run_check(self, **env):
        self.add_file('opt/stack/devstack/openrc')
        fake = self.add_file('fake-openstack.py', FAKE_OPENSTACK)
        self.command('openstack', '#!/bin/bash\nexec "%s" "%s" "$@"\n' % (
            sys.executable, fake))
        self.command('ping', '#!/bin/bash\nexit 0\n')
        full_env = dict(self.env, DEVSTACK_DIR=self.path('opt/stack/devstack'),
                        FAKE_CLOUD=self.path('cloud.json'), **env)
        return subprocess.run(
            ['bash', os.path.join(TOP, 'tools', 'devstack-check.sh'), '2'],
            env=full_env, capture_output=True, text=True, timeout=120)

    def test_rejuvenates_vmbeam_ram_servers_through_the_operator_path(self):
        out = self.run_check()
        self.assertEqual(0, out.returncode, out.stdout + out.stderr)
        self.assertIn('OK: 2 servers moved in place', out.stdout)
        # The vmbeam plugin goes through vmbeam-api: no bus, no nova.conf.
        bus = ' [OS_VMBEAM_CONFIG_FILE=None]'
        calls = [c[:-len(bus)] for c in self.calls() if c.endswith(bus)]
        self.assertEqual(len(self.calls()), len(calls))
        flavor = [c.split()[-1] for c in calls if 'flavor create' in c][0]
        self.assertIn('openstack flavor set --property vmbeam:ram=true %s' %
                      flavor, calls)
        creates = [c for c in calls if 'server create' in c]
        self.assertEqual(2, len(creates))
        for create in creates:
            self.assertIn('--flavor %s ' % flavor, create)
        self.assertIn('openstack hypervisor rejuvenate compute-1 --wait -f '
                      'json', calls)
        self.assertEqual(2, len([c for c in calls
                                 if c.startswith('openstack server event '
                                                 'show')]))
        self.assertFalse([c for c in self.calls() if c.startswith('vmbeam')])
        # What it made is gone again.
        self.assertIn('openstack flavor delete %s' % flavor, calls)

    def test_ram_that_was_copied_fails(self):
        out = self.run_check(FAKE_MOVER='precopy')
        self.assertEqual(1, out.returncode)
        self.assertIn('moved by precopy, its RAM copied', out.stdout)

    def test_a_rejuvenation_without_instance_actions_fails(self):
        out = self.run_check(FAKE_NO_ACTIONS='1')
        self.assertEqual(1, out.returncode)
        self.assertIn('expected one new vmbeam-rejuvenate instance action',
                      out.stderr)


class TestZuulJob(testtools.TestCase):

    def test_job_enables_this_plugin_and_runs_the_check(self):
        config, job = zuul_job()
        self.assertEqual('devstack', job['parent'])
        self.assertIn('nova-vmbeam', job['vars']['devstack_plugins'])
        self.assertTrue(job['vars']['devstack_services']['n-vmbeam-pm'])
        project = [e['project'] for e in config if 'project' in e][0]
        self.assertIn('nova-vmbeam-devstack', project['check']['jobs'])
        with open(os.path.join(TOP, job['run'])) as f:
            playbook = yaml.safe_load(f)
        command = playbook[0]['tasks'][0]['ansible.builtin.command']['cmd']
        self.assertIn('/tools/devstack-check.sh', command)
        self.assertTrue(os.access(os.path.join(TOP, 'tools',
                                               'devstack-check.sh'),
                                  os.X_OK))
        # The plugin name devstack is told matches what it defines.
        with open(os.path.join(DEVSTACK, 'settings')) as f:
            self.assertIn('define_plugin nova-vmbeam', f.read())


class TestShellcheck(testtools.TestCase):

    def setUp(self):
        super().setUp()
        if not shutil.which('shellcheck'):
            self.skipTest('shellcheck is not installed; run '
                          'tools/install.sh (bindep.txt lists it)')

    def test_plugin_and_scripts_are_shellcheck_clean(self):
        scripts = [os.path.join(DEVSTACK, 'plugin.sh'),
                   os.path.join(DEVSTACK, 'settings'),
                   os.path.join(TOP, 'tools', 'devstack-check.sh')]
        out = subprocess.run(['shellcheck', '-s', 'bash'] + scripts,
                             capture_output=True, text=True)
        self.assertEqual(0, out.returncode, out.stdout + out.stderr)

    def test_the_stub_library_and_the_model_are_shellcheck_clean_too(self):
        for script in (STUB_FUNCTIONS, DEVSTACK_MODEL):
            out = subprocess.run(['shellcheck', '-s', 'bash', '-'],
                                 input=script, capture_output=True,
                                 text=True)
            self.assertEqual(0, out.returncode, out.stdout)
