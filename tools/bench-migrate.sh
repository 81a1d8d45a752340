#!/usr/bin/env bash
# Migration benchmark: a 1 GiB disk of realistic content migrated under a light writer over
# (a) loopback, (b) 100 Mbit/s + 20 ms, (c) 20 Mbit/s + 50 ms (one-way delay, tools/wanem.py),
# and the map block size compared on the slow link.
#
#   tools/bench-migrate.sh            (after ./build.sh; also run by ./build.sh bench)
#   BENCH_MIGRATE_QUICK=1 tools/bench-migrate.sh     one run per link, 64K only (a smoke test)
#   BENCH_MIGRATE_BLOCKSIZE_ONLY=64K tools/bench-migrate.sh   one block-size run, no docs (diagnostics)
#
# Disk: 1 GiB raw; an 896 MiB ext4 file system made with mkfs.ext4 -d from a debootstrap'd Debian
# bookworm minbase root (cached in build/cache/debian-minbase; made on first use, needs the network),
# free space left as holes; the last 128 MiB are where the writer writes.
# Writer: tools/seqwriter.py --random --rate 120: 120 random 4 KiB writes/s = 3.9 Mbit/s of guest
# writes (the load at which QEMU's mirror was measured in issue 3) through NBD into the shim.
# Migration: blockmigrate migrate --hypervisor none --verify --json (TLS 1.3, codec auto, defaults:
# --max-downtime 300), receiver on 127.0.0.1, image directories on the same file system.
# "limit" = allocated bytes of the image / link rate: the time a perfect link-speed copy of the
# allocated data would take uncompressed; ratio = total time / limit (below 1 thanks to compression).
# The results replace the "## Migration" section of docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
. "$top/tools/bench-cli.sh"; bench_cli "$top"   # sets bm: the NativeAOT blockmigrate (BENCH_CLI=jit: the JIT build)
filter=$top/build/native/nbdkit-blockmigrate-filter.so
doc=$top/docs/BENCHMARKS.md
bench=$top/build/bench-migrate
rootfs=$top/build/cache/debian-minbase
for f in "$bm" "$filter"; do [ -e "$f" ] || { echo "bench-migrate: $f missing; run ./build.sh first" >&2; exit 1; }; done

size=$((1024 << 20)); fs=$((896 << 20)); tail_off=$((896 << 20)); tail_blocks=32768
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=(); }
trap cleanup EXIT
wait_for() { for _ in $(seq 400); do eval "$1" && return 0; sleep 0.05; done; echo "bench-migrate: timed out: $1" >&2; return 1; }

if [ ! -d "$rootfs" ]; then
  echo "bench-migrate: debootstrap --variant=minbase bookworm into $rootfs (once)" >&2
  rm -rf "$rootfs.tmp"
  mkdir -p "$top/build/cache"
  debootstrap --variant=minbase bookworm "$rootfs.tmp" http://deb.debian.org/debian > "$top/build/cache/debootstrap.log" 2>&1
  mv "$rootfs.tmp" "$rootfs"
fi
mkdir -p "$bench"
master=$bench/master.img
if [ ! -f "$master" ]; then
  truncate -s $fs "$master.tmp"
  mkfs.ext4 -q -F -E root_owner=0:0 -d "$rootfs" "$master.tmp"
  truncate -s $size "$master.tmp"
  mv "$master.tmp" "$master"
fi
for k in source receiver; do
  [ -f "$bench/$k.key" ] || "$bm" keygen --out "$bench/$k.key" > /dev/null 2>&1
  "$bm" fingerprint "$bench/$k.key" > "$bench/$k.fp"
done
cp "$bench/source.fp" "$bench/trusted"

