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

"""Options of the [vmbeam] group."""

from oslo_config import cfg

from nova_vmbeam.conf import groups

vmbeam_group = cfg.OptGroup(
    'vmbeam',
    title='VMBeam options',
    help='In-place hypervisor rejuvenation: guests are moved to a fresh '
         'sibling hypervisor on the same host by sharing their RAM pages '
         'instead of copying them.')

pool_opts = [
    cfg.StrOpt('ram_pool_path',
               default='/dev/shm/nova-vmbeam',
               help='Directory that holds guest RAM files (one named file '
                    'per guest, keyed by the guest UUID). It must be on '
                    'tmpfs, or on hugetlbfs when guests use huge pages, '
                    'and be owned by qemu_user. The zerocopy mover needs '
                    'guest RAM to live here.'),
    cfg.IntOpt('ram_pool_reserve_mib',
               default=256,
               min=0,
               help='Free space, in MiB, that must remain on the RAM pool '
                    'filesystem after a guest RAM file is allocated.'),
    cfg.StrOpt('ram_pool_backend',
               default='pagemoverd',
               help='Who owns the guest RAM pools: a plugin in the '
                    'nova_vmbeam.pools namespace. pagemoverd: the native '
                    'vmbeam-pagemoverd daemon creates, hands out, verifies '
                    'and releases them and keeps a descriptor to each, so '
                    'guest RAM outlives hypervisor generations, crashed '
                    'QEMUs and accidental unlinks; it is started on first '
                    'use. file: nova-vmbeam manages the pool files itself, '
                    'in the calling process.'),
    cfg.IntOpt('ram_pool_budget_mib',
               default=0,
               min=0,
               help='Most MiB all guest RAM pools together may take '
                    '(pagemoverd backend); an allocation past it is '
                    'refused. 0: only the free space of the pool '
                    'filesystem (minus ram_pool_reserve_mib) limits it.'),
    cfg.StrOpt('pagemoverd_socket',
               help='Unix socket of vmbeam-pagemoverd. Unset: '
                    '/run/nova-vmbeam/pagemoverd-<hash of ram_pool_path>'
                    '.sock, one daemon per pool directory; its pid file '
                    'and log are next to it (.pid, .log). The daemon is '
                    'started there on first use if nothing answers.'),
    cfg.StrOpt('pagemoverd_binary',
               default='vmbeam-pagemoverd',
               help='The vmbeam-pagemoverd binary: an absolute path, or a '
                    'name looked up on PATH and then in the source tree\'s '
                    'native/build (make -C native).'),
]

qemu_opts = [
    cfg.StrOpt('qemu_binary',
               default='qemu-system-x86_64',
               help='QEMU system emulator used for guests started by '
                    'nova-vmbeam itself (demo, bench, process '
                    'hypervisors).'),
    cfg.StrOpt('accel',
               default='auto',
               choices=[('auto', 'KVM when /dev/kvm is usable for stock '
                                 'guest kernels, otherwise TCG'),
                        ('kvm', 'always KVM'),
                        ('tcg', 'always TCG software emulation')],
               help='CPU accelerator for guests started by nova-vmbeam.'),
    cfg.StrOpt('state_path',
               default='/var/lib/nova-vmbeam',
               help='Directory for runtime state: QMP and migration '
                    'sockets, console logs, journals.'),
]

move_opts = [
    cfg.StrOpt('default_mover',
               help='Page mover used when none is named. Movers are '
                    'plugins in the nova_vmbeam.movers namespace: '
                    'zerocopy (x-ignore-shared on a RAM pool file), cpr '
                    '(QEMU >= 10 cpr-transfer on memfd RAM), precopy '
                    '(conventional copy, the baseline and fallback) and '
                    'nested (between the L1 VMs of nested generations). '
                    'Unset: the one sibling_kind is made for (zerocopy for '
                    'colocated, nested for nested).'),
    cfg.FloatOpt('migration_timeout',
                 default=120.0,
                 min=1.0,
                 help='Seconds a single guest move may take before it is '
                      'cancelled and rolled back.'),
    cfg.FloatOpt('qmp_timeout',
                 default=30.0,
                 min=1.0,
                 help='Seconds to wait for a QEMU monitor to answer.'),
]

