#!/usr/bin/env bash
# The CLI as the package ships it: NativeAOT, into build/package/publish/blockmigrate.
#
#   packaging/publish-aot.sh        (packaging/build-deb.sh runs it; so do the benchmarks, tools/bench-cli.sh)
#
# Fails on any trim/AOT analysis warning (IL2xxx, IL3xxx) and checks that the executable runs against the
# libblockmigrate.so.N built in build/native (it links it: DirectPInvoke) and gives the changelog's version.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

die() { echo "publish-aot: $*" >&2; exit 1; }

version=$(dpkg-parsechangelog -l packaging/debian/changelog -SVersion)
upstream=${version#*:}; upstream=${upstream%-*}
native=build/native
publish=build/package/publish
log=build/package/publish.log
rm -rf "$publish"
mkdir -p build/package
if ! dotnet publish managed/BlockMigrate.Cli -r linux-x64 -c Release -p:PublishAot=true \
      -o "$publish" -nologo >"$log" 2>&1; then
  cat "$log" >&2; die "dotnet publish failed"
fi
# AOT-clean: trim and AOT analysis warnings (IL2xxx, IL3xxx) are not acceptable
if grep -E 'warning (IL[23][0-9]{3}|NETSDK)' "$log" >&2; then
  die "the NativeAOT publish has warnings (above; full log $log)"
fi
[ -x "$publish/blockmigrate" ] || die "publish made no $publish/blockmigrate"
# the executable links libblockmigrate.so.1 (DirectPInvoke): run it against the built one
got=$(LD_LIBRARY_PATH=$native "$publish/blockmigrate" --version)
[ "$got" = "$upstream" ] || die "blockmigrate --version says '$got', the changelog '$upstream'"
