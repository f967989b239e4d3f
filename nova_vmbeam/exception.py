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

"""Errors of nova-vmbeam.

Every error an operator can cause says what is wrong and how to fix it, and
is raised before anything was changed.
"""


class VMBeamError(Exception):
    """Base class; ``msg_fmt`` is filled from the keyword arguments."""

    msg_fmt = 'An unknown nova-vmbeam error occurred.'

    def __init__(self, message=None, **kwargs):
        self.kwargs = kwargs
        if message is None:
            message = self.msg_fmt % kwargs
        super().__init__(message)


class InvalidInput(VMBeamError):
    """Bad input: nothing was changed."""

    msg_fmt = 'Invalid input: %(reason)s'


class UnknownPlugin(InvalidInput):
    """No plugin of that name is installed (nova_vmbeam.plugins)."""

    msg_fmt = ('Unknown %(kind)s %(name)r; installed: %(available)s. '
               '%(fix)s')


class RamNotShareable(InvalidInput):
    msg_fmt = ('Guest %(guest)s cannot be moved by the %(mover)s mover: '
               '%(reason)s. %(fix)s')


class QemuTooOld(InvalidInput):
    msg_fmt = ('%(feature)s needs QEMU >= %(needed)s, but %(binary)s is '
               '%(found)s. Install QEMU %(needed)s or newer (on Debian 12: '
               'apt-get -t bookworm-backports install qemu-system-x86), or '
               'use another mover: %(alternatives)s.')


class PoolError(InvalidInput):
    msg_fmt = 'RAM pool %(path)s: %(reason)s. %(fix)s'


# --- vmbeam-pagemoverd, the daemon that owns the RAM pools ---------------

class DaemonError(PoolError):
    """The daemon refused a request; it changed nothing.

    ``code`` is the protocol's error code (pool.protocol); the message is
    the daemon's, which names the fix.
    """

    def __init__(self, code, message):
        self.code = code
        super().__init__(message='%s (pagemoverd: %s)' % (message, code))


class ProtocolError(VMBeamError):
    msg_fmt = ('vmbeam-pagemoverd at %(socket)s answered something that is '
               'not protocol version %(version)d: %(detail)s. Run a daemon '
               'from the same nova-vmbeam release as this client.')


class DaemonNotFound(VMBeamError):
    msg_fmt = ('%(binary)s not found (looked at %(looked)s). Build it with '
               '"make -C native" (tools/install.sh does), or set [vmbeam] '
               'pagemoverd_binary, or use [vmbeam] ram_pool_backend = file.')


class DaemonStartFailed(VMBeamError):
    msg_fmt = 'vmbeam-pagemoverd did not start: %(detail)s'


class GuestNotFound(InvalidInput):
    msg_fmt = 'No guest %(guest)r here. Known guests: %(known)s.'


class QemuStartFailed(VMBeamError):
    msg_fmt = 'QEMU for %(guest)s failed to start: %(detail)s'


class QemuGone(VMBeamError):
    """libvirt's pid file names a QEMU that does not run any more."""


class MonitorError(VMBeamError):
    """The monitor refused a command, or could not be reached."""


class MigrationFailed(VMBeamError):
    """QEMU's migration did not complete (the message says how it ended).

    Raised inside a move's transfer phase; the mover rolls back and
    raises MoveFailed from it.
    """


class SiblingStartFailed(VMBeamError):
    """A sibling's daemons did not come up (the message says why)."""


class MoveFailed(VMBeamError):
    """A move failed and was rolled back: the guest runs on its source."""

    msg_fmt = ('Move of %(guest)s with %(mover)s failed during %(phase)s '
               'and was rolled back; the guest still runs on its source: '
               '%(reason)s')


class RollbackFailed(VMBeamError):
    """A move failed and so did its rollback: operator action needed."""

    msg_fmt = ('Move of %(guest)s with %(mover)s failed during %(phase)s '
               '(%(reason)s) and its rollback failed too (%(rollback)s). '
               '%(where)s Resume neither QEMU until you know which one '
               'holds the guest.')


class VerificationFailed(VMBeamError):
    msg_fmt = 'Destination of %(guest)s refused: %(reason)s'


class RejuvenationRunning(VMBeamError):
    msg_fmt = ('A rejuvenation is already running on this host (pid '
               '%(pid)s, journal %(path)s). Wait for it to finish; if that '
               'process is gone the lock is released by itself.')


class RejuvenationAborted(VMBeamError):
    msg_fmt = ('Rejuvenation aborted before any guest moved: %(reason)s. '
               'Generation %(active)s stays active; nothing changed.')


class NotInitialized(VMBeamError):
    msg_fmt = ('No hypervisor generation is active on this host (journal '
               '%(path)s). Run "vmbeam init" first.')


class CoordinationUnavailable(VMBeamError):
    """The coordination backend (tooz) did not answer.

    The aging monitor tries again later.
    """

    msg_fmt = 'coordination backend %(url)s unavailable: %(reason)s'


# --- errors of the Nova driver's RPC API (raised on the compute host and
# re-raised by the client, so they must live in this module) ---------------

class InstanceNotFound(InvalidInput):
    msg_fmt = ('Instance %(uuid)s does not exist. Check the UUID with '
               '"openstack server show".')


class InstanceNotOnHost(InvalidInput):
    msg_fmt = ('Instance %(uuid)s runs on host %(where)s, not on '
               '%(host)s. Send the request to %(where)s.')


class InstanceNotRunning(InvalidInput):
    msg_fmt = ('Instance %(uuid)s has no running guest on %(host)s '
               '(%(state)s): only a running instance can be moved. Start '
               'it first.')


class NotVMBeamReady(InvalidInput):
    msg_fmt = ('Instance %(uuid)s cannot be moved by the %(mover)s mover: '
               '%(reason)s. Rebuild or resize it to a flavor with '
               'vmbeam:ram=true (or an image with vmbeam_ram=true) and hard '
               'reboot it, or move it with mover=precopy.')


class HostNotReady(VMBeamError):
    msg_fmt = ('The VMBeam driver on %(host)s is not ready: %(reason)s')


class RamConflict(InvalidInput):
    msg_fmt = ('Instance %(uuid)s asks for VMBeam-ready RAM (%(source)s), '
               'but %(reason)s: QEMU cannot put such a guest\'s RAM into '
               'one shared file. Use a flavor without it, or set the '
               'flavor extra spec vmbeam:ram=false.')


class InstanceMoveFailed(VMBeamError):
    msg_fmt = ('Instance %(uuid)s was not moved: %(reason)s')
