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

"""VMBeamDriver: Nova's libvirt driver on rejuvenable hypervisor generations.

A thin adapter: everything Nova does with an instance is LibvirtDriver's
own code, pointed at the active hypervisor generation (a colocated libvirt
daemon run by nova_vmbeam's orchestrator, or the libvirt daemon inside a
nested generation's L1 VM, over TLS) through VMBeamHost. The driver adds

* VMBeam-ready RAM: the guest XML keeps RAM in a pool file named after the
  instance UUID (config.use_pool_ram), allocated before each guest is
  created and freed when it is destroyed;
* the generations: init_host starts (or finds) them and settles whatever
  an interrupted run left; a run moves the connection to the new
  generation without restarting nova-compute;
* the vmbeam RPC server (topic "vmbeam", server = CONF.host), served from
  init_host to cleanup_host;
* a hook for the aging monitor;
* on nested generations, what an instance needs inside the L1 before its
  domain is defined there (NestedHost.prepare: disks served over NBD,
  console log port, boot files, host bridges; its RAM pool attached as a
  PCI BAR), and what the L1 lets go of when it stops.

Load it with [DEFAULT] compute_driver = vmbeam.VMBeamDriver (the
nova.virt.vmbeam shim package).
"""

import os
import pwd
import types

from nova import exception as nova_exception
from nova import rpc as nova_rpc
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import guest as libvirt_guest
from nova.virt.libvirt import utils as libvirt_utils
from nova.virt.libvirt import vif as libvirt_vif
from oslo_log import log as logging
from oslo_utils import excutils

from nova_vmbeam.aging import monitor as aging_monitor
from nova_vmbeam.aging import slots as aging_slots
from nova_vmbeam import conf as vmbeam_conf
from nova_vmbeam import exception
from nova_vmbeam import guest as guest_mod
from nova_vmbeam.libvirt import config as engine_config
from nova_vmbeam.libvirt import host as engine_host
from nova_vmbeam.libvirt import partition as partition_mod
from nova_vmbeam.nested import caching
from nova_vmbeam.nested import consoles as nested_consoles
from nova_vmbeam.nested import disks as nested_disks
from nova_vmbeam.pool import base as pool_base
from nova_vmbeam.privsep import files as privsep_files
from nova_vmbeam.rejuvenation import generations as generations_mod
from nova_vmbeam.rejuvenation import orchestrator as orchestrator_mod
from nova_vmbeam import rpc
from nova_vmbeam.rpc import server as rpc_server
from nova_vmbeam import siblings as siblings_mod
from nova_vmbeam.virt import config as vmbeam_config
from nova_vmbeam.virt import host as vmbeam_host
from nova_vmbeam.virt import ram
from nova_vmbeam.virt import rejuvenation

CONF = vmbeam_conf.CONF
LOG = logging.getLogger(__name__)

# Instance files QEMU never opens; they stay nova-compute's.
_NOT_QEMUS = ('console.log', 'disk.info')


