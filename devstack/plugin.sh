#!/bin/bash
# shellcheck disable=SC2153
# (SC2153: the NOVA_VMBEAM_* variables come from devstack/settings.)
# devstack plugin of nova-vmbeam: in-place hypervisor rejuvenation for Nova.
#
# stack install      the package (pip, develop mode), the native parts, the
#                    shim into Nova's tree, and $NOVA_CONF's compute_driver,
#                    [libvirt] and [vmbeam]/[vmbeam_aging] through "vmbeam
#                    compute-node configure" (what tools/run-cloud.sh and
#                    docs/nova-driver.md run too)
# stack post-config  nova-compute to run as root, the state directory, the
#                    pagemover daemon (service n-vmbeam-pm), the RAM pool
# stack extra        check that nova-cpu.conf runs VMBeamDriver and the
#                    engine is usable (movers, pool)
# unstack            stop the pagemover daemon
# clean              remove the shim link, the drop-in, the RAM pool and
#                    the state
#
# Where service vmbeam-api is enabled (the controller):
# stack install      the package, if n-cpu did not install it
# stack post-config  vmbeam-api.conf (Keystone, Nova's bus, the service
#                    user for Nova and Placement), its uwsgi file, and its
#                    user, service and endpoint in Keystone
# stack extra        start vmbeam-api and wait until it answers
# unstack / clean    stop it / remove its uwsgi file
#
# Where the settings go, read against devstack's stack.sh and lib/nova:
# start_nova_compute builds $NOVA_CPU_CONF by copying $NOVA_CONF over it
# and merging local.conf's post-config sections again, so anything written
# into $NOVA_CPU_CONF before is lost. They go into $NOVA_CONF, which
# configure_nova creates (create_nova_conf, then configure_nova_hypervisor:
# compute_driver = libvirt.LibvirtDriver) before the install phase and
# nothing recreates later. They are written in the install phase, not in
# post-config: while post-config runs, configure_neutron_nova edits
# $NOVA_CONF in the background (async, DEVSTACK_PARALLEL) with sed -i, so
# an edit of ours could be lost or lose one of its. local.conf's
# post-config sections are merged after both and still win.
#
# nova-compute starts between post-config and extra, so everything it needs
# is in place by the end of post-config.

# Save trace setting
_XTRACE_NOVA_VMBEAM=$(set +o | grep xtrace)
set +o xtrace

NOVA_VMBEAM_BIN=${NOVA_VMBEAM_BIN:-vmbeam}

function install_nova_vmbeam {
    setup_develop "$NOVA_VMBEAM_DIR"
    if [[ "$NOVA_VMBEAM_BUILD_NATIVE" != "True" ]]; then
        return
    fi
    if [[ ! -f "$NOVA_VMBEAM_DIR/native/Makefile" ]]; then
        echo "nova-vmbeam: no native/Makefile in $NOVA_VMBEAM_DIR;" \
            "the pagemover daemon is not built (set" \
            "NOVA_VMBEAM_BUILD_NATIVE=False to silence this)"
        return
    fi
    install_package gcc make pkg-config
    make -C "$NOVA_VMBEAM_DIR/native"
    if ! grep -q '^install:' "$NOVA_VMBEAM_DIR/native/Makefile"; then
        echo "nova-vmbeam: native/Makefile has no install target;" \
            "vmbeam-pagemoverd is built but not installed"
        return
    fi
    sudo make -C "$NOVA_VMBEAM_DIR/native" install \
        PREFIX="$NOVA_VMBEAM_NATIVE_PREFIX"
}

# The directory that holds nova/virt/vmbeam/ (the shim), or nothing.
function nova_vmbeam_shim_dir {
    local candidate
    for candidate in "$NOVA_VMBEAM_SHIM_DIR" "$NOVA_VMBEAM_DIR/shim" \
            "$NOVA_VMBEAM_DIR/nova-vmbeam-shim"; do
        if [[ -n "$candidate" && -f "$candidate/nova/virt/vmbeam/__init__.py" ]]; then
            echo "$candidate"
            return
        fi
    done
}

