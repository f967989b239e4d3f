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

"""Driving an L1 VM through its guest agent (qemu-guest-agent in the VM).

L0 has no shell in the L1: whatever must happen inside it (find a BAR,
enable it, read what a QEMU maps) is a guest-exec of busybox sh, through
libvirt's agent passthrough.
"""

import base64
import json
import time

import libvirt
import libvirt_qemu

from nova_vmbeam import exception


class AgentError(exception.VMBeamError):
    msg_fmt = 'Guest agent of %(vm)s: %(reason)s'


def command(dom, execute, timeout=10, **arguments):
    message = {'execute': execute}
    if arguments:
        message['arguments'] = arguments
    try:
        reply = libvirt_qemu.qemuAgentCommand(dom, json.dumps(message),
                                              int(timeout), 0)
    except libvirt.libvirtError as exc:
        raise AgentError(vm=dom.name(), reason='%s: %s' % (execute, exc))
    return json.loads(reply).get('return')


def ping(dom, timeout=5):
    try:
        command(dom, 'guest-ping', timeout=timeout)
        return True
    except AgentError:
        return False


def sh(dom, script, timeout=60, stdin=None):
    """Run ``script`` with /bin/sh in the VM; its stdout (str).

    :param stdin: bytes the script reads on its standard input. Secrets
        go there, never into the script: its text is the process's
        command line in the VM, which every process there can read.

    Raises AgentError (with stderr) if it exits non-zero.
    """
    arguments = {'path': '/bin/sh', 'arg': ['-c', script],
                 'capture-output': True}
    if stdin is not None:
        arguments['input-data'] = base64.b64encode(stdin).decode()
    pid = command(dom, 'guest-exec', **arguments)['pid']
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        status = command(dom, 'guest-exec-status', pid=pid)
        if status.get('exited'):
            break
        if time.monotonic() > deadline:
            raise AgentError(vm=dom.name(), reason='%r still runs after '
                             '%d s' % (script[:60], timeout))
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    out = base64.b64decode(status.get('out-data', '')).decode(
        errors='replace')
    if status.get('exitcode', 0) != 0:
        err = base64.b64decode(status.get('err-data', '')).decode(
            errors='replace')
        raise AgentError(vm=dom.name(), reason='%r exited %s: %s' % (
            script[:60], status.get('exitcode'), (err or out).strip()))
    return out
