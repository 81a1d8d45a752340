#!/usr/bin/env bash
# Benchmark part 3 (./build.sh bench): whole-VM migration, (a) QEMU's own copy-storage migration
# (nbd-server-start + blockdev-mirror + migrate + block-job-cancel, as libvirt --copy-storage-all)
# against (b) BlockMigrate, with migrate's default switchover (gate) and with --switchover commit,
# on the same TCG guest and writer, between two network namespaces over a tbf-shaped veth, every
# migration connection of every method through tools/wanem.py where the link has a delay; runs
# interleaved a b b-commit a b b-commit. Writes the "## Whole-VM migration" section of
# docs/BENCHMARKS.md: total time, guest-visible downtime (STOP -> RESUME), bytes on the wire, the
# ratios b/a, and the gate and commit downtimes side by side.
#
#   tools/bench-vm.sh [RUNS]          BENCH_VM_METHODS=baseline,blockmigrate,blockmigrate-commit (the default; any subset)
#                                     BENCH_DOC=FILE writes elsewhere than docs/BENCHMARKS.md
# The tool is tools/bench-qemu/ (tools/bench-qemu-baseline runs it directly). BlockMigrate's side
# (tools/bench-qemu/BlockMigrateMigration.cs) runs `blockmigrate receive --once` and `blockmigrate
# migrate --hypervisor qemu` as an admin would, memory over one multifd channel with zstd at 100 Mbit/s and below,
# encrypted with TLS-PSK (migrate's default; method blockmigrate-memplain adds --memory-plaintext).
# A run still going after BENCH_VM_TIMEOUT minutes (default 6) is stopped and reported as failed.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
runs=${1:-1}
methods=${BENCH_VM_METHODS:-baseline,blockmigrate,blockmigrate-commit}
doc=${BENCH_DOC:-$top/docs/BENCHMARKS.md}
dll=$top/build/managed/bin/BlockMigrate.Bench.Qemu/${CONFIG:-Release}/net10.0/bench-qemu.dll
[ -f "$dll" ] || { echo "bench-vm: $dll missing: run ./build.sh first" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "bench-vm: needs root (network namespaces)" >&2; exit 1; }

work=$(mktemp -d /tmp/bench-vm.XXXXXX)
trap 'rm -rf "$work"' EXIT
# One configuration a line: link, one-way delay in ms (0 = none; each way, so 25 is a 50 ms round
# trip), disk size, data on it besides the guest's 16 MiB (os: files of the host's /usr, as compressible
# as an installed system; random: nothing compresses, the worst case), extra options for every method.
# At 20 Mbit/s the guest (a fork per write) dirties memory faster than the link drains it; without
# QEMU's auto-converge the memory copy took 200-520 s in trials, so every method uses it there.
configs=(
  "100mbit 0 256M 128M os"
  "100mbit 0 256M 128M random"
  "20mbit 25 128M 32M os --auto-converge"
)
for c in "${configs[@]}"; do
  set -- $c
  name="$1-$2ms-$5"
  echo "bench-vm: $1, ${2} ms one-way delay, disk $3 with $4 of $5 data ${6:-}, $runs run(s) of $methods" >&2
  dotnet "$dll" "$methods" --rate "$1" --delay "$2" --runs "$runs" --disk "$3" --fill "$4" --fill-kind "$5" ${6:-} \
    --timeout "${BENCH_VM_TIMEOUT:-6}" --json "$work/$name.json" >&2 || true
done

