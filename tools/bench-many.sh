#!/usr/bin/env bash
# Many migrations at once (issue 11, item 4): four disks migrated at the same time into one receiver service.
#
#   tools/bench-many.sh [RUNS]        (after ./build.sh; part of ./build.sh bench; RUNS defaults to 3)
#
# Each disk: 128 MiB of incompressible data (urandom) in a 256 MiB sparse image, served by nbdkit with the
# blockmigrate filter, a light writer on it (tools/seqwriter.py --random --rate 120: 120 random 4 KiB writes/s)
# for the whole run. One `blockmigrate receive` service (no --once) in namespace B; the sources in namespace A; a
# veth between them shaped with tc tbf on both ends (this kernel has no netem, so no delay here).
# Scenarios, interleaved run by run:
#   loop1   one migration alone, unshaped veth                 -> aggregate throughput of one
#   loop4   four at once, unshaped veth                        -> aggregate of four / aggregate of one
#   link4   four at once sharing tbf 100 Mbit, no --bandwidth  -> each one's share (Jain's index, min/max)
#   cap4    four at once sharing tbf 100 Mbit, --bandwidth 10/20/30/40M -> achieved / given per migration
# Throughput of a migration = its bytes on the wire / its total seconds (connect to commit, --verify off).
# The physical limit beside each row: the bytes all four put on the wire / link rate (or, with caps, each one's
# bytes / its cap). The results replace the "## Many migrations at once" section of docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
runs=${1:-3}
. "$top/tools/bench-cli.sh"; bench_cli "$top"   # sets bm: the NativeAOT blockmigrate (BENCH_CLI=jit: the JIT build)
filter=$top/build/native/nbdkit-blockmigrate-filter.so
doc=$top/docs/BENCHMARKS.md
bench=$top/build/bench-many
for f in "$bm" "$filter"; do [ -e "$f" ] || { echo "bench-many: $f missing; run ./build.sh first" >&2; exit 1; }; done
nsA=bm-many-a-$$ nsB=bm-many-b-$$ addrA=10.198.77.1 addrB=10.198.77.2
pids=()
stop_pids() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=(); }
cleanup() { stop_pids; ip netns del "$nsA" 2>/dev/null || true; ip netns del "$nsB" 2>/dev/null || true; }
trap cleanup EXIT
wait_for() { for _ in $(seq 400); do eval "$1" && return 0; sleep 0.05; done; echo "bench-many: timed out: $1" >&2; return 1; }

mkdir -p "$bench"
for k in source receiver; do
  [ -f "$bench/$k.key" ] || "$bm" keygen --out "$bench/$k.key" > /dev/null 2>&1
  "$bm" fingerprint "$bench/$k.key" > "$bench/$k.fp"
done
cp "$bench/source.fp" "$bench/trusted"
master=$bench/master.img
if [ ! -f "$master" ]; then
  truncate -s $((256 << 20)) "$master.tmp"
  head -c $((128 << 20)) /dev/urandom | dd of="$master.tmp" bs=1M seek=64 conv=notrunc status=none
  mv "$master.tmp" "$master"
fi

ip netns add "$nsA"; ip netns add "$nsB"
ip -n "$nsA" link add eth0 type veth peer name eth0 netns "$nsB"
ip -n "$nsA" addr add $addrA/24 dev eth0; ip -n "$nsB" addr add $addrB/24 dev eth0
for ns in "$nsA" "$nsB"; do ip -n "$ns" link set lo up; ip -n "$ns" link set eth0 up; done
shape() { # RATE or "none"
  for ns in "$nsA" "$nsB"; do
    tc -n "$ns" qdisc del dev eth0 root 2>/dev/null || true
    [ "$1" = none ] || tc -n "$ns" qdisc add dev eth0 root tbf rate "$1" burst 64kb latency 50ms
  done
}

