#!/usr/bin/env bash
# The paper's experiment (issue 15): a TCG guest serving HTTP (busybox httpd) on a tap in the source
# host's namespace, moved by `blockmigrate migrate --hypervisor qemu` with a VXLAN tunnel and a signed
# DNS update while clients in a third namespace keep one streaming connection open (a line every 100 ms)
# and make a new request by name every 100 ms; at 20 Mbit/s every packet of the clients' paths (their link,
# and the tunnel's link) is delayed 25 ms each way with tools/pktdelay.py. It runs the end-to-end test
# tests/BlockMigrate.Network.Tests/WebServerMigrationTests.cs once per link and run, and prints its
# WEB-RESULT lines (what a client saw) plus the slow requests, the measured round trips (RTT), and the
# TIMELINE against QEMU's STOP and RESUME (tunnel up, DNS changed, the client's longest gap).
#
#   tools/bench-web.sh [RUNS]      (default 1; links: 100mbit, then 20mbit with a 50 ms RTT on every path)
#   BENCH_WEB_LINKS="lan wan"      any subset
#   BENCH_WEB_MEMORY=postcopy      memory by post-copy after the first pass (--postcopy) instead of multifd + zstd
# Needs root (network namespaces) and ./build.sh first. One guest pair at a time.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/tools/bench-cli.sh"; bench_cli "$top"   # the NativeAOT blockmigrate, as the package ships it (BENCH_CLI=jit: the JIT build)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
runs=${1:-1}
[ "$(id -u)" -eq 0 ] || { echo "bench-web: needs root (network namespaces)" >&2; exit 1; }
log=$(mktemp /tmp/bench-web.XXXXXX)
trap 'rm -f "$log"' EXIT
status=0
for link in ${BENCH_WEB_LINKS:-lan wan}; do
  for ((i = 1; i <= runs; i++)); do
    echo "== $link run $i" >&2
    if ! BM_WEB_LINK=$link BM_WEB_MEMORY=${BENCH_WEB_MEMORY:-} dotnet test "$top/tests/BlockMigrate.Network.Tests" -c "${CONFIG:-Release}" --no-build \
        --filter "FullyQualifiedName~WebServerMigrationTests" --logger "console;verbosity=detailed" >"$log" 2>&1; then
      status=1
      kept=/tmp/bench-web-failed-$link-$i-$$.log
      cp "$log" "$kept"
      echo "bench-web: the $link run $i failed (whole log: $kept):" >&2
      grep -E -A4 "Error Message" "$log" >&2 || tail -20 "$log" >&2
    fi
    grep -E "^(WEB-RESULT|TIMELINE|RTT|migrate: |slow request|tunnel up|failed at)" "$log" | awk '!seen[$0]++' || true
  done
done
exit $status
