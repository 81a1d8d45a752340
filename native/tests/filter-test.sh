#!/usr/bin/env bash
# filter-test: the shim against real NBD clients (qemu-io, nbdsh, nbdinfo),
# with the map read through libblockmigrate.so.  A quick check of native/ on
# its own; the project's full suite is tests/BlockMigrate.Shim.Tests.
#
#   native/tests/filter-test.sh [BUILD_DIR]      (default build/native; run by ctest)
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH   # Debian's python3 (nbd module for nbdsh)
build=$(cd "${1:-$(dirname "$0")/../../build/native}" && pwd)
filter=$build/nbdkit-blockmigrate-filter.so
lib=$build/libblockmigrate.so
tmp=$(mktemp -d /tmp/bm-native-test.XXXXXX)
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

start() {     # start IMG MAP [args]: nbdkit + filter on $tmp/sock, 64K blocks (the checks count in them)
  local img=$1 map=$2; shift 2
  rm -f "$tmp/sock" "$tmp/pid"
  nbdkit -f -U "$tmp/sock" -P "$tmp/pid" --filter="$filter" file file="$img" \
    dirtymap="$map" blocksize=64K "$@" </dev/null 2>"$tmp/log" &
  pid=$!
  for _ in $(seq 100); do [ -S "$tmp/sock" ] && [ -f "$map" ] && break; sleep 0.05; done
  nbdinfo --size "$uri" >/dev/null
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }
uri="nbd+unix:///?socket=$tmp/sock"
qio() { qemu-io -f raw "$uri" "$@" >/dev/null; }

truncate -s 64M "$tmp/disk.img"
map=$tmp/disk.map
start "$tmp/disk.img" "$map"

qio -c 'write -P 0xab 65535 2'
check "a 2-byte write across a boundary dirties blocks 0 and 1 only" \
  test "$(bm "$map" word0)" = 0x3
bm "$map" take 16 >/dev/null
nbdsh -u "$uri" -c 'h.zero(65536, 2 * 65536)' -c 'h.trim(4096, 5 * 65536 + 1)' \
  -c 'h.pread(65536, 0)' -c 'h.flush()'
check "zero and trim dirty their blocks; read and flush nothing" \
  test "$(bm "$map" word0)" = 0x24

bm "$map" take 16 >/dev/null
bm "$map" freeze 5000
( qio -c 'write 0 4096'; touch "$tmp/written" ) &
writer=$!
sleep 1
check "a write waits while frozen" test ! -e "$tmp/written" -a "$(bm "$map" word0)" = 0x0
bm "$map" thaw
wait $writer
check "the held write completes after thaw and is marked" test "$(bm "$map" word0)" = 0x1

bm "$map" throttle 4000000
t0=$(date +%s%N); qio -c 'write 0 8M'; t1=$(date +%s%N)
bm "$map" throttle 0
check "8 MiB at 4 MB/s takes about 2 s" test $(( (t1 - t0) / 1000000 )) -ge 1500
stop

# destination: the gate
gmap=$tmp/dest.map
start "$tmp/disk.img" "$gmap" gate=true
bm "$gmap" gate 3
bm "$gmap" flags 4 0
quick_read() { timeout 5 qemu-io -f raw -r "$uri" -c 'read 0 65536' >/dev/null; }
check "a read of an ungated block does not wait" quick_read
( qemu-io -f raw -r "$uri" -c 'read 196700 10' >/dev/null; touch "$tmp/read" ) &
reader=$!
sleep 1
check "a read of a gated block waits" test ! -e "$tmp/read"
bm "$gmap" ungate 3
wait $reader
check "it completes when the block is released" test -e "$tmp/read"
stop

# refusals: nbdkit does not start
refused() { rm -f "$tmp/sock2"; ! timeout 10 nbdkit -f -U "$tmp/sock2" --filter="$filter" file file="$tmp/disk.img" "$@" </dev/null 2>"$tmp/err"; }
check "missing dirtymap= is refused" refused
check "blocksize=3000 is refused" refused dirtymap="$tmp/x.map" blocksize=3000
truncate -s 128M "$tmp/other.img"
check "a map of another geometry is refused" \
  refused dirtymap="$map" file="$tmp/other.img"
grep -q "geometry mismatch" "$tmp/err" || fail "geometry message: $(cat "$tmp/err")"
head -c 8192 /dev/zero > "$tmp/junk.map"; chmod 600 "$tmp/junk.map"
check "a corrupt map is refused" refused dirtymap="$tmp/junk.map"

