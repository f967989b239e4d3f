#!/bin/bash
# The main job: rejuvenate a hypervisor under running guests (no OpenStack).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/tools/install.sh"
exec "$top/.venv/bin/vmbeam" demo "$@"
