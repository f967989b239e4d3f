#!/bin/bash
# Installs everything nova-vmbeam needs on a fresh Debian 12 machine (root):
# system packages from bindep.txt (QEMU 10 from bookworm-backports) and a
# Python venv in .venv with tox and the project itself. Idempotent.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (it installs Debian packages)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
backports=/etc/apt/sources.list.d/nova-vmbeam-backports.sources
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    cat > "$backports" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

# Package names from bindep.txt, the one list of system packages.
packages=$(awk '/^[a-z0-9]/ && /platform:dpkg/ {print $1}' bindep.txt)
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' \
        || missing="$missing $p"
done
qemu_major=$(qemu-system-x86_64 --version 2>/dev/null \
    | sed -n 's/.*version \([0-9]*\)\..*/\1/p' || true)
if [ -n "$missing" ] || [ "${qemu_major:-0}" -lt 10 ]; then
    apt-get -o DPkg::Lock::Timeout=600 update -q
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
        -t bookworm-backports \
        $packages
fi

# The native pool daemon (vmbeam-pagemoverd) and its client library, built
# in the tree (native/build); the pool client finds the daemon there.
make -s -C native

# pip's build chatter goes to a log, shown only if something fails.
log=.venv-install.log
quiet() { "$@" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }; }
if [ ! -x .venv/bin/tox ]; then
    python3 -m venv .venv
    quiet .venv/bin/pip install --upgrade pip
    quiet .venv/bin/pip install tox
fi
quiet .venv/bin/pip install -r requirements.txt -e '.[osc]'

# The test guest's kernel comes from Debian's archive (unpacked with dpkg -x,
# not installed); fetch it now so demo and tests start without waiting.
# apt's package lists must be current for that.
.venv/bin/vmbeam image >/dev/null 2>&1 || {
    apt-get update -q
    .venv/bin/vmbeam image >/dev/null
}
# The nested sibling's L1 appliance: the pinned Debian packages of
# nova_vmbeam/nested/appliance/packages.lock, downloaded and unpacked (cached).
# bookworm-backports keeps only its newest versions: when a pin has left
# the archive, pin what is there now (the lock file changes; commit it).
if ! .venv/bin/vmbeam appliance build >/dev/null 2>"$log"; then
    cat "$log" >&2
    echo "install.sh: re-pinning the L1 appliance packages" >&2
    .venv/bin/vmbeam appliance lock >&2
    .venv/bin/vmbeam appliance build >/dev/null
fi
