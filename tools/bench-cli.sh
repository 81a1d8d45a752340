# Sourced by the benchmarks (bench-vm.sh, bench-web.sh, ...): the blockmigrate they run is the one the package
# ships, NativeAOT (packaging/publish-aot.sh), as an admin runs it — not the JIT build the tests use, which
# spends ~0.6 s more on each start (measured: a 16 MiB loopback migration, 0.19-0.26 s AOT against
# 0.51-0.60 s JIT). Exports BLOCKMIGRATE_CLI (tests/BlockMigrate.TestSupport/Repo.cs: Repo.CliCommand) and
# bm, the path to run. Publishes again when a managed source is newer than the executable.
#   BENCH_CLI=jit   the JIT build (build/bin/blockmigrate) instead
bench_cli() {
  local top=$1 exe=$1/build/package/publish/blockmigrate
  if [ "${BENCH_CLI:-aot}" = jit ]; then
    unset BLOCKMIGRATE_CLI
    bm=$top/build/bin/blockmigrate
    echo "bench: blockmigrate is the JIT build (BENCH_CLI=jit)" >&2
    return
  fi
  if [ ! -x "$exe" ] || [ -n "$(find "$top/managed" "$top/Directory.Build.props" "$top/Directory.Packages.props" \
        \( -name '*.cs' -o -name '*.csproj' -o -name '*.props' \) -newer "$exe" -print -quit)" ]; then
    echo "bench: publishing the NativeAOT blockmigrate (packaging/publish-aot.sh)" >&2
    "$top/packaging/publish-aot.sh"
  fi
  mkdir -p "$top/build/bin"
  cat > "$top/build/bin/blockmigrate-aot" <<WRAP
#!/bin/sh
# the NativeAOT blockmigrate against the tree's libblockmigrate.so.N and filter (tools/bench-cli.sh)
export BLOCKMIGRATE_FILTER="\${BLOCKMIGRATE_FILTER:-$top/build/native/nbdkit-blockmigrate-filter.so}"
LD_LIBRARY_PATH="$top/build/native\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$exe" "\$@"
WRAP
  chmod +x "$top/build/bin/blockmigrate-aot"
  export BLOCKMIGRATE_CLI=$top/build/bin/blockmigrate-aot
  bm=$BLOCKMIGRATE_CLI
  echo "bench: blockmigrate is the NativeAOT build the package ships ($exe; BENCH_CLI=jit for the JIT one)" >&2
}
