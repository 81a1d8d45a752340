#!/usr/bin/env bash
# Benchmark part 3 (./build.sh bench): whole-VM migration, (a) QEMU's own copy-storage migration
# (nbd-server-start + blockdev-mirror + migrate + block-job-cancel, as libvirt --copy-storage-all)
# against (b) BlockMigrate, on the same TCG guest and writer, between two network namespaces over a
# tbf-shaped veth (100 Mbit/s, and 20 Mbit/s), runs interleaved a b a b. Writes the "## Whole-VM
# migration" section of docs/BENCHMARKS.md: total time, guest-visible downtime (STOP -> RESUME),
# bytes on the wire, and the ratios b/a.
#
#   tools/bench-vm.sh [RUNS]          BENCH_VM_METHODS=baseline|baseline,blockmigrate (default: both)
#                                     BENCH_DOC=FILE writes elsewhere than docs/BENCHMARKS.md
# The tool is tools/bench-qemu/ (tools/bench-qemu-baseline runs it directly). BlockMigrate's side
# (tools/bench-qemu/BlockMigrateMigration.cs) runs `blockmigrate receive --once` and `blockmigrate
# migrate --hypervisor qemu` as an admin would, memory over one multifd channel with zstd at 100 Mbit/s and below.
# A run still going after BENCH_VM_TIMEOUT minutes (default 6) is stopped and reported as failed.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
runs=${1:-1}
methods=${BENCH_VM_METHODS:-baseline,blockmigrate}
doc=${BENCH_DOC:-$top/docs/BENCHMARKS.md}
dll=$top/build/managed/bin/BlockMigrate.Bench.Qemu/${CONFIG:-Release}/net10.0/bench-qemu.dll
[ -f "$dll" ] || { echo "bench-vm: $dll missing: run ./build.sh first" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "bench-vm: needs root (network namespaces)" >&2; exit 1; }

work=$(mktemp -d /tmp/bench-vm.XXXXXX)
trap 'rm -rf "$work"' EXIT
# link, disk size, random data on it (the guest rewrites another 16 MiB), extra options for both methods.
# At 20 Mbit/s the guest (a fork per write) dirties memory faster than the link drains it; without
# QEMU's auto-converge the memory copy took 200-520 s in trials, so both methods use it there.
links=("100mbit 256M 128M" "20mbit 128M 32M --auto-converge")
for l in "${links[@]}"; do
  set -- $l
  echo "bench-vm: $1, disk $2 with $3 of data ${4:-}, $runs run(s) of $methods" >&2
  dotnet "$dll" "$methods" --rate "$1" --runs "$runs" --disk "$2" --fill "$3" ${4:-} --timeout "${BENCH_VM_TIMEOUT:-6}" \
    --json "$work/$1.json" >&2 || true
done

when=$(date -u +'%Y-%m-%d %H:%M UTC')
host="$(nproc) CPUs, $(uname -r), $(qemu-system-x86_64 --version | head -1)"
section=$(python3 - "$when" "$host" "$runs" "$methods" "$work" "${links[@]}" <<'PY'
import json, os, statistics, sys
when, host, runs, methods, work = sys.argv[1:6]
links = [l.split() for l in sys.argv[6:]]
rows, ratios = [], []
for rate, disk, fill, *_ in links:
    path = os.path.join(work, rate + ".json")
    results = json.load(open(path)) if os.path.exists(path) else []
    by = {}
    for r in results:
        ok = r["disk_ok"]
        rows.append("| %s | %s | %d | %s | %s | %s | %s | %s |" % (
            rate, r["method"], r["run"],
            "%.2f" % r["total_s"] if ok else "", "%.0f" % r["guest_downtime_ms"] if ok else "",
            "%.1f" % (r["wire_bytes"] / 1e6) if ok else "", "OK" if ok else "BAD",
            r["detail"].replace("|", "/")))
        if ok:
            by.setdefault(r["method"], []).append(r)
    a, b = by.get("qemu-copy-storage"), by.get("blockmigrate")
    if a and b:
        med = lambda xs, k: statistics.median(x[k] for x in xs)
        ratios.append("| %s | %.2f | %.2f | %.2f |" % (rate,
            med(b, "total_s") / med(a, "total_s"), med(b, "wire_bytes") / med(a, "wire_bytes"),
            med(b, "guest_downtime_ms") / med(a, "guest_downtime_ms")))
    else:
        ratios.append("| %s | n/a | n/a | n/a |" % rate)
print(f"""## Whole-VM migration vs QEMU copy-storage

Measured {when} on {host}.
Command: `tools/bench-vm.sh {runs}` (part 3 of `./build.sh bench`), methods `{methods}`.

A 128 MiB TCG guest (tools/guest) writing ~180 sequence-numbered 4 KiB blocks per second (O_DIRECT)
over 16 MiB, its disk holding random data besides; source and destination QEMU in two network
namespaces joined by a veth shaped with `tc tbf` (no delay: this kernel has no netem); at 20 Mbit/s
both methods turn on QEMU's auto-converge. (a) QEMU
copy-storage: destination `nbd-server-start` + `block-export-add`, source `blockdev-mirror sync=full`
to READY, `migrate`, `block-job-cancel`, `cont`. (b) BlockMigrate: `blockmigrate receive --once` in the
destination namespace, whose image the destination shim serves in gate mode, and `blockmigrate migrate
--hypervisor qemu --multifd --multifd-channels 1 --memory-compression zstd` in the source namespace. Total time: (a) from
the start of the disk copy to the destination's RESUME, (b) the wall time of the migrate command; guest downtime from the source's STOP
event to the destination's RESUME event (QEMU timestamps); wire bytes both directions of the source's
link; the destination disk is verified (every block holds its newest write) after the guest went on
writing there.

| link | method | run | total s | guest downtime ms | wire MB | disk | detail |
|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + """

Ratios b/a (medians; targets: total <= 0.5, wire <= 0.5, downtime <= 1.0):

| link | total | wire bytes | guest downtime |
|---|---|---|---|
""" + "\n".join(ratios) + "\n")
PY
)
printf '%s\n' "$section"

python3 "$top/tools/bench-section.py" "$doc" "Whole-VM migration vs QEMU copy-storage" "$section"
echo "bench-vm: wrote the \"Whole-VM migration vs QEMU copy-storage\" section of $doc" >&2