results=$bench/results.tsv
: > "$results"
scenario() { # run# name link(none|100mbit) count caps...
  local run=$1 name=$2 link=$3 count=$4; shift 4
  local caps=("$@") dir=$bench/run
  stop_pids; shape "$link"
  rm -rf "$dir"; mkdir -p "$dir/dst"
  ip netns exec "$nsB" "$bm" receive --listen $addrB:7420 --image-dir "$dir/dst" --key "$bench/receiver.key" \
    --trusted "$bench/trusted" > "$dir/receiver.out" 2> "$dir/receiver.log" &
  pids+=($!)
  wait_for "grep -q '^listening on' $dir/receiver.out"
  local i
  for ((i = 0; i < count; i++)); do
    cp --sparse=always "$master" "$dir/src$i.img"
    nbdkit -f -U "$dir/src$i.sock" --filter="$filter" file file="$dir/src$i.img" dirtymap="$dir/src$i.map" 2> "$dir/nbdkit$i.log" &
    pids+=($!)
  done
  for ((i = 0; i < count; i++)); do
    wait_for "[ -S $dir/src$i.sock ]"
    nbdinfo --size "nbd+unix:///?socket=$dir/src$i.sock" > /dev/null
    python3 tools/seqwriter.py write "nbd+unix:///?socket=$dir/src$i.sock" --random --blocks 32768 --offset $((64 << 20)) \
      --rate 120 > "$dir/writer$i.out" 2>&1 &
    pids+=($!)
  done
  sync; sleep 1
  echo "bench-many: run $run, $name ..." >&2
  local mig=()
  for ((i = 0; i < count; i++)); do
    local cap=()
    [ ${#caps[@]} -eq 0 ] || cap=(--bandwidth "${caps[$i]}")
    ip netns exec "$nsA" "$bm" migrate --disk "vd$i=$dir/src$i.img:$dir/src$i.map" --to $addrB:7420 --key "$bench/source.key" \
      --peer-fingerprint "$(cat "$bench/receiver.fp")" --hypervisor none --json --timeout 1800 "${cap[@]}" \
      > "$dir/report$i.json" 2> "$dir/migrate$i.log" &
    mig+=($!)
  done
  for ((i = 0; i < count; i++)); do
    if wait "${mig[$i]}"; then
      python3 - "$dir/report$i.json" "$run" "$name" "$link" "$i" "${caps[$i]:-}" >> "$results" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); run, name, link, i, cap = sys.argv[2:7]
print("\t".join(str(x) for x in (run, name, link, i, cap or "-", r["total_seconds"], r["downtime_ms"], r["bytes_on_wire"], r["bytes_of_data"])))
PY
    else
      echo "bench-many: run $run $name migration $i FAILED: $(tail -1 "$dir/migrate$i.log")" >&2
      printf '%s\t%s\t%s\t%s\t%s\tFAILED\n' "$run" "$name" "$link" "$i" "${caps[$i]:-}" >> "$results"
    fi
  done
  mkdir -p "$bench/logs"
  for ((i = 0; i < count; i++)); do cp "$dir/migrate$i.log" "$bench/logs/$run-$name-$i.migrate.log" 2>/dev/null || true; done
  stop_pids
}

for ((r = 1; r <= runs; r++)); do
  scenario $r loop1 none 1
  scenario $r loop4 none 4
  scenario $r link4 100mbit 4
  scenario $r cap4 100mbit 4 10M 20M 30M 40M
done

when=$(date -u '+%Y-%m-%d %H:%M UTC')
section=$(python3 - "$results" "$when" "$(nproc)" "$(uname -r)" "$runs" <<'PY'
import statistics as st, sys
path, when, cpus, kernel, runs = sys.argv[1:6]
rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
ok = [r for r in rows if r[5] != "FAILED"]
failed = [r for r in rows if r[5] == "FAILED"]
def runs_of(name):
    out = {}
    for r in ok:
        if r[1] == name:
            out.setdefault(r[0], []).append(dict(i=int(r[3]), cap=r[4], total=float(r[5]), down=float(r[6]), wire=int(r[7])))
    return out
mbit = lambda bytes_, s: bytes_ * 8 / s / 1e6
med = lambda xs: st.median(xs) if xs else float("nan")
agg = lambda ms: sum(m["wire"] for m in ms) * 8 / max(m["total"] for m in ms) / 1e6
one = runs_of("loop1"); four = runs_of("loop4"); link = runs_of("link4"); cap = runs_of("cap4")
out = ["## Many migrations at once", "",
       f"Measured {when} on {cpus} CPUs (shared with other work), kernel {kernel}; medians of {runs} interleaved runs.",
       f"Command: `tools/bench-many.sh {runs}` (also part of `./build.sh bench`).", "",
       "Four 256 MiB disks, each holding 128 MiB of incompressible data, each under a light writer (120 random 4 KiB",
       "writes/s through NBD), migrated at the same time by four `blockmigrate migrate --hypervisor none` processes",
       "into one `blockmigrate receive` service in another network namespace (veth; tc tbf where shaped, no delay).",
       "Throughput of one migration = its bytes on the wire / its total time. Limit = bytes on the wire / link rate.", ""]
if one and four:
    a1 = med([agg(v) for v in one.values()]); a4 = med([agg(v) for v in four.values()])
    out += ["| unshaped veth | aggregate Mbit/s | 4 vs 1 |", "|---|---|---|",
            f"| one alone | {a1:.0f} | |", f"| four at once | {a4:.0f} | {a4 / a1:.2f}x |", ""]
if link:
    jain, mn, mx, totals, limits, downs = [], [], [], [], [], []
    for ms in link.values():
        x = [mbit(m["wire"], m["total"]) for m in ms]
        jain.append(sum(x) ** 2 / (len(x) * sum(v * v for v in x)))
        mn.append(min(x)); mx.append(max(x))
        totals.append(max(m["total"] for m in ms)); limits.append(sum(m["wire"] for m in ms) * 8 / 100e6)
        downs.append(max(m["down"] for m in ms))
    out += ["| 100 Mbit shared by four | slowest Mbit/s | fastest Mbit/s | Jain's index | last one done s | limit s | total/limit | worst downtime ms |",
            "|---|---|---|---|---|---|---|---|",
            f"| no --bandwidth | {med(mn):.1f} | {med(mx):.1f} | {med(jain):.3f} | {med(totals):.1f} | {med(limits):.1f} | {med(totals) / med(limits):.2f} | {med(downs):.0f} |", ""]
if cap:
    out += ["| 100 Mbit shared, --bandwidth | achieved Mbit/s | achieved / given | total s | limit s (bytes / cap) | downtime ms |", "|---|---|---|---|---|---|"]
    by = {}
    for ms in cap.values():
        for m in ms:
            by.setdefault(m["cap"], []).append(m)
    for c in sorted(by, key=lambda c: float(c.rstrip("M"))):
        ms = by[c]; given = float(c.rstrip("M"))
        ach = med([mbit(m["wire"], m["total"]) for m in ms])
        out.append(f"| {c} | {ach:.1f} | {ach / given:.2f} | {med([m['total'] for m in ms]):.1f} | {med([m['wire'] * 8 / (given * 1e6) for m in ms]):.1f} | {med([m['down'] for m in ms]):.0f} |")
    out.append("")
if failed:
    out.append(f"Failed migrations: {len(failed)} (" + ", ".join(f"run {r[0]} {r[1]} #{r[3]}" for r in failed) + ").")
out.append("Throughput includes the connect, the handshake and the switchover, so a migration's figure sits a little below its share.")
if cap:
    out.append("The caps add up to the whole link (10+20+30+40 = 100 Mbit), so the largest one also competes with the other three's TCP flows at the tbf queue and ends a little below its cap.")
print("\n".join(out))
PY
)
printf '%s\n' "$section"
python3 "$top/tools/bench-section.py" "$doc" "Many migrations at once" "$section"
echo "bench-many: wrote the \"Many migrations at once\" section of docs/BENCHMARKS.md" >&2
if grep -q FAILED "$results"; then echo "bench-many: some runs failed (see above)" >&2; exit 1; fi
