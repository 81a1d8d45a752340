#!/usr/bin/env bash
# Part 3 of ./build.sh bench: whole-VM migration, BlockMigrate (`migrate --hypervisor qemu`) against
# QEMU's own copy-storage migration (nbd-server + blockdev-mirror + migrate, as libvirt
# --copy-storage-all does), on the same TCG guest and writer, between two network namespaces over a
# veth shaped with tc tbf, runs interleaved (baseline, blockmigrate, baseline, ...).
#
#   tools/bench-vm.sh            # BENCH_VM_RUNS=N for more runs per link (default 1)
#
# Links: 100 Mbit/s (128 MiB disk, 64 MiB of random data) and 20 Mbit/s (64 MiB disk, 16 MiB of data);
# a run that has not finished after 5 (4) minutes is stopped and reported as such.
# No delay: this kernel has no netem, and tools/wanem.py is a TCP proxy for one connection, which
# cannot carry QEMU's memory and NBD streams of both methods alike (see docs/BENCHMARKS.md).
# Writes the "Whole-VM migration" section of docs/BENCHMARKS.md. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
config=${CONFIG:-Release}
runs=${BENCH_VM_RUNS:-1}
doc=$top/docs/BENCHMARKS.md
out=$top/build/bench/vm
mkdir -p "$out"
[ -f build/native/nbdkit-blockmigrate-filter.so ] || ./build.sh >&2
dotnet build tools/bench-qemu -c "$config" -nologo -v quiet -clp:ErrorsOnly >&2
rc=0
links=()
run() { # RATE DISK FILL TIMEOUT-MINUTES
  local rate=$1 disk=$2 fill=$3 minutes=$4
  links+=("$rate $disk $fill")
  echo "bench-vm: $rate, disk $disk, fill $fill, $runs run(s) each" >&2
  tools/bench-qemu-baseline baseline,blockmigrate --rate "$rate" --runs "$runs" --memory 128 --disk "$disk" --fill "$fill" \
    --json "$out/$rate.json" --timeout "$minutes" | tee "$out/$rate.md" >&2 || rc=1
}
run 100mbit 128M 64M 5
run 20mbit 64M 16M 4

section=$(python3 - "$out" "$runs" "$(date -u +%Y-%m-%d)" "$(nproc)" "$(uname -r)" "${links[@]}" <<'PY'
import json, os, statistics, sys
out, runs, when, cpus, kernel, links = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:]
lines = ["## Whole-VM migration", "",
         f"`tools/bench-vm.sh` (runs `tools/bench-qemu-baseline baseline,blockmigrate --rate RATE --runs {runs} --memory 128 --disk DISK --fill FILL --timeout MIN`),",
         f"{when}, {cpus} shared cores, kernel {kernel}. TCG guest of 128 MiB RAM writing sequence-numbered 4 KiB blocks",
         "(16 MiB rewritten round-robin) on a disk holding FILL of random data; source and destination in two network",
         "namespaces joined by a veth shaped with tc tbf; runs interleaved. (a) QEMU copy-storage: `nbd-server-start` +",
         "`blockdev-mirror` + `migrate`. (b) BlockMigrate: `blockmigrate receive --once` at the destination (destination",
         "shim in gate mode), `blockmigrate migrate --hypervisor qemu` at the source (memory over multifd + zstd at 100 Mbit/s and below).",
         "Total: (a) first QMP command to `cont`; (b) wall time of the migrate command. Guest downtime: source STOP to",
         "destination RESUME (QEMU's events). Wire: bytes sent by both ends of the link (disk + memory + control).",
         "Every run's destination disk was checked block by block after the guest wrote on at the destination.", "",
         "| link | method | runs | total s | guest downtime ms | QEMU downtime ms | wire MB | memory MB (QEMU count) | disk |",
         "|---|---|---|---|---|---|---|---|---|"]
ratios = []
details = []
for link in links:
    rate, disk, fill = link.split()
    path = os.path.join(out, rate + ".json")
    data = json.load(open(path)) if os.path.exists(path) else []
    med = {}
    for method in ("baseline", "blockmigrate"):
        mine = [r for r in data if (r["method"] == "blockmigrate") == (method == "blockmigrate")]
        rs = [r for r in mine if r["disk_ok"]]
        bad = [r for r in mine if not r["disk_ok"]]
        for r in bad: details.append(f"- {rate} {method} run {r['run']}: {r['detail']}")
        for r in rs: details.append(f"- {rate} {method} run {r['run']}: {r['detail']}")
        if not rs:
            lines.append(f"| {rate} ({disk}, {fill} data) | {method} | 0 of {len(bad)} ok | | | | | | FAILED |")
            continue
        m = {k: statistics.median([r[k] for r in rs]) for k in ("total_s", "guest_downtime_ms", "wire_bytes", "memory_bytes")}
        q = [r["qemu_downtime_ms"] for r in rs if r["qemu_downtime_ms"] is not None]
        m["qemu"] = statistics.median(q) if q else None
        med[method] = m
        qd = "" if m["qemu"] is None else f"{m['qemu']:.0f}"
        label = "(a) QEMU copy-storage" if method == "baseline" else "(b) BlockMigrate"
        lines.append(f"| {rate} ({disk}, {fill} data) | {label} | {len(rs)} | {m['total_s']:.1f} | {m['guest_downtime_ms']:.0f} | "
                     f"{qd} | {m['wire_bytes']/1e6:.1f} | {m['memory_bytes']/1e6:.1f} | verifies |")
    if "baseline" in med and "blockmigrate" in med:
        a, b = med["baseline"], med["blockmigrate"]
        ratios.append((rate, b["total_s"] / a["total_s"], b["guest_downtime_ms"] / a["guest_downtime_ms"], b["wire_bytes"] / a["wire_bytes"]))
lines += ["", "Ratios b/a (medians; target: total and wire ≤ 0.5, guest downtime ≤ 1.0):", "",
          "| link | total | guest downtime | wire |", "|---|---|---|---|"]
for rate, t, d, w in ratios:
    mark = lambda v, lim: f"{v:.2f}" + ("" if v <= lim else " (missed)")
    lines.append(f"| {rate} | {mark(t, 0.5)} | {mark(d, 1.0)} | {mark(w, 0.5)} |")
lines += ["", "Per run:", ""] + details
print("\n".join(lines))
PY
)
printf '%s\n' "$section" > "$out/section.md"
python3 - "$doc" "$out/section.md" <<'PY'
import os, re, sys
path, section = sys.argv[1], open(sys.argv[2]).read().rstrip("\n") + "\n"
text = open(path).read() if os.path.exists(path) else "# BlockMigrate benchmarks\n"
pat = re.compile(r"^## Whole-VM migration\n.*?(?=^## |\Z)", re.S | re.M)
if pat.search(text):
    text = pat.sub(lambda m: section + ("\n" if m.end() < len(text) else ""), text, count=1)
else:
    text = text.rstrip("\n") + "\n\n" + section
open(path + ".tmp", "w").write(text)
os.replace(path + ".tmp", path)
PY
echo "bench-vm: wrote the \"Whole-VM migration\" section of docs/BENCHMARKS.md (raw: $out)" >&2
exit $rc
