#!/usr/bin/env bash
# Benchmark part 5 (./build.sh bench; skipped where libvirtd is not installed): `migrate --hypervisor libvirt`
# next to `migrate --hypervisor qemu`, a fair pair. The same TCG guest (96 MiB RAM, the sequence-numbered
# writer every 50 ms, a 32 MiB disk: 16 MiB rewritten by the guest + 16 MiB random), the same receiver and
# destination shim in gate mode, between two network namespaces over the same veth shaped with tc tbf
# (RATE on both ends), both memory streams in plaintext over TCP, QEMU's memory defaults otherwise
# (downtime-limit 300 ms). libvirt: two libvirtd in their own namespaces (tools/libvirt-testbed-host.sh);
# qemu: the adapter driving two bare QEMUs. Runs interleaved libvirt, qemu, libvirt, qemu, ...; medians.
# The measuring code is tests/BlockMigrate.Hypervisor.Tests/LibvirtBench.cs (an Explicit fixture: it
# checks every run lost no write, it never asserts a time). Guest pause: libvirt's lifecycle events
# (source 'Suspended' -> destination 'Resumed') and QEMU's (STOP -> RESUME), each host's own clock.
# Writes the "## libvirt adapter next to the QEMU adapter" section of docs/BENCHMARKS.md.
#
#   tools/bench-libvirt.sh [RUNS]       RUNS per method (default 3)
#   BENCH_LIBVIRT_RATE=100mbit          the link (tbf rate; "none" = an unshaped veth)
#   BENCH_DOC=FILE                      write elsewhere than docs/BENCHMARKS.md
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/tools/bench-cli.sh"; bench_cli "$top"   # the NativeAOT blockmigrate, as the package ships it (BENCH_CLI=jit: the JIT build)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
runs=${1:-3}
rate=${BENCH_LIBVIRT_RATE:-100mbit}
doc=${BENCH_DOC:-$top/docs/BENCHMARKS.md}
config=${CONFIG:-Release}
command -v libvirtd >/dev/null || { echo "bench-libvirt: libvirtd not installed (libvirt-daemon-driver-qemu): skipped" >&2; exit 0; }
[ "$(id -u)" -eq 0 ] || { echo "bench-libvirt: needs root (network namespaces, libvirtd)" >&2; exit 1; }
[ -f "$top/build/managed/bin/BlockMigrate.Hypervisor.Tests/$config/net10.0/BlockMigrate.Hypervisor.Tests.dll" ] ||
  { echo "bench-libvirt: the tests are not built: run ./build.sh first" >&2; exit 1; }

work=$(mktemp -d /tmp/bench-libvirt.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "bench-libvirt: $runs run(s) each of libvirt and qemu, interleaved, over a ${rate} veth" >&2
BENCH_LIBVIRT_RUNS=$runs BENCH_LIBVIRT_RATE=$rate BENCH_LIBVIRT_OUT=$work/runs.jsonl \
  dotnet test "$top/tests/BlockMigrate.Hypervisor.Tests" --no-build -c "$config" -nologo \
  --filter 'FullyQualifiedName~LibvirtBench' --logger 'console;verbosity=normal' >"$work/test.log" 2>&1 ||
  { tail -50 "$work/test.log" >&2; echo "bench-libvirt: a run failed (above)" >&2; exit 1; }

when=$(date -u +'%Y-%m-%d %H:%M UTC')
host="$(nproc) CPUs, $(uname -r), $(qemu-system-x86_64 --version | head -1), $(libvirtd --version)"
section=$(python3 - "$work/runs.jsonl" "$when" "$host" "$runs" "$rate" <<'PY'
import json, statistics, sys
path, when, host, runs, rate = sys.argv[1:6]
rows = [json.loads(l) for l in open(path) if l.strip()]
bits = {"k": 1e3, "m": 1e6, "g": 1e9}
rate_bps = None if rate == "none" else float(rate.lower().rstrip("bit")[:-1]) * bits[rate.lower().rstrip("bit")[-1]]
def med(xs): return statistics.median(xs) if xs else float("nan")
out = [f"## libvirt adapter next to the QEMU adapter", "",
       f"{when}; {host}. `tools/bench-libvirt.sh {runs}` (BENCH_LIBVIRT_RATE={rate}): the same TCG guest (96 MiB,",
       "writer every 50 ms, 32 MiB disk), receiver and gated destination shim, two network namespaces over one veth",
       f"shaped with tbf at {rate}, memory in plaintext over TCP with QEMU's defaults, runs interleaved libvirt/qemu;",
       "medians (each run's figures below). Guest pause: source STOP/'Suspended' to destination RESUME/'Resumed' from",
       "QEMU's or libvirt's own events. Its floor is the hypervisor's own downtime figure (QEMU's: the stop-and-copy of",
       "the last dirty memory; libvirt's `downtime`: from the source's stop to the end of its Finish step at the",
       "destination); the total's floor is (disk bytes on the wire + memory bytes) / link rate. libvirt's total also",
       "holds its Confirm step at the source (stopping the source QEMU, ~2 s here), which `migrate` waits for after",
       "the guest has resumed, and the virsh calls before the copy.", "",
       "| adapter | runs | guest pause ms | floor: hypervisor downtime ms | total s | floor s | memory MB | disk wire MB |",
       "|---|---|---|---|---|---|---|---|"]
for method in ("libvirt", "qemu"):
    rs = [r["report"] for r in rows if r["method"] == method]
    if not rs: continue
    floor = [((r["bytes_on_wire"] + r["memory_bytes"]) * 8 / rate_bps) for r in rs] if rate_bps else []
    out.append(f"| `--hypervisor {method}` | {len(rs)} | {med([r['guest_downtime_ms'] for r in rs]):.0f} | "
               f"{med([r['hypervisor_downtime_ms'] for r in rs]):.0f} | {med([r['total_seconds'] for r in rs]):.2f} | "
               f"{(f'{med(floor):.2f}' if floor else 'n/a')} | {med([r['memory_bytes'] for r in rs]) / 1e6:.1f} | "
               f"{med([r['bytes_on_wire'] for r in rs]) / 1e6:.1f} |")
out += ["", "Each run (in the order run):", "", "| adapter | run | guest pause ms | hypervisor downtime ms | total s | switchover ms |", "|---|---|---|---|---|---|"]
for r in rows:
    p = r["report"]
    out.append(f"| {r['method']} | {r['run']} | {p['guest_downtime_ms']:.0f} | {p['hypervisor_downtime_ms']:.0f} | {p['total_seconds']:.2f} | {p['switchover_ms']:.0f} |")
lines = [r["pause_timeline"] for r in rows if r["method"] == "libvirt" and r.get("pause_timeline")]
if lines:
    out += ["", "Where libvirt's pause went in the last run (`migrate`'s log line; ms after the source's 'Suspended'):", "",
            "```", lines[-1].split("libvirt: ", 1)[-1], "```"]
print("\n".join(out))
PY
)
printf '%s\n' "$section"
python3 "$top/tools/bench-section.py" "$doc" "libvirt adapter next to the QEMU adapter" "$section"
echo "bench-libvirt: wrote the \"libvirt adapter next to the QEMU adapter\" section of $doc" >&2
