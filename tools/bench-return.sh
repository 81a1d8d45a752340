#!/usr/bin/env bash
# The return trip (issue 14 part 1): a disk moved A -> B under a light writer, the writer going on at B
# for N minutes, then moved back B -> A under the same writer. A's image is the return base: only what
# B wrote since the hand-over should travel. Both trips over the same emulated link.
#
#   tools/bench-return.sh [RUNS]          RUNS: runs (default 3; medians); also part of ./build.sh bench
#   BENCH_RETURN_MINUTES=N                minutes of the writer at B before the return (default 10)
#   BENCH_RETURN_RATE=20M                 link rate (tools/wanem.py), default 20M (bits/s)
#   BENCH_RETURN_DELAY=25                 one-way delay in ms, default 25 (a 50 ms round trip)
#   BENCH_RETURN_NODOC=1                  print the section, do not write docs/BENCHMARKS.md
#
# Disk: the 1 GiB image of tools/bench-migrate.sh (ext4 with a debootstrap'd Debian bookworm minbase,
# free space as holes; built here the same way if absent). Writer: tools/seqwriter.py, as the test
# guest's writer: sequence-numbered 4 KiB writes cycling over 4096 blocks (16 MiB) at 120 writes/s,
# placed at 896 MiB, through NBD into the shim on the side that runs the VM. Both trips:
# blockmigrate migrate --hypervisor none --keep-source-frozen --json, TLS 1.3, codec auto; B's shim
# keeps its map in B's receiver's gate-map directory (what makes the return possible). After each
# trip: every write acknowledged before the freeze is on the destination (seqwriter check), and after
# the return A's image equals B's (blockmigrate verify).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
. "$top/tools/bench-cli.sh"; bench_cli "$top"   # sets bm: the NativeAOT blockmigrate (BENCH_CLI=jit: the JIT build)
filter=$top/build/native/nbdkit-blockmigrate-filter.so
doc=$top/docs/BENCHMARKS.md
bench=$top/build/bench-return
rootfs=$top/build/cache/debian-minbase
runs=${1:-3}
minutes=${BENCH_RETURN_MINUTES:-10}
rate=${BENCH_RETURN_RATE:-20M}
delay=${BENCH_RETURN_DELAY:-25}
for f in "$bm" "$filter"; do [ -e "$f" ] || { echo "bench-return: $f missing; run ./build.sh first" >&2; exit 1; }; done

