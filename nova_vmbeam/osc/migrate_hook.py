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

"""``openstack server migrate --rejuvenate``: a move on the server's host.

A cliff command hook (entry-point group openstack.cli.server_migrate). A
hook can add options and run before and after a command, but cannot veto
the command's take_action. So, only when --rejuvenate is given, before()
binds this hook's own action as take_action of that one command instance
(cliff's Command.run calls ``self.take_action``, and a hook is handed the
command instance it serves); the server is then moved onto its host's
next hypervisor generation through vmbeam-api, and Nova's
migration code (MigrateServer.take_action) is not run. Without
--rejuvenate the hook changes nothing and ``server migrate`` is exactly
python-openstackclient's. See docs/design/cli.md.
"""

from cliff import hooks
from osc_lib import exceptions

# Options of server migrate that ask for a Nova migration: a move on the
# server's own host has no use for them.
_NOVA_ONLY = (('live_migration', '--live-migration', (False, None)),
              ('host', '--host', (None,)),
              ('block_migration', '--block-migration/--shared-migration',
               (None,)),
              ('disk_overcommit', '--disk-overcommit/--no-disk-overcommit',
               (None,)))


class RejuvenateHook(hooks.CommandHook):
    """Adds --rejuvenate (and --rejuvenate-mover) to server migrate."""

    def get_parser(self, parser):
        parser.add_argument(
            '--rejuvenate', action='store_true',
            help='Move the server on its own compute host, onto a fresh '
                 'hypervisor generation there (VMBeam), instead of a Nova '
                 'migration. Admin only; the host must run VMBeamDriver. '
                 'Waits until the move is done.')
        parser.add_argument(
            '--rejuvenate-mover', metavar='<name>',
            help='With --rejuvenate: the mover to use (zerocopy, cpr, '
                 'precopy; default: the host\'s [vmbeam] default_mover)')
        return parser

    def get_epilog(self):
        return ('With --rejuvenate the server stays on its host: it moves '
                'to the host\'s next hypervisor generation (nova-vmbeam), '
                'and no Nova migration takes place.')

    def before(self, parsed_args):
        if not getattr(parsed_args, 'rejuvenate', False):
            if getattr(parsed_args, 'rejuvenate_mover', None):
                raise exceptions.CommandError(
                    '--rejuvenate-mover only goes with --rejuvenate.')
            return parsed_args
        given = [flag for dest, flag, unset in _NOVA_ONLY
                 if getattr(parsed_args, dest, None) not in unset]
        if given:
            raise exceptions.CommandError(
                '--rejuvenate moves the server on its own host, so %s '
                'cannot go with it: drop %s, or drop --rejuvenate for a '
                'Nova migration.' % (', '.join(given), ', '.join(given)))
        # This invocation's action only; the command class is untouched.
        self.cmd.take_action = self.take_action
        return parsed_args

    def take_action(self, parsed_args):
        """Move the server through vmbeam-api; Nova's migrate is skipped."""
        app = self.cmd.app
        client = app.client_manager.vmbeam
        server_id = client.server_id(parsed_args.server)
        result = client.rejuvenate_server(
            server_id, mover=parsed_args.rejuvenate_mover)
        app.stdout.write(
            'Server %s moved on host %s to hypervisor generation %s with '
            'the %s mover: downtime %.1f ms, total %.1f ms, %s bytes '
            'transferred.\n' % (
                server_id, result.get('host'), result.get('generation'),
                result.get('mover'), result.get('downtime_ms') or 0.0,
                result.get('total_ms') or 0.0,
                result.get('transferred_bytes')))
        return 0

    def after(self, parsed_args, return_code):
        return return_code
