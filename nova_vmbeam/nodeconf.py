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

"""``vmbeam compute-node configure``: nova-compute's config for VMBeamDriver.

The one way a compute node is configured for nova-vmbeam: the devstack
plugin runs it on devstack's nova.conf, tools/run-cloud.sh on its
nova-compute config, and an operator installing on an existing cloud on
theirs (docs/nova-driver.md), so all three run what the gate checks.

It edits the file in place with configupdater: only the options it sets
change; every other line and comment stays where it was. Every value is
checked before anything is written, against the oslo.config option it
goes to (type, bounds, choices) and, where the option names a plugin or
has a syntax of its own, against the installed plugins and that syntax.
Bad input is one line on stderr that names the fix, exit status 2 (the
CLI's), and the file untouched. The same arguments twice give the same
file.
"""

import configparser
from importlib import metadata
import os
import pwd
import stat
import sys
import tempfile
from urllib import parse

import configupdater
from oslo_config import types

from nova_vmbeam.aging import slots as aging_slots
from nova_vmbeam.aging import window as window_mod
from nova_vmbeam.conf import opts as conf_opts
from nova_vmbeam import exception
from nova_vmbeam import movers as movers_mod

DRIVER = 'vmbeam.VMBeamDriver'
#: [libvirt] virt_type values VMBeamDriver runs: it puts guest RAM into the
#: pool only for QEMU guests (virt/driver.py, _get_guest_config).
VIRT_TYPES = ('qemu', 'kvm')
#: [libvirt] sysinfo_serial values that stay the same when a guest moves to
#: the next generation; "hardware" and "auto" follow the host UUID, which
#: each generation has its own of.
STABLE_SERIALS = ('unique', 'os')
SERIAL = 'unique'
#: sun_path holds 108 bytes with the terminating NUL.
MAX_SOCKET_PATH = 107


class InvalidSetting(exception.InvalidInput):
    msg_fmt = ('%(flag)s %(value)r is not a valid [%(section)s] %(option)s: '
               '%(reason)s. %(fix)s Nothing was written.')


class UnusableNovaConf(exception.InvalidInput):
    msg_fmt = '%(path)s: %(reason)s. %(fix)s Nothing was written.'


class Setting:
    """A flag of the command and the option it writes."""

    def __init__(self, flag, metavar, section, option, check=None,
                 opt_type=None):
        self.flag = flag
        self.metavar = metavar
        self.dest = flag[2:].replace('-', '_')
        self.section = section
        self.option = option
        self.check = check
        self.opt = None if opt_type else _OPTS[section, option]
        self.type = opt_type or self.opt.type

    def help(self):
        default = ''
        if self.opt is not None:
            default = ' (the option\'s default: %s)' % (
                'unset' if self.opt.default in (None, [])
                else str(self.opt.default).lower()
                if isinstance(self.type, types.Boolean)
                else self.opt.default)
        return 'writes [%s] %s%s' % (self.section, self.option, default)

    def normalize(self, value):
        """The value as written, or InvalidSetting."""
        if '\n' in value or '\r' in value:
            self.fail(value, 'a value is one line', 'Remove the line break.')
        try:
            parsed = self.type(value)
        except ValueError as exc:
            self.fail(value, str(exc).rstrip('.'), _fix_for(self.type))
        if self.check is not None:
            self.check(self, value)
        if isinstance(self.type, types.Boolean):
            return 'true' if parsed else 'false'
        if isinstance(self.type, types.Integer):
            return str(parsed)
        return value.strip()

    def fail(self, value, reason, fix):
        raise InvalidSetting(flag=self.flag, value=value,
                             section=self.section, option=self.option,
                             reason=reason, fix=fix)


def _fix_for(opt_type):
    choices = getattr(opt_type, 'choices', None)
    if choices:
        return 'Give one of: %s.' % ', '.join(choices)
    if isinstance(opt_type, types.Boolean):
        return 'Give true or false.'
    if isinstance(opt_type, types.Integer):
        bounds = []
        if opt_type.min is not None:
            bounds.append('at least %d' % opt_type.min)
        if opt_type.max is not None:
            bounds.append('at most %d' % opt_type.max)
        return 'Give a whole number%s.' % (
            ' (%s)' % ', '.join(bounds) if bounds else '')
    return 'See this option in etc/nova-vmbeam.conf.sample.'


