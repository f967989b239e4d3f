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

"""Options of the [vmbeam_aging] group: the periodic aging monitor."""

from oslo_config import cfg

from nova_vmbeam.conf import groups

aging_group = cfg.OptGroup(
    'vmbeam_aging',
    title='VMBeam aging monitor options',
    help='The aging monitor samples the hypervisor\'s resources '
         'periodically, tests each series for a trend (Mann-Kendall) and '
         'estimates when it reaches its limit (Sen\'s slope); it '
         'rejuvenates the host before that time. It runs inside '
         'nova-compute (started by the driver) or as "vmbeam aging '
         'watch".')

monitor_opts = [
    cfg.BoolOpt('enabled',
                default=True,
                help='Run the aging monitor. When false the driver starts '
                     'no monitor and nothing is sampled.'),
    cfg.StrOpt('action',
               default='report',
               choices=[('rejuvenate', 'rejuvenate the host when the '
                                       'policy says so and a cluster slot '
                                       'is free'),
                        ('report', 'only log and record the decision')],
               help='What the monitor does when the policy calls for a '
                    'rejuvenation. "rejuvenate" needs backend_url to name '
                    'a coordination backend that every compute host of '
                    'the cloud shares, or single_node = true; otherwise '
                    'nova-compute refuses to start (and "vmbeam aging '
                    'watch --rejuvenate" to run), since nothing would '
                    'keep more than max_concurrent hosts from '
                    'rejuvenating at once.'),
    cfg.FloatOpt('interval',
                 default=60.0,
                 min=1.0,
                 help='Seconds between two samples of every probe.'),
    cfg.ListOpt('probes',
                default=['host_free_memory', 'daemon_rss', 'daemon_fds',
                         'qemu_overhead', 'instances_disk_free',
                         'libvirt_latency', 'hypervisor_kernel_free_memory',
                         'hypervisor_kernel_slab'],
                help='Probes to sample: plugins in the nova_vmbeam.aging '
                     'namespace.'),
    cfg.IntOpt('window',
               default=360,
               min=10,
               help='Samples kept per probe and tested for a trend (a '
                    'ring buffer; 360 samples at a 60 s interval are six '
                    'hours). The history starts afresh with every '
                    'hypervisor generation. A drift counts once it holds '
                    'over both halves of the window, so it is acted on '
                    'about half a window after it began at the '
                    'earliest.'),
    cfg.IntOpt('min_samples',
               default=30,
               min=8,
               help='Samples a probe needs in the current generation '
                    'before its trend is tested at all.'),
    cfg.BoolOpt('persist',
                default=True,
                help='Keep the sample history and the last status in '
                     '<[vmbeam] state_path>/aging/, so a restarted '
                     'nova-compute goes on with its history and "vmbeam '
                     'aging status" can show it.'),
]

trend_opts = [
    cfg.StrOpt('trend_test',
               default='hamed_rao',
               choices=[('original', 'Mann-Kendall test (independent '
                                     'samples)'),
                        ('hamed_rao', 'Mann-Kendall test with the Hamed '
                                      'and Rao variance correction for '
                                      'autocorrelated samples')],
               help='Trend test of pymannkendall applied to each probe\'s '
                    'series. Resource series are usually autocorrelated; '
                    'the corrected test does not mistake a slow wander '
                    'for a trend.'),
    cfg.FloatOpt('significance',
                 default=0.01,
                 min=1e-9,
                 max=0.5,
                 help='Significance level (alpha) of the trend test. A '
                      'trend counts only if it is significant over the '
                      'whole window and over each of its halves, so a '
                      'single step change does not.'),
]

