#!/bin/bash
# shellcheck disable=SC2154
# (SC2154: server show -f shell sets os_ext_sts_power_state and
# os_ext_srv_attr_host through eval.)
# The main job through the operator's own tools, on the all-in-one cloud
# (tools/run-cloud.sh start): boots servers, moves one with
# "openstack server migrate --rejuvenate", rejuvenates the host with
# "openstack hypervisor rejuvenate --wait", then shows that every server is
# ACTIVE and Running on the same host, its instance actions, the per-guest
# figures, and the guests' own memory check from their console logs.
#
#   tools/cloud/demo.sh [SERVERS]     (default 3; the last has plain RAM)
set -euo pipefail
servers=${1:-3}
cloud_dir=${VMBEAM_CLOUD_DIR:-/var/lib/vmbeam-cloud}
prefix=vmbeam-demo
if [ ! -r "$cloud_dir/openrc" ]; then
    echo "demo: no cloud in $cloud_dir; start one with tools/run-cloud.sh start" >&2
    exit 1
fi
# shellcheck source=/dev/null
source "$cloud_dir/openrc"

say() { printf '\n== %s\n' "$*"; }
fail() { echo "demo: FAILED: $*" >&2; exit 1; }

# The guests report their memory check on the console; READY once they
# have filled their working set.
wait_ready() {
    local server=$1 deadline=$((SECONDS + 300))
    until openstack console log show "$server" 2>/dev/null | grep -q 'VMBEAM-WORKER ready'; do
        ((SECONDS < deadline)) || fail "$server did not report READY on its console"
        sleep 3
    done
}

# The newest memory check a guest printed: "errors=N" and the passes.
memory_check() {
    openstack console log show "$1" | grep 'VMBEAM-WORKER' | tail -n 1
}

say "removing the servers of an earlier demo"
for id in $(openstack server list --name "^$prefix-" -f value -c ID); do
    openstack server delete --wait "$id"
done

say "booting $servers servers (flavor vmbeam.small: VMBeam RAM; the last plain.small)"
names=()
for ((i = 1; i <= servers; i++)); do
    flavor=vmbeam.small
    ((i == servers && servers > 1)) && flavor=plain.small
    openstack server create --flavor "$flavor" --image vmbeam-test-guest \
        --nic none "$prefix-$i" -f value -c id >/dev/null
    names+=("$prefix-$i")
done
for name in "${names[@]}"; do
    status=""
    for _ in $(seq 120); do
        status=$(openstack server show "$name" -f value -c status)
        [ "$status" = ACTIVE ] && break
        [ "$status" = ERROR ] && fail "$name went to ERROR"
        sleep 2
    done
    [ "$status" = ACTIVE ] || fail "$name is $status, not ACTIVE"
done
for name in "${names[@]}"; do
    wait_ready "$name"
done
host=$(openstack server show "${names[0]}" -f value -c OS-EXT-SRV-ATTR:host)
openstack server list --name "^$prefix-" --long \
    -c Name -c Status -c 'Power State' -c Host -c Flavor

say "openstack server migrate --rejuvenate ${names[0]}"
openstack server migrate --rejuvenate "${names[0]}"

say "openstack hypervisor rejuvenate $host --wait"
openstack hypervisor rejuvenate "$host" --wait

say "the servers afterwards: ACTIVE / Running on $host"
openstack server list --name "^$prefix-" --long \
    -c Name -c Status -c 'Power State' -c Host
for name in "${names[@]}"; do
    # Sets status, os_ext_sts_power_state (1 is Running) and
    # os_ext_srv_attr_host.
    eval "$(openstack server show "$name" -f shell -c status \
        -c OS-EXT-STS:power_state -c OS-EXT-SRV-ATTR:host)"
    [ "$status" = ACTIVE ] || fail "$name is $status"
    [ "$os_ext_sts_power_state" = 1 ] \
        || fail "$name's power state is $os_ext_sts_power_state"
    [ "$os_ext_srv_attr_host" = "$host" ] \
        || fail "$name is on $os_ext_srv_attr_host, not $host"
done

say "instance actions (openstack server event list ${names[0]})"
openstack server event list "${names[0]}" -c Action -c 'Start Time'

say "the last run's figures (openstack hypervisor rejuvenation show $host)"
openstack hypervisor rejuvenation show "$host" -c active_generation \
    -c generations -c run_state -c run_moved -c run_guests

say "each guest's own memory check, from openstack console log show"
for name in "${names[@]}"; do
    line=$(memory_check "$name")
    echo "$name: $line"
    [[ "$line" == *" errors=0"* ]] || fail "$name reports memory errors"
    if openstack console log show "$name" | grep 'VMBEAM-WORKER ERROR'; then
        fail "$name reports a bad page"
    fi
done
printf '\ndemo: OK: %d servers ACTIVE on %s across two rejuvenations, no memory errors\n' \
    "$servers" "$host"
