#!/bin/bash
# shellcheck disable=SC2153
# (SC2153: the NOVA_VMBEAM_* variables come from devstack/settings.)
# devstack plugin of nova-vmbeam: in-place hypervisor rejuvenation for Nova.
#
# stack install      the package (pip, develop mode), the native parts
# stack post-config  the shim into Nova's tree, nova-cpu.conf's
#                    compute_driver and [vmbeam]/[vmbeam_aging], the RAM
#                    pool, the pagemover daemon (service n-vmbeam-pm)
# stack extra        check that the engine is usable (movers, pool)
# unstack            stop the pagemover daemon
# clean              remove the shim link, the RAM pool and the state
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

function configure_nova_vmbeam {
    local conf=$NOVA_CPU_CONF
    iniset "$conf" DEFAULT compute_driver vmbeam.VMBeamDriver
    # A guest's SMBIOS serial must not follow the host UUID, which differs
    # per hypervisor generation.
    iniset "$conf" libvirt sysinfo_serial unique
    iniset "$conf" vmbeam state_path "$NOVA_VMBEAM_STATE_PATH"
    iniset "$conf" vmbeam ram_pool_path "$NOVA_VMBEAM_RAM_POOL"
    iniset "$conf" vmbeam ram_pool_reserve_mib \
        "$NOVA_VMBEAM_RAM_POOL_RESERVE_MIB"
    iniset "$conf" vmbeam qemu_user "$NOVA_VMBEAM_QEMU_USER"
    iniset "$conf" vmbeam default_mover "$NOVA_VMBEAM_MOVER"
    iniset "$conf" vmbeam_aging enabled "$NOVA_VMBEAM_AGING_ENABLED"
    iniset "$conf" vmbeam_aging action "$NOVA_VMBEAM_AGING_ACTION"
    iniset "$conf" vmbeam_aging instances_path "$NOVA_INSTANCES_PATH"
    iniset "$conf" vmbeam_aging max_concurrent \
        "$NOVA_VMBEAM_AGING_MAX_CONCURRENT"
    if [[ -n "$NOVA_VMBEAM_AGING_WINDOWS" ]]; then
        iniset "$conf" vmbeam_aging maintenance_windows \
            "$NOVA_VMBEAM_AGING_WINDOWS"
    fi
    if [[ -n "$NOVA_VMBEAM_AGING_BACKEND_URL" ]]; then
        iniset "$conf" vmbeam_aging backend_url \
            "$NOVA_VMBEAM_AGING_BACKEND_URL"
    fi
}

# The vmbeam command by its full path: sudo's secure_path does not know
# devstack's venv.
function nova_vmbeam_cmd {
    local cmd
    cmd=$(command -v "$NOVA_VMBEAM_BIN") || die "$LINENO" \
        "nova-vmbeam: $NOVA_VMBEAM_BIN not found; did stack install run?"
    echo "$cmd"
}

# The state directory and the RAM pool, created and checked by the
# engine itself (tmpfs, owned by the QEMU user).
function prepare_nova_vmbeam_pool {
    local cmd
    cmd=$(nova_vmbeam_cmd)
    sudo install -d -m 0711 "$NOVA_VMBEAM_STATE_PATH"
    sudo "$cmd" --config-file "$NOVA_CPU_CONF" pool init
}

function start_nova_vmbeam_pagemover {
    local daemon="$NOVA_VMBEAM_NATIVE_PREFIX/sbin/vmbeam-pagemoverd"
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
    run_process n-vmbeam-pm "$daemon --socket $NOVA_VMBEAM_PAGEMOVER_SOCKET --pool-dir $NOVA_VMBEAM_RAM_POOL --owner $NOVA_VMBEAM_QEMU_USER --reserve-mib $NOVA_VMBEAM_RAM_POOL_RESERVE_MIB" root root
}

function check_nova_vmbeam {
    local cmd
    cmd=$(nova_vmbeam_cmd)
    "$cmd" --config-file "$NOVA_CPU_CONF" movers
    sudo "$cmd" --config-file "$NOVA_CPU_CONF" pool check
}

function cleanup_nova_vmbeam {
    local target="$NOVA_DIR/nova/virt/vmbeam"
    if [[ -L "$target" ]]; then
        rm -f "$target"
    fi
    sudo rm -rf "$NOVA_VMBEAM_RAM_POOL" "$NOVA_VMBEAM_STATE_PATH"
}

if is_service_enabled n-cpu; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing nova-vmbeam"
        install_nova_vmbeam
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring nova-vmbeam"
        install_nova_vmbeam_shim
        configure_nova_vmbeam
        prepare_nova_vmbeam_pool
        start_nova_vmbeam_pagemover
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