# Make "compute_driver = vmbeam.VMBeamDriver" loadable: Nova imports
# nova.virt.<driver>. A shim installed with the project needs nothing; with
# Nova from source (devstack's default) the shim is linked into its tree;
# otherwise the shim package is installed with pip.
function install_nova_vmbeam_shim {
    local shim target
    if $PYTHON -c 'import nova.virt.vmbeam' 2>/dev/null; then
        echo "nova-vmbeam: nova.virt.vmbeam is importable already"
        return
    fi
    shim=$(nova_vmbeam_shim_dir)
    if [[ -z "$shim" ]]; then
        die "$LINENO" "nova-vmbeam: no shim (nova/virt/vmbeam/__init__.py)" \
            "under NOVA_VMBEAM_SHIM_DIR, $NOVA_VMBEAM_DIR/shim or" \
            "$NOVA_VMBEAM_DIR/nova-vmbeam-shim; set NOVA_VMBEAM_SHIM_DIR"
    fi
    target="$NOVA_DIR/nova/virt/vmbeam"
    if [[ -d "$NOVA_DIR/nova/virt" ]]; then
        if [[ -e "$target" && ! -L "$target" ]]; then
            die "$LINENO" "nova-vmbeam: $target exists and is not our" \
                "link; remove it or set NOVA_VMBEAM_SHIM_DIR"
        fi
        ln -sfn "$shim/nova/virt/vmbeam" "$target"
    else
        pip_install "$shim"
    fi
}

# VMBeamDriver is Nova's libvirt driver on hypervisor generations: devstack
# must install and set up libvirt for it.
function check_nova_vmbeam_virt_driver {
    if [[ "$VIRT_DRIVER" != libvirt ]]; then
        die "$LINENO" "nova-vmbeam: VIRT_DRIVER=$VIRT_DRIVER; VMBeamDriver" \
            "is Nova's libvirt driver on hypervisor generations: leave" \
            "VIRT_DRIVER=libvirt (the default), the plugin sets" \
            "compute_driver itself"
    fi
}

# compute_driver, [libvirt] and [vmbeam]/[vmbeam_aging] in $NOVA_CONF (see
# the top of this file for why there), by the command every other way of
# configuring a compute node uses. It checks every value first and changes
# nothing if one is bad.
function configure_nova_vmbeam {
    local cmd
    local -a settings
    cmd=$(nova_vmbeam_cmd)
    settings=(--nova-conf "$NOVA_CONF"
        --virt-type "$LIBVIRT_TYPE"
        --state-path "$NOVA_VMBEAM_STATE_PATH"
        --ram-pool-path "$NOVA_VMBEAM_RAM_POOL"
        --ram-pool-reserve-mib "$NOVA_VMBEAM_RAM_POOL_RESERVE_MIB"
        --qemu-user "$NOVA_VMBEAM_QEMU_USER"
        --mover "$NOVA_VMBEAM_MOVER"
        --pagemoverd-socket "$NOVA_VMBEAM_PAGEMOVER_SOCKET"
        --instances-path "$NOVA_INSTANCES_PATH"
        --aging-enabled "$NOVA_VMBEAM_AGING_ENABLED"
        --aging-action "$NOVA_VMBEAM_AGING_ACTION"
        --aging-max-concurrent "$NOVA_VMBEAM_AGING_MAX_CONCURRENT"
        --privsep-helper-command
        "sudo $(dirname "$cmd")/privsep-helper --config-file $NOVA_CONF")
    # (nova-compute runs as $STACK_USER, as devstack starts it, and so does
    # the vmbeam command here: what VMBeamDriver does as root goes through
    # its privsep daemon, started with the stack user's sudo, the helper by
    # full path: sudo's secure_path does not know devstack's venv. A
    # packaged Nova goes through rootwrap instead, etc/nova/rootwrap.d.)
    if [[ -n "$NOVA_VMBEAM_AGING_WINDOWS" ]]; then
        settings+=(--aging-windows "$NOVA_VMBEAM_AGING_WINDOWS")
    fi
    if [[ -n "$NOVA_VMBEAM_AGING_BACKEND_URL" ]]; then
        settings+=(--aging-backend-url "$NOVA_VMBEAM_AGING_BACKEND_URL")
    fi
    "$cmd" compute-node configure "${settings[@]}" || die "$LINENO" \
        "nova-vmbeam: vmbeam compute-node configure refused the value" \
        "above; fix the NOVA_VMBEAM_* variable it comes from in local.conf"
}

# The vmbeam command by its full path: sudo's secure_path does not know
# devstack's venv.
function nova_vmbeam_cmd {
    local cmd
    cmd=$(command -v "$NOVA_VMBEAM_BIN") || die "$LINENO" \
        "nova-vmbeam: $NOVA_VMBEAM_BIN not found; did stack install run?"
    echo "$cmd"
}