size=$((1024 << 20)); fs=$((896 << 20)); woff=$((896 << 20)); wblocks=4096; wrate=120
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=(); }
trap cleanup EXIT
wait_for() { for _ in $(seq 400); do eval "$1" && return 0; sleep 0.05; done; echo "bench-return: timed out: $1" >&2; return 1; }
port_of() { sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$1"; }

if [ ! -d "$rootfs" ]; then
  echo "bench-return: debootstrap --variant=minbase bookworm into $rootfs (once)" >&2
  rm -rf "$rootfs.tmp"; mkdir -p "$top/build/cache"
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

# receiver IMAGE_DIR GATE_DIR NAME: a --once receiver behind tools/wanem.py; sets $to, the address to migrate to
receiver() {
  local images=$1 gates=$2 name=$3
  "$bm" receive --listen 127.0.0.1:0 --image-dir "$images" --gate-map-dir "$gates" --key "$bench/receiver.key" \
    --trusted "$bench/trusted" --once > "$dir/$name.out" 2> "$dir/$name.log" &
  pids+=($!)
  wait_for "grep -qs '^listening on' $dir/$name.out"
  python3 tools/wanem.py --listen 127.0.0.1:0 --to "127.0.0.1:$(port_of "$dir/$name.out")" --rate "$rate" --delay "$delay" > "$dir/$name-wan.out" 2>&1 &
  pids+=($!)
  wait_for "grep -qs '^listening on' $dir/$name-wan.out"
  to=127.0.0.1:$(port_of "$dir/$name-wan.out")
}

migrate() { # DISK TO REPORT LOG
  "$bm" migrate --disk "$1" --to "$2" --key "$bench/source.key" --peer-fingerprint "$(cat "$bench/receiver.fp")" \
    --hypervisor none --keep-source-frozen --json --timeout 3600 > "$3" 2> "$4"
}

# the highest sequence number the writer saw acknowledged before the freeze of REPORT
acked_before() { python3 -c 'import json,sys; f=json.load(open(sys.argv[1]))["frozen_at_unix_ms"]; print(max([int(a) for a,t in (l.split() for l in open(sys.argv[2]) if len(l.split())==2) if int(t)<f] or [-1]))' "$1" "$2"; }

results=$bench/results.tsv
: > "$results"
for i in $(seq "$runs"); do
  dir=$bench/run
  cleanup
  rm -rf "$dir"; mkdir -p "$dir/a" "$dir/b" "$dir/bgates" "$dir/agates"
  cp --sparse=always "$master" "$dir/a/vda.img"
  truncate -s $size "$dir/b/vda.img"
  sync
  alloc=$(( $(stat -c %b "$dir/a/vda.img") * $(stat -c %B "$dir/a/vda.img") ))
  nbdkit -f -U "$dir/a.sock" --filter="$filter" file file="$dir/a/vda.img" dirtymap="$dir/a/vda.map" 2> "$dir/nbdkit-a.log" &
  pids+=($!)
  nbdkit -f -U "$dir/b.sock" --filter="$filter" file file="$dir/b/vda.img" dirtymap="$dir/bgates/vda.map" 2> "$dir/nbdkit-b.log" &
  pids+=($!)
  wait_for "[ -S $dir/a.sock ] && [ -S $dir/b.sock ]"
  nbdinfo --size "nbd+unix:///?socket=$dir/a.sock" > /dev/null
  nbdinfo --size "nbd+unix:///?socket=$dir/b.sock" > /dev/null

  # A -> B under the writer at A
  receiver "$dir/b" "$dir/bgates" recv-b
  python3 tools/seqwriter.py write "nbd+unix:///?socket=$dir/a.sock" --blocks $wblocks --offset $woff --rate $wrate --log "$dir/wa.log" > "$dir/wa.out" 2>&1 &
  wa=$!; pids+=($wa)
  sleep 1
  echo "bench-return: run $i: A -> B ($rate, $delay ms) ..." >&2
  if ! migrate "vda=$dir/a/vda.img:$dir/a/vda.map" "$to" "$dir/first.json" "$dir/first.log"; then
    echo "bench-return: run $i: first trip FAILED: $(tail -1 "$dir/first.log")" >&2; printf '%s\tFAILED\n' "$i" >> "$results"; continue
  fi
  { kill -9 $wa && wait $wa; } 2>/dev/null || true
  python3 tools/seqwriter.py check "$dir/b/vda.img" --blocks $wblocks --offset $woff --at-least "$(acked_before "$dir/first.json" "$dir/wa.log")" > "$dir/check-b.out" 2>&1 \
    && lost_ab=0 || lost_ab=1

  # the VM runs at B: the writer goes on there for N minutes, then B -> A under it
  python3 tools/seqwriter.py write "nbd+unix:///?socket=$dir/b.sock" --blocks $wblocks --offset $woff --rate $wrate \
    --continue-from "$dir/b/vda.img" --log "$dir/wb.log" > "$dir/wb.out" 2>&1 &
  wb=$!; pids+=($wb)
  echo "bench-return: run $i: the writer at B for $minutes min ..." >&2
  sleep "$(python3 -c "print(float('$minutes') * 60)")"
  receiver "$dir/a" "$dir/agates" recv-a
  echo "bench-return: run $i: B -> A ..." >&2
  if ! migrate "vda=$dir/b/vda.img:$dir/bgates/vda.map" "$to" "$dir/back.json" "$dir/back.log"; then
    echo "bench-return: run $i: return FAILED: $(tail -1 "$dir/back.log")" >&2; printf '%s\tFAILED\n' "$i" >> "$results"; continue
  fi
  { kill -9 $wb && wait $wb; } 2>/dev/null || true
  python3 tools/seqwriter.py check "$dir/a/vda.img" --blocks $wblocks --offset $woff --at-least "$(acked_before "$dir/back.json" "$dir/wb.log")" > "$dir/check-a.out" 2>&1 \
    && lost_ba=0 || lost_ba=1
  "$bm" verify "$dir/a/vda.img" "$dir/b/vda.img" > "$dir/verify.out" 2>&1 && same=yes || same=NO
  accepted=$(grep -c 'return base accepted' "$dir/recv-a.log" || true)
  python3 - "$dir/first.json" "$dir/back.json" "$i" "$alloc" "$lost_ab" "$lost_ba" "$same" "$accepted" >> "$results" <<'PY'
import json, sys
f, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
i, alloc, lost_ab, lost_ba, same, accepted = sys.argv[3:9]
print("\t".join(str(x) for x in (i, alloc, f["bytes_on_wire"], f["total_seconds"], b["bytes_on_wire"], b["bytes_of_data"],
      b["blocks_sent"], b["return_base_blocks"], b["total_seconds"], b["downtime_ms"], lost_ab, lost_ba, same, accepted)))
PY
  mkdir -p "$bench/logs"
  for f in first.json first.log back.json back.log recv-a.log recv-b.log; do cp "$dir/$f" "$bench/logs/run$i.$f"; done
  cleanup
done

when=$(date -u '+%Y-%m-%d %H:%M UTC')
section=$(python3 - "$results" "$when" "$(nproc)" "$(uname -r)" "$runs" "$minutes" "$rate" "$delay" <<'PY'
import statistics, sys
path, when, cpus, kernel, runs, minutes, rate, delay = sys.argv[1:9]
rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
ok = [r for r in rows if len(r) > 2]
mib = lambda b: f"{b / 2**20:.2f}"
out = ["## The return trip", "",
       f"Measured {when} on {cpus} CPUs (shared with other work), kernel {kernel}.",
       f"Command: `BENCH_RETURN_MINUTES={minutes} tools/bench-return.sh {runs}` (also part of `./build.sh bench`).", "",
       "The 1 GiB disk of the Migration section (ext4 with Debian bookworm minbase, holes elsewhere). A light writer",
       "(tools/seqwriter.py: sequence-numbered 4 KiB writes cycling over 16 MiB at 120 writes/s, as the test guest's writer)",
       f"runs at A during A -> B, goes on at B for {minutes} min, and runs during B -> A. Link: {rate}bit/s + {delay} ms one-way",
       "(tools/wanem.py), both trips. `migrate --hypervisor none --keep-source-frozen --json`, TLS 1.3, codec auto.",
       "B's shim keeps its map in B's receiver's gate-map directory; A's image is where A's receiver looks for it.", "",
       "| run | allocated MiB | first trip: wire MiB | s | return: wire MiB | data MiB | blocks sent | blocks from base | s | downtime ms | return data / allocated | return wire / allocated | return / first | lost writes A->B, B->A | images equal | base accepted |",
       "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    if len(r) <= 2:
        out.append(f"| {r[0]} | failed | | | | | | | | | | | | | | |")
        continue
    i, alloc, fw, fs, bw, bd, sent, base, bs, down, lab, lba, same, acc = r
    alloc, fw, bw, bd = int(alloc), int(fw), int(bw), int(bd)
    out.append(f"| {i} | {mib(alloc)} | {mib(fw)} | {float(fs):.1f} | {mib(bw)} | {mib(bd)} | {sent} | {base} | {float(bs):.1f} | {float(down):.0f} | "
               f"{100 * bd / alloc:.2f} % | {100 * bw / alloc:.3f} % | {bw / fw:.4f} | {lab}, {lba} | {same} | {'yes' if acc != '0' else 'NO'} |")
if ok:
    med = lambda k: statistics.median(float(r[k]) for r in ok)
    out += ["", f"Medians of {len(ok)} run(s): return on the wire {mib(med(4))} MiB = {100 * med(4) / med(1):.3f} % of the {mib(med(1))} MiB allocated "
            f"(target <= 1 %; before compression {100 * med(5) / med(1):.2f} %); return / first trip = {statistics.median(int(r[4]) / int(r[2]) for r in ok):.4f} (target <= 0.15); "
            f"first trip {med(3):.1f} s, return {med(8):.1f} s. Physical limit of the first trip: allocated / link rate = "
            f"{med(1) * 8 / (float(rate.rstrip('M')) * 1e6):.0f} s uncompressed; of the return: the blocks written at B "
            f"(at most 16 MiB = {16 * 2**20 * 8 / (float(rate.rstrip('M')) * 1e6):.1f} s uncompressed)."]
out += ["", """Notes: "wire" counts every byte the source wrote to the socket (TLS records, frames, the hand-shake and the
round-trip probes). The writer's blocks are text ("SEQ n BLK b" then the number repeated), so LZ4/zstd shrink them
a lot: the data column is before compression. A real guest's writes compress less; the uncompressed bound is the
16 MiB the writer cycles over (1.6 % of the disk; 7.8 % of what this image allocates, which is above the 1 % target:
the target is met on the wire only thanks to compression of this text-like data)."""]
print("\n".join(out))
PY
)
printf '%s\n' "$section"
if [ -z "${BENCH_RETURN_NODOC:-}" ]; then
  python3 "$top/tools/bench-section.py" "$doc" "The return trip" "$section"
  echo "bench-return: wrote the \"The return trip\" section of docs/BENCHMARKS.md" >&2
fi
if grep -q FAILED "$results"; then echo "bench-return: some runs failed (see above)" >&2; exit 1; fi
