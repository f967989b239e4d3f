#!/bin/bash
# The whole test suite: unit, functional (real QEMU guests), the Nova driver
# (with Nova's fixtures; and on real libvirt + RabbitMQ), style, and the
# all-in-one cloud (tools/run-cloud.sh) driven through the openstack CLI.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
started=$SECONDS
./tools/install.sh || exit 1
installed=$SECONDS

log=$(mktemp)
# C unit tests, daemon tests and the protocol fuzz run of native/.
make -s -C native check 2>&1 | tee "$log"
native_rc=${PIPESTATUS[0]}
# docs and releasenotes: the Sphinx builds, warnings as errors.
.venv/bin/tox -e py3,functional,nova,nova-functional,pep8,docs,releasenotes,cloud "$@" 2>&1 | tee -a "$log"
rc=${PIPESTATUS[0]}
[ "$rc" = 0 ] && rc=$native_rc
# tox's own summary above gives each environment's time.
echo "suite: install $((installed - started)) s, all $(((SECONDS - started) / 60)) min (CI allows 90)"
# The failed tests, near the end: CI keeps only the output's end, and their
# tracebacks are far above. First the end of each traceback (the assertion
# or the timeout; at most 3 of them, 20 lines each), then the names, last,
# so that they are what a cut-down log still shows.
awk '
  /\.\.\. FAILED$/ { n++; name[n] = $0; sub(/^\{[0-9]+\} /, "", name[n]);
                     intb = 0; next }
  /^\{[0-9]+\} / { intb = 0; next }
  # stestr repeats the tracebacks after its run, then tox goes on: neither
  # belongs to the traceback being read.
  /^={5,}$/ || /^[a-z0-9-]+: (commands|commands_pre|install_deps|OK|FAIL)/ {
    intb = 0; next }
  /^Captured traceback:/ { if (n && !(n in cnt)) { intb = 1; cnt[n] = 0 }
                           else intb = 0; next }
  /^Captured [a-z]+:/ { intb = 0; next }
  # A matcher may quote a whole log on one line: its start is enough.
  intb && !/^~+$/ { cnt[n]++
                    line[n, cnt[n]] = length($0) > 400 ? substr($0, 1, 400) " [...]" : $0 }
  END {
    for (i = 1; i <= n && i <= 3; i++) {
      print "traceback of " name[i] ":"
      first = cnt[i] > 20 ? cnt[i] - 19 : 1
      for (j = first; j <= cnt[i]; j++) print "  | " line[i, j]
    }
    for (i = 1; i <= n; i++) print "failed: " name[i]
  }' "$log"
# One closing line for CI, summed over the stestr runs above.
awk '/^ - Passed: /{p+=$3} /^ - Failed: /{f+=$3} /^ - Skipped: /{s+=$3}
     END {printf "tests: %d passed, %d failed, %d skipped\n", p, f, s}' "$log"
rm -f "$log"
exit "$rc"