def _absolute_path(setting, value):
    # nova-compute's working directory is nobody's business: a relative
    # path would point somewhere else for every process that reads it.
    if not os.path.isabs(value):
        setting.fail(value, 'not an absolute path',
                     'Give the full path, starting with /.')


def _socket_path(setting, value):
    _absolute_path(setting, value)
    if len(os.fsencode(value)) > MAX_SOCKET_PATH:
        setting.fail(value, 'a unix socket path is at most %d bytes' %
                     MAX_SOCKET_PATH, 'Give a shorter path.')


def _installed_mover(setting, value):
    installed = movers_mod.available()
    if value not in installed:
        setting.fail(value, 'no such mover is installed (installed: %s)' %
                     ', '.join(installed),
                     'Pick one of them, or install the package that '
                     'provides %r in the nova_vmbeam.movers entry-point '
                     'namespace.' % value)


def _windows(setting, value):
    try:
        window_mod.Schedule(types.List()(value))
    except window_mod.InvalidWindow as exc:
        setting.fail(value, exc.kwargs['why'],
                     'Write "DAYS HH:MM-HH:MM" in UTC, DAYS being *, a day '
                     '(Mon..Sun) or a range (Mon-Fri), windows separated by '
                     'commas, e.g. "Sat 02:00-04:00,Sun 02:00-04:00".')


def _tooz_backends():
    # Names only, from the package metadata: loading the backends would
    # import their client libraries (and futurist's eventlet support).
    return sorted({ep.name for ep in
                   metadata.entry_points(group='tooz.backends')})


def _tooz_url(setting, value):
    scheme = parse.urlsplit(value).scheme
    backends = _tooz_backends()
    if scheme not in backends:
        setting.fail(value, 'no tooz backend %r (installed: %s)' % (
            scheme, ', '.join(backends) or 'none'),
            'Give a URL of one of them that every compute host reaches, '
            'e.g. etcd3+http://ctl:2379 or redis://ctl:6379.')


_OPTS = {(group.name, opt.name): opt
         for group, opts in conf_opts.list_opts() for opt in opts}

#: The flags, in the order their options are written.
SETTINGS = (
    Setting('--virt-type', '|'.join(VIRT_TYPES), 'libvirt', 'virt_type',
            opt_type=types.String(choices=VIRT_TYPES)),
    Setting('--state-path', 'DIR', 'vmbeam', 'state_path', _absolute_path),
    Setting('--ram-pool-path', 'DIR', 'vmbeam', 'ram_pool_path',
            _absolute_path),
    Setting('--ram-pool-reserve-mib', 'N', 'vmbeam', 'ram_pool_reserve_mib'),
    Setting('--qemu-user', 'USER', 'vmbeam', 'qemu_user'),
    Setting('--mover', 'NAME', 'vmbeam', 'default_mover', _installed_mover),
    Setting('--pagemoverd-socket', 'PATH', 'vmbeam', 'pagemoverd_socket',
            _socket_path),
    Setting('--instances-path', 'DIR', 'vmbeam_aging', 'instances_path',
            _absolute_path),
    Setting('--aging-enabled', 'true|false', 'vmbeam_aging', 'enabled'),
    Setting('--aging-action', 'report|rejuvenate', 'vmbeam_aging',
            'action'),
    Setting('--aging-max-concurrent', 'N', 'vmbeam_aging', 'max_concurrent'),
    Setting('--aging-windows', 'W', 'vmbeam_aging', 'maintenance_windows',
            _windows),
    Setting('--aging-backend-url', 'URL', 'vmbeam_aging', 'backend_url',
            _tooz_url),
    Setting('--aging-single-node', 'true|false', 'vmbeam_aging',
            'single_node'),
    # oslo.privsep's option, in the project's context's section: how an
    # unprivileged nova-compute starts its privsep daemon.
    Setting('--privsep-helper-command', 'COMMAND', 'vmbeam_privsep',
            'helper_command', opt_type=types.String()),
)