policy_opts = [
    cfg.FloatOpt('horizon',
                 default=21600.0,
                 min=0.0,
                 help='Seconds: rejuvenate when a probe\'s significant '
                      'trend predicts it reaches its limit within this '
                      'time.'),
    cfg.FloatOpt('min_interval',
                 default=43200.0,
                 min=0.0,
                 help='Seconds that must pass after a rejuvenation of '
                      'this host (by the monitor or by hand, completed or '
                      'failed) before the monitor starts another.'),
    cfg.ListOpt('maintenance_windows',
                default=[],
                help='When the monitor may rejuvenate, in UTC. Each entry '
                     'is "DAYS HH:MM-HH:MM": DAYS is "*" (every day), a '
                     'day (Mon, Tue, Wed, Thu, Fri, Sat, Sun) or a range '
                     'of days (Mon-Fri); a window whose end is before its '
                     'start runs past midnight into the next day. '
                     'Example: "Sat 02:00-04:00,Mon-Fri 23:30-00:30". '
                     'Empty: any time.'),
    cfg.FloatOpt('emergency_horizon',
                 default=0.0,
                 min=0.0,
                 help='Seconds: exhaustion predicted sooner than this '
                      'rejuvenates even outside the maintenance windows '
                      '(the minimum interval still holds). 0 disables '
                      'this.'),
    cfg.IntOpt('max_concurrent',
               default=1,
               min=1,
               help='Hosts of the cloud that may rejuvenate at the same '
                    'time; enforced with one tooz lock per slot in '
                    'backend_url.'),
    cfg.StrOpt('backend_url',
               help='tooz coordination backend shared by every compute '
                    'host that max_concurrent counts, e.g. '
                    '"redis://ctl:6379" or "etcd3+http://ctl:2379"; its '
                    'client library must be installed (pip install '
                    '"tooz[redis]", "tooz[etcd3gw]", ...). Networked '
                    'backends (redis, etcd3+http, etcd3+https, zookeeper, '
                    'kazoo, memcached, mysql, postgresql, kubernetes) are '
                    'shared; file and ipc only reach this host. A host '
                    'that dies holding a slot loses it when the backend '
                    'notices: redis, etcd3 and memcached locks are leases '
                    'that expire lock_timeout seconds (default 30; e.g. '
                    '"redis://ctl:6379?lock_timeout=30") after its last '
                    'heartbeat; zookeeper, mysql and postgresql locks '
                    'end with its session. Unset: "file://<[vmbeam] '
                    'state_path>/coordination", which counts only this '
                    'host, so action = rejuvenate then needs '
                    'single_node = true.'),
    cfg.BoolOpt('single_node',
                default=False,
                help='This compute host is the only one of its cloud that '
                     'rejuvenates (an all-in-one or lab host): '
                     'action = rejuvenate may then run without a shared '
                     'backend_url. Never set it on hosts of a multi-host '
                     'cloud: each would count only itself, and all of '
                     'them could rejuvenate at the same time.'),
]

limit_opts = [
    cfg.IntOpt('min_free_memory_mib',
               default=512,
               min=0,
               help='host_free_memory: the host is exhausted when '
                    'MemAvailable falls to this many MiB.'),
    cfg.IntOpt('daemon_rss_limit_mib',
               default=1024,
               min=1,
               help='daemon_rss: the hypervisor daemon (the active '
                    'generation\'s libvirtd) is exhausted at this '
                    'resident size in MiB.'),
    cfg.IntOpt('daemon_fds_limit',
               default=0,
               min=0,
               help='daemon_fds: the daemon is exhausted at this many '
                    'open descriptors. 0: its own RLIMIT_NOFILE soft '
                    'limit.'),
    cfg.IntOpt('qemu_overhead_limit_mib',
               default=512,
               min=1,
               help='qemu_overhead: a guest\'s QEMU is exhausted when its '
                    'private memory beyond guest RAM reaches this many '
                    'MiB (the largest over all guests is watched).'),
    cfg.IntOpt('hypervisor_kernel_min_free_memory_mib',
               default=128,
               min=0,
               help='hypervisor_kernel_free_memory: a hypervisor with a '
                    'kernel of its own (nested: the L1 VM, of [vmbeam_'
                    'nested] l1_memory_mib) is exhausted when that '
                    'kernel\'s MemAvailable falls to this many MiB. '
                    'Colocated generations run on the host\'s kernel: '
                    'see min_free_memory_mib.'),
    cfg.IntOpt('hypervisor_kernel_slab_limit_percent',
               default=25,
               min=1,
               max=100,
               help='hypervisor_kernel_slab: that kernel is exhausted '
                    'when its unreclaimable slab (SUnreclaim) reaches '
                    'this percentage of its memory (MemTotal).'),
    cfg.StrOpt('instances_path',
               default='/var/lib/nova/instances',
               help='instances_disk_free: directory whose filesystem is '
                    'watched (Nova\'s instances_path; the driver sets it '
                    'from [DEFAULT] instances_path).'),
    cfg.IntOpt('min_free_disk_mib',
               default=1024,
               min=0,
               help='instances_disk_free: exhausted when the free space '
                    'for unprivileged users falls to this many MiB.'),
    cfg.FloatOpt('libvirt_latency_limit_ms',
                 default=2000.0,
                 min=1.0,
                 help='libvirt_latency: the daemon is exhausted when '
                      'listing its domains takes this many milliseconds.'),
]

ALL_OPTS = monitor_opts + trend_opts + policy_opts + limit_opts


def register_opts(conf):
    group = groups.fresh(aging_group)
    conf.register_group(group)
    conf.register_opts(ALL_OPTS, group=group)


def list_opts():
    return {aging_group: ALL_OPTS}
