#!/bin/bash
# Boots servers of a flavor with VMBeam RAM on a devstack compute node
# running nova-vmbeam, rejuvenates the host the way an operator does
# ("openstack hypervisor rejuvenate HOST --wait"), and checks that
#  - every server's guest was moved, without copying its RAM;
#  - the host's active hypervisor generation changed;
#  - each server's instance actions record the rejuvenation;
#  - every server is still ACTIVE on the same host and answers ping through
#    its floating IP.
# Run as the stack user on the devstack node (the Zuul job's run playbook
# does so).
#
#   tools/devstack-check.sh [SERVERS]
#
# Environment: DEVSTACK_DIR (default /opt/stack/devstack). The openstack
# command's vmbeam plugin goes through vmbeam-api (enable_service
# vmbeam-api), found in the Keystone catalog: no bus, no nova.conf.
set -o errexit -o nounset -o pipefail

servers=${1:-2}
devstack_dir=${DEVSTACK_DIR:-/opt/stack/devstack}
prefix=vmbeam-check-$$
flavor=$prefix
# The instance action a rejuvenation records for each server it moves
# (nova_vmbeam/virt/rejuvenation.py: ACTION, EVENT).
action=vmbeam-rejuvenate
event=compute_vmbeam_move
run_json=$(mktemp)

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
    openstack flavor delete "$flavor" >/dev/null 2>&1 || true
    rm -f "$run_json"
}
trap cleanup EXIT

active_generation() {
    openstack hypervisor rejuvenation show "$host" -f value \
        -c active_generation
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

# The request IDs of a server's rejuvenation instance actions, sorted.
rejuvenations_of() {
    openstack server event list "$1" -f json | python3 -c '
import json, sys
print("\n".join(sorted(a["Request ID"] for a in json.load(sys.stdin)
                       if a["Action"] == sys.argv[1])))
' "$action"
}

# The server's instance action ended with its move event a success.
check_rejuvenation_action() {
    local name=$1 request=$2
    openstack server event show "$name" "$request" -f json | python3 -c '
import json, sys
event = sys.argv[1]
events = json.load(sys.stdin).get("events") or []
ok = [e for e in events if e.get("event") == event and
      e.get("result") == "Success"]
sys.exit(0 if ok else "%s: %r" % (event, events))
' "$event" || fail "$name: instance action $request ($action) has no" \
        "successful $event event"
}

image=$(openstack image list -f value -c Name | grep -m 1 -i cirros) \
    || fail "no cirros image in glance"
# VMBeam RAM (a file in the host's RAM pool): the guest moves to the next
# generation by sharing its pages. Without it a rejuvenation copies its RAM
# (plain_ram_policy = precopy) or refuses.
openstack flavor create --ram 256 --disk 1 --vcpus 1 "$flavor" >/dev/null
openstack flavor set --property vmbeam:ram=true "$flavor"
openstack security group create "$prefix" >/dev/null
openstack security group rule create --protocol icmp "$prefix" >/dev/null

addresses=()
uuids=()
for ((i = 0; i < servers; i++)); do
    openstack server create --wait --flavor "$flavor" --image "$image" \
        --network private --security-group "$prefix" "$prefix-$i" >/dev/null
    uuids+=("$(openstack server show "$prefix-$i" -f value -c id)")
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
host=$(openstack server show "$prefix-0" -f value -c OS-EXT-SRV-ATTR:host)
rejuvenations=()
for ((i = 0; i < servers; i++)); do
    rejuvenations[i]=$(rejuvenations_of "$prefix-$i")
done

generation=$(active_generation)
log "host $host: active hypervisor generation $generation; rejuvenating"
if ! openstack hypervisor rejuvenate "$host" --wait -f json >"$run_json"; then
    cat "$run_json"
    fail "openstack hypervisor rejuvenate $host --wait: not every guest" \
        "was moved"
fi
# Every server's guest moved, by a mover that shares its RAM.
python3 - "$run_json" "${uuids[@]}" <<'EOF' || fail "see the guests above"
import json
import sys

run = json.load(open(sys.argv[1]))
guests = {g['uuid']: g for g in run.get('guests') or ()}
failed = run.get('state') != 'completed'
print('run %s: generation %s -> %s, %s' % (
    run.get('run_id'), run.get('from_generation'), run.get('to_generation'),
    run.get('state')))
for uuid in sys.argv[2:]:
    guest = guests.get(uuid)
    if guest is None:
        print('%s: not moved by the run' % uuid)
        failed = True
    elif guest['state'] != 'moved' or guest['mover'] == 'precopy':
        print('%s: %s by %s, its RAM copied or not moved (%s)' % (
            uuid, guest['state'], guest['mover'], guest.get('error')))
        failed = True
    else:
        print('%s: moved by %s, downtime %s ms, total %s ms, %s bytes '
              'sent' % (uuid, guest['mover'], guest['downtime_ms'],
                        guest['total_ms'], guest['transferred_bytes']))
sys.exit(1 if failed else 0)
EOF
after_generation=$(active_generation)
if [[ "$after_generation" == "$generation" ]]; then
    fail "the active generation is still $generation after rejuvenation"
fi
log "active hypervisor generation now $after_generation"

for ((i = 0; i < servers; i++)); do
    name=$prefix-$i
    new=$(comm -13 <(echo "${rejuvenations[i]}") \
        <(rejuvenations_of "$name") | sed '/^$/d')
    if [[ $(wc -l <<<"$new") -ne 1 || -z "$new" ]]; then
        fail "$name: expected one new $action instance action, found:" \
            "${new:-none}"
    fi
    check_rejuvenation_action "$name" "$new"
done
log "each server's instance actions record the rejuvenation"

after=$(server_states)
log "servers after rejuvenation:"
echo "$after"
if [[ "$after" != "$before" ]]; then
    fail "servers changed state or host during rejuvenation"
fi
for address in "${addresses[@]}"; do
    ping -c 3 -W 2 "$address" >/dev/null || fail "$address unreachable"
done
log "OK: $servers servers moved in place, ACTIVE and reachable across the" \
    "rejuvenation"
