"""devstack/plugin.sh run phase by phase under bash against a stub of
devstack's function library.

The stub records every devstack call (iniset, setup_develop, run_process,
sudo, ...) to a file, and iniset really writes the ini file, so the tests
check both what the plugin asked devstack to do and the nova-cpu.conf it
leaves. File-system work (the shim link, the state directory) happens for
real inside a scratch directory; make and the vmbeam command are stubs.
"""

import configparser
import os
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
    # A stub of the devstack functions the plugin uses; each records its
    # call to $STUB_CALLS.
    record() { printf '%s\\n' "$*" >> "$STUB_CALLS"; }
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
    run_process() { record run_process "$@"; }
    stop_process() { record stop_process "$@"; }
    die() { shift; echo "die: $*" >&2; exit 1; }
    sudo() { record sudo "$@"; "$@"; }
    iniset() {
        record iniset "$@"
        "$STUB_PYTHON" - "$@" <<'PY'
    import configparser, sys
    path, section, key, value = sys.argv[1:5]
    ini = configparser.RawConfigParser(strict=False)
    ini.optionxform = str
    ini.read(path)
    if section != 'DEFAULT' and not ini.has_section(section):
        ini.add_section(section)
    ini.set(section, key, value)
    with open(path, 'w') as f:
        ini.write(f)
    PY
    }
    ''')

RECORDING_COMMAND = textwrap.dedent('''\
    #!/bin/bash
    printf '%s %s\\n' "$(basename "$0")" "$*" >> "$STUB_CALLS"
    ''')


class DevstackPluginTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.root = tempfile.mkdtemp(prefix='vmbeam-devstack-')
        self.addCleanup(shutil.rmtree, self.root, True)
        self.calls_file = os.path.join(self.root, 'calls')
        self.stub = os.path.join(self.root, 'stub-functions')
        with open(self.stub, 'w') as f:
            f.write(STUB_FUNCTIONS)
        self.bin = os.path.join(self.root, 'bin')
        os.mkdir(self.bin)
        for name in ('make', 'vmbeam'):
            self.command(name)
        self.project = self.path('opt/stack/nova-vmbeam')
        self.nova = self.path('opt/stack/nova')
        os.makedirs(os.path.join(self.nova, 'nova', 'virt'))
        self.conf = self.path('etc/nova/nova-cpu.conf')
        os.makedirs(os.path.dirname(self.conf))
        self.prefix = self.path('usr/local')
        self.state = self.path('var/lib/nova-vmbeam')
        self.pool = self.path('dev/shm/nova-vmbeam')
        os.makedirs(self.project)
        self.env = {
            'PATH': self.bin + ':' + os.environ['PATH'],
            'STUB_CALLS': self.calls_file,
            'STUB_PYTHON': sys.executable,
            'PYTHON': sys.executable,      # nova is not importable here
            'DEST': self.path('opt/stack'),
            'NOVA_DIR': self.nova,
            'NOVA_CPU_CONF': self.conf,
            'NOVA_INSTANCES_PATH': self.path('opt/stack/data/nova/'
                                             'instances'),
            'ENABLED_SERVICES': 'n-cpu,n-api,key',
            'NOVA_VMBEAM_NATIVE_PREFIX': self.prefix,
            'NOVA_VMBEAM_STATE_PATH': self.state,
            'NOVA_VMBEAM_RAM_POOL': self.pool,
            'NOVA_VMBEAM_BIN': os.path.join(self.bin, 'vmbeam'),
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
                              timeout=60)

    def calls(self):
        try:
            with open(self.calls_file) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def ini(self):
        ini = configparser.RawConfigParser(strict=False)
        ini.optionxform = str
        ini.read(self.conf)
        return ini


class TestInstall(DevstackPluginTestCase):

    def test_installs_package_and_builds_native_parts(self):
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
        self.add_file('opt/stack/nova-vmbeam/native/Makefile', 'all:\n')
        out = self.run_phase('stack', 'install')
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertIn('has no install target', out.stdout)
        native = os.path.join(self.project, 'native')
        self.assertEqual(['make -C %s' % native],
                         [c for c in self.calls() if ' -C ' in c])

    def test_without_native_sources_installs_the_package_only(self):
        out = self.run_phase('stack', 'install')
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertIn('the pagemover daemon is not built', out.stdout)
        self.assertFalse([c for c in self.calls() if 'make' in c])

    def test_native_build_can_be_turned_off(self):
        self.add_file('opt/stack/nova-vmbeam/native/Makefile')
        out = self.run_phase('stack', 'install',
                             NOVA_VMBEAM_BUILD_NATIVE='False')
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertFalse([c for c in self.calls() if 'make' in c])

    def test_nothing_happens_where_nova_compute_does_not_run(self):
        out = self.run_phase('stack', 'install', ENABLED_SERVICES='n-api')
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertEqual(['define_plugin nova-vmbeam'], self.calls())


class TestPostConfig(DevstackPluginTestCase):

    def test_links_shim_configures_nova_and_prepares_pool(self):
        self.add_shim()
        out = self.run_phase('stack', 'post-config')
        self.assertEqual(0, out.returncode, out.stderr)
        link = os.path.join(self.nova, 'nova/virt/vmbeam')
        self.assertEqual(os.path.join(self.project, 'shim/nova/virt/vmbeam'),
                         os.readlink(link))
        self.assertTrue(os.path.exists(os.path.join(link, '__init__.py')))
        ini = self.ini()
        self.assertEqual('vmbeam.VMBeamDriver',
                         ini.get('DEFAULT', 'compute_driver'))
        self.assertEqual('unique', ini.get('libvirt', 'sysinfo_serial'))
        self.assertEqual(self.state, ini.get('vmbeam', 'state_path'))
        self.assertEqual(self.pool, ini.get('vmbeam', 'ram_pool_path'))
        self.assertEqual('libvirt-qemu', ini.get('vmbeam', 'qemu_user'))
        self.assertEqual('zerocopy', ini.get('vmbeam', 'default_mover'))
        self.assertEqual('True', ini.get('vmbeam_aging', 'enabled'))
        self.assertEqual('report', ini.get('vmbeam_aging', 'action'))
        self.assertEqual(self.env['NOVA_INSTANCES_PATH'],
                         ini.get('vmbeam_aging', 'instances_path'))
        self.assertFalse(ini.has_option('vmbeam_aging', 'backend_url'))
        self.assertTrue(os.path.isdir(self.state))
        self.assertIn('vmbeam --config-file %s pool init' % self.conf,
                      self.calls())
        # The pagemover service is not enabled.
        self.assertFalse([c for c in self.calls()
                          if c.startswith('run_process')])

    def test_every_option_it_sets_exists(self):
        from nova_vmbeam.conf import opts
        known = {(g.name, o.name) for g, options in opts.list_opts()
                 for o in options}
        self.add_shim()
        out = self.run_phase(
            'stack', 'post-config',
            NOVA_VMBEAM_AGING_WINDOWS='Sat 02:00-04:00',
            NOVA_VMBEAM_AGING_BACKEND_URL='etcd3+http://ctl:2379')
        self.assertEqual(0, out.returncode, out.stderr)
        ini = self.ini()
        for section in ('vmbeam', 'vmbeam_aging'):
            for key in ini.options(section):
                if key in ini.defaults():
                    continue
                self.assertIn((section, key), known)
        self.assertEqual('Sat 02:00-04:00',
                         ini.get('vmbeam_aging', 'maintenance_windows'))
        self.assertEqual('etcd3+http://ctl:2379',
                         ini.get('vmbeam_aging', 'backend_url'))

    def test_shim_in_a_nova_vmbeam_shim_directory(self):
        self.add_shim('nova-vmbeam-shim')
        out = self.run_phase('stack', 'post-config')
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertEqual(
            os.path.join(self.project, 'nova-vmbeam-shim/nova/virt/vmbeam'),
            os.readlink(os.path.join(self.nova, 'nova/virt/vmbeam')))

    def test_nova_not_from_source_gets_the_shim_by_pip(self):
        self.add_shim()
        shutil.rmtree(os.path.join(self.nova, 'nova'))
        out = self.run_phase('stack', 'post-config')
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertIn('pip_install %s' % os.path.join(self.project, 'shim'),
                      self.calls())

    def test_installed_shim_is_left_alone(self):
        fake_python = self.command('python-with-shim', '#!/bin/bash\n'
                                   'exit 0\n')
        out = self.run_phase('stack', 'post-config', PYTHON=fake_python)
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertIn('importable already', out.stdout)
        self.assertFalse(os.path.lexists(
            os.path.join(self.nova, 'nova/virt/vmbeam')))
        self.assertEqual('vmbeam.VMBeamDriver',
                         self.ini().get('DEFAULT', 'compute_driver'))

    def test_missing_shim_names_the_fix_and_changes_nothing(self):
        out = self.run_phase('stack', 'post-config')
        self.assertNotEqual(0, out.returncode)
        self.assertIn('NOVA_VMBEAM_SHIM_DIR', out.stderr)
        self.assertFalse(os.path.exists(self.conf))
        self.assertFalse([c for c in self.calls() if c.startswith('iniset')])

    def test_missing_vmbeam_command_names_the_fix(self):
        self.add_shim()
        out = self.run_phase('stack', 'post-config',
                             NOVA_VMBEAM_BIN='no-such-vmbeam')
        self.assertNotEqual(0, out.returncode)
        self.assertIn('no-such-vmbeam not found; did stack install run?',
                      out.stderr)

    def test_pagemover_service_runs_the_installed_daemon(self):
        self.add_shim()
        daemon = self.add_file('usr/local/sbin/vmbeam-pagemoverd')
        os.chmod(daemon, 0o755)
        out = self.run_phase('stack', 'post-config',
                             ENABLED_SERVICES='n-cpu,n-vmbeam-pm')
        self.assertEqual(0, out.returncode, out.stderr)
        runs = [c for c in self.calls() if c.startswith('run_process')]
        self.assertEqual(
            ['run_process n-vmbeam-pm %s --socket %s/pagemover.sock '
             '--pool-dir %s --owner libvirt-qemu --reserve-mib 256 root '
             'root' % (daemon, self.state, self.pool)], runs)

    def test_pagemover_service_without_daemon_names_the_fix(self):
        self.add_shim()
        out = self.run_phase('stack', 'post-config',
                             ENABLED_SERVICES='n-cpu,n-vmbeam-pm')
        self.assertNotEqual(0, out.returncode)
        self.assertIn('NOVA_VMBEAM_BUILD_NATIVE=True', out.stderr)


class TestExtraUnstackClean(DevstackPluginTestCase):

    def test_extra_checks_movers_and_pool(self):
        out = self.run_phase('stack', 'extra')
        self.assertEqual(0, out.returncode, out.stderr)
        calls = self.calls()
        self.assertIn('vmbeam --config-file %s movers' % self.conf, calls)
        self.assertIn('vmbeam --config-file %s pool check' % self.conf,
                      calls)

    def test_unstack_stops_the_pagemover(self):
        out = self.run_phase('unstack')
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertIn('stop_process n-vmbeam-pm', self.calls())

    def test_clean_removes_link_pool_and_state(self):
        self.add_shim()
        self.assertEqual(0, self.run_phase('stack', 'post-config').returncode)
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


class TestZuulJob(testtools.TestCase):

    def test_job_enables_this_plugin_and_runs_the_check(self):
        with open(os.path.join(TOP, '.zuul.yaml')) as f:
            config = yaml.safe_load(f)
        jobs = {e['job']['name']: e['job'] for e in config if 'job' in e}
        job = jobs['nova-vmbeam-devstack']
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

    def test_plugin_and_scripts_are_shellcheck_clean(self):
        if not shutil.which('shellcheck'):
            self.skipTest('shellcheck is not installed; run '
                          'tools/install.sh (bindep.txt lists it)')
        scripts = [os.path.join(DEVSTACK, 'plugin.sh'),
                   os.path.join(DEVSTACK, 'settings'),
                   os.path.join(TOP, 'tools', 'devstack-check.sh')]
        out = subprocess.run(['shellcheck', '-s', 'bash'] + scripts,
                             capture_output=True, text=True)
        self.assertEqual(0, out.returncode, out.stdout + out.stderr)

    def test_the_stub_library_is_shellcheck_clean_too(self):
        if not shutil.which('shellcheck'):
            self.skipTest('shellcheck is not installed')
        out = subprocess.run(['shellcheck', '-s', 'bash', '-'],
                             input=STUB_FUNCTIONS, capture_output=True,
                             text=True)
        self.assertEqual(0, out.returncode, out.stdout)
