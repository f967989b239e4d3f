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

"""vmbeam compute-node configure (nova_vmbeam.nodeconf)."""

import io
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

from oslo_config import cfg
from oslo_privsep import priv_context
import testtools

from nova_vmbeam.conf import aging as aging_conf
from nova_vmbeam.conf import driver as driver_conf
from nova_vmbeam.conf import vmbeam as vmbeam_conf
from nova_vmbeam import nodeconf

NOVA_CONF = textwrap.dedent('''\
    # nova.conf of compute-1, kept by hand
    [DEFAULT]
    # the old driver
    compute_driver = libvirt.LibvirtDriver
    debug = True
    transport_url = rabbit://nova:secret@ctl:5672/

    [libvirt]
    virt_type = kvm
    ; cpu_mode = host-passthrough

    # Nova's database
    [database]
    connection = mysql+pymysql://nova:secret@ctl/nova
    ''')

DEVSTACK_ARGS = {
    'state_path': '/var/lib/nova-vmbeam',
    'ram_pool_path': '/dev/shm/nova-vmbeam',
    'ram_pool_reserve_mib': '256',
    'qemu_user': 'root',
    'mover': 'zerocopy',
    'pagemoverd_socket': '/var/lib/nova-vmbeam/pagemover.sock',
    'virt_type': 'qemu',
    'instances_path': '/opt/stack/data/nova/instances',
    'aging_enabled': 'True',
    'aging_action': 'report',
    'aging_max_concurrent': '1',
    'aging_windows': 'Sat 02:00-04:00,Mon-Fri 23:30-00:30',
    'aging_backend_url': 'etcd3+http://ctl:2379',
}


def flags(values):
    argv = []
    for setting in nodeconf.SETTINGS:
        if values.get(setting.dest) is not None:
            argv += [setting.flag, values[setting.dest]]
    return argv


class NodeConfTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix='vmbeam-nodeconf-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.path = os.path.join(self.dir, 'nova-cpu.conf')

    def write(self, text):
        with open(self.path, 'w') as f:
            f.write(text)

    def read(self):
        with open(self.path) as f:
            return f.read()

    def configure(self, **values):
        out, err = io.StringIO(), io.StringIO()
        changed = nodeconf.configure(self.path, values, out, err)
        return changed, out.getvalue(), err.getvalue()

    def oslo(self):
        """The file as nova-compute's oslo.config reads it."""
        conf = cfg.ConfigOpts()
        vmbeam_conf.register_opts(conf)
        driver_conf.register_opts(conf)
        aging_conf.register_opts(conf)
        conf.register_opt(cfg.StrOpt('compute_driver'))
        conf.register_opts([cfg.StrOpt('virt_type'),
                            cfg.StrOpt('sysinfo_serial')], group='libvirt')
        conf(['--config-file', self.path], project='nova')
        return conf