when=$(date -u +'%Y-%m-%d %H:%M UTC')
host="$(nproc) CPUs, $(uname -r), $(qemu-system-x86_64 --version | head -1)"
section=$(python3 - "$when" "$host" "$runs" "$methods" "$work" "${configs[@]}" <<'PY'
import json, os, statistics, sys
when, host, runs, methods, work = sys.argv[1:6]
configs = [c.split() for c in sys.argv[6:]]
BASELINE, VARIANTS = "qemu-copy-storage", (("blockmigrate", "gate"), ("blockmigrate-commit", "commit"))
med = lambda rs, k: statistics.median(r[k] for r in rs)
rows, ratios, switchovers = [], [], []
for rate, delay, disk, fill, kind, *_ in configs:
    path = os.path.join(work, f"{rate}-{delay}ms-{kind}.json")
    results = json.load(open(path)) if os.path.exists(path) else []
    link = f"| {rate} | {'%s ms' % delay if delay != '0' else 'none'} | {kind} |"
    ok = {}
    for r in results:
        good = r["disk_ok"]
        rows.append("%s %s | %d | %s | %s | %s | %s | %s |" % (
            link, r["method"], r["run"],
            "%.2f" % r["total_s"] if good else "", "%.0f" % r["guest_downtime_ms"] if good else "",
            "%.1f" % (r["wire_bytes"] / 1e6) if good else "", "OK" if good else "BAD",
            r["detail"].replace("|", "/")))
        if good:
            ok.setdefault(r["method"], []).append(r)
    a = ok.get(BASELINE)
    for method, switchover in VARIANTS:
        b = ok.get(method)
        if a and b:
            ratios.append("%s %s | %.2f | %.2f | %.2f |" % (link, switchover,
                med(b, "total_s") / med(a, "total_s"), med(b, "wire_bytes") / med(a, "wire_bytes"),
                med(b, "guest_downtime_ms") / med(a, "guest_downtime_ms")))
        elif method in methods.split(","):
            ratios.append("%s %s | n/a | n/a | n/a |" % (link, switchover))
    downtime = lambda m: "%.0f" % med(ok[m], "guest_downtime_ms") if m in ok else "n/a"
    switchovers.append("%s %s | %s | %s |" % (link, downtime(BASELINE), downtime("blockmigrate"), downtime("blockmigrate-commit")))
print(f"""## Whole-VM migration vs QEMU copy-storage

Measured {when} on {host}.
Command: `tools/bench-vm.sh {runs}` (part 3 of `./build.sh bench`), methods `{methods}`.

A 128 MiB TCG guest (tools/guest) writing ~180 sequence-numbered 4 KiB blocks per second (O_DIRECT)
over 16 MiB; besides, its disk holds either files of the host's /usr (fill `os`: libraries and
programs, each file once, 4 KiB-aligned, as an installed system's disk) or random data (fill
`random`, which nothing compresses: the worst case). Source and destination QEMU in two network
namespaces joined by a veth shaped with `tc tbf`; where the link has a delay (this kernel has no
netem), every migration connection of every method goes through `tools/wanem.py` in the source
namespace, which delays it by that much each way (data, not TCP's own acknowledgements) while tbf
shapes the aggregate rate. At 20 Mbit/s every method turns on QEMU's auto-converge. (a) QEMU
copy-storage: destination `nbd-server-start` + `block-export-add`, source `blockdev-mirror sync=full`
to READY, `migrate`, `block-job-cancel`, `cont`; the mirror's NBD connection and the memory stream
are delayed, and on a delayed link the mirror runs `copy-mode=write-blocking` (libvirt's
`--copy-storage-synchronous-writes`: in background mode it never got READY with this writer at a
50 ms round trip). (b) BlockMigrate: `blockmigrate receive --once` in the destination namespace, whose
image the destination shim serves in gate mode, and `blockmigrate migrate --hypervisor qemu
--multifd --multifd-channels 1 --memory-compression zstd` in the source namespace, its memory stream
encrypted (TLS-PSK, migrate's default since 2026-12-02); the engine's
connection and the memory stream are delayed. `blockmigrate` uses migrate's default switchover
(gate: the destination resumes once the final dirty set is gated there, the rest streams while it
runs), `blockmigrate-commit` passes `--switchover commit` (the destination resumes only after every
final block is written and fsynced). Total time: (a) from the start of the disk copy to the
destination's RESUME, (b) the wall time of the migrate command; guest downtime from the source's
STOP event to the destination's RESUME event (QEMU timestamps); wire bytes both directions of the
source's link; the destination disk is verified (every block holds its newest write) after the
guest went on writing there.

| link | delay (one way) | fill | method | run | total s | guest downtime ms | wire MB | disk | detail |
|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + """

Ratios b/a (medians; targets: total <= 0.5, wire <= 0.5, downtime <= 1.0):

| link | delay | fill | b switchover | total | wire bytes | guest downtime |
|---|---|---|---|---|---|---|
""" + "\n".join(ratios) + """

Guest downtime, gate against commit (medians, ms):

| link | delay | fill | a: QEMU copy-storage | b: gate | b: commit |
|---|---|---|---|---|---|
""" + "\n".join(switchovers) + "\n")
PY
)
printf '%s\n' "$section"

python3 "$top/tools/bench-section.py" "$doc" "Whole-VM migration vs QEMU copy-storage" "$section"
echo "bench-vm: wrote the \"Whole-VM migration vs QEMU copy-storage\" section of $doc" >&2
