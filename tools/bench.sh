#!/usr/bin/env bash
# ./build.sh bench: every benchmark, in order; each part replaces its own section of docs/BENCHMARKS.md.
#   part 1  tools/bench-shim.sh      shim write throughput vs nbdkit file and qemu-nbd
#   part 2  tools/bench-migrate.sh   disk migration over loopback and emulated WAN links
#   part 3  tools/bench-vm.sh        whole-VM migration vs QEMU's own storage migration
#   part 4  tools/bench-web.sh       a web server guest moved with its clients (prints; docs by hand)
#   part 5  tools/bench-return.sh    the return trip (A -> B, N minutes of a writer at B, B -> A); long:
#                                    3 x (2 trips + BENCH_RETURN_MINUTES, default 10); BENCH_SKIP_RETURN=1 skips it
# Benchmarks are never timed tests: ratios are measured side by side in one run.
set -euo pipefail
cd "$(dirname "$0")"
for part in bench-shim.sh bench-migrate.sh bench-vm.sh bench-web.sh bench-return.sh; do
  if [ "$part" = bench-return.sh ] && [ -n "${BENCH_SKIP_RETURN:-}" ]; then
    echo "== $part: skipped (BENCH_SKIP_RETURN)" >&2
  elif [ -x "$part" ]; then
    echo "== $part" >&2
    "./$part"
  else
    echo "== $part: not present in this tree, skipped" >&2
  fi
done