class NovaConf:
    """A nova config file, edited in place (configupdater).

    oslo.config reads options by their last occurrence, in whichever of
    several same-named sections it is; so does this.
    """

    def __init__(self, path):
        self.path = path
        self.exists = os.path.exists(path)
        self.updater = configupdater.ConfigUpdater(
            # As oslo.config's parser: repeated keys and sections are
            # allowed, no inline comments, a blank line ends a value.
            strict=False, empty_lines_in_values=False,
            inline_comment_prefixes=None)
        self.updater.optionxform = str   # oslo.config keys keep their case
        self.original = ''
        if self.exists:
            try:
                with open(path) as f:
                    self.original = f.read()
            except OSError as exc:
                raise UnusableNovaConf(
                    path=path, reason='cannot read it: %s' % exc.strerror,
                    fix='Run the command as a user who can read and write '
                        'it (as root: sudo vmbeam compute-node configure '
                        '...).')
        elif not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise UnusableNovaConf(
                path=path, reason='its directory does not exist',
                fix='Create it first (install -d %s).' %
                    os.path.dirname(os.path.abspath(path)))
        try:
            self.updater.read_string(self.original, source=path)
        except configparser.MissingSectionHeaderError as exc:
            self._unparsable(exc.lineno, exc.line)
        except configparser.ParsingError as exc:
            self._unparsable(*exc.errors[0])

    def _unparsable(self, lineno, line):
        raise UnusableNovaConf(
            path=self.path, reason='line %d is not an ini line: %r' % (
                lineno, line.rstrip('\n')),
            fix='Fix or remove that line (a [section] header, or '
                'key = value inside a section).')

    def _sections(self, name):
        return [s for s in self.updater.section_blocks() if s.name == name]

    def _option(self, section, key):
        found = None
        for block in self._sections(section):
            for option in block.option_blocks():
                if option.key == key:
                    found = option
        return found

    def get(self, section, key):
        option = self._option(section, key)
        return None if option is None else (option.value or '').strip()

    def set(self, section, key, value):
        """Set ``key`` (its last occurrence); its value before, or None."""
        option = self._option(section, key)
        if option is not None:
            before = (option.value or '').strip()
            if before != value:
                option.value = value
            return before
        blocks = self._sections(section)
        if blocks:
            self._add_option(blocks[-1], key, value)
        else:
            self._add_section(section)[key] = value
        return None

    @staticmethod
    def _add_option(section, key, value):
        # After the section's last option, or its last comment when it has
        # none (a sample config's commented-out options): not after the
        # blank lines that separate it from the next section.
        blocks = list(section.iter_blocks())
        anchors = [b for b in blocks
                   if isinstance(b, configupdater.Option)] or \
            [b for b in blocks if not isinstance(b, configupdater.Space)]
        if anchors:
            anchors[-1].add_after.option(key, value)
        else:
            section[key] = value

    def _add_section(self, name):
        sections = self.updater.section_blocks()
        if not sections:
            self.updater.add_section(name)
        elif name == 'DEFAULT':
            # Where readers look for it: first.
            sections[0].add_before.section(name).space()
        else:
            last = list(self.updater.iter_blocks())[-1]
            if isinstance(last, configupdater.Space):
                last.add_after.section(name)
            else:
                sections[-1].add_after.space().section(name)
        return self._sections(name)[-1]

    def text(self):
        return str(self.updater)

    def write(self):
        """Replace the file atomically (same mode and owner); or create it."""
        target = os.path.realpath(self.path)
        directory = os.path.dirname(target)
        try:
            fd, tmp = tempfile.mkstemp(
                dir=directory, prefix='.%s.' % os.path.basename(target))
        except OSError as exc:
            self._unwritable(exc)
        try:
            with os.fdopen(fd, 'w') as f:
                f.write(self.text())
                f.flush()
                os.fsync(f.fileno())
            if self.exists:
                st = os.stat(target)
                os.chmod(tmp, stat.S_IMODE(st.st_mode))
                if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                    os.chown(tmp, st.st_uid, st.st_gid)
            else:
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, target)
        except OSError as exc:
            os.unlink(tmp)
            self._unwritable(exc)

    def _unwritable(self, exc):
        raise UnusableNovaConf(
            path=self.path, reason='cannot write it: %s' % exc.strerror,
            fix='Run the command as a user who can write it and its '
                'directory (as root: sudo vmbeam compute-node configure '
                '...).')