# The one pagemover daemon, when the n-vmbeam-pm service is enabled: it
# serves the pool on $NOVA_VMBEAM_PAGEMOVER_SOCKET, which $NOVA_CONF (and
# so nova-cpu.conf) names. It is started before "vmbeam pool init", which
# would otherwise start a daemon of its own there on first use; it gets the
# pid file that daemon would have (pool/daemon.py: the socket's path
# without ".sock", plus ".pid"), so a second daemon on this socket fails
# on the pid file's lock instead of taking the socket over.
function start_nova_vmbeam_pagemover {
    local daemon="$NOVA_VMBEAM_NATIVE_PREFIX/sbin/vmbeam-pagemoverd"
    local socket=$NOVA_VMBEAM_PAGEMOVER_SOCKET waited=0
    if ! is_service_enabled n-vmbeam-pm; then
        return
    fi
    if [[ ! -x "$daemon" ]]; then
        daemon="$NOVA_VMBEAM_NATIVE_PREFIX/bin/vmbeam-pagemoverd"
    fi
    if [[ ! -x "$daemon" ]]; then
        die "$LINENO" "nova-vmbeam: service n-vmbeam-pm is enabled but" \
            "vmbeam-pagemoverd is not installed under" \
            "$NOVA_VMBEAM_NATIVE_PREFIX; keep NOVA_VMBEAM_BUILD_NATIVE=True"
    fi
    # --client-uid: nova-compute ($STACK_USER) may use it.
    run_process n-vmbeam-pm "$daemon --socket $socket --pool-dir $NOVA_VMBEAM_RAM_POOL --owner $NOVA_VMBEAM_QEMU_USER --reserve-mib $NOVA_VMBEAM_RAM_POOL_RESERVE_MIB --client-uid $(id -u "$STACK_USER") --pidfile ${socket%.sock}.pid" root root
    # systemd returns once the process runs, not once it listens (it binds
    # and listens right after taking its pid file).
    until sudo test -S "$socket"; do
        if ((waited >= NOVA_VMBEAM_PAGEMOVER_START_TIMEOUT)); then
            die "$LINENO" "nova-vmbeam: vmbeam-pagemoverd (service" \
                "n-vmbeam-pm) does not listen on $socket after" \
                "${waited}s; see journalctl -u devstack@n-vmbeam-pm"
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

# The state directory and the RAM pool, created and checked by the engine
# itself (tmpfs, owned by the QEMU user) through the pagemover daemon on the
# socket $NOVA_CONF names: the service's if enabled (started before this);
# otherwise "pool init" starts it there (through privsep, on first use),
# and nova-compute uses that same daemon. As $STACK_USER, whom nova-compute
# runs as: what it writes in the state directory stays nova-compute's.
function prepare_nova_vmbeam_pool {
    local cmd
    cmd=$(nova_vmbeam_cmd)
    "$cmd" --config-file "$NOVA_CONF" pool init
}

function prepare_nova_vmbeam_state {
    sudo install -d -o "$STACK_USER" -m 0711 "$NOVA_VMBEAM_STATE_PATH"
}

# nova-cpu.conf as start_nova_compute left it is what nova-compute runs
# with: the settings must have come through.
function check_nova_vmbeam {
    local cmd driver
    cmd=$(nova_vmbeam_cmd)
    driver=$(iniget "$NOVA_CPU_CONF" DEFAULT compute_driver)
    if [[ "$driver" != vmbeam.VMBeamDriver ]]; then
        die "$LINENO" "nova-vmbeam: $NOVA_CPU_CONF has compute_driver =" \
            "$driver, not vmbeam.VMBeamDriver: a post-config section of" \
            "local.conf for \$NOVA_CONF or \$NOVA_CPU_CONF sets it; remove" \
            "that line"
    fi
    "$cmd" --config-file "$NOVA_CPU_CONF" movers
    "$cmd" --config-file "$NOVA_CPU_CONF" pool check
}

function cleanup_nova_vmbeam {
    local target="$NOVA_DIR/nova/virt/vmbeam"
    if [[ -L "$target" ]]; then
        rm -f "$target"
    fi
    sudo rm -rf "$NOVA_VMBEAM_RAM_POOL" "$NOVA_VMBEAM_STATE_PATH"
}

# vmbeam-api: authenticated by Keystone, authorized by its policy; it asks
# Nova and Placement as its own service user (admin: the hypervisor list
# and a server's host are admin-only in Nova) and reaches the compute
# hosts on Nova's bus, the one nova-compute listens on.
function configure_vmbeam_api {
    sudo install -d -o "$STACK_USER" -m 0755 "$VMBEAM_API_CONF_DIR"
    rm -f "$VMBEAM_API_CONF"
    iniset "$VMBEAM_API_CONF" DEFAULT debug "$ENABLE_DEBUG_LOG_LEVEL"
    # The bus nova-compute listens on: its cell's (start_nova_compute),
    # not nova.conf's, unless devstack runs a single conductor.
    if [[ "${CELLSV2_SETUP:-superconductor}" == singleconductor ]]; then
        iniset_rpc_backend nova "$VMBEAM_API_CONF" DEFAULT
    else
        iniset_rpc_backend nova "$VMBEAM_API_CONF" DEFAULT \
            "nova_cell${NOVA_CPU_CELL:-1}"
    fi
    configure_keystone_authtoken_middleware "$VMBEAM_API_CONF" vmbeam
    iniset "$VMBEAM_API_CONF" nova auth_type password
    iniset "$VMBEAM_API_CONF" nova auth_url "$KEYSTONE_SERVICE_URI"
    iniset "$VMBEAM_API_CONF" nova username vmbeam
    iniset "$VMBEAM_API_CONF" nova password "$SERVICE_PASSWORD"
    iniset "$VMBEAM_API_CONF" nova user_domain_name "$SERVICE_DOMAIN_NAME"
    iniset "$VMBEAM_API_CONF" nova project_name "$SERVICE_PROJECT_NAME"
    iniset "$VMBEAM_API_CONF" nova project_domain_name \
        "$SERVICE_DOMAIN_NAME"
    iniset "$VMBEAM_API_CONF" nova region_name "$REGION_NAME"
    iniset "$VMBEAM_API_CONF" placement region_name "$REGION_NAME"
    iniset "$VMBEAM_API_CONF" oslo_policy policy_file \
        "$VMBEAM_API_CONF_DIR/policy.yaml"
    write_uwsgi_config "$VMBEAM_API_UWSGI_CONF" "$VMBEAM_API_UWSGI" \
        /rejuvenation "" vmbeam-api
}

function create_vmbeam_api_accounts {
    create_service_user vmbeam admin
    get_or_create_service vmbeam "$VMBEAM_API_SERVICE_TYPE" \
        "nova-vmbeam: in-place hypervisor rejuvenation"
    get_or_create_endpoint "$VMBEAM_API_SERVICE_TYPE" "$REGION_NAME" \
        "$SERVICE_PROTOCOL://$SERVICE_HOST/rejuvenation"
}

function start_vmbeam_api {
    run_process vmbeam-api \
        "$(which uwsgi) --procname-prefix vmbeam-api --ini $VMBEAM_API_UWSGI_CONF"
    if ! wait_for_service "$SERVICE_TIMEOUT" \
            "$SERVICE_PROTOCOL://$SERVICE_HOST/rejuvenation"; then
        die "$LINENO" "nova-vmbeam: vmbeam-api did not start; see" \
            "journalctl -u devstack@vmbeam-api"
    fi
}

if is_service_enabled vmbeam-api; then
    if [[ "$1" == "stack" && "$2" == "install" ]] && \
            ! is_service_enabled n-cpu; then
        setup_develop "$NOVA_VMBEAM_DIR"
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring vmbeam-api"
        configure_vmbeam_api
        create_vmbeam_api_accounts
    elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
        echo_summary "Starting vmbeam-api"
        start_vmbeam_api
    fi
    if [[ "$1" == "unstack" ]]; then
        stop_process vmbeam-api
    fi
    if [[ "$1" == "clean" ]]; then
        remove_uwsgi_config "$VMBEAM_API_UWSGI_CONF" vmbeam-api
    fi
fi

if is_service_enabled n-cpu; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing nova-vmbeam"
        check_nova_vmbeam_virt_driver
        install_nova_vmbeam
        install_nova_vmbeam_shim
        configure_nova_vmbeam
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring nova-vmbeam"
        prepare_nova_vmbeam_state
        start_nova_vmbeam_pagemover
        prepare_nova_vmbeam_pool
    elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
        echo_summary "Checking nova-vmbeam"
        check_nova_vmbeam
    fi
    if [[ "$1" == "unstack" ]]; then
        stop_process n-vmbeam-pm
    fi
    if [[ "$1" == "clean" ]]; then
        cleanup_nova_vmbeam
    fi
fi

# Restore xtrace
$_XTRACE_NOVA_VMBEAM