class TestWrites(NodeConfTestCase):

    def test_writes_the_settings_and_keeps_every_other_line(self):
        self.write(NOVA_CONF)
        changed, out, _err = self.configure(**DEVSTACK_ARGS)
        self.assertTrue(changed)
        self.assertEqual(textwrap.dedent('''\
            # nova.conf of compute-1, kept by hand
            [DEFAULT]
            # the old driver
            compute_driver = vmbeam.VMBeamDriver
            debug = True
            transport_url = rabbit://nova:secret@ctl:5672/

            [libvirt]
            virt_type = qemu
            sysinfo_serial = unique
            ; cpu_mode = host-passthrough

            # Nova's database
            [database]
            connection = mysql+pymysql://nova:secret@ctl/nova

            [vmbeam]
            state_path = /var/lib/nova-vmbeam
            ram_pool_path = /dev/shm/nova-vmbeam
            ram_pool_reserve_mib = 256
            qemu_user = root
            default_mover = zerocopy
            pagemoverd_socket = /var/lib/nova-vmbeam/pagemover.sock

            [vmbeam_aging]
            instances_path = /opt/stack/data/nova/instances
            enabled = true
            action = report
            max_concurrent = 1
            maintenance_windows = Sat 02:00-04:00,Mon-Fri 23:30-00:30
            backend_url = etcd3+http://ctl:2379
            '''), self.read())
        self.assertIn('[DEFAULT] compute_driver = vmbeam.VMBeamDriver  '
                      '(was libvirt.LibvirtDriver)', out)
        self.assertIn('[libvirt] virt_type = qemu  (was kvm)', out)
        self.assertIn('[vmbeam] pagemoverd_socket = /var/lib/nova-vmbeam/'
                      'pagemover.sock  (new)', out)
        self.assertIn('wrote %s' % self.path, out)

    def test_oslo_config_reads_what_it_wrote(self):
        self.write(NOVA_CONF)
        self.configure(**DEVSTACK_ARGS)
        conf = self.oslo()
        self.assertEqual('vmbeam.VMBeamDriver', conf.compute_driver)
        self.assertEqual('unique', conf.libvirt.sysinfo_serial)
        self.assertEqual(256, conf.vmbeam.ram_pool_reserve_mib)
        self.assertEqual('/var/lib/nova-vmbeam/pagemover.sock',
                         conf.vmbeam.pagemoverd_socket)
        self.assertIs(True, conf.vmbeam_aging.enabled)
        self.assertEqual(['Sat 02:00-04:00', 'Mon-Fri 23:30-00:30'],
                         conf.vmbeam_aging.maintenance_windows)

    def test_options_not_given_are_left_alone(self):
        self.write(NOVA_CONF + '[vmbeam]\nram_pool_path = /dev/shm/mine\n')
        self.configure(state_path='/srv/vmbeam')
        conf = self.oslo()
        self.assertEqual('/dev/shm/mine', conf.vmbeam.ram_pool_path)
        self.assertEqual('/srv/vmbeam', conf.vmbeam.state_path)
        # Not given, not written: the option's default holds.
        self.assertNotIn('default_mover', self.read())
        self.assertNotIn('[vmbeam_aging]', self.read())
        self.assertEqual('kvm', conf.libvirt.virt_type)

    def test_twice_gives_the_same_file_and_the_second_writes_nothing(self):
        self.write(NOVA_CONF)
        self.configure(**DEVSTACK_ARGS)
        first = self.read()
        inode = os.stat(self.path).st_ino
        changed, out, _err = self.configure(**DEVSTACK_ARGS)
        self.assertFalse(changed)
        self.assertEqual(first, self.read())
        self.assertEqual(inode, os.stat(self.path).st_ino)
        self.assertIn('%s unchanged' % self.path, out)
        self.assertNotIn('(new)', out)
        self.assertNotIn('(was ', out)

    def test_missing_file_is_created(self):
        changed, out, _err = self.configure(state_path='/var/lib/nova-vmbeam',
                                            aging_action='report')
        self.assertTrue(changed)
        self.assertEqual(textwrap.dedent('''\
            [DEFAULT]
            compute_driver = vmbeam.VMBeamDriver

            [libvirt]
            sysinfo_serial = unique

            [vmbeam]
            state_path = /var/lib/nova-vmbeam

            [vmbeam_aging]
            action = report
            '''), self.read())
        self.assertIn('created %s' % self.path, out)
        umask = os.umask(0)
        os.umask(umask)
        self.assertEqual(0o666 & ~umask, os.stat(self.path).st_mode & 0o777)
        # ...and a second run leaves it as it is.
        self.assertFalse(self.configure(state_path='/var/lib/nova-vmbeam',
                                        aging_action='report')[0])

    def test_mode_and_symlink_are_kept(self):
        real = os.path.join(self.dir, 'real.conf')
        with open(real, 'w') as f:
            f.write(NOVA_CONF)
        os.chmod(real, 0o640)
        os.symlink(real, self.path)
        self.configure(mover='precopy')
        self.assertTrue(os.path.islink(self.path))
        self.assertEqual(0o640, os.stat(real).st_mode & 0o777)
        with open(real) as f:
            self.assertIn('default_mover = precopy', f.read())
        self.assertEqual([], [n for n in os.listdir(self.dir)
                              if n.startswith('.')])

    def test_default_section_goes_first_when_missing(self):
        self.write('# compute\n[libvirt]\nvirt_type = qemu\n')
        self.configure()
        self.assertEqual('# compute\n[DEFAULT]\ncompute_driver = '
                         'vmbeam.VMBeamDriver\n\n[libvirt]\nvirt_type = '
                         'qemu\nsysinfo_serial = unique\n', self.read())

    def test_option_of_a_sample_config_section_goes_after_its_comments(self):
        self.write(textwrap.dedent('''\
            [vmbeam]
            #
            # From nova_vmbeam
            #
            #state_path = /var/lib/nova-vmbeam

            [vmbeam_aging]
            '''))
        self.configure(state_path='/srv/vmbeam')
        self.assertIn('#state_path = /var/lib/nova-vmbeam\n'
                      'state_path = /srv/vmbeam\n\n[vmbeam_aging]\n',
                      self.read())

    def test_the_last_of_repeated_options_and_sections_is_set(self):
        # oslo.config reads the last occurrence; so does the command.
        self.write('[vmbeam]\nstate_path = /a\nstate_path = /b\n'
                   '[vmbeam]\nstate_path = /c\n')
        changed, out, _err = self.configure(state_path='/d')
        self.assertIn('[vmbeam] state_path = /d  (was /c)', out)
        self.assertIn('[vmbeam]\nstate_path = /a\nstate_path = /b\n'
                      '[vmbeam]\nstate_path = /d\n', self.read())
        self.assertEqual('/d', self.oslo().vmbeam.state_path)

    def test_os_serial_is_kept_and_host_uuid_serials_are_replaced(self):
        self.write('[libvirt]\nsysinfo_serial = os\n')
        _changed, out, _err = self.configure()
        self.assertIn('sysinfo_serial = os\n', self.read())
        self.assertIn('[libvirt] sysinfo_serial = os  (kept)', out)
        self.write('[libvirt]\nsysinfo_serial = hardware\n')
        _changed, out, _err = self.configure()
        self.assertIn('sysinfo_serial = unique\n', self.read())
        self.assertIn('(was hardware)', out)

    def test_booleans_and_numbers_are_written_as_oslo_reads_them(self):
        self.configure(aging_enabled='yes', ram_pool_reserve_mib='0512')
        text = self.read()
        self.assertIn('enabled = true\n', text)
        self.assertIn('ram_pool_reserve_mib = 512\n', text)

    def test_a_migration_uri_past_the_generations_is_noted(self):
        self.write('[libvirt]\nlive_migration_uri = qemu+ssh://%s/system\n')
        _changed, _out, err = self.configure()
        self.assertIn('vmbeam: note: [libvirt] live_migration_uri', err)
        self.assertIn('live_migration_scheme = ssh', err)

    def test_novas_instances_path_is_not_written_but_noted(self):
        self.write('[DEFAULT]\ninstances_path = /srv/nova/instances\n')
        _changed, _out, err = self.configure()
        self.assertIn('pass --instances-path /srv/nova/instances', err)
        self.configure(instances_path='/srv/nova/instances')
        ini = self.oslo()
        self.assertEqual('/srv/nova/instances',
                         ini.vmbeam_aging.instances_path)
        self.assertTrue(self.read().startswith(
            '[DEFAULT]\ninstances_path = /srv/nova/instances\n'))
        self.assertIn('[vmbeam_aging]\ninstances_path = /srv/nova/'
                      'instances\n', self.read())
        self.assertEqual('', self.configure(
            instances_path='/srv/nova/instances')[2])


