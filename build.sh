#!/usr/bin/env bash
# BlockMigrate's one entry point: what CI runs is what you run.
#
#   ./build.sh            install missing system packages, build native + managed
#   ./build.sh test       build, then run every test; last line "N passed, N failed"
#   ./build.sh demo       build, then migrate a disk under a live writer between two local endpoints
#   ./build.sh bench      build, then run the benchmarks (writes docs/BENCHMARKS.md)
#   ./build.sh fuzz       build, then fuzz long: the map header (libFuzzer, FUZZ_SECONDS, default 600)
#                         and the C# parsers (CsCheck, BM_FUZZ_SECONDS per property, default 20);
#                         FUZZ_MERGE=1 merges new map inputs into native/fuzz/corpus/map
#   ./build.sh package    build the .deb into build/package/
#   ./build.sh clean      remove build/
#
# In-tree use without installing: build/bin/blockmigrate, and the filter at
# build/native/nbdkit-blockmigrate-filter.so (both printed at the end of a build).
set -euo pipefail
cd "$(dirname "$0")"
top=$PWD
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH   # Debian's python3 (for nbdsh) before any pyenv
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
config=${CONFIG:-Release}

deps() { "$top/tools/install-deps.sh"; }

build_native() {
  cmake -S native -B build/native -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build/native -j"$(nproc)" >/dev/null
}

build_managed() {
  dotnet build BlockMigrate.sln -c "$config" -nologo -v quiet -clp:ErrorsOnly
  mkdir -p build/bin
  cat > build/bin/blockmigrate <<WRAP
#!/bin/sh
# in-tree launcher made by build.sh; the package ships a native executable instead
export BLOCKMIGRATE_FILTER="\${BLOCKMIGRATE_FILTER:-$top/build/native/nbdkit-blockmigrate-filter.so}"
exec dotnet "$top/build/managed/bin/BlockMigrate.Cli/$config/net10.0/blockmigrate.dll" "\$@"
WRAP
  chmod +x build/bin/blockmigrate
}

build_all() {
  deps
  build_native
  build_managed
  echo "built: build/bin/blockmigrate; filter: build/native/nbdkit-blockmigrate-filter.so" >&2
}

run_tests() {
  build_all
  results=build/test-results
  rm -rf "$results"; mkdir -p "$results"
  local rc=0 proj name
  for proj in tests/*/*.Tests.csproj; do
    name=$(basename "$proj" .csproj)
    echo "== $name" >&2
    dotnet test "$proj" -c "$config" --no-build -nologo \
      --logger "trx;LogFileName=$name.trx" --results-directory "$results" \
      -- NUnit.DefaultTimeout=600000 || rc=1
  done
  # the native self-tests (C selftest, the filter against qemu-io/nbdsh/nbdinfo) as JUnit for the summary
  echo "== native (ctest)" >&2
  (cd build/native && ctest --output-on-failure --output-junit "$top/$results/native.junit.xml") || rc=1
  python3 tools/trx-summary.py "$results" tests/*/*.Tests.csproj
}

# The long fuzzing run (./build.sh test runs the same fuzzers bounded: ctest fuzz-map for 15 s,
# BlockMigrate.Fuzz.Tests at 1 s per property).  docs/engine.md, "Fuzzing".
run_fuzz() {
  build_all
  local rc=0
  echo "== fuzz-map (libFuzzer, ${FUZZ_SECONDS:-600} s)" >&2
  native/fuzz/run.sh build/native/fuzz/fuzz-map "${FUZZ_SECONDS:-600}" || rc=1
  if [ "${FUZZ_MERGE:-0}" = 1 ]; then
    build/native/fuzz/fuzz-map -merge=1 -max_len=16384 native/fuzz/corpus/map build/native/fuzz/fuzz-corpus/map 2>&1 | tail -n 2
  fi
  echo "== BlockMigrate.Fuzz.Tests (CsCheck, ${BM_FUZZ_SECONDS:-20} s per property)" >&2
  set +e
  BM_FUZZ_SECONDS=${BM_FUZZ_SECONDS:-20} BM_FUZZ_THREADS=${BM_FUZZ_THREADS:-$(nproc)} \
    dotnet test tests/BlockMigrate.Fuzz.Tests -c "$config" --no-build -nologo \
      --logger "console;verbosity=normal" -- NUnit.DefaultTimeout=0 | grep -E '^fuzz |Passed!|Failed!|^ +Failed|Error Message|Set seed|---->'
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
  set -e
  return $rc
}

case "${1:-build}" in
  build) build_all ;;
  test) run_tests ;;
  demo) build_all; exec tools/demo.sh ;;
  bench) build_all; exec tools/bench.sh ;;
  fuzz) run_fuzz ;;
  package) build_all; exec packaging/build-deb.sh ;;
  clean) rm -rf build ;;
  *) echo "usage: ./build.sh [build|test|demo|bench|fuzz|package|clean]" >&2; exit 2 ;;
esac
