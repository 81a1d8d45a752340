#!/usr/bin/env bash
# Scale benchmark: cost follows the data, not the disk's size. The same 256 MiB of incompressible data,
# scattered over a sparse disk of 1 GiB and of 1 TiB (holes between), migrated over loopback under a
# writer whose random 4 KiB writes land anywhere on the whole disk.
#
#   tools/bench-scale.sh                  (after ./build.sh; optional part of ./build.sh bench: BENCH_SCALE=1)
#   BENCH_SCALE_RUNS=3 tools/bench-scale.sh      runs per size, interleaved (default 3); medians reported
#   BENCH_SCALE_SIZES="1G 1T" tools/bench-scale.sh
#   BENCH_SCALE_BM=/path/to/blockmigrate BENCH_SCALE_NODOC=1 tools/bench-scale.sh   another build, no docs
#
# Disk: a sparse raw file (truncate -s), 256 pieces of 1 MiB of /dev/urandom at evenly spaced offsets
# (the same bytes at both sizes); map block size 4K (the filter's default). Writer: tools/seqwriter.py
# --random --rate 120 over every 4 KiB block of the disk (3.9 Mbit/s of guest writes). Migration:
# blockmigrate migrate --hypervisor none --verify --json, TLS 1.3, codec auto, receiver --once on
# 127.0.0.1, both image files on the same ext4. Each of migrate and receive runs under /usr/bin/time -v
# (peak RSS). "data after compression" = zstd -3 of the 256 MiB (incompressible: the physical limit of
# the bulk data) plus the writer's blocks as sent (bytes_of_data beyond the 256 MiB, compressed ~10x by
# the codec; counted uncompressed here, which favours nothing). The results replace the "## Scale"
# section of docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
. "$top/tools/bench-cli.sh"; bench_cli "$top"
bm=${BENCH_SCALE_BM:-$bm}
filter=${BLOCKMIGRATE_FILTER:-$top/build/native/nbdkit-blockmigrate-filter.so}
doc=$top/docs/BENCHMARKS.md
bench=$top/build/bench-scale
runs=${BENCH_SCALE_RUNS:-3}
sizes=${BENCH_SCALE_SIZES:-1G 1T}
for f in "$bm" "$filter"; do [ -e "$f" ] || { echo "bench-scale: $f missing; run ./build.sh first" >&2; exit 1; }; done

pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=(); }
trap cleanup EXIT
wait_for() { for _ in $(seq 400); do eval "$1" && return 0; sleep 0.05; done; echo "bench-scale: timed out: $1" >&2; return 1; }

mkdir -p "$bench"
data=$bench/data.bin
[ -f "$data" ] || head -c $((256 << 20)) /dev/urandom > "$data"
zdata=$(zstd -3 -q -c "$data" | wc -c)
for k in source receiver; do
  [ -f "$bench/$k.key" ] || "$bm" keygen --out "$bench/$k.key" > /dev/null 2>&1
  "$bm" fingerprint "$bench/$k.key" > "$bench/$k.fp"
done
cp "$bench/source.fp" "$bench/trusted"

bytes() { case $1 in *T) echo $(( ${1%T} << 40 ));; *G) echo $(( ${1%G} << 30 ));; *M) echo $(( ${1%M} << 20 ));; esac; }
rss_kb() { sed -n 's/^\s*Maximum resident set size (kbytes): //p' "$1"; }

results=$bench/results.tsv
: > "$results"
run() { # size_label
  local label=$1 size dir=$bench/run
  size=$(bytes "$label")
  cleanup
  rm -rf "$dir"; mkdir -p "$dir/dst"
  truncate -s "$size" "$dir/src.img"
  local step=$(( size / 256 / 1048576 ))  # MiB between pieces
  python3 - "$data" "$dir/src.img" "$step" <<'PY'
import sys
data, img, step = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(data, "rb") as d, open(img, "r+b") as f:
    for i in range(256):
        f.seek(i * step << 20)
        f.write(d.read(1 << 20))
PY
  sync
  nbdkit -f -U "$dir/src.sock" --filter="$filter" file file="$dir/src.img" dirtymap="$dir/src.map" 2> "$dir/nbdkit.log" &
  pids+=($!)
  wait_for "[ -S $dir/src.sock ]"
  nbdinfo --size "nbd+unix:///?socket=$dir/src.sock" > /dev/null
  /usr/bin/time -v -o "$dir/receiver.time" "$bm" receive --listen 127.0.0.1:0 --image-dir "$dir/dst" --key "$bench/receiver.key" \
    --trusted "$bench/trusted" --once > "$dir/receiver.out" 2> "$dir/receiver.log" &
  local rpid=$!
  pids+=($rpid)
  wait_for "grep -q '^listening on' $dir/receiver.out"
  local port
  port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$dir/receiver.out")
  python3 tools/seqwriter.py write "nbd+unix:///?socket=$dir/src.sock" --random --blocks $(( size / 4096 )) --offset 0 \
    --rate 120 > "$dir/writer.out" 2>&1 &
  pids+=($!)
  sleep 1
  echo "bench-scale: $label ..." >&2
  if /usr/bin/time -v -o "$dir/migrate.time" "$bm" migrate --disk vda="$dir/src.img:$dir/src.map" --to "127.0.0.1:$port" \
       --key "$bench/source.key" --peer-fingerprint "$(cat "$bench/receiver.fp")" --hypervisor none --verify --json \
       --timeout 1800 > "$dir/report.json" 2> "$dir/migrate.log"; then
    wait "$rpid" || true
    python3 - "$dir/report.json" "$dir/migrate.log" "$label" "$zdata" "$(rss_kb "$dir/migrate.time")" "$(rss_kb "$dir/receiver.time")" >> "$results" <<'PY'
import json, re, sys
from datetime import datetime
r = json.load(open(sys.argv[1])); log = open(sys.argv[2]).read().splitlines()
label, zdata, rss_m, rss_r = sys.argv[3:7]
def at(pattern):
    for l in log:
        if re.search(pattern, l):
            m = re.match(r"(\S+)", l)
            return datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
    return None
t0, t1 = at(r"committed: "), at(r"verify vda: ")
verify_s = (t1 - t0) if t0 and t1 else float("nan")
writer = max(0, r["bytes_of_data"] - (256 << 20))
print("\t".join(str(x) for x in (label, r["total_seconds"], r["downtime_ms"], r["bytes_on_wire"], r["bytes_of_data"], r["bytes_zero"],
      int(zdata) + writer, rss_m, rss_r, f"{verify_s:.2f}", r["verified"], r["final_blocks"])))
PY
  else
    echo "bench-scale: $label FAILED: $(tail -1 "$dir/migrate.log")" >&2
    printf '%s\tFAILED\n' "$label" >> "$results"
  fi
  mkdir -p "$bench/logs"
  for f in migrate.log receiver.log report.json migrate.time receiver.time; do [ -f "$dir/$f" ] && cp "$dir/$f" "$bench/logs/$label.$f"; done
  cleanup
  rm -rf "$dir"
}