class TestRefuses(NodeConfTestCase):

    def assertRefused(self, fragment, text=NOVA_CONF, **values):
        if text is None:
            self.assertFalse(os.path.exists(self.path))
        else:
            self.write(text)
        exc = self.assertRaises(nodeconf.exception.InvalidInput,
                                self.configure, **values)
        message = str(exc)
        self.assertIn(fragment, message)
        self.assertNotIn('\n', message)
        self.assertIn('Nothing was written.', message)
        if text is None:
            self.assertFalse(os.path.exists(self.path))
        else:
            self.assertEqual(text, self.read())
        return message

    def test_values_are_checked_against_the_options(self):
        cases = [
            ({'ram_pool_reserve_mib': '-1'}, 'at least 0'),
            ({'ram_pool_reserve_mib': 'lots'}, 'Give a whole number'),
            ({'aging_max_concurrent': '0'}, 'at least 1'),
            ({'aging_enabled': 'maybe'}, 'Give true or false.'),
            ({'aging_action': 'reboot'}, 'Give one of: rejuvenate, report.'),
            ({'virt_type': 'lxc'}, 'Give one of: qemu, kvm.'),
            ({'mover': 'teleport'}, 'installed: cpr, nested, precopy, '
                                    'zerocopy'),
            ({'aging_windows': 'Sat 2-4'}, 'DAYS HH:MM-HH:MM'),
            ({'aging_windows': 'Sat 02:00-25:00'}, 'not a time of day'),
            ({'aging_backend_url': 'etcd://ctl:2379'},
             "no tooz backend 'etcd'"),
            ({'state_path': 'var/lib/nova-vmbeam'}, 'absolute path'),
            ({'pagemoverd_socket': '/run/' + 'x' * 120 + '.sock'},
             'at most 107 bytes'),
            ({'state_path': '/srv\n[DEFAULT]\ncompute_driver = evil'},
             'a value is one line'),
        ]
        for values, fragment in cases:
            # One good value alongside: a bad one stops them all.
            values = dict(values, state_path=values.get('state_path',
                                                        '/srv/vmbeam'))
            message = self.assertRefused(fragment, **values)
            self.assertTrue(message.startswith('--'), message)

    def test_rejuvenate_needs_a_shared_backend_or_a_single_node(self):
        for extra, fragment in (
                ({}, 'backend_url is unset'),
                ({'aging_backend_url': 'file:///srv/coordination'},
                 'keeps its locks in a directory of this host'),
                ({'aging_single_node': 'false'}, 'backend_url is unset')):
            message = self.assertRefused(fragment, aging_action='rejuvenate',
                                         **extra)
            self.assertIn('[vmbeam_aging] action = rejuvenate, but', message)
            self.assertIn('Pass --aging-backend-url', message)
            self.assertIn('--aging-single-node true', message)
            self.assertIn('--aging-action report', message)
        # The file's own action counts too, whatever the flags change.
        self.assertRefused('backend_url is unset',
                           text='[vmbeam_aging]\naction = rejuvenate\n',
                           state_path='/srv/vmbeam')

    def test_rejuvenate_with_a_fleet_limit_is_written(self):
        for extra in ({'aging_backend_url': 'etcd3+http://ctl:2379'},
                      {'aging_backend_url': 'redis://ctl:6379'},
                      {'aging_single_node': 'true'},
                      # A monitor that does not run refuses nothing.
                      {'aging_enabled': 'false'}):
            self.write(NOVA_CONF)
            self.assertTrue(self.configure(aging_action='rejuvenate',
                                           **extra)[0], extra)
            self.assertEqual('rejuvenate', self.oslo().vmbeam_aging.action)
        # Set before, kept: another run need not repeat it.
        self.write('[vmbeam_aging]\naction = rejuvenate\n'
                   'backend_url = redis://ctl:6379\n')
        self.assertTrue(self.configure(state_path='/srv/vmbeam')[0])

    def test_bad_value_on_a_missing_file_creates_nothing(self):
        self.assertRefused('Give true or false.', text=None,
                           aging_enabled='sometimes')

    def test_file_backed_memory_is_refused(self):
        self.assertRefused('Set it to 0 or remove it',
                           text='[libvirt]\nfile_backed_memory = 1024\n')
        self.write('[libvirt]\nfile_backed_memory = 0\n')
        self.assertTrue(self.configure()[0])

    def test_a_virt_type_it_cannot_run_needs_the_flag(self):
        self.assertRefused('Pass --virt-type qemu|kvm',
                           text='[libvirt]\nvirt_type = lxc\n')
        self.write('[libvirt]\nvirt_type = lxc\n')
        self.configure(virt_type='kvm')
        self.assertIn('virt_type = kvm\n', self.read())

    def test_a_file_that_is_not_ini_is_refused(self):
        self.assertRefused('line 2 is not an ini line',
                           text='[DEFAULT]\ncompute_driver\n')
        self.assertRefused('line 1 is not an ini line',
                           text='compute_driver = x\n')

    def test_a_missing_directory_names_the_fix(self):
        self.path = os.path.join(self.dir, 'etc', 'nova', 'nova.conf')
        message = self.assertRefused('install -d %s' %
                                     os.path.dirname(self.path), text=None)
        self.assertIn('its directory does not exist', message)


