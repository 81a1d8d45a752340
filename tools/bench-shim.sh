#!/usr/bin/env bash
# Shim write throughput: what does the blockmigrate filter cost a writer?
#
#   tools/bench-shim.sh [RUNS]        (after ./build.sh; also run by ./build.sh bench)
#
# Writes 1 GiB of random data with nbdcopy, over a unix socket, into
#   (a) nbdkit file                       the server without the shim
#   (b) nbdkit file + blockmigrate filter the shim, tracking into a fresh map
#   (c) qemu-nbd                          the usual alternative
# Runs are interleaved a,b,c,a,b,c,... (RUNS rounds, default 5) so that drift
# in the machine hits all three alike; medians are reported, with b/a and b/c.
# All three overwrite the same preallocated image on the same file system
# (build/bench), page cache in use, synced before each run, no flush at the
# end: this measures the server path, which is where the filter's cost would
# show, not the disk.  The results replace
# the "## Shim write throughput" section of docs/BENCHMARKS.md.
#
# Settings, kept comparable:
#   nbdcopy  --connections=4 --requests=64 --request-size=262144 (its defaults,
#            stated), source a 1 GiB random file on the same file system
#   nbdkit   -f -U SOCK [--filter=blockmigrate] file file=IMG  (16 threads,
#            parallel, page cache; multi-conn advertised)
#   qemu-nbd -f raw -t --cache=writeback --aio=threads --shared=8 -k SOCK IMG
#            (page cache like nbdkit's file plugin; --shared>1 makes qemu-nbd
#            advertise multi-conn so nbdcopy uses 4 connections for all three)
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
runs=${1:-5}
# Servers and client run at raised priority when we may (root), all three
# alike, so that background jobs on the machine disturb the figures less.
nice=()
[ "$(id -u)" = 0 ] && nice=(nice -n "${BENCH_SHIM_NICE:--10}")
size=$((1024 * 1024 * 1024))
filter=$top/build/native/nbdkit-blockmigrate-filter.so
doc=$top/docs/BENCHMARKS.md

for tool in nbdkit qemu-nbd nbdcopy python3; do
  command -v $tool >/dev/null || { echo "bench-shim: $tool not found" >&2; exit 1; }
done
[ -f "$filter" ] || { echo "bench-shim: $filter missing; run ./build.sh first" >&2; exit 1; }

bench=$top/build/bench
mkdir -p "$bench"
work=$(mktemp -d "$bench/shim.XXXXXX")
map=/dev/shm/blockmigrate/bench-shim-$$.map
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
  rm -f "$map"
}
trap cleanup EXIT

# The source is made once and kept: 1 GiB of /dev/urandom takes a while.
src=$bench/random-1g.src
if [ "$(stat -c %s "$src" 2>/dev/null || echo 0)" != "$size" ]; then
  echo "bench-shim: making $src" >&2
  head -c "$size" /dev/urandom > "$src.tmp" && mv "$src.tmp" "$src"
fi

img=$work/target.img
sock=$work/sock
pidfile=$work/pid

wait_for_socket() {
  local i
  for i in $(seq 100); do
    [ -S "$sock" ] && [ -s "$pidfile" ] && return 0
    sleep 0.05
  done
  echo "bench-shim: server did not start" >&2
  cat "$work/server.log" >&2
  exit 1
}

start_server() {            # $1 = a | b | c
  local cmd
  rm -f "$sock" "$pidfile" "$map"
  case $1 in
    a) cmd=(nbdkit -f -U "$sock" -P "$pidfile" file file="$img") ;;
    b) cmd=(nbdkit -f -U "$sock" -P "$pidfile" --filter="$filter" file file="$img"
            dirtymap="$map") ;;
    c) cmd=(qemu-nbd -f raw -t --cache=writeback --aio=threads --shared=8
            -k "$sock" --pid-file="$pidfile" "$img") ;;
  esac
  "${nice[@]}" "${cmd[@]}" </dev/null >"$work/server.log" 2>&1 &
  server_pid=$!             # the server itself: both run in the foreground
  wait_for_socket
}

stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