def _check_conflicts(conf, virt_type_given):
    """Refuse settings of the file that VMBeamDriver cannot run with."""
    backed = conf.get('libvirt', 'file_backed_memory')
    if backed and not (backed.isdigit() and int(backed) == 0):
        raise UnusableNovaConf(
            path=conf.path,
            reason='[libvirt] file_backed_memory = %s; VMBeamDriver puts '
                   'guest RAM in files of its RAM pool itself, which Nova\'s '
                   'file-backed memory would contradict' % backed,
            fix='Set it to 0 or remove it, then run this again.')
    virt_type = conf.get('libvirt', 'virt_type')
    if not virt_type_given and virt_type not in (None,) + VIRT_TYPES:
        raise UnusableNovaConf(
            path=conf.path,
            reason='[libvirt] virt_type = %s; VMBeamDriver runs %s guests' %
                   (virt_type, ' or '.join(VIRT_TYPES)),
            fix='Pass --virt-type %s.' % '|'.join(VIRT_TYPES))


def _file_bool(conf, section, key):
    """A boolean of the file as oslo.config reads it, else the default.

    None for a value oslo.config would refuse.
    """
    value = conf.get(section, key)
    if value is None:
        return _OPTS[section, key].default
    try:
        return types.Boolean()(value)
    except ValueError:
        return None     # oslo.config refuses it; not ours to judge here


def _check_fleet_limit(conf):
    """Refuse a file that nova-compute would refuse to start with.

    [vmbeam_aging] action = rejuvenate needs a backend shared by the
    compute hosts or single_node (VMBeamDriver._check_aging_config). Read
    from this file alone, after the flags were applied: the options belong
    in the last file nova-compute reads, the one this command writes.
    """
    action = conf.get('vmbeam_aging', 'action') or \
        _OPTS['vmbeam_aging', 'action'].default
    if action != 'rejuvenate' or \
            _file_bool(conf, 'vmbeam_aging', 'enabled') is False:
        return
    why = aging_slots.fleet_problem(
        conf.get('vmbeam_aging', 'backend_url'),
        _file_bool(conf, 'vmbeam_aging', 'single_node'))
    if why is not None:
        raise UnusableNovaConf(
            path=conf.path,
            reason='[vmbeam_aging] action = rejuvenate, but %s, so '
                   'nothing would limit how many compute hosts rejuvenate '
                   'at once (nova-compute refuses to start with that)' %
                   why,
            fix='Pass --aging-backend-url with a tooz backend every compute '
                'host reaches (e.g. redis://ctl:6379), or --aging-single-node '
                'true if this host is the only one, or --aging-action '
                'report.')


def _notes(conf, settings):
    """Settings that work but are probably not what was meant."""
    notes = []
    if conf.get('libvirt', 'connection_uri'):
        notes.append('[libvirt] connection_uri is not used: VMBeamDriver '
                     'connects to the active hypervisor generation.')
    migration_uri = conf.get('libvirt', 'live_migration_uri')
    if migration_uri and 'socket=' not in migration_uri:
        notes.append('[libvirt] live_migration_uri = %s reaches the '
                     'destination\'s own libvirtd, not its active '
                     'generation: remove it and set live_migration_scheme = '
                     'ssh, or add ?socket=<[vmbeam] state_path>/active-'
                     'libvirt-sock (docs/nova-driver.md).' % migration_uri)
    # [DEFAULT] instances_path is Nova's own (where the instances' files
    # are): never written here. The aging probe's option has a default of
    # its own, so it does not follow Nova's unless told.
    nova_instances = conf.get('DEFAULT', 'instances_path')
    probe_instances = settings.get('instances_path') or conf.get(
        'vmbeam_aging', 'instances_path')
    if nova_instances and probe_instances is None:
        notes.append('[DEFAULT] instances_path is %s, but the aging '
                     'monitor watches [vmbeam_aging] instances_path (%s): '
                     'pass --instances-path %s.' % (
                         nova_instances,
                         _OPTS['vmbeam_aging', 'instances_path'].default,
                         nova_instances))
    user = settings.get('qemu_user')
    if user:
        try:
            pwd.getpwnam(user)
        except KeyError:
            notes.append('user %s does not exist here (yet): QEMU runs as '
                         'it and owns the RAM pool; "vmbeam pool init" '
                         'refuses until it does.' % user)
    return notes


