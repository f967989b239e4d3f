#!/bin/bash
# Boots servers on a devstack compute node running nova-vmbeam, rejuvenates
# the host, and checks that every server stays ACTIVE on the same host and
# answers ping through its floating IP before and after. Run as the stack
# user on the devstack node (the Zuul job's run playbook does so).
#
#   tools/devstack-check.sh [SERVERS]
#
# Environment: DEVSTACK_DIR (default /opt/stack/devstack), NOVA_CPU_CONF
# (default /etc/nova/nova-cpu.conf), VMBEAM_REJUVENATE_CMD (default: the
# engine's own "vmbeam rejuvenate" on this host's nova-cpu.conf).
set -o errexit -o nounset -o pipefail

servers=${1:-2}
devstack_dir=${DEVSTACK_DIR:-/opt/stack/devstack}
nova_cpu_conf=${NOVA_CPU_CONF:-/etc/nova/nova-cpu.conf}
rejuvenate_cmd=${VMBEAM_REJUVENATE_CMD:-sudo vmbeam --config-file $nova_cpu_conf rejuvenate}
prefix=vmbeam-check-$$

# openrc reads unset variables.
set +o nounset
# shellcheck source=/dev/null
source "$devstack_dir/openrc" admin admin >/dev/null
set -o nounset

log() { echo "devstack-check: $*"; }
fail() { echo "devstack-check: FAILED: $*" >&2; exit 1; }

cleanup() {
    local name
    for ((i = 0; i < servers; i++)); do
        name=$prefix-$i
        openstack server delete --wait "$name" >/dev/null 2>&1 || true
    done
    for fip in $(openstack floating ip list --tags "$prefix" -f value -c ID); do
        openstack floating ip delete "$fip" || true
    done
    openstack security group delete "$prefix" >/dev/null 2>&1 || true
}
trap cleanup EXIT

active_generation() {
    sudo vmbeam --config-file "$nova_cpu_conf" status \
        | sed -n 's/^active generation: //p'
}

wait_ping() {
    local address=$1 deadline=$((SECONDS + 300))
    until ping -c 1 -W 2 "$address" >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            fail "$address does not answer ping"
        fi
        sleep 2
    done
}

# The state of every server: name status host, one per line.
server_states() {
    local name
    for ((i = 0; i < servers; i++)); do
        name=$prefix-$i
        echo "$name $(openstack server show "$name" -f value -c status) $(openstack server show "$name" -f value -c OS-EXT-SRV-ATTR:host)"
    done
}

image=$(openstack image list -f value -c Name | grep -m 1 -i cirros) \
    || fail "no cirros image in glance"
openstack security group create "$prefix" >/dev/null
openstack security group rule create --protocol icmp "$prefix" >/dev/null

addresses=()
for ((i = 0; i < servers; i++)); do
    openstack server create --wait --flavor m1.tiny --image "$image" \
        --network private --security-group "$prefix" "$prefix-$i" >/dev/null
    fip=$(openstack floating ip create --tag "$prefix" public \
        -f value -c floating_ip_address)
    openstack server add floating ip "$prefix-$i" "$fip"
    addresses+=("$fip")
done
for address in "${addresses[@]}"; do
    wait_ping "$address"
done
before=$(server_states)
log "servers before rejuvenation:"
echo "$before"
if grep -v ' ACTIVE ' <<<"$before"; then
    fail "servers not ACTIVE before rejuvenation"
fi

generation=$(active_generation)
log "active hypervisor generation $generation; rejuvenating"
$rejuvenate_cmd
after_generation=$(active_generation)
if [[ "$after_generation" == "$generation" ]]; then
    fail "the active generation is still $generation after rejuvenation"
fi
log "active hypervisor generation now $after_generation"

after=$(server_states)
log "servers after rejuvenation:"
echo "$after"
if [[ "$after" != "$before" ]]; then
    fail "servers changed state or host during rejuvenation"
fi
for address in "${addresses[@]}"; do
    ping -c 3 -W 2 "$address" >/dev/null || fail "$address unreachable"
done
log "OK: $servers servers ACTIVE and reachable across the rejuvenation"
