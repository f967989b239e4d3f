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

"""Options of the Nova driver (VMBeamDriver), in the [vmbeam] group."""

from oslo_config import cfg

driver_opts = [
    cfg.BoolOpt('ram_default',
                default=False,
                help='Give instances VMBeam-ready RAM (a file in the RAM '
                     'pool, keyed by the instance UUID) when neither the '
                     'flavor extra spec vmbeam:ram nor the image property '
                     'vmbeam_ram says otherwise. VMBeam-ready instances '
                     'are moved by sharing their RAM pages; the others '
                     'are handled as plain_ram_policy says. The extra '
                     'spec wins over the image property, which wins over '
                     'this default. Takes effect when an instance\'s '
                     'guest is (re)created: spawn, hard reboot, start.'),
    cfg.StrOpt('hugepage_pool_path',
               default='/dev/hugepages/nova-vmbeam',
               help='RAM pool directory on hugetlbfs, for VMBeam-ready '
                    'instances whose flavor asks for huge pages '
                    '(hw:mem_page_size). Its huge page size must match '
                    'the flavor\'s. Owned by qemu_user, like '
                    'ram_pool_path.'),
    cfg.StrOpt('plain_ram_policy',
               default='precopy',
               choices=[('precopy', 'move instances without VMBeam-ready '
                                    'RAM by copying their RAM (libvirt-'
                                    'style precopy migration to the new '
                                    'generation)'),
                        ('refuse', 'refuse a rejuvenation while such an '
                                   'instance runs on the host, and refuse '
                                   'to move it alone')],
               help='What a rejuvenation does with instances whose RAM is '
                    'not VMBeam-ready (not in the RAM pool).'),
    cfg.FloatOpt('rejuvenation_stop_timeout',
                 default=10.0,
                 min=0.0,
                 help='Seconds nova-compute waits at shutdown for the move '
                      'in progress to end. The run stops between guests; '
                      'guests not moved yet stay where they are and the '
                      'next start settles any move that was cut short.'),
]


def register_opts(conf):
    """Add the driver's options to [vmbeam] (registered by vmbeam.py)."""
    conf.register_opts(driver_opts, group='vmbeam')
