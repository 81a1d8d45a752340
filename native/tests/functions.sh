# Shared by native/tests/test-*.sh (nbdkit's tests/functions.sh style): each
# test-*.sh is one scenario of the shim against real NBD clients (qemu-io,
# nbdsh, nbdinfo), with the map read through libblockmigrate.so.  A quick
# check of native/ on its own; the project's full suite is
# tests/BlockMigrate.Shim.Tests.  ctest runs each file (native/CMakeLists.txt):
#
#   native/tests/test-NAME.sh [BUILD_DIR]      (default build/native)
#
# A test sources this file, calls check for each promise, and ends with done_
# testing.  Exit status 77 means skipped (ctest SKIP_RETURN_CODE).
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH   # Debian's python3 (nbd module for nbdsh)
testdir=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$testdir/../../build/native}" && pwd)
filter=$build/nbdkit-blockmigrate-filter.so
lib=$build/libblockmigrate.so
tmp=$(mktemp -d "/tmp/bm-native-$(basename "$0" .sh).XXXXXX")
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
failures=0
ok()   { echo "ok   $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else fail "$what"; fi; }
skip() { echo "SKIP $(basename "$0"): $*"; exit 77; }
requires_root() { [ "$(id -u)" = 0 ] || skip "needs root"; }
done_testing() {
  echo "$(basename "$0" .sh): $failures failures"
  [ "$failures" = 0 ]
}

# bm MAP CMD ARGS: a few library calls from the shell (the orchestrator's side)
bm() {
  python3 - "$lib" "$@" <<'PY'
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1]); U = ctypes.c_uint64
lib.bm_map_open.restype = ctypes.c_void_p; lib.bm_last_error.restype = ctypes.c_char_p
lib.bm_take.restype = ctypes.c_int64; lib.bm_dirty_count.restype = ctypes.c_int64
m = ctypes.c_void_p(lib.bm_map_open(sys.argv[2].encode()))
if not m.value: sys.exit(lib.bm_last_error().decode())
cmd, a = sys.argv[3], [int(x, 0) for x in sys.argv[4:]]
if cmd == "word0":
    w = (U * 1)(); lib.bm_peek(m, U(0), U(1), w); print(hex(w[0]))
elif cmd == "take": print(lib.bm_take(m, U(0), U(a[0]), None))
elif cmd == "freeze": sys.exit(lib.bm_freeze(m, a[0]) != 0)
elif cmd == "thaw": lib.bm_thaw(m)
elif cmd == "throttle": lib.bm_set_throttle(m, U(a[0]))
elif cmd == "flags": lib.bm_set_state_flags(m, ctypes.c_uint32(a[0]), ctypes.c_uint32(a[1]))
elif cmd == "gate":
    w = U(1 << a[0]); lib.bm_gate_mark_words(m, U(0), U(1), ctypes.byref(w))
elif cmd == "ungate": lib.bm_gate_clear_blocks(m, U(a[0]), U(1))
PY
}

# start IMG MAP [args]: nbdkit + filter on $tmp/sock, 64K blocks (the checks
# count in them); stop: end it.  $uri names the socket, qio runs qemu-io on it.
uri="nbd+unix:///?socket=$tmp/sock"
start() {
  local img=$1 map=$2; shift 2
  rm -f "$tmp/sock" "$tmp/pid"
  nbdkit -f -U "$tmp/sock" -P "$tmp/pid" --filter="$filter" file file="$img" \
    dirtymap="$map" blocksize=64K "$@" </dev/null 2>"$tmp/log" &
  pid=$!
  for _ in $(seq 100); do [ -S "$tmp/sock" ] && [ -f "$map" ] && break; sleep 0.05; done
  nbdinfo --size "$uri" >/dev/null
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }
qio() { qemu-io -f raw "$uri" "$@" >/dev/null; }

# refused ARGS: nbdkit with the filter and these parameters does not start;
# its message is in $tmp/err.  A disk image $tmp/disk.img must exist.
refused() {
  rm -f "$tmp/sock2"
  ! timeout 10 nbdkit -f -U "$tmp/sock2" --filter="$filter" file file="$tmp/disk.img" \
      "$@" </dev/null 2>"$tmp/err"
}
# message TEXT WHAT: the last refusal's message says TEXT.
message() { grep -q "$1" "$tmp/err" || fail "$2 message: $(cat "$tmp/err")"; }