results=$bench/results.tsv
: > "$results"
run() { # table name rate_bits delay_ms blocksize master writer_offset writer_blocks
  local table=$1 name=$2 rate=$3 delay=$4 bs=$5 img=$6 woff=$7 wblocks=$8 dir=$bench/run
  local alloc=$(( $(stat -c %b "$img") * $(stat -c %B "$img") ))
  cleanup
  rm -rf "$dir"; mkdir -p "$dir/dst"
  cp --sparse=always "$img" "$dir/src.img"
  sync
  nbdkit -f -U "$dir/src.sock" --filter="$filter" file file="$dir/src.img" dirtymap="$dir/src.map" blocksize="$bs" 2> "$dir/nbdkit.log" &
  pids+=($!)
  wait_for "[ -S $dir/src.sock ]"
  nbdinfo --size "nbd+unix:///?socket=$dir/src.sock" > /dev/null
  "$bm" receive --listen 127.0.0.1:0 --image-dir "$dir/dst" --key "$bench/receiver.key" --trusted "$bench/trusted" --once \
    > "$dir/receiver.out" 2> "$dir/receiver.log" &
  pids+=($!)
  wait_for "grep -q '^listening on' $dir/receiver.out"
  local port to
  port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$dir/receiver.out")
  to=127.0.0.1:$port
  if [ "$rate" != 0 ]; then
    python3 tools/wanem.py --listen 127.0.0.1:0 --to "$to" --rate "$rate" --delay "$delay" > "$dir/wan.out" 2>&1 &
    pids+=($!)
    wait_for "grep -q '^listening on' $dir/wan.out"
    to=127.0.0.1:$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$dir/wan.out")
  fi
  python3 tools/seqwriter.py write "nbd+unix:///?socket=$dir/src.sock" --random --blocks "$wblocks" --offset "$woff" \
    --rate 120 > "$dir/writer.out" 2>&1 &
  pids+=($!)
  sleep 1
  echo "bench-migrate: $name, block size $bs ..." >&2
  if "$bm" migrate --disk vda="$dir/src.img:$dir/src.map" --to "$to" --key "$bench/source.key" \
       --peer-fingerprint "$(cat "$bench/receiver.fp")" --hypervisor none --verify --json --timeout 1800 --timeline "$dir/timeline.svg" \
       > "$dir/report.json" 2> "$dir/migrate.log"; then
    python3 - "$dir/report.json" "$table" "$name" "$rate" "$delay" "$bs" "$alloc" >> "$results" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); table, name, rate, delay, bs, alloc = sys.argv[2:8]
print("\t".join(str(x) for x in (table, name, rate, delay, bs, alloc, r["total_seconds"], r["downtime_ms"], r["bytes_on_wire"],
      r["bytes_on_wire_after_bulk"], r["bytes_of_data"], r["rounds"], r["throttled_seconds"], r["verified"])))
PY
  else
    echo "bench-migrate: $name $bs FAILED: $(tail -1 "$dir/migrate.log")" >&2
    printf '%s\t%s\t%s\t%s\t%s\t%s\tFAILED\n' "$table" "$name" "$rate" "$delay" "$bs" "$alloc" >> "$results"
  fi
  mkdir -p "$bench/logs"
  local tag
  tag=$(echo "$table-$name-$bs" | tr -c 'A-Za-z0-9.\n-' '_')
  for f in migrate.log receiver.log report.json timeline.svg; do [ -f "$dir/$f" ] && cp "$dir/$f" "$bench/logs/$tag.$f"; done
  cleanup
}

# Block size: a 256 MiB disk whose first 64 MiB are incompressible data already there, and the same
# writer rewriting 4 KiB pieces of it: each dirty block costs its full size on the wire.
bsimg=$bench/blocksize.img
if [ ! -f "$bsimg" ]; then
  truncate -s $((256 << 20)) "$bsimg.tmp"
  head -c $((64 << 20)) /dev/urandom | dd of="$bsimg.tmp" conv=notrunc status=none
  mv "$bsimg.tmp" "$bsimg"
fi
main() { run main "$@" "$master" $tail_off $tail_blocks; }
if [ -n "${BENCH_MIGRATE_BLOCKSIZE_ONLY:-}" ]; then   # diagnostics: one block-size run, logs in build/bench-migrate/logs
  run blocksize "20 Mbit/s + 50 ms" 20M 50 "$BENCH_MIGRATE_BLOCKSIZE_ONLY" "$bsimg" 0 16384
  cat "$results"
  exit 0
fi
if [ -n "${BENCH_MIGRATE_QUICK:-}" ]; then
  main "(a) loopback" 0 0 64K
  main "(b) 100 Mbit/s + 20 ms" 100M 20 64K
  main "(c) 20 Mbit/s + 50 ms" 20M 50 64K
else
  main "(a) loopback" 0 0 64K
  main "(b) 100 Mbit/s + 20 ms" 100M 20 64K
  for bs in 64K 16K 4K; do main "(c) 20 Mbit/s + 50 ms" 20M 50 $bs; done
  for bs in 64K 16K 4K; do run blocksize "20 Mbit/s + 50 ms" 20M 50 $bs "$bsimg" 0 16384; done
