#!/bin/bash
# An all-in-one OpenStack cloud whose compute node runs VMBeamDriver, and
# the main job shown through the operator's own tools (fresh Debian 12,
# as root):
#
#   tools/run-cloud.sh          install, start the cloud, run the demo
#   tools/run-cloud.sh start    install and start the cloud only
#   tools/run-cloud.sh demo     the demo on a running cloud
#   tools/run-cloud.sh status   which services run, where the logs are
#   tools/run-cloud.sh stop     stop everything start started, guests too
#
# Keystone, Placement, Glance, Neutron (API only) and Nova come from PyPI
# into the cloud's venv; MariaDB, RabbitMQ and memcached from Debian, each
# run privately with its state in VMBEAM_CLOUD_DIR (default
# /var/lib/vmbeam-cloud). Safe to run again. Ports: VMBEAM_CLOUD_*_PORT
# (see tools/cloud/aio.py).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
command=${1:-all}
cloud_dir=${VMBEAM_CLOUD_DIR:-/var/lib/vmbeam-cloud}
venv=$cloud_dir/venv
# nova-compute runs as this user, not as root (tools/cloud/aio.py).
compute_user=${VMBEAM_CLOUD_COMPUTE_USER:-nova}

if [ "$(id -u)" != 0 ]; then
    echo "run-cloud.sh: run as root (it installs packages and runs a hypervisor)" >&2
    exit 1
fi

install_cloud() {
    # The project's own packages (QEMU, libvirt, the broker, the database
    # and memcached are all in bindep.txt), its native parts, the guest.
    ./tools/install.sh
    local log=$cloud_dir/install.log
    mkdir -p "$cloud_dir"
    if ! id "$compute_user" >/dev/null 2>&1; then
        useradd --system --user-group --no-create-home \
            --home-dir "$cloud_dir/data/nova" --shell /usr/sbin/nologin \
            "$compute_user"
    fi
    # The venv's interpreter must be one the compute user may run: the
    # distribution's, not one under /root (pyenv's).
    local python=/usr/bin/python3
    [ -x "$python" ] || python=$(command -v python3)
    if [ -x "$venv/bin/python" ] && \
            [ "$(readlink -f "$venv/bin/python")" != "$(readlink -f "$python")" ]; then
        echo "run-cloud.sh: $venv is not made with $python, which $compute_user runs; making it again"
        rm -rf "$venv"
    fi
    if [ ! -x "$venv/bin/pip" ]; then
        "$python" -m venv "$venv"
    fi
    # The distribution's pip (23.0) does not resolve the shim's dependency
    # on the tree's own package given beside it.
    "$venv/bin/pip" install -q 'pip>=23.2' >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
    # The tree's own nova-vmbeam (editable: the cloud runs what is here,
    # where the compute user may read the tree; else installed from it)
    # and the shim that makes compute_driver = vmbeam.VMBeamDriver load.
    local project=(-e '.[osc]')
    if ! as_compute_user test -r "$top/setup.cfg"; then
        "$venv/bin/pip" uninstall -q -y nova-vmbeam >/dev/null 2>&1 || true
        project=('.[osc]')
    fi
    if ! "$venv/bin/pip" install -q -r tools/cloud/requirements.txt \
            -r requirements.txt "${project[@]}" ./shim >"$log" 2>&1; then
        cat "$log" >&2
        echo "run-cloud.sh: installing the cloud's Python packages failed (above)" >&2
        exit 1
    fi
}

as_compute_user() {
    setpriv --reuid "$compute_user" --regid "$compute_user" --init-groups \
        -- "$@" >/dev/null 2>&1
}

aio() {
    "$venv/bin/python" tools/cloud/aio.py "$@"
}

case "$command" in
    all)
        install_cloud
        aio start
        exec ./tools/cloud/demo.sh
        ;;
    start)
        install_cloud
        exec "$venv/bin/python" tools/cloud/aio.py start
        ;;
    demo)
        exec ./tools/cloud/demo.sh
        ;;
    stop|status)
        if [ ! -x "$venv/bin/python" ]; then
            echo "run-cloud.sh: no cloud in $cloud_dir"
            exit 0
        fi
        exec "$venv/bin/python" tools/cloud/aio.py "$command"
        ;;
    *)
        echo "usage: $0 [start|demo|status|stop]" >&2
        exit 2
        ;;
esac
