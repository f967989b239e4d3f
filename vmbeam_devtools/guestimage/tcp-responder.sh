#!/bin/sh
# /bin/vmbeam-tcp: run by "nc -ll -e" for every TCP connection to the
# guest (vmbeam.ip=); its stdout is the connection.  One line proving the
# guest's userspace still serves (uptime grows), then EOF.
read -r uptime idle < /proc/uptime
echo "vmbeam-guest $(hostname) uptime=$uptime"
