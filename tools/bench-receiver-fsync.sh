#!/usr/bin/env bash
# Loopback throughput of a plain disk migration, to compare receivers (e.g. acks after pwrite vs acks
# after fsync): a 512 MiB image with 256 MiB of random data (incompressible; sent with --no-compress),
# the rest holes; receiver and source on 127.0.0.1 (TLS), images on the file system of $BENCH_DIR.
#
#   tools/bench-receiver-fsync.sh [CLI_DIR ...]    CLI_DIR: a directory holding blockmigrate.dll
#                                                   (default: this tree's build); RUNS=3 by default
# Prints one line per run: the CLI directory, total_seconds, MB/s of data.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
filter=$top/build/native/nbdkit-blockmigrate-filter.so
dirs=("$@"); [ ${#dirs[@]} -gt 0 ] || dirs=("$top/build/managed/bin/BlockMigrate.Cli/Release/net10.0")
runs=${RUNS:-3}
work=${BENCH_DIR:-$top/build/bench-receiver-fsync}
rm -rf "$work"; mkdir -p "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=(); }
trap 'cleanup; rm -rf "$work"' EXIT
wait_for() { for _ in $(seq 600); do eval "$1" && return 0; sleep 0.05; done; echo "timed out: $1" >&2; return 1; }
bm() { dotnet "$1/blockmigrate.dll" "${@:2}"; }
d0=${dirs[0]}
bm "$d0" keygen --out "$work/source.key" > /dev/null 2>&1
bm "$d0" keygen --out "$work/receiver.key" > /dev/null 2>&1
bm "$d0" fingerprint "$work/source.key" > "$work/trusted"
rfp=$(bm "$d0" fingerprint "$work/receiver.key" | cut -d' ' -f1)
truncate -s 512M "$work/master.img"
head -c 256M /dev/urandom | dd of="$work/master.img" bs=1M seek=128 conv=notrunc status=none
for i in $(seq "$runs"); do
  for d in "${dirs[@]}"; do
    cleanup
    rm -rf "$work/run"; mkdir -p "$work/run/dst"
    cp --sparse=always "$work/master.img" "$work/run/src.img"; sync
    nbdkit -f -U "$work/run/src.sock" --filter="$filter" file file="$work/run/src.img" dirtymap="$work/run/src.map" 2> "$work/run/nbdkit.log" &
    pids+=($!)
    wait_for "[ -S $work/run/src.sock ]"
    nbdinfo --size "nbd+unix:///?socket=$work/run/src.sock" > /dev/null
    bm "$d" receive --listen 127.0.0.1:0 --image-dir "$work/run/dst" --key "$work/receiver.key" --trusted "$work/trusted" --once \
      --gate-map-dir "$work/run/nogates" > "$work/run/receiver.out" 2> "$work/run/receiver.log" &
    pids+=($!)
    wait_for "grep -q '^listening on' $work/run/receiver.out"
    port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$work/run/receiver.out")
    out=$(bm "$d" migrate --disk "vda=$work/run/src.img:$work/run/src.map" --to "127.0.0.1:$port" --key "$work/source.key" \
      --peer-fingerprint "$rfp" --no-compress --json 2> "$work/run/migrate.log")
    secs=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["total_seconds"])' "$out")
    python3 -c 'import sys; print(f"{sys.argv[1]}\t{float(sys.argv[2]):.2f} s\t{256/float(sys.argv[2]):.0f} MiB/s of data")' "$d" "$secs"
  done
done
