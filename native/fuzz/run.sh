#!/usr/bin/env bash
# Runs the libFuzzer harness of the dirty map's open path (fuzz_map.c).
#
#   native/fuzz/run.sh FUZZER SECONDS
#
# Starts from the seed corpus in the repository (native/fuzz/corpus/map, read
# only) plus a working corpus in build/ (FUZZER's directory, fuzz-corpus/map,
# kept between runs so long runs build on each other); new crashes land in
# FUZZER's directory as crash-*/leak-*/timeout-* and fail the run.  Prints
# libFuzzer's final statistics (execs, execs/s, corpus) on the last lines.
set -euo pipefail
fuzzer=$1 seconds=${2:-30}
here=$(cd "$(dirname "$0")" && pwd)
out=$(cd "$(dirname "$fuzzer")" && pwd)
work=$out/fuzz-corpus/map
mkdir -p "$work"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# -max_len: the seeds' largest map is 12 KiB; room to grow a little past it.
# -rss_limit_mb: the default 2 GiB is not ours to take on a shared machine.
set +e
"$fuzzer" -max_total_time="$seconds" -max_len=16384 -rss_limit_mb=512 -timeout=10 \
  -print_final_stats=1 -artifact_prefix="$out/" "$work" "$here/corpus/map" 2>&1 | tail -n 40
rc=${PIPESTATUS[0]}
set -e
echo "fuzz-map: corpus $(ls "$work" | wc -l) files in $work (seeds: $(ls "$here/corpus/map" | wc -l))"
exit "$rc"
