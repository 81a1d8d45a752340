#!/usr/bin/env bash
# The README's first command (./build.sh demo): a real migration between two local endpoints.
#
#   tools/demo.sh            (after ./build.sh)
#
#  1. makes a 256 MiB disk: an ext4 file system (224 MiB) holding text (man pages), 40 MiB of random
#     data and 16 MiB of zeros, with free space left as holes, and a 16 MiB tail where the "guest"
#     writes sequence-numbered blocks;
#  2. serves it with nbdkit + the blockmigrate filter (unix socket), makes keys for both ends, starts a
#     receiver (TLS 1.3, pinned keys) on 127.0.0.1;
#  3. starts a writer writing through NBD (2000 writes/s, DEMO_RATE to change) and keeps it writing during the whole migration;
#  4. blockmigrate migrate --hypervisor none --verify --keep-source-frozen: bulk copy, dirty rounds,
#     freeze, final set, commit; the source stays frozen like a stopped VM;
#  5. checks: SHA-256 of both images at the freeze (the migration's own verify), `blockmigrate verify`
#     source vs destination, and the writer's log: no write acknowledged before the freeze is missing;
#  6. starts a shim on the destination image and lets the writer carry on there from where it stopped,
#     then checks the destination's sequence is whole.
# Everything runs under a fresh directory in /tmp, is stopped by PID, and is removed on success.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
bm=$top/build/bin/blockmigrate
filter=$top/build/native/nbdkit-blockmigrate-filter.so
seq="python3 $top/tools/seqwriter.py"
for f in "$bm" "$filter"; do [ -e "$f" ] || { echo "demo: $f missing; run ./build.sh first" >&2; exit 1; }; done

work=$(mktemp -d /tmp/blockmigrate-demo.XXXXXX)
pids=()
ok=0
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ $ok = 1 ]; then rm -rf "$work"; else echo "demo: FAILED; logs kept in $work" >&2; fi
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }
wait_for() { for _ in $(seq 200); do eval "$1" && return 0; sleep 0.05; done; echo "demo: timed out waiting for: $1" >&2; return 1; }

size=$((256 << 20)); fs=$((224 << 20)); tail_off=$((240 << 20)); tail_blocks=4096
img=$work/source.img
say "1. a 256 MiB disk with realistic content"
mkdir -p "$work/content/docs" "$work/dst"
cp -r /usr/share/man/man1 /usr/share/man/man8 "$work/content/docs/" 2>/dev/null || true
head -c $((40 << 20)) /dev/urandom > "$work/content/random.bin"
head -c $((16 << 20)) /dev/zero > "$work/content/zeros.bin"
truncate -s $fs "$img"
mkfs.ext4 -q -F -E root_owner=0:0 -d "$work/content" "$img"
truncate -s $size "$img"
rm -rf "$work/content"
echo "$(du -m --apparent-size "$img" | cut -f1) MiB image, $(du -m "$img" | cut -f1) MiB allocated"

say "2. the shim serving it, keys, a receiver"
nbdkit -f -U "$work/src.sock" --filter="$filter" file file="$img" dirtymap="$work/src.map" 2> "$work/nbdkit-src.log" &
pids+=($!)
wait_for "[ -S $work/src.sock ]"
src_uri="nbd+unix:///?socket=$work/src.sock"
nbdinfo --size "$src_uri" >/dev/null   # first connection: the filter creates the map
"$bm" keygen --out "$work/source.key" > "$work/source.fp" 2>/dev/null
"$bm" keygen --out "$work/receiver.key" > "$work/receiver.fp" 2>/dev/null
cp "$work/source.fp" "$work/trusted"
echo "source key $(cat "$work/source.fp"), receiver key $(cat "$work/receiver.fp")"
"$bm" receive --listen 127.0.0.1:0 --image-dir "$work/dst" --key "$work/receiver.key" --trusted "$work/trusted" --once \
  > "$work/receiver.out" 2> "$work/receiver.log" &
pids+=($!)
wait_for "grep -q '^listening on' $work/receiver.out"
port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$work/receiver.out")
echo "receiver listening on 127.0.0.1:$port"

say "3. a writer writing through NBD, during the whole migration"
$seq write "$src_uri" --blocks $tail_blocks --offset $tail_off --rate "${DEMO_RATE:-2000}" --log "$work/writer.log" > "$work/writer.out" 2>&1 &
writer=$!
pids+=($writer)
sleep 2
echo "writer: $(wc -l < "$work/writer.log") writes so far"

say "4. blockmigrate migrate --hypervisor none"
"$bm" migrate --disk vda="$img:$work/src.map" --to 127.0.0.1:$port --key "$work/source.key" \
  --peer-fingerprint "$(cat "$work/receiver.fp")" --hypervisor none --verify --keep-source-frozen --json --timeline "${DEMO_TIMELINE:-$work/timeline.svg}" \
  > "$work/report.json" 2> >(tee "$work/migrate.log" >&2)
python3 - "$work/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
mib = lambda b: f"{b / 2**20:.1f} MiB"
est = f", estimated {r['downtime_estimate_ms']:.0f} ms" if r.get('downtime_estimate_ms') is not None else ""
print(f"migrated in {r['total_seconds']:.2f} s, downtime {r['downtime_ms']:.0f} ms (freeze to commit, {r['final_blocks']} final blocks{est})")
print(f"on the wire {mib(r['bytes_on_wire'])} for {mib(r['bytes_of_data'])} of data + {mib(r['bytes_zero'])} of zeros/holes; "
      f"{r['rounds']} dirty rounds, throttled {r['throttled_seconds']:.1f} s; verified: {r['verified']}")
PY

say "5. checks at the freeze"
frozen_at=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['frozen_at_unix_ms'])" "$work/report.json")
acked=$(awk -v t="$frozen_at" '$2 < t { s = $1 } END { print s + 0 }' "$work/writer.log")
echo "last write acknowledged before the freeze: $acked"
python3 -c "import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))['verified'] else 1)" "$work/report.json"
"$bm" verify "$img" "$work/dst/vda.img"
$seq check "$work/dst/vda.img" --blocks $tail_blocks --offset $tail_off --at-least "$acked"
kill -KILL $writer; wait $writer 2>/dev/null || true   # blocked in a frozen write, like a stopped VM

say "6. the writer carries on against a shim on the destination"
nbdkit -f -U "$work/dst.sock" --filter="$filter" file file="$work/dst/vda.img" dirtymap="$work/dst.map" 2> "$work/nbdkit-dst.log" &
pids+=($!)
wait_for "[ -S $work/dst.sock ]"
dst_uri="nbd+unix:///?socket=$work/dst.sock"
$seq write "$dst_uri" --blocks $tail_blocks --offset $tail_off --continue-from "$work/dst/vda.img" --rate 2000 --duration 3
$seq check "$work/dst/vda.img" --blocks $tail_blocks --offset $tail_off --at-least "$acked"
e2fsck -fn "$work/dst/vda.img" > /dev/null 2>&1 && echo "ext4 on the destination: clean (e2fsck -fn)"
ok=1
say "demo: OK"