# One timed copy; sets run_s (seconds) and run_cpu (server CPU seconds).
# Runs in the main shell (never in $(...)) so the EXIT trap sees server_pid.
one_run() {               # $1 = a | b | c
  [ -f "$img" ] || fallocate -l "$size" "$img"
  sync; sleep "${BENCH_SHIM_SETTLE:-0}"  # start each run with no dirty pages
  start_server "$1"
  local t0 t1
  t0=$(date +%s%N)
  "${nice[@]}" nbdcopy --connections=4 --requests=64 --request-size=262144 \
    "$src" "nbd+unix:///?socket=$sock"
  t1=$(date +%s%N)
  # the server's CPU time (user + system, all threads), in clock ticks
  local ticks
  ticks=$(awk '{ print $14 + $15 }' "/proc/$server_pid/stat")
  if [ "$1" = b ]; then     # the shim must have seen every block
    python3 - "$top/build/native/libblockmigrate.so" "$map" <<'PY'
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1]); lib.bm_map_open.restype = ctypes.c_void_p
lib.bm_dirty_count.restype = ctypes.c_int64
m = lib.bm_map_open(sys.argv[2].encode())
n = lib.bm_dirty_count(ctypes.c_void_p(m))
if n != 16384: sys.exit("bench-shim: map has %d dirty blocks, expected 16384" % n)
PY
  fi
  stop_server
  run_s=$(echo "scale=3; ($t1 - $t0) / 1000000000" | bc)
  run_cpu=$(echo "scale=2; $ticks / $(getconf CLK_TCK)" | bc)
}

# Diagnostics: BENCH_SHIM_SEQUENCE="a a b b c c" times just those runs and
# writes nothing.
if [ -n "${BENCH_SHIM_SEQUENCE:-}" ]; then
  for x in $BENCH_SHIM_SEQUENCE; do one_run "$x"; echo "$x ${run_s}s server CPU ${run_cpu}s"; done
  exit 0
fi

# One untimed round first: the first copy after making the source pays for
# page-cache and writeback effects the others do not.
one_run a; one_run b; one_run c

declare -a ta tb tc ca cb cc
for r in $(seq "$runs"); do
  one_run a; ta+=("$run_s"); ca+=("$run_cpu")
  one_run b; tb+=("$run_s"); cb+=("$run_cpu")
  one_run c; tc+=("$run_s"); cc+=("$run_cpu")
  echo "bench-shim: round $r/$runs: a ${ta[-1]}s  b ${tb[-1]}s  c ${tc[-1]}s" \
       "(server CPU ${ca[-1]} ${cb[-1]} ${cc[-1]} s)" >&2
done

when=$(date -u +'%Y-%m-%d %H:%M UTC')
host="$(nproc) CPUs, $(uname -r), nbdkit $(nbdkit --version | awk '{print $2}'), $(qemu-nbd --version | head -1), $(nbdcopy --version | head -1)"
section=$(python3 - "$when" "$host" "$runs" "${ta[*]}" "${tb[*]}" "${tc[*]}" \
            "${ca[*]}" "${cb[*]}" "${cc[*]}" <<'PY'
import statistics, sys
when, host, runs = sys.argv[1], sys.argv[2], sys.argv[3]
ta, tb, tc, ca, cb, cc = ([float(x) for x in s.split()] for s in sys.argv[4:10])
mib = 1024
def row(name, ts, cs):
    m = statistics.median(ts)
    return m, "| %s | %.3f | %.0f | %.2f | %s |" % (
        name, m, mib / m, statistics.median(cs), " ".join("%.3f" % t for t in ts))
ma, ra = row("(a) nbdkit file", ta, ca)
mb, rb = row("(b) nbdkit file + blockmigrate filter", tb, cb)
mc, rc = row("(c) qemu-nbd", tc, cc)
# throughput ratios: b/a = time(a)/time(b)
ba, bc = ma / mb, mc / mb
print(f"""## Shim write throughput

Measured {when} on {host}.
Command: `tools/bench-shim.sh {runs}` (also part of `./build.sh bench`).

1 GiB of random data written with `nbdcopy --connections=4 --requests=64 --request-size=262144`
from a file over a unix socket into one preallocated raw image (the same for all three, overwritten
in place, synced before each run) on the same file system, page cache in use, no final flush; one untimed warm-up round, then {runs} rounds interleaved a, b, c; medians.
Servers and nbdcopy at `nice -n -10` when run as root (all alike). Servers: `nbdkit -f -U SOCK [--filter=blockmigrate dirtymap=MAP] file file=IMG` and
`qemu-nbd -f raw -t --cache=writeback --aio=threads --shared=8 -k SOCK IMG`.

| server | median s | MiB/s | server CPU s (median) | runs (s) |
|---|---|---|---|---|
{ra}
{rb}
{rc}

Throughput ratio b/a = **{ba:.3f}** (target >= 0.97), b/c = **{bc:.3f}** (target >= 1.0).
Server CPU is user + system time of the server process over the run, all threads.
""")
PY
)
printf '%s\n' "$section"

# Replace our section of docs/BENCHMARKS.md (up to the next "## "), or append it.
python3 "$top/tools/bench-section.py" "$doc" "Shim write throughput" "$section"
echo "bench-shim: wrote the \"Shim write throughput\" section of docs/BENCHMARKS.md" >&2