fi

when=$(date -u '+%Y-%m-%d %H:%M UTC')
section=$(python3 - "$results" "$when" "$(nproc)" "$(uname -r)" "${BENCH_MIGRATE_QUICK:+BENCH_MIGRATE_QUICK=1 }" <<'PY'
import sys
path, when, cpus, kernel, quick = sys.argv[1:6]
rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
mib = lambda b: f"{int(b) / 2**20:.1f}"
head = ("| link | block | total s | downtime ms | on wire MiB | after bulk MiB | data MiB | rounds | throttled s | limit s | total/limit | verified |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|")
def table(kind):
    out = [head]
    for r in rows:
        if r[0] != kind:
            continue
        name, rate, delay, bs, alloc = r[1:6]
        if r[6] == "FAILED":
            out.append(f"| {name} | {bs} | failed | | | | | | | | | |")
            continue
        total, down, wire, after, data, rounds, thr, ver = r[6:14]
        if rate == "0":
            limit, ratio = "-", "-"
        else:
            bps = float(rate.rstrip("M")) * 1e6 / 8
            limit_s = int(alloc) / bps
            limit, ratio = f"{limit_s:.1f}", f"{float(total) / limit_s:.2f}"
        out.append(f"| {name} | {bs} | {float(total):.1f} | {float(down):.0f} | {mib(wire)} | {mib(after)} | {mib(data)} | {rounds} | {float(thr):.1f} | {limit} | {ratio} | {ver} |")
    return out
alloc_main = next((mib(r[5]) for r in rows if r[0] == "main"), "?")
alloc_bs = next((mib(r[5]) for r in rows if r[0] == "blocksize"), "?")
out = ["## Migration", "",
       f"Measured {when} on {cpus} CPUs (shared with other work), kernel {kernel}.",
       f"Command: `{quick}tools/bench-migrate.sh` (also part of `./build.sh bench`).", "",
       "1 GiB raw disk: ext4 (896 MiB) holding a debootstrap'd Debian bookworm minbase, free space as holes, plus a 128 MiB",
       f"tail ({alloc_main} MiB allocated); a light writer makes 120 random 4 KiB writes/s (3.9 Mbit/s) into the tail through NBD",
       "during the whole run. `blockmigrate migrate --hypervisor none --verify --json`, TLS 1.3, `--codec auto`, `--max-downtime 300`;",
       "links shaped by `tools/wanem.py` (userspace: rate and one-way delay each way). Limit = allocated bytes / link rate;",
       "total/limit below 1 is compression at work. \"after bulk\" = wire bytes of the dirty rounds and the final set.", ""]
out += table("main")
if any(r[0] == "blocksize" for r in rows):
    out += ["", "### Map block size", "",
            f"256 MiB disk whose first 64 MiB are incompressible data ({alloc_bs} MiB allocated); the same writer (120 random",
            "4 KiB writes/s = 3.9 Mbit/s) rewrites 4 KiB pieces of that data, so a dirty block costs its whole size on the wire",
            "(a tail of fresh zeros, as in the table above, hides the block size: LZ4 squeezes a 64 KiB block holding one 4 KiB write).",
            "Filter `blocksize=` set per run; 20 Mbit/s + 50 ms.", ""]
    out += table("blocksize")
out += ["", """Notes: `total s` runs from connect to the end of the command, so it includes `--verify` (SHA-256 of the
whole image on both sides after the commit: seconds for 1 GiB on a loaded machine). `downtime ms` is freeze to
commit; the engine aims at `--max-downtime 300` from its estimate (dirty bytes / drain rate + a measured round
trip), which leaves out the receiver's fsync and CPU contention, so a run can overshoot by some tens of ms.
This machine has 2 CPUs shared with parallel builds and tests: figures vary run to run by 10-30%."""]
print("\n".join(out))
PY
)
printf '%s\n' "$section"
python3 "$top/tools/bench-section.py" "$doc" "Migration" "$section"
echo "bench-migrate: wrote the \"Migration\" section of docs/BENCHMARKS.md" >&2
if grep -q FAILED "$results"; then echo "bench-migrate: some runs failed (see above)" >&2; exit 1; fi
