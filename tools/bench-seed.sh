#!/usr/bin/env bash
# Seeding benchmark (issue 14, part 2): a disk cloned from a template the destination holds.
#
#   tools/bench-seed.sh             (after ./build.sh; also run by ./build.sh bench)
#   BENCH_SEED_RUNS=1 tools/bench-seed.sh           one run of each kind (a smoke test)
#   BENCH_SEED_BASELINE=/path/to/blockmigrate       an older build as the no-seed baseline (e.g. one built from a commit
#                                                   before seeding; default: none, baseline rows skipped)
#
# Template: a 1 GiB raw image holding one ext4 file system made with mkfs.ext4 -d from a debootstrap'd
# Debian bookworm minbase root (cached in build/cache/debian-minbase, as tools/bench-migrate.sh makes it).
# Disk: a copy of the template plus ~50 MiB of changes written into the file system with debugfs (no
# mount needed): 48 MiB of the host's shared libraries (tar) as a new file, and 2 MiB of text appended to
# /var/log. Changes compressed = zstd -3 of exactly those bytes (the codec the engine picks at 100 Mbit).
# Runs, interleaved, medians of BENCH_SEED_RUNS (default 3):
#   seeded   receiver --seed TEMPLATE, this build
#   no seed  receiver without seeds, this build
#   baseline receiver without seeds, the baseline build (main)
# Link: tools/wanem.py at 100 Mbit/s + 20 ms one way (as bench-migrate's (b)); migrate --hypervisor none
# --verify --json, TLS 1.3, map block size 4K (the filter's default). The hash rate per core is the
# receiver's own log line (reading and HMAC-SHA-256 of the template from the page cache, one thread).
# The results replace the "## Seeding" section of docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
. "$top/tools/bench-cli.sh"; bench_cli "$top"   # sets bm: the NativeAOT blockmigrate (BENCH_CLI=jit: the JIT build)
filter=$top/build/native/nbdkit-blockmigrate-filter.so
doc=$top/docs/BENCHMARKS.md
bench=$top/build/bench-seed
rootfs=${BENCH_SEED_ROOTFS:-$top/build/cache/debian-minbase}
runs=${BENCH_SEED_RUNS:-3}
baseline=${BENCH_SEED_BASELINE:-}
for f in "$bm" "$filter"; do [ -e "$f" ] || { echo "bench-seed: $f missing; run ./build.sh first" >&2; exit 1; }; done
[ -z "$baseline" ] || [ -x "$baseline" ] || { echo "bench-seed: no baseline binary at $baseline (BENCH_SEED_BASELINE); baseline runs skipped" >&2; baseline=; }

size=$((1024 << 20))
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=(); }
trap cleanup EXIT
wait_for() { for _ in $(seq 400); do eval "$1" && return 0; sleep 0.05; done; echo "bench-seed: timed out: $1" >&2; return 1; }

if [ ! -d "$rootfs" ]; then
  echo "bench-seed: debootstrap --variant=minbase bookworm into $rootfs (once)" >&2
  rm -rf "$rootfs.tmp"; mkdir -p "$(dirname "$rootfs")"
  debootstrap --variant=minbase bookworm "$rootfs.tmp" http://deb.debian.org/debian > "$(dirname "$rootfs")/debootstrap.log" 2>&1
  mv "$rootfs.tmp" "$rootfs"
fi
mkdir -p "$bench"
template=$bench/template.img disk=$bench/disk.img changes=$bench/changes.bin
if [ ! -f "$disk" ]; then
  rm -f "$template.tmp"; truncate -s $size "$template.tmp"
  mkfs.ext4 -q -F -E root_owner=0:0 -d "$rootfs" "$template.tmp"
  mv "$template.tmp" "$template"
  # the changes: 48 MiB of real binaries and 2 MiB of log text, written into the clone's file system
  (tar -C /usr/lib/x86_64-linux-gnu -cf - . 2>/dev/null || true) | head -c $((48 << 20)) > "$changes.lib"
  python3 -c 'import sys; sys.stdout.write("".join(f"Dec  3 08:{i//600%60:02d}:{i//10%60:02d} vm{i%7} app[{1000+i%97}]: request {i} served in {i%113} ms\n" for i in range(36000))[:2 << 20])' \
    > "$changes.log"
  cat "$changes.lib" "$changes.log" > "$changes"
  cp --sparse=always "$template" "$disk.tmp"
  debugfs -w -R "write $changes.lib /root/libs.tar" "$disk.tmp" > /dev/null 2>&1
  debugfs -w -R "write $changes.log /var/log/app.log" "$disk.tmp" > /dev/null 2>&1
  mv "$disk.tmp" "$disk"
