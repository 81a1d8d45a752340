#!/usr/bin/env bash
# ./build.sh bench: every benchmark, each writing its own section of docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")"
./bench-shim.sh "$@"
./bench-migrate.sh
