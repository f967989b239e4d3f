#!/bin/bash
# The whole test suite: unit, functional (real QEMU guests), the Nova driver
# (with Nova's fixtures; and on real libvirt + RabbitMQ), style, and the
# all-in-one cloud (tools/run-cloud.sh) driven through the openstack CLI.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
./tools/install.sh || exit 1

log=$(mktemp)
# C unit tests, daemon tests and the protocol fuzz run of native/.
make -s -C native check 2>&1 | tee "$log"
native_rc=${PIPESTATUS[0]}
# docs and releasenotes: the Sphinx builds, warnings as errors.
.venv/bin/tox -e py3,functional,nova,nova-functional,pep8,docs,releasenotes,cloud "$@" 2>&1 | tee -a "$log"
rc=${PIPESTATUS[0]}
[ "$rc" = 0 ] && rc=$native_rc
# The failed tests by name, near the end: CI keeps the output's end, and
# their tracebacks are far above.
grep -E '\.\.\. FAILED$' "$log" | sed -E 's/^\{[0-9]+\} /failed: /'
# One closing line for CI, summed over the stestr runs above.
awk '/^ - Passed: /{p+=$3} /^ - Failed: /{f+=$3} /^ - Skipped: /{s+=$3}
     END {printf "tests: %d passed, %d failed, %d skipped\n", p, f, s}' "$log"
rm -f "$log"
exit "$rc"