sibling_opts = [
    cfg.StrOpt('sibling_kind',
               default='colocated',
               help='Kind of sibling hypervisor a rejuvenation starts: a '
                    'plugin in the nova_vmbeam.siblings namespace. '
                    'colocated: a fresh libvirt daemon (with its own '
                    'virtlogd) in a private mount namespace on the same '
                    'kernel. nested: a hypervisor VM (L1) per generation, '
                    'kernel included; for the vmbeam command only: '
                    'nova-compute (VMBeamDriver) refuses to start with it, '
                    'since Nova\'s instances cannot run in an L1 yet.'),
    cfg.FloatOpt('sibling_start_timeout',
                 default=60.0,
                 min=1.0,
                 help='Seconds a new sibling may take to accept guests; '
                      'past that the rejuvenation is aborted before any '
                      'guest moved.'),
    cfg.StrOpt('qemu_user',
               default='libvirt-qemu',
               help='User QEMU runs as under a sibling libvirt daemon; it '
                    'owns the RAM pool and its files. Guest disks and '
                    'migration sockets must be reachable by it too.'),
    cfg.StrOpt('libvirtd',
               default='/usr/sbin/libvirtd',
               help='libvirt daemon binary a colocated sibling runs.'),
    cfg.StrOpt('virtlogd',
               default='/usr/sbin/virtlogd',
               help='virtlogd binary a colocated sibling runs.'),
    cfg.StrOpt('sibling_netns',
               help='Network namespace (from "ip netns add") the sibling '
                    'daemons run in, so guest taps join bridges there. '
                    'Unset: the host\'s own network namespace.'),
    cfg.StrOpt('switchover_priority',
               default='nice',
               choices=[
                   ('nice', 'raise them to switchover_nice'),
                   ('realtime', 'run them SCHED_FIFO (priority 1): they '
                                'preempt guest vCPUs at once'),
                   ('off', 'leave priorities alone')],
               help='CPU priority given, for the length of each guest\'s '
                    'migration and switchover, to the threads that carry '
                    'it: the source QEMU except its vCPUs (its migration '
                    'thread included), the destination QEMU (its vCPUs '
                    'only until it runs: loading the device state waits '
                    'for work done on them), the hypervisor daemons '
                    'relaying their monitors and the mover itself. Where '
                    'each guest has a cgroup of its own (libvirt), thread '
                    'priorities only count within it, so the CPU weight '
                    '(cpu_shares) of the source\'s and destination\'s '
                    'cgroups is raised too, by the weight ratio of '
                    'switchover_nice to nice 0 (realtime: of nice -20). '
                    'On a host whose cores are busy with other guests this '
                    'keeps the guest\'s pause short. Everything is '
                    'restored when the move ends. Needs CAP_SYS_NICE '
                    '(nova-compute runs as root); without it the move goes '
                    'on unboosted.'),
    cfg.IntOpt('switchover_nice',
               default=-10,
               min=-20,
               max=0,
               help='Nice value of switchover_priority = nice.'),
    cfg.IntOpt('rejuvenation_concurrency',
               default=2,
               min=1,
               help='Guests moved at the same time during a host '
                    'rejuvenation. Guests are still paused one at a time; '
                    'what overlaps is the rest of each move (starting '
                    'destinations, retiring sources, bookkeeping).'),
]

ALL_OPTS = pool_opts + qemu_opts + move_opts + sibling_opts


def register_opts(conf):
    group = groups.fresh(vmbeam_group)
    conf.register_group(group)
    conf.register_opts(ALL_OPTS, group=group)


def list_opts():
    return {vmbeam_group: ALL_OPTS}