for i in $(seq "$runs"); do for s in $sizes; do run "$s"; done; done
cat "$results"
[ -n "${BENCH_SCALE_NODOC:-}" ] && exit 0

when=$(date -u '+%Y-%m-%d %H:%M UTC')
section=$(python3 - "$results" "$when" "$(nproc)" "$(uname -r)" "$runs" "$sizes" <<'PY'
import statistics, sys
path, when, cpus, kernel, runs, sizes = sys.argv[1:7]
rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
mib = lambda b: b / 2**20
out = ["## Scale", "",
       f"Measured {when} on {cpus} CPUs (shared with other work), kernel {kernel}; medians of {runs} interleaved runs per size.",
       f"Command: `BENCH_SCALE_RUNS={runs} tools/bench-scale.sh` (optional part of `./build.sh bench`: `BENCH_SCALE=1`).", "",
       "A sparse raw disk holding 256 MiB of incompressible data (256 pieces of 1 MiB, evenly spaced; holes between), served by",
       "nbdkit + the filter (`blocksize=4K`); a writer makes 120 random 4 KiB writes/s anywhere on the whole disk during the run.",
       "`blockmigrate migrate --hypervisor none --verify --json` over loopback (TLS 1.3, codec auto), receiver `--once`;",
       "peak RSS from `/usr/bin/time -v`. \"limit\" = data after compression: zstd -3 of the 256 MiB plus the writer's blocks",
       "as read (uncompressed), i.e. what a perfect sender must put on the wire; wire/limit is the overhead of everything else",
       "(holes, frame heads, TLS, handshake). Freeze to commit = `downtime_ms` (hypervisor none: the freeze of the map to the",
       "receiver's `Committed`). Verify = the `--verify` step after the commit (both sides, hole-aware digests).", "",
       "| disk | runs | total s | wire MiB | data MiB | holes sent as zero ranges | limit MiB | wire/limit | freeze→commit ms | migrate RSS MiB | receive RSS MiB | verify s | verified |",
       "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
for size in sizes.split():
    rs = [r for r in rows if r[0] == size and r[1] != "FAILED"]
    failed = sum(1 for r in rows if r[0] == size and r[1] == "FAILED")
    if not rs:
        out.append(f"| {size} | {failed} failed | | | | | | | | | | | |")
        continue
    med = lambda i, f=float: statistics.median(f(r[i]) for r in rs)
    wire, data, zero, limit = med(3), med(4), med(5), med(6)
    out.append(f"| {size} | {len(rs)}{f' (+{failed} failed)' if failed else ''} | {med(1):.1f} | {mib(wire):.1f} | {mib(data):.1f} | {mib(zero):,.0f} MiB | {mib(limit):.1f} | "
               f"{statistics.median(float(r[3]) / float(r[6]) for r in rs):.3f} | {med(2):.0f} | {med(7) / 1024:.0f} | {med(8) / 1024:.0f} | {med(9):.2f} | "
               f"{'/'.join(sorted(set(r[10] for r in rs)))} |")
out += ["", "Before this work (issue 11, the same scenario at 1 TiB): 339.6 MiB on the wire for 268.8 MiB of data (hole",
        "ranges ~70 MiB: one zero frame per MiB of hole), freeze to commit 591 ms (12 ms at 1 GiB), `migrate` 472 MB resident,",
        "`--verify` hashed the whole TiB of holes (stopped after minutes)."]
print("\n".join(out))
PY
)
printf '%s\n' "$section"
python3 "$top/tools/bench-section.py" "$doc" "Scale" "$section"
echo "bench-scale: wrote the \"Scale\" section of docs/BENCHMARKS.md" >&2
if grep -q FAILED "$results"; then echo "bench-scale: some runs failed (see above)" >&2; exit 1; fi