class VMBeamDriver(libvirt_driver.LibvirtDriver):

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi, read_only)
        # The generation-aware Host in place of Nova's (nothing but the
        # VIF driver holds on to the first one).
        self._host = vmbeam_host.VMBeamHost(
            self._uri(), read_only, lifecycle_event_handler=self.emit_event,
            conn_event_handler=self._handle_conn_event)
        self.vif_driver = libvirt_vif.LibvirtGenericVIFDriver(self._host)
        self._rejuvenation = rejuvenation.HostRejuvenation(self, CONF,
                                                           CONF.host)
        self._rpc_server = None
        self._aging_monitor = None

    # --- start and stop ------------------------------------------------------

    def _start_generations(self):
        """Start (or find) the hypervisor generations; their URIs.

        Returns (primary, secondaries): the generation new guests go to,
        and an interrupted run's source, whose guests are still to move.
        An interrupted move is settled first.
        """
        return self._rejuvenation.orchestrator.endpoints()

    def init_host(self, host):
        sibling_class = self._check_sibling_kind()
        self._host.guests_in_vm = sibling_class.guests_in_vm
        self._check_aging_config()
        # One libvirt event loop per process: Nova's (started by
        # Host.initialize() in super().init_host) serves the engine's
        # connections too.
        engine_host.use_external_event_loop()
        self._host.initialize()   # the loop, before any connection opens
        primary, secondaries = self._start_generations()
        # No connection is open yet: the first one goes to the generation.
        self._host._uri = primary
        super().init_host(host)
        for uri in secondaries:
            self._host.add_secondary(uri)
        self._start_rpc_server()
        self._start_aging_monitor()

    def cleanup_host(self, host):
        self._stop_rpc_server()
        self._stop_aging_monitor()
        self._rejuvenation.stop(CONF.vmbeam.rejuvenation_stop_timeout)
        super().cleanup_host(host)

    def _start_rpc_server(self):
        if nova_rpc.TRANSPORT is None:
            LOG.warning('no RPC transport: the vmbeam RPC API is not served')
            return
        self._rpc_server = rpc_server.start(
            nova_rpc.TRANSPORT, CONF.host, self._rejuvenation,
            serializer=nova_rpc.RequestContextSerializer(None))
        LOG.info('serving the vmbeam RPC API as %s', CONF.host)

    def _stop_rpc_server(self):
        server, self._rpc_server = self._rpc_server, None
        if server is not None:
            rpc_server.stop(server)

    def _check_sibling_kind(self):
        """Refuse a sibling kind whose generations cannot run instances.

        A nested generation runs its guests inside a hypervisor VM, which
        reaches none of what Nova sets up on this host for an instance
        (its disks under instances_path, its volumes, its VIFs): Nova
        would boot instances there that could not work. Checked first in
        init_host, like the aging config, so nothing is started.
        """
        name = CONF.vmbeam.sibling_kind
        try:
            sibling_class = siblings_mod.kind(name)
        except exception.UnknownPlugin as exc:
            raise nova_exception.InvalidConfiguration(str(exc))
        if sibling_class.runs_nova_instances:
            self._check_no_other_kind_runs(name)
            self._check_ram_mapping(sibling_class)
            return sibling_class
        usable = [kind for kind in siblings_mod.available()
                  if siblings_mod.kind(kind).runs_nova_instances]
        raise nova_exception.InvalidConfiguration(
            '[vmbeam] sibling_kind = %s: VMBeamDriver cannot run Nova '
            'instances on %s generations (their guests run inside a '
            'hypervisor VM that reaches neither the instances\' disks and '
            'volumes nor their networks on this host). Set [vmbeam] '
            'sibling_kind = %s in nova-compute\'s configuration; %s '
            'generations are for the vmbeam command on a host without '
            'nova-compute.' % (name, name, ' or '.join(usable), name))

    @staticmethod
    def _check_ram_mapping(sibling_class):
        """Refuse device-DAX RAM for instances (not built for Nova).

        Nova frees an instance's RAM at its delete and makes it anew at
        its start; a pool plugged into an L1 as virtio-pmem cannot be
        unplugged, so the L1 would keep it mapped: the RAM of a deleted
        instance would be held until the L1 retires, and a stopped one
        could not start again in the same L1.
        """
        if not sibling_class.guests_in_vm:
            return
        if caching.for_conf(CONF, sibling_class.accel).dax:
            raise nova_exception.InvalidConfiguration(
                '[vmbeam_nested] bar_mapping = %s gives device-DAX RAM, '
                'which VMBeamDriver does not support: an L1 cannot let go '
                'of such a pool, so a deleted instance\'s RAM would stay '
                'held and a stopped one could not start again. Set '
                '[vmbeam_nested] bar_mapping = resource2_wc (or resource2) '
                'in nova-compute\'s configuration; device-DAX is for the '
                'vmbeam command on a host without nova-compute.' %
                CONF.vmbeam_nested.bar_mapping)

    def _check_no_other_kind_runs(self, name):
        """Refuse to switch sibling kinds under running generations.

        Their instances run in generations of the kind they were started
        in (a colocated daemon, or an L1 VM): the driver cannot reach
        them as another kind's, and a rejuvenation cannot move them
        between kinds.
        """
        state = self._rejuvenation.orchestrator.state()
        others = sorted(
            (number, generation.kind)
            for number, generation in state.generations.items()
            if generation.kind != name and generation.state not in (
                generations_mod.RETIRED, generations_mod.FAILED))
        if not others:
            return
        kinds = sorted({kind for _number, kind in others})
        raise nova_exception.InvalidConfiguration(
            '[vmbeam] sibling_kind = %s, but this host runs %s generations '
            '(%s): their instances cannot be reached or moved as %s ones. '
            'Set [vmbeam] sibling_kind = %s again. A host that runs '
            'generations cannot change kind in place: empty it (migrate its '
            'instances away) and deploy it anew with the other kind.' % (
                name, ' and '.join(kinds),
                ', '.join('gen%d' % n for n, _k in others), name,
                kinds[0]))

    def _check_aging_config(self):
        """Refuse to start on an aging config that is unsafe for a fleet.

        action = rejuvenate without a backend shared by the compute hosts
        (or single_node) would let every host rejuvenate whenever its own
        monitor decides. nova-compute then fails to start, as it does on
        Nova's own invalid settings (InvalidConfiguration), rather than
        run with a monitor that only reports: an operator who configured
        rejuvenations would otherwise learn from a log line, if at all,
        that none will happen. It is checked first in init_host, before
        any generation is started or adopted and before the RPC server
        runs, so a refused start leaves the host as it found it (a
        nova-compute that failed later, under systemd, would take the
        generations it had started down with its cgroup).
        """
        opts = CONF.vmbeam_aging
        if not opts.enabled or opts.action != 'rejuvenate':
            return
        try:
            aging_slots.require_fleet_limit(CONF)
        except exception.InvalidInput as exc:
            raise nova_exception.InvalidConfiguration(str(exc))

    def _start_aging_monitor(self):
        """The aging monitor ([vmbeam_aging]): rejuvenates in time.

        It watches the active generation's resources and, when one of
        them trends towards exhaustion, rejuvenates this host the way an
        RPC request would (notifications and instance actions included).
        """
        if not CONF.vmbeam_aging.enabled:
            return
        if not CONF.vmbeam_aging.instances_path:
            # Nova's instance directory is the disk that fills up.
            CONF.set_override('instances_path', CONF.instances_path,
                              'vmbeam_aging')
        self._aging_monitor = aging_monitor.AgingMonitor(
            CONF, CONF.host, self._rejuvenation.rejuvenate_and_wait,
            orchestrator=self._rejuvenation.orchestrator)
        self._aging_monitor.start()

    def _stop_aging_monitor(self):
        monitor, self._aging_monitor = self._aging_monitor, None
        stop = getattr(monitor, 'stop', None)
        if stop is not None:
            stop()

    def _aging_status(self):
        status = getattr(self._aging_monitor, 'status', None)
        return status() if status is not None else None

    def follow_generations(self, primary, secondary):
        """New guests go to ``primary``; guests on ``secondary`` stay found.

        Called when a run's target generation is ready, before any guest
        moves.
        """
        if self._host.uri != primary:
            self._host.switch_uri(primary, keep_old=True)
        if secondary != primary and secondary not in \
                self._host.secondary_uris():
            self._host.add_secondary(secondary)

    # --- what the host's rejuvenation (virt/rejuvenation.py) asks ----------

    @property
    def connection_uri(self):
        """URI of the generation new guests go to (the primary)."""
        return self._host.uri

    def running_guest(self, instance):
        """nova's Guest of ``instance`` on whichever generation runs it."""
        return self._host.get_guest(instance)

    def begin_move(self, uuid):
        """Guest ``uuid`` moves: its events of the two ends are held."""
        self._host.begin_move(uuid)

    def end_move(self, uuid, moved):
        """The move of ``uuid`` ended (``moved``: it runs on the target)."""
        self._host.end_move(uuid, moved)

    def release_old_generations(self):
        """Let go of the connections to generations about to be retired."""
        self._host.release_secondaries()

    def get_available_resource(self, nodename):
        # Nova's periodic resource update (every update_resources_interval
        # s) doubles as the watchdog of the nested guests' disk server: a
        # dead one's guests wait for it, and it is started again here.
        if self._host.guests_in_vm:
            try:
                nested_disks.StorageDaemon(CONF).watch()
            except exception.VMBeamError as exc:
                LOG.error('the nested guests\' disk server: %s', exc)
        return super().get_available_resource(nodename)

    def _get_instance_disk_info_from_config(self, guest_config,
                                            block_device_info):
        # A running nested instance's disks are L0's NBD exports in its
        # domain, which Nova's disk accounting (the over-commit of the
        # host's disk, a resize's disk info) would skip as volumes: it
        # reads them as the files they are on this host.
        if self._host.guests_in_vm and any(
                getattr(device, 'source_protocol', None) == 'nbd'
                for device in guest_config.devices):
            try:
                guest_config = self._host.get_guest(types.SimpleNamespace(
                    uuid=guest_config.uuid,
                    name=guest_config.name)).get_config()
            except nova_exception.InstanceNotFound:
                pass   # gone meanwhile: as its last XML says
        return super()._get_instance_disk_info_from_config(
            guest_config, block_device_info)

    def update_provider_tree(self, provider_tree, nodename, allocations=None):
        super().update_provider_tree(provider_tree, nodename,
                                     allocations=allocations)
        # Marks this compute node as one that serves the vmbeam RPC API:
        # the openstack CLI checks for it before sending a request here.
        provider_tree.add_traits(nodename, rpc.HOST_TRAIT)

    # --- VMBeam-ready RAM ----------------------------------------------------

    def _get_guest_config(self, instance, network_info, image_meta,
                          disk_info, *args, **kwargs):
        guest = super()._get_guest_config(instance, network_info, image_meta,
                                          disk_info, *args, **kwargs)
        if guest.virt_type in ('qemu', 'kvm'):
            ram_plan = ram.plan(instance, CONF)
            if ram_plan is not None:
                vmbeam_config.use_pool_ram(guest, ram_plan.path(
                    instance.uuid))
        return guest

    @staticmethod
    def _qemu_ids():
        try:
            pw = pwd.getpwnam(CONF.vmbeam.qemu_user)
        except KeyError:
            return None
        return pw.pw_uid, pw.pw_gid

    def _grant_qemu_access(self, instance):
        """Hand the instance's files to the generations' QEMU user.

        Generations never chown (two of them share the files during a
        move), so what QEMU opens must be its own beforehand.
        """
        path = libvirt_utils.get_instance_path(instance)
        ids = self._qemu_ids()
        if ids is None or not os.path.isdir(path):
            return
        for name in os.listdir(path):
            file_path = os.path.join(path, name)
            if name in _NOT_QEMUS or not os.path.isfile(file_path):
                continue
            privsep_files.chown(file_path, *ids)

    def _live_snapshot(self, context, instance, guest, disk_path, out_path,
                       source_format, image_format, image_meta):
        # QEMU copies the root disk into out_path.delta, which Nova creates
        # (qemu-img create, as nova-compute's user) and libvirt would chown:
        # made here beforehand, nova-compute's and writable by QEMU's group,
        # so that both write it (qemu-img keeps a file's owner and mode).
        delta = os.path.abspath(out_path + '.delta')
        ids = self._qemu_ids()
        if ids is not None:
            fd = os.open(delta, os.O_WRONLY | os.O_CREAT, 0o660)
            try:
                os.fchmod(fd, 0o660)   # whatever the umask
            finally:
                os.close(fd)
            privsep_files.chown(delta, os.geteuid(), ids[1])
        if self._host.guests_in_vm:
            return self._live_snapshot_in_vm(
                context, instance, disk_path, delta, out_path,
                source_format, image_format, image_meta)
        return super()._live_snapshot(context, instance, guest, disk_path,
                                      out_path, source_format, image_format,
                                      image_meta)

    def _live_snapshot_in_vm(self, context, instance, disk_path, delta,
                             out_path, source_format, image_format,
                             image_meta):
        """A running nested instance's snapshot, taken at L0.

        Nova's copies the disk inside the instance's QEMU, which runs in
        the L1 and has no file of this host to copy into. The disk is
        this host's file, held open by L0's disk server, which copies it
        (nested/disks.py): the instance's top layer into a delta on the
        same backing file, as Nova's own delta, then flattened as Nova
        does. The instance runs on; a quiesce, where it can, only spans
        the start of the copy, which sets its point in time.
        """
        size = libvirt_utils.get_disk_size(disk_path, format=source_format)
        backing = libvirt_utils.get_disk_backing_file(
            disk_path, format=source_format, basename=False)
        libvirt_utils.create_image(delta, 'qcow2', size,
                                   backing_file=backing)
        try:
            self._can_quiesce(instance, image_meta)
        except nova_exception.NovaException as exc:
            if image_meta.properties.get('os_require_quiesce', False):
                raise
            LOG.info('Quiescing instance not available: %s', exc,
                     instance=instance)
        quiesced = []
        try:
            self.quiesce(context, instance, image_meta)
            quiesced.append(True)
        except nova_exception.NovaException as exc:
            LOG.info('Skipping quiescing instance: %s', exc,
                     instance=instance)

        def thaw():
            if quiesced:
                quiesced.pop()
                self.unquiesce(context, instance, image_meta)
        try:
            nested_disks.StorageDaemon(CONF).snapshot(disk_path, delta,
                                                      started=thaw)
        finally:
            thaw()
        libvirt_utils.extract_snapshot(delta, 'qcow2', out_path,
                                       image_format)

    def _connect_volume(self, context, connection_info, instance,
                        *args, **kwargs):
        super()._connect_volume(context, connection_info, instance, *args,
                                **kwargs)
        # What libvirt's DAC driver would do with dynamic_ownership: the
        # volume becomes QEMU's, its owner is remembered (Nova keeps
        # connection_info with the attachment) and restored on detach.
        data = connection_info.get('data') or {}
        path = data.get('device_path')
        ids = self._qemu_ids()
        if not path or ids is None or not os.path.exists(path):
            return
        if 'vmbeam_owner' not in data:
            st = os.stat(path)
            data['vmbeam_owner'] = [st.st_uid, st.st_gid]
        privsep_files.chown(path, *ids)

    def _disconnect_volume(self, context, connection_info, instance,
                           *args, **kwargs):
        data = connection_info.get('data') or {}
        path, owner = data.get('device_path'), data.get('vmbeam_owner')
        if path and self._host.guests_in_vm:
            # A volume detached from a running nested guest was served to
            # its L1 (virt/host.py, _NestedGuest.attach_device): L0's disk
            # server lets go of the device before os-brick removes it
            # (refused while an L1 still uses it).
            nested_disks.StorageDaemon(CONF).unexport(instance.uuid,
                                                      path=path)
        if path and owner and os.path.exists(path):
            privsep_files.chown(path, *owner)
            del data['vmbeam_owner']
        super()._disconnect_volume(context, connection_info, instance,
                                   *args, **kwargs)

    def _primary_sibling(self):
        """The generation new guests go to; None if not found."""
        orchestrator = self._rejuvenation.orchestrator
        state = orchestrator.state()
        for number in sorted(state.generations, reverse=True):
            sibling = orchestrator.sibling(number, state)
            if sibling is not None and sibling.uri == self._host.uri:
                return sibling
        return None

    def _running_vm_hosts(self):
        """The hypervisor VMs of this host's running nested generations."""
        orchestrator = self._rejuvenation.orchestrator
        state = orchestrator.state()
        hosts = []
        for number in sorted(state.generations):
            sibling = orchestrator.sibling(number, state)
            if sibling is None or not sibling.guests_in_vm or \
                    not sibling.running():
                continue
            hosts.append(sibling.host())
        return hosts

    def _create_guest(self, context, xml, instance, *args, **kwargs):
        sibling = self._primary_sibling()
        # In its generation's partition, as the guests the engine starts
        # (Host.launch): no other generation's guest shares its cgroups.
        if sibling is not None and sibling.partition:
            xml = partition_mod.with_partition(xml, sibling.partition)
        spec = engine_config.guest_spec(xml)
        ram_plan = None
        if spec.ram.kind == guest_mod.RAM_FILE:
            ram_plan = ram.plan(instance, CONF)
            if ram_plan is not None and \
                    ram_plan.path(instance.uuid) == spec.ram.path:
                ram.allocate(ram_plan, instance.uuid)
            else:   # XML of an earlier configuration: as it says
                ram.allocate_path(CONF, spec.ram.path, instance.uuid,
                                  spec.ram_mib << 20)
                ram_plan = None
        self._grant_qemu_access(instance)
        if sibling is not None and sibling.guests_in_vm:
            xml = self._into_vm(sibling, xml, instance, spec, ram_plan)
        return super()._create_guest(context, xml, instance, *args,
                                     **kwargs)

    @staticmethod
    def _into_vm(sibling, xml, instance, spec, ram_plan):
        """The domain XML as the generation's hypervisor VM runs it."""
        if spec.ram.kind == guest_mod.RAM_FILE and (
                ram_plan is None or ram_plan.hugepages or
                not isinstance(ram_plan.pool, pool_base.AttachablePool)):
            raise exception.PoolError(
                path=spec.ram.path,
                reason='on %s generations an instance\'s RAM must be in '
                       '[vmbeam] ram_pool_path, served by the pagemover '
                       'daemon (no huge pages)' % sibling.kind,
                fix='Use a flavor without hw:mem_page_size, and keep '
                    '[vmbeam] ram_pool_backend = pagemover.')
        host = sibling.host()
        try:
            if ram_plan is not None:
                xml = host.with_attached_ram(xml, ram_plan.pool,
                                             instance.uuid, spec.ram_mib)
            return host.prepare(instance.uuid, xml)
        finally:
            host.close()

    def _release_ram(self, instance):
        if self._host.is_moving(instance.uuid):
            return
        # A standby generation ("vmbeam standby") may hold a destination
        # prepared for this guest: it maps the RAM, so it goes first.
        try:
            self._rejuvenation.orchestrator.discard_standby(
                names=[instance.name])
        except exception.VMBeamError as exc:
            LOG.warning('prepared destination of %s: %s', instance.uuid,
                        exc)
        self._leave_vms(instance)
        ram.release(CONF, instance.uuid)

    def _leave_vms(self, instance):
        """A stopped guest's hold in the nested generations, let go.

        Its pool is detached from every L1 (L0 must not free RAM an L1
        still maps: a failure stops here, and ram.release would refuse
        anyway), its console port and boot files go, and its disks are
        no longer served (they are again at its next start), so that
        Nova may work on them at L0 (a snapshot of a stopped instance).
        """
        if not self._host.guests_in_vm:
            return   # colocated: no journal read on every destroy
        hosts = self._running_vm_hosts()
        if not hosts:
            return
        pool = ram.pool_at(CONF, CONF.vmbeam.ram_pool_path)
        console_log = self._get_console_log_path(instance)
        for host in hosts:
            try:
                host.forget(instance.uuid, pool, console_log)
            finally:
                host.close()
        try:
            nested_disks.StorageDaemon(CONF).unexport(instance.uuid)
        except exception.VMBeamError as exc:
            LOG.warning('disks of %s stay served: %s', instance.uuid, exc)

    def get_console_output(self, context, instance):
        # A nested guest's serial port writes through a port of its L1 to
        # the log on this host, which its domain's metadata names; Nova
        # would look for a pty in the L1's XML, which is not this host's.
        if not self._host.guests_in_vm:
            return super().get_console_output(context, instance)
        guest = self._host.get_guest(instance)
        console_log = nested_consoles.log_path(guest.get_xml_desc())
        if console_log:
            if not os.path.exists(console_log):
                return b''
            return self._get_console_output_file(instance, console_log)
        return super().get_console_output(context, instance)

    def attach_interface(self, context, instance, image_meta, vif):
        if self._host.guests_in_vm and \
                self._host.get_guest(instance).is_active():
            # The host bridge must reach the L1 that runs the instance
            # before that L1's libvirtd puts the new tap on it: the VIF is
            # plugged here first (Nova plugs it again: plugging is
            # idempotent, as Nova's own plug_vifs at every start relies on).
            self.vif_driver.plug(instance, vif)
            cfg = self.vif_driver.get_config(instance, vif, image_meta,
                                             instance.flavor,
                                             CONF.libvirt.virt_type)
            if cfg.net_type == 'bridge':
                try:
                    self._reach_bridge_in_vm(instance, cfg.source_dev)
                except Exception:
                    with excutils.save_and_reraise_exception():
                        self.vif_driver.unplug(instance, vif)
        return super().attach_interface(context, instance, image_meta, vif)

    def _reach_bridge_in_vm(self, instance, bridge):
        """Host bridge ``bridge`` reaches the L1 running ``instance``."""
        hosts = self._running_vm_hosts()
        try:
            for host in hosts:
                if host.guest(instance.name) is not None:
                    host.reach_bridges([bridge])
                    return
        finally:
            for host in hosts:
                host.close()
        raise nova_exception.InstanceNotRunning(instance_id=instance.uuid)

    def _destroy(self, instance, *args, **kwargs):
        result = super()._destroy(instance, *args, **kwargs)
        self._release_ram(instance)
        return result

    def cleanup(self, context, instance, *args, **kwargs):
        result = super().cleanup(context, instance, *args, **kwargs)
        self._release_ram(instance)
        return result

    def pre_live_migration(self, context, instance, *args, **kwargs):
        ram_plan = ram.plan(instance, CONF)
        if ram_plan is not None:
            # The incoming QEMU maps the same pool path as the source.
            ram.allocate(ram_plan, instance.uuid)
        result = super().pre_live_migration(context, instance, *args,
                                            **kwargs)
        # The disks Nova just made here are opened by the incoming QEMU.
        self._grant_qemu_access(instance)
        return result

    def post_live_migration_at_source(self, context, instance, *args,
                                      **kwargs):
        result = super().post_live_migration_at_source(context, instance,
                                                       *args, **kwargs)
        self._release_ram(instance)
        return result

    def _live_migration_operation(self, context, instance, dest,
                                  block_migration, migrate_data, guest,
                                  device_names):
        return super()._live_migration_operation(
            context, instance, dest, block_migration, migrate_data,
            _LeavingGuest(guest._domain), device_names)

    @staticmethod
    def _live_migration_uri(dest):
        """Reach the destination's *active* generation over ssh.

        The source cannot know the destination's generation, so the URI
        names its active-socket symlink, which the destination swaps on
        every switch. An explicit [libvirt] live_migration_uri wins.
        """
        uri = libvirt_driver.LibvirtDriver._live_migration_uri(dest)
        if CONF.libvirt.live_migration_uri or '?' in uri or \
                not uri.startswith('qemu+ssh://'):
            return uri
        return '%s?socket=%s' % (uri, os.path.join(
            CONF.vmbeam.state_path, orchestrator_mod.Orchestrator.
            ACTIVE_SOCKET))


class _LeavingGuest(libvirt_guest.Guest):
    """A guest live-migrated to another host, without this host's partition.

    Its XML names the resource partition of one of this host's
    generations, which the destination does not have: libvirt there
    would refuse to start it. Without one it runs in the destination's
    default partition (/machine) until the destination's next
    rejuvenation moves it into a generation's partition there.
    """

    def migrate(self, *args, destination_xml=None, **kwargs):
        if destination_xml:
            destination_xml = partition_mod.without_partition(
                destination_xml)
        return super().migrate(*args, destination_xml=destination_xml,
                               **kwargs)
