#!/bin/sh
# /init of the nova-vmbeam test guest (busybox sh, PID 1).
#
# Loads the virtio drivers, sets up the network and the disk worker if the
# kernel command line asks for them, starts memworker with parameters taken
# from the kernel command line and then stays alive forever: if PID 1 exits
# the kernel panics, and a test should see a clear "exited" line instead.
#
# Kernel parameters (all optional):
#   vmbeam.ram_mib=N      MiB of memory the worker owns and verifies (64)
#   vmbeam.dirty_mib_s=N  MiB/s the worker rewrites, 0 = verify only (0)
#   vmbeam.report_ms=N    interval between status lines (500)
#   vmbeam.verify_mib_s=N MiB/s verified, 0 = as fast as possible (0)
#   vmbeam.ip=ADDR/PREFIX address of eth0; then the guest answers ping and
#                         serves a line on TCP port 7777 (no network)
#   vmbeam.disk=DEV       run diskworker on DEV, overwriting its first MiB
#                         (no disk I/O)
#   vmbeam.hostname=NAME  hostname (vmbeam)

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
TCP_PORT=7777

mount -t proc proc /proc
mount -t sysfs sysfs /sys
# The kernel does not auto-mount devtmpfs when it runs an initramfs /init.
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# Kernel messages (a boot may print them: kernel_cmdline(boot_messages) in
# builder.py) stop here: a line of the kernel's must not land inside one
# of the workers'.
dmesg -n 1 2>/dev/null

ram_mib=64
dirty_mib_s=0
report_ms=500
verify_mib_s=0
ip=
disk=
hostname=vmbeam
# Dotted parameters are not passed to init as env/argv: read /proc/cmdline.
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vmbeam.ram_mib=*) ram_mib="${arg#*=}" ;;
        vmbeam.dirty_mib_s=*) dirty_mib_s="${arg#*=}" ;;
        vmbeam.report_ms=*) report_ms="${arg#*=}" ;;
        vmbeam.verify_mib_s=*) verify_mib_s="${arg#*=}" ;;
        vmbeam.ip=*) ip="${arg#*=}" ;;
        vmbeam.disk=*) disk="${arg#*=}" ;;
        vmbeam.hostname=*) hostname="${arg#*=}" ;;
    esac
done
hostname "$hostname"

out=/dev/ttyS0
[ -c "$out" ] || out=/dev/console
# Plain "\n" line endings in the log, no tty echo of anything.
stty -F "$out" raw -echo 2>/dev/null

# Leading newline: the firmware may have left a line unterminated.
echo > "$out"
echo "VMBEAM-GUEST booted ram_mib=$ram_mib dirty_mib_s=$dirty_mib_s" \
    "report_ms=$report_ms verify_mib_s=$verify_mib_s" > "$out"

# wait_for PATH: give a driver up to 5 s to create a device.
wait_for() {
    i=0
    while [ ! -e "$1" ] && [ $i -lt 50 ]; do
        usleep 100000
        i=$((i + 1))
    done
    [ -e "$1" ]
}

# The builder listed the modules in dependency order (none if the kernel
# has the drivers built in).
for module in $(cat /lib/modules/order); do
    insmod "/lib/modules/$module.ko" > "$out" 2>&1 ||
        echo "VMBEAM-GUEST ERROR insmod $module failed" > "$out"
done

if [ -n "$ip" ]; then
    ip link set lo up
    if wait_for /sys/class/net/eth0 &&
            ip addr add "$ip" dev eth0 && ip link set eth0 up; then
        nc -ll -p "$TCP_PORT" -e /bin/vmbeam-tcp \
            < /dev/null > /dev/null 2>&1 &
        # Report only once it listens (state 0A in /proc/net/tcp{,6}).
        listening=":$(printf '%04X' "$TCP_PORT") [0-9A-F]*:0000 0A"
        i=0
        while ! grep -qs "$listening" /proc/net/tcp /proc/net/tcp6 &&
                [ $i -lt 50 ]; do
            usleep 100000
            i=$((i + 1))
        done
        if grep -qs "$listening" /proc/net/tcp /proc/net/tcp6; then
            echo "VMBEAM-GUEST net ip=$ip port=$TCP_PORT" > "$out"
        else
            echo "VMBEAM-GUEST ERROR net: nothing listens on TCP port" \
                "$TCP_PORT" > "$out"
        fi
    else
        echo "VMBEAM-GUEST ERROR net ip=$ip: no eth0 or ip failed" > "$out"
    fi
fi

if [ -n "$disk" ]; then
    if wait_for "$disk"; then
        (
            /bin/diskworker "$disk" "$report_ms"
            echo "VMBEAM-GUEST diskworker exited rc=$?"
        ) > "$out" 2>&1 &
    else
        echo "VMBEAM-DISK ERROR no device $disk" > "$out"
    fi
fi

/bin/memworker "$ram_mib" "$dirty_mib_s" "$report_ms" "$verify_mib_s" \
    > "$out" 2>&1
echo "VMBEAM-GUEST memworker exited rc=$?" > "$out"

# Never let PID 1 exit.
while true; do
    sleep 3600
done
