#!/bin/sh
# /init of the nova-vmbeam L1 appliance (busybox sh, PID 1): a hypervisor
# VM for the nested sibling. No systemd: it mounts what libvirtd needs,
# loads the virtio drivers, sets up eth0, starts virtlogd and
# qemu-guest-agent (how L0 drives this VM: guest-exec), waits for L0 to
# deliver the TLS keys through the agent, then starts libvirtd (TLS only,
# client certificates required: nova_vmbeam/nested/pki.py), reports on
# the console and stays alive (PID 1 must never exit).
#
# Kernel parameters:
#   vmbeam.ip=ADDR/PREFIX  address of eth0 (required)
#   vmbeam.hostname=NAME   hostname (vmbeam-l1)

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /run /tmp /var/run
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp

out=/dev/ttyS0
[ -c "$out" ] || out=/dev/console
stty -F "$out" raw -echo 2>/dev/null
say() { echo "VMBEAM-L1 $*" > "$out"; }
echo > "$out"

ip=
hostname=vmbeam-l1
# Words, not lines: the command line is one line of words.
# shellcheck disable=SC2013
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vmbeam.ip=*) ip="${arg#*=}" ;;
        vmbeam.hostname=*) hostname="${arg#*=}" ;;
    esac
done
hostname "$hostname"
echo "127.0.0.1 localhost $hostname" > /etc/hosts
say "booted hostname=$hostname"

# shellcheck disable=SC2013
for module in $(cat /lib/modules/order); do
    insmod "/lib/modules/$module.ko" > "$out" 2>&1 ||
        say "ERROR insmod $module failed"
done

# wait_for PATH: give a driver up to 10 s to create a device.
wait_for() {
    i=0
    while [ ! -e "$1" ] && [ $i -lt 100 ]; do
        usleep 100000
        i=$((i + 1))
    done
    [ -e "$1" ]
}

ip link set lo up
if [ -n "$ip" ] && wait_for /sys/class/net/eth0 &&
        ip addr add "$ip" dev eth0 && ip link set eth0 up; then
    say "net ip=$ip"
else
    say "ERROR no network (vmbeam.ip=$ip)"
fi

mkdir -p /var/run/libvirt /var/lib/libvirt/qemu /var/log/libvirt/qemu \
    /var/cache/libvirt/qemu /run/lock
# No udev: /dev/kvm (an L1 on a host with nested KVM) as udev would make
# it, for QEMU's unprivileged user (in the kvm group).
if [ -e /dev/kvm ]; then
    chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi
virtlogd --daemon || say "ERROR virtlogd did not start"

# No udev: find the guest agent's virtio port by its name.
agent=
if wait_for /sys/class/virtio-ports; then
    i=0
    while [ -z "$agent" ] && [ $i -lt 100 ]; do
        for port in /sys/class/virtio-ports/*; do
            if [ "$(cat "$port/name" 2>/dev/null)" = \
                    org.qemu.guest_agent.0 ]; then
                agent=/dev/${port##*/}
            fi
        done
        [ -n "$agent" ] || usleep 100000
        i=$((i + 1))
    done
fi
if [ -n "$agent" ] && wait_for "$agent"; then
    qemu-ga --daemonize --method virtio-serial --path "$agent" \
        --pidfile /run/qemu-ga.pid || say "ERROR qemu-ga did not start"
else
    say "ERROR no guest agent port"
fi

# libvirtd listens only with its keys, which L0 writes through the agent
# (a virtio-serial port: they never cross the network). No timeout here:
# L0's wait for the L1 has one, and an L1 it gave up on is destroyed.
say "waiting for keys"
while [ ! -e /run/vmbeam-pki-ready ]; do
    usleep 100000
done
# On this VM's own network only: guests' bridges (nested/uplinks.py)
# carry no address here, and libvirtd is not to be found on them either.
[ -n "$ip" ] && echo "listen_addr = \"${ip%/*}\"" >> /etc/libvirt/libvirtd.conf
libvirtd --listen --daemon || say "ERROR libvirtd did not start"
# libvirtd daemonizes before its drivers start: it is up once it listens.
i=0
while ! netstat -ltn 2>/dev/null | grep -q ':16514 ' && [ $i -lt 600 ]; do
    usleep 100000
    i=$((i + 1))
done
if ! netstat -ltn 2>/dev/null | grep -q ':16514 '; then
    say "ERROR libvirtd is not listening:" \
        "$(grep error /var/log/libvirt/libvirtd.log | tail -3)"
fi
say "ready"

while true; do
    sleep 3600
done
