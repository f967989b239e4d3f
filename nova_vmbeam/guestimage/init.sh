#!/bin/sh
# /init of the nova-vmbeam test guest (busybox sh, PID 1).
#
# Starts memworker with parameters taken from the kernel command line and
# then stays alive forever: if PID 1 exits the kernel panics, and a test
# should see a clear "exited" line instead.
#
# Kernel parameters (all optional):
#   vmbeam.ram_mib=N      MiB of memory the worker owns and verifies (64)
#   vmbeam.dirty_mib_s=N  MiB/s the worker rewrites, 0 = verify only (0)
#   vmbeam.report_ms=N    interval between status lines (500)
#   vmbeam.verify_mib_s=N MiB/s verified, 0 = as fast as possible (0)

export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
# The kernel does not auto-mount devtmpfs when it runs an initramfs /init.
mount -t devtmpfs devtmpfs /dev 2>/dev/null

ram_mib=64
dirty_mib_s=0
report_ms=500
verify_mib_s=0
# Dotted parameters are not passed to init as env/argv: read /proc/cmdline.
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vmbeam.ram_mib=*) ram_mib="${arg#*=}" ;;
        vmbeam.dirty_mib_s=*) dirty_mib_s="${arg#*=}" ;;
        vmbeam.report_ms=*) report_ms="${arg#*=}" ;;
        vmbeam.verify_mib_s=*) verify_mib_s="${arg#*=}" ;;
    esac
done

out=/dev/ttyS0
[ -c "$out" ] || out=/dev/console
# Plain "\n" line endings in the log, no tty echo of anything.
stty -F "$out" raw -echo 2>/dev/null

# Leading newline: the firmware may have left a line unterminated.
echo > "$out"
echo "VMBEAM-GUEST booted ram_mib=$ram_mib dirty_mib_s=$dirty_mib_s" \
    "report_ms=$report_ms verify_mib_s=$verify_mib_s" > "$out"

/bin/memworker "$ram_mib" "$dirty_mib_s" "$report_ms" "$verify_mib_s" \
    > "$out" 2>&1
echo "VMBEAM-GUEST memworker exited rc=$?" > "$out"

# Never let PID 1 exit.
while true; do
    sleep 3600
done
