#!/usr/bin/env bash
# ./build.sh bench: every benchmark, in order; each part replaces its own section of docs/BENCHMARKS.md.
#   part 1  tools/bench-shim.sh      shim write throughput vs nbdkit file and qemu-nbd
#   part 2  tools/bench-migrate.sh   disk migration over loopback and emulated WAN links
#   part 3  tools/bench-vm.sh        whole-VM migration vs QEMU's own storage migration
#   part 4  tools/bench-web.sh       a web server guest moved with its clients (prints; docs by hand)
#   part 5  tools/bench-many.sh      four migrations at once: loopback aggregate, shared 100 Mbit fairness, --bandwidth caps
#   part 6  tools/bench-libvirt.sh   --hypervisor libvirt next to --hypervisor qemu (skipped without libvirtd)
#   part 7  tools/bench-seed.sh      a disk cloned from a template the destination holds as a seed
#   part 8  tools/bench-return.sh    the return trip (A -> B, N minutes of a writer at B, B -> A); long:
#                                    3 x (2 trips + BENCH_RETURN_MINUTES, default 10); BENCH_SKIP_RETURN=1 skips it
#   part 9  tools/bench-scale.sh     1 GiB vs 1 TiB sparse disk: wire, freeze to commit, RSS, verify
#                                    (optional: BENCH_SCALE=1 ./build.sh bench)
# Benchmarks are never timed tests: ratios are measured side by side in one run.
set -euo pipefail
cd "$(dirname "$0")"
parts="bench-shim.sh bench-migrate.sh bench-vm.sh bench-web.sh bench-many.sh bench-libvirt.sh bench-seed.sh"
[ -z "${BENCH_SKIP_RETURN:-}" ] && parts="$parts bench-return.sh" || echo "== bench-return.sh: skipped (BENCH_SKIP_RETURN)" >&2
[ -n "${BENCH_SCALE:-}" ] && parts="$parts bench-scale.sh"
for part in $parts; do
  if [ -x "$part" ]; then
    echo "== $part" >&2
    "./$part"
  else
    echo "== $part: not present in this tree, skipped" >&2
  fi
done