fi
for k in source receiver; do
  [ -f "$bench/$k.key" ] || "$bm" keygen --out "$bench/$k.key" > /dev/null 2>&1
  "$bm" fingerprint "$bench/$k.key" > "$bench/$k.fp"
done
cp "$bench/source.fp" "$bench/trusted"
changes_bytes=$(stat -c %s "$changes")
changes_zstd=$(zstd -3 -q -c "$changes" | wc -c)
alloc=$(( $(stat -c %b "$disk") * $(stat -c %B "$disk") ))

results=$bench/results.tsv
: > "$results"
run() { # kind binary seed(0|1)
  local kind=$1 bin=$2 seeded=$3 dir=$bench/run
  cleanup
  rm -rf "$dir"; mkdir -p "$dir/dst"
  cp --sparse=always "$disk" "$dir/src.img"
  sync
  nbdkit -f -U "$dir/src.sock" --filter="$filter" file file="$dir/src.img" dirtymap="$dir/src.map" 2> "$dir/nbdkit.log" &
  pids+=($!)
  wait_for "[ -S $dir/src.sock ]"
  nbdinfo --size "nbd+unix:///?socket=$dir/src.sock" > /dev/null
  local seedargs=()
  [ "$seeded" = 1 ] && seedargs=(--seed "$template")
  "$bin" receive --listen 127.0.0.1:0 --image-dir "$dir/dst" --key "$bench/receiver.key" --trusted "$bench/trusted" --once "${seedargs[@]}" \
    > "$dir/receiver.out" 2> "$dir/receiver.log" &
  pids+=($!)
  wait_for "grep -q '^listening on' $dir/receiver.out"
  local to
  to=127.0.0.1:$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$dir/receiver.out")
  python3 tools/wanem.py --listen 127.0.0.1:0 --to "$to" --rate 100M --delay 20 > "$dir/wan.out" 2>&1 &
  pids+=($!)
  wait_for "grep -q '^listening on' $dir/wan.out"
  to=127.0.0.1:$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$dir/wan.out")
  echo "bench-seed: $kind ..." >&2
  if "$bin" migrate --disk vda="$dir/src.img:$dir/src.map" --to "$to" --key "$bench/source.key" \
       --peer-fingerprint "$(cat "$bench/receiver.fp")" --hypervisor none --verify --json --timeout 1800 \
       > "$dir/report.json" 2> "$dir/migrate.log"; then
    wait "${pids[1]}" 2>/dev/null || true # the receiver (--once) logs its seed figures as it exits
    local rate
    rate=$(sed -n 's/.*seeds: indexed .*(\([0-9.]*\) MiB\/s on one core).*/\1/p' "$dir/receiver.log" | tail -1)
    python3 - "$dir/report.json" "$kind" "${rate:-}" >> "$results" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); kind, rate = sys.argv[2:4]
print("\t".join(str(x) for x in (kind, r["total_seconds"], r["bytes_on_wire"], r["bytes_of_data"], r.get("blocks_from_seeds", 0),
      r.get("blocks_sent", ""), r.get("seed_exchange_bytes", 0), r["verified"], rate or "-")))
PY
  else
    echo "bench-seed: $kind FAILED: $(tail -1 "$dir/migrate.log")" >&2
    printf '%s\tFAILED\n' "$kind" >> "$results"
  fi
  mkdir -p "$bench/logs"
  for f in migrate.log receiver.log report.json; do [ -f "$dir/$f" ] && cp "$dir/$f" "$bench/logs/$kind.$f"; done
  cleanup
}

for i in $(seq "$runs"); do
  run seeded "$bm" 1
  run noseed "$bm" 0
  if [ -n "$baseline" ]; then run baseline "$baseline" 0; fi
done

