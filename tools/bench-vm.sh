#!/usr/bin/env bash
# Benchmark part 3 (./build.sh bench): whole-VM migration, a fair head-to-head. (a) QEMU's own
# copy-storage migration (nbd-server-start + blockdev-mirror + migrate + block-job-cancel, as libvirt
# --copy-storage-all) against (b) BlockMigrate (`blockmigrate receive` + `blockmigrate migrate
# --hypervisor qemu`), on the same TCG guest, writer and link, with the SAME memory settings on both
# sides: once QEMU's defaults for both, once multifd (one channel) + zstd for both. Between two
# network namespaces over a tbf-shaped veth, every migration connection of both methods through
# tools/wanem.py where the link has a delay. Runs interleaved a@defaults b@defaults a@zstd b@zstd,
# RUNS times; medians. Beside every row its physical limit (tools/bench-qemu/PhysicalLimit.cs):
# (the source disk's data after zstd at the engine's level + the guest's RAM after the same) / link rate.
# Writes the "## Whole-VM migration, fair" section of docs/BENCHMARKS.md.
#
#   tools/bench-vm.sh [RUNS]            RUNS: interleaved runs per scenario (default 3; 1 = a smoke run)
#   BENCH_VM_SCENARIOS=light100,light20,heavy20   which scenarios (the default: all three)
#   BENCH_VM_MEMORY=defaults,zstd       which memory settings (the default: both; also postcopy: both
#                                       methods switch to post-copy after the first pass, docs/BENCHMARKS.md)
#   BENCH_VM_OURS=blockmigrate-memplain BlockMigrate's method (the default; its memory stream in plaintext,
#                                       as the baseline's; `blockmigrate` encrypts it, migrate's default)
#   BENCH_VM_SMALL=1                    small disks and a 32 MiB heavy region (a quick smoke run)
#   BENCH_VM_TIMEOUT=MIN                a run still going after MIN minutes (default 6) is a failed row
#   BENCH_DOC=FILE                      write elsewhere than docs/BENCHMARKS.md
#   BENCH_VM_TIMELINE_DIR=DIR           each BlockMigrate run's picture (migrate --timeline) goes to
#                                       DIR/SCENARIO/METHOD-RUN.svg (default build/bench-vm/timelines)
#   BENCH_VM_JSON_DIR=DIR               keep every run's JSON there (NAME.json per scenario; the report
#                                       can be made again: tools/bench-vm-report.py, see its usage)
# The tool is tools/bench-qemu/ (tools/bench-qemu-baseline runs it directly).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/tools/bench-cli.sh"; bench_cli "$top"   # the NativeAOT blockmigrate, as the package ships it (BENCH_CLI=jit: the JIT build)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
runs=${1:-3}
scenarios=${BENCH_VM_SCENARIOS:-light100,light20,heavy20}
memories=${BENCH_VM_MEMORY:-defaults,zstd}
ours=${BENCH_VM_OURS:-blockmigrate-memplain}
doc=${BENCH_DOC:-$top/docs/BENCHMARKS.md}
timelines=${BENCH_VM_TIMELINE_DIR:-$top/build/bench-vm/timelines}
dll=$top/build/managed/bin/BlockMigrate.Bench.Qemu/${CONFIG:-Release}/net10.0/bench-qemu.dll
[ -f "$dll" ] || { echo "bench-vm: $dll missing: run ./build.sh first" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "bench-vm: needs root (network namespaces)" >&2; exit 1; }

if [ -n "${BENCH_VM_JSON_DIR:-}" ]; then
  work=$BENCH_VM_JSON_DIR; mkdir -p "$work"
else
  work=$(mktemp -d /tmp/bench-vm.XXXXXX)
  trap 'rm -rf "$work"' EXIT
fi
# One scenario a line: name, link, one-way delay in ms (each way: 25 is a 50 ms round trip; 0 = none),
# disk size, data on it besides the guest's 16 MiB (files of the host's /usr, as compressible as an
# installed system), the heavy writer's region in MiB (0 = none), extra options for both methods.
# At 20 Mbit/s the guest dirties memory faster than the link drains it; without QEMU's auto-converge
# the memory copy took 200-520 s in trials, so both methods turn it on there (the same for both).
if [ -n "${BENCH_VM_SMALL:-}" ]; then
  all=(
    "light100 100mbit 0 64M 16M 0"
    "light20 20mbit 25 64M 8M 0 --auto-converge"
    "heavy20 20mbit 25 96M 8M 32 --auto-converge"
  )
else
  all=(
    "light100 100mbit 0 256M 128M 0"
    "light20 20mbit 25 128M 32M 0 --auto-converge"
    "heavy20 20mbit 25 256M 32M 128 --auto-converge"
  )
fi
methods=""
for m in ${memories//,/ }; do methods+="baseline@$m,$ours@$m,"; done
methods=${methods%,}
configs=()
for c in "${all[@]}"; do
  set -- $c
  case ",$scenarios," in *",$1,"*) configs+=("$c") ;; esac
done
[ ${#configs[@]} -gt 0 ] || { echo "bench-vm: no scenario in '$scenarios' (light100, light20, heavy20)" >&2; exit 2; }
for c in "${configs[@]}"; do
  set -- $c
  echo "bench-vm: $1: $2, ${3} ms one-way delay, disk $4 with $5 of OS files, heavy writer ${6} MiB ${7:-}; $runs run(s) of $methods" >&2
  heavy=()
  [ "$6" != 0 ] && heavy=(--heavy "$6")
  mkdir -p "$timelines/$1"
  dotnet "$dll" "$methods" --rate "$2" --delay "$3" --runs "$runs" --disk "$4" --fill "$5" --fill-kind os "${heavy[@]}" ${7:-} \
    --timeline-dir "$timelines/$1" \
    --timeout "${BENCH_VM_TIMEOUT:-6}" --json "$work/$1.json" >&2 || true
done

when=$(date -u +'%Y-%m-%d %H:%M UTC')
host="$(nproc) CPUs, $(uname -r), $(qemu-system-x86_64 --version | head -1)"
section=$(python3 "$top/tools/bench-vm-report.py" "$when" "$host" "$runs" "$methods" "$work" "${BENCH_VM_SMALL:-}" "${configs[@]}")
printf '%s\n' "$section"

python3 "$top/tools/bench-section.py" "$doc" "Whole-VM migration, fair: same memory settings" "$section"
echo "bench-vm: wrote the \"Whole-VM migration, fair: same memory settings\" section of $doc; each BlockMigrate run's timeline in $timelines" >&2