class TestCommand(NodeConfTestCase):
    """The command as the devstack plugin and run-cloud.sh run it."""

    def run_vmbeam(self, *argv):
        return subprocess.run(
            [sys.executable, '-m', 'nova_vmbeam.cli', 'compute-node',
             'configure', '--nova-conf', self.path] + list(argv),
            capture_output=True, text=True, timeout=120)

    def test_configures_and_prints_what_it_set(self):
        self.write(NOVA_CONF)
        out = self.run_vmbeam(*flags(DEVSTACK_ARGS))
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertIn('[vmbeam_aging] action = report  (new)', out.stdout)
        self.assertEqual('vmbeam.VMBeamDriver', self.oslo().compute_driver)

    def test_bad_value_exits_2_with_one_line_and_changes_nothing(self):
        self.write(NOVA_CONF)
        out = self.run_vmbeam('--state-path', '/srv/vmbeam',
                              '--aging-action', 'reboot')
        self.assertEqual(2, out.returncode)
        self.assertEqual('', out.stdout)
        self.assertEqual(
            ["vmbeam: error: --aging-action 'reboot' is not a valid "
             "[vmbeam_aging] action: Valid values are [rejuvenate, report], "
             "but found 'reboot'. Give one of: rejuvenate, report. Nothing "
             "was written."], out.stderr.splitlines())
        self.assertEqual(NOVA_CONF, self.read())

    def test_every_flag_writes_an_option_of_nova_vmbeam_or_nova(self):
        known = {(g.name, o.name) for g, opts in
                 nodeconf.conf_opts.list_opts() for o in opts}
        # oslo.privsep's options, in the section of the project's context.
        known |= {('vmbeam_privsep', o.name) for o in priv_context.OPTS}
        for setting in nodeconf.SETTINGS:
            if setting.section == 'libvirt':
                continue    # Nova's own
            self.assertIn((setting.section, setting.option), known)
        help_text = subprocess.run(
            [sys.executable, '-m', 'nova_vmbeam.cli', 'compute-node',
             'configure', '--help'], capture_output=True, text=True,
            timeout=120).stdout
        for setting in nodeconf.SETTINGS:
            self.assertIn(setting.flag, help_text)