# trust: who may touch a map (dirtymap.c)
check "the map was created 0600" test "$(stat -c %a "$map")" = 600
chmod 660 "$map"
check "a map with group bits is refused" refused dirtymap="$map" blocksize=64K
grep -q "gives group or others access" "$tmp/err" || fail "mode message: $(cat "$tmp/err")"
chmod 600 "$map"
ln -s "$map" "$tmp/link.map"
check "a symlinked map is refused" refused dirtymap="$tmp/link.map" blocksize=64K
grep -q "symbolic link" "$tmp/err" || fail "symlink message: $(cat "$tmp/err")"
mkdir -m 0770 "$tmp/open"
check "a map directory writable by group is refused" refused dirtymap="$tmp/open/new.map"
grep -q "writable by group or others" "$tmp/err" || fail "dir message: $(cat "$tmp/err")"
check "... and nothing was created in it" test ! -e "$tmp/open/new.map"
if [ "$(id -u)" = 0 ]; then
  mkdir -m 0755 "$tmp/planted"; chown 65534:65534 "$tmp/planted"
  check "a map directory owned by another user is refused" refused dirtymap="$tmp/planted/vm.map"
  grep -q "owned by uid 65534" "$tmp/err" || fail "owner message: $(cat "$tmp/err")"
  cp --preserve=mode "$map" "$tmp/foreign.map"; chown 65534 "$tmp/foreign.map"
  check "a map owned by another user is refused" refused dirtymap="$tmp/foreign.map" blocksize=64K
  chmod 0711 "$tmp"
  nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
  check "(another user can run commands here)" nobody test -x "$tmp"
  check "another user cannot read the map" bash -c "! nobody cat '$map' >/dev/null 2>&1"
  check "another user cannot write the map" bash -c "! nobody dd of='$map' conv=notrunc count=0 2>/dev/null"
  chmod 0700 "$tmp"
fi

# a map truncated under a running shim: the write fails, nbdkit lives on
start "$tmp/disk.img" "$map"
truncate -s 4096 "$map"
check "a write to a shrunken map fails" bash -c "! qemu-io -f raw '$uri' -c 'write 0 4k' >/dev/null 2>&1"
check "nbdkit survives a shrunken map" kill -0 "$pid"
check "reads still work" qio -c "read 0 4k"
grep -q "shrank" "$tmp/log" || fail "shrink message: $(cat "$tmp/log")"
stop
rm -f "$map"

# the socket of one VM: the shim unit's ExecStartPost lines, run as systemd
# would, make it 0660 blockmigrate:QEMU_GROUP; before them nbdkit's own 0755
# lets nobody but its user connect
unit=$(dirname "$0")/../../packaging/systemd/blockmigrate-shim@.service
if [ "$(id -u)" = 0 ] && [ -f "$unit" ]; then
  vmgid=$((40000 + RANDOM % 20000))
  chmod 0711 "$tmp"
  rm -f "$tmp/pid"
  nbdkit -f -U "$tmp/vm.sock" -P "$tmp/pid" --filter="$filter" file \
    file="$tmp/disk.img" dirtymap="$tmp/vm.map" blocksize=64K </dev/null 2>"$tmp/log" &
  pid=$!
  for _ in $(seq 100); do [ -S "$tmp/vm.sock" ] && break; sleep 0.05; done
  vmuri="nbd+unix:///?socket=$tmp/vm.sock"
  as() { local gid=$1; shift; setpriv --reuid=65534 --regid="$gid" --clear-groups "$@"; }
  check "before the hand-over nobody else can connect" \
    bash -c "$(declare -f as); ! as $vmgid nbdinfo --size '$vmuri' 2>/dev/null"
  posts=0
  while IFS= read -r line; do
    cmd=${line#ExecStartPost=+}
    cmd=${cmd//'${QEMU_GROUP}'/$vmgid}; cmd=${cmd//'${SOCKET}'/$tmp/vm.sock}
    read -ra argv <<<"$cmd"
    "${argv[@]}" || fail "ExecStartPost: $cmd"
    posts=$((posts + 1))
  done < <(grep '^ExecStartPost=+' "$unit")
  check "the unit hands the socket over in ExecStartPost" test "$posts" -ge 1
  check "the socket is 0660, group QEMU_GROUP" \
    test "$(stat -c %g:%a "$tmp/vm.sock")" = "$vmgid:660"
  check "the VM's QEMU (group QEMU_GROUP) connects" \
    as $vmgid nbdinfo --size "$vmuri"
  check "another VM's QEMU (another group) cannot connect" \
    bash -c "$(declare -f as); ! as 65534 nbdinfo --size '$vmuri' 2>/dev/null"
  stop
  chmod 0700 "$tmp"
fi

echo "filter-test: $failures failures"
[ "$failures" = 0 ]