when=$(date -u '+%Y-%m-%d %H:%M UTC')
section=$(python3 - "$results" "$when" "$(nproc)" "$(uname -r)" "$changes_bytes" "$changes_zstd" "$alloc" "$size" "$runs" "${baseline:-none}" <<'PY'
import statistics, sys
path, when, cpus, kernel, changes, changes_zstd, alloc, size, runs, baseline = sys.argv[1:11]
changes, changes_zstd, alloc, size = int(changes), int(changes_zstd), int(alloc), int(size)
rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
mib = lambda b: f"{b / 2**20:.1f}"
def med(kind, col):
    v = [float(r[col]) for r in rows if r[0] == kind and r[1] != "FAILED" and r[col] not in ("", "-")]
    return statistics.median(v) if v else None
failed = [r[0] for r in rows if len(r) > 1 and r[1] == "FAILED"]
link = 100e6 / 8
out = ["## Seeding", "",
       f"Measured {when} on {cpus} CPUs (shared with other work), kernel {kernel}; medians of {runs} interleaved runs of each kind.",
       "Command: `tools/bench-seed.sh` (also part of `./build.sh bench`).", "",
       "Template: 1 GiB raw image, one ext4 file system made with `mkfs.ext4 -d` from a debootstrap'd Debian bookworm minbase.",
       f"Disk: a copy of it plus {mib(changes)} MiB of changes written into the file system with `debugfs` (48 MiB of shared",
       f"libraries as a tar file, 2 MiB of log text); {mib(alloc)} MiB allocated. Changes compressed: zstd -3 of exactly those bytes,",
       f"{mib(changes_zstd)} MiB. Link: `tools/wanem.py` 100 Mbit/s + 20 ms one way; `migrate --hypervisor none --verify --json`,",
       "TLS 1.3, codec auto, map block size 4K. Seeded: `receive --seed template.img`; no seed: the same receiver without it;",
       f"baseline: main's build (`{baseline}`) without seeds.", "",
       "| run | total s | on wire MiB | data MiB | blocks from seeds | blocks sent | hash exchange MiB | verified |",
       "|---|---|---|---|---|---|---|---|"]
for kind, name in (("seeded", "seeded"), ("noseed", "no seed"), ("baseline", "baseline (main)")):
    if not any(r[0] == kind for r in rows):
        continue
    t, w, d, s, b, x = (med(kind, c) for c in (1, 2, 3, 4, 5, 6))
    ver = ",".join(sorted({r[7] for r in rows if r[0] == kind and r[1] != "FAILED"}))
    fmt = lambda v, f: "-" if v is None else f(v)
    out.append(f"| {name} | {fmt(t, lambda v: f'{v:.1f}')} | {fmt(w, mib)} | {fmt(d, mib)} | {fmt(s, lambda v: f'{v:.0f}')} | "
               f"{fmt(b, lambda v: f'{v:.0f}')} | {fmt(x, lambda v: f'{v / 2**20:.2f}')} | {ver} |")
w, x, rate = med("seeded", 2), med("seeded", 6), med("seeded", 8)
out.append("")
if w is not None:
    ratio = w / (changes_zstd + x)
    out.append(f"- Disk bytes on the wire (seeded) / (changes compressed + hash exchange) = {mib(w)} / ({mib(changes_zstd)} + {x / 2**20:.2f}) MiB = "
               f"**{ratio:.2f}×** (target ≤ 1.2×; what is above 1 is the file system's metadata the changes touched, frame and TLS overhead).")
    out.append(f"- Hash exchange: {x / 2**20:.2f} MiB = **{100 * x / size:.2f} %** of the 1 GiB disk (target ≤ 1 %; 16 bytes per non-zero 4 KiB block, 0.39 %).")
if rate is not None:
    out.append(f"- Hash rate: **{rate:.0f} MiB/s on one core** (the receiver's index of the template: read from the page cache and HMAC-SHA-256, one thread)"
               f" = {rate * 2**20 / link:.0f}× the link's 12.5 MB/s (target ≥ 3×).")
t0, t1, tb = med("seeded", 1), med("noseed", 1), med("baseline", 1)
if t1 is not None and tb is not None:
    out.append(f"- Without seeds: {t1:.1f} s against main's {tb:.1f} s ({100 * (t1 - tb) / tb:+.0f} %), {mib(med('noseed', 2))} MiB against "
               f"{mib(med('baseline', 2))} MiB on the wire: no hash frame is sent (the receiver's Welcome has no seed key).")
if t0 is not None and t1 is not None:
    out.append(f"- Seeded: {t0:.1f} s against {t1:.1f} s without seeds; the physical limit of the changes alone on this link is "
               f"{changes_zstd / link:.1f} s (compressed) and of the allocated bytes {alloc / link:.1f} s (uncompressed).")
if failed:
    out.append(f"- Failed runs: {', '.join(failed)}.")
out += ["", "`total s` includes `--verify` (SHA-256 of the whole image on both sides) and, when seeded, the receiver indexing the",
        "template (the hash rate above) before it answers the first hashes. 2 shared CPUs: figures vary run to run by 10-30 %."]
print("\n".join(out))
PY
)
printf '%s\n' "$section"
python3 "$top/tools/bench-section.py" "$doc" "Seeding" "$section"
echo "bench-seed: wrote the \"Seeding\" section of docs/BENCHMARKS.md" >&2
if grep -q FAILED "$results"; then echo "bench-seed: some runs failed (see above)" >&2; exit 1; fi