def configure(nova_conf, values, stdout=None, stderr=None):
    """Write VMBeamDriver's settings into ``nova_conf``; True if changed.

    ``values`` maps a Setting's dest to the raw string given (None: not
    given). Raises InvalidInput, before anything is written, on bad input.
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    writes = [(s, s.normalize(values[s.dest])) for s in SETTINGS
              if values.get(s.dest) is not None]
    conf = NovaConf(nova_conf)
    _check_conflicts(conf, any(s.option == 'virt_type' for s, _v in writes))
    given = {s.option: v for s, v in writes}

    lines = []

    def apply(section, key, value, kept=False):
        before = conf.get(section, key) if kept else conf.set(
            section, key, value)
        state = ('kept' if kept else 'new' if before is None
                 else 'unchanged' if before == value else 'was %s' % before)
        lines.append('  [%s] %s = %s  (%s)' % (section, key,
                                               before if kept else value,
                                               state))

    apply('DEFAULT', 'compute_driver', DRIVER)
    # A guest's SMBIOS serial must not follow the host UUID, which differs
    # per hypervisor generation; "os" does not either and stays.
    serial = conf.get('libvirt', 'sysinfo_serial')
    apply('libvirt', 'sysinfo_serial', SERIAL,
          kept=serial in STABLE_SERIALS and serial != SERIAL)
    for setting, value in writes:
        apply(setting.section, setting.option, value)
    _check_fleet_limit(conf)

    for note in _notes(conf, given):
        print('vmbeam: note: %s' % note, file=stderr)
    print('%s: nova-compute runs VMBeamDriver with' % nova_conf, file=stdout)
    for line in lines:
        print(line, file=stdout)
    if conf.exists and conf.text() == conf.original:
        print('%s unchanged' % nova_conf, file=stdout)
        return False
    conf.write()
    print('%s %s' % ('wrote' if conf.exists else 'created', nova_conf),
          file=stdout)
    return True


def cmd_configure(args):
    configure(args.nova_conf, {s.dest: getattr(args, s.dest)
                               for s in SETTINGS})
    return 0


def add_parser(subparsers):
    """``compute-node configure``, on the vmbeam command's subparsers."""
    parser = subparsers.add_parser(
        'compute-node', help='configure this host\'s nova-compute for '
                             'VMBeamDriver')
    actions = parser.add_subparsers(dest='compute_node_action',
                                    metavar='ACTION', required=True)
    p = actions.add_parser(
        'configure',
        help='write compute_driver, [libvirt] and the [vmbeam] and '
             '[vmbeam_aging] options given into nova-compute\'s config '
             'file',
        description='Write [DEFAULT] compute_driver = %s, [libvirt] '
                    'sysinfo_serial = %s (unless it is os already) and the '
                    'options given into FILE; every other line and comment '
                    'stays, and so do options not given. Values are checked '
                    'first; bad input changes nothing (exit status 2). The '
                    'same arguments again change nothing.' % (
                        DRIVER, SERIAL))
    p.add_argument('--nova-conf', required=True, metavar='FILE',
                   help='the config file nova-compute runs with (created '
                        'if missing)')
    for setting in SETTINGS:
        p.add_argument(setting.flag, dest=setting.dest,
                       metavar=setting.metavar, help=setting.help())
    p.set_defaults(func=cmd_configure)
