#!/usr/bin/env bash
# The socket of one VM: the shim unit's ExecStartPost lines, run as systemd
# would, make it 0660 blockmigrate:QEMU_GROUP; before them nbdkit's own 0755
# lets nobody but its user connect.  Needs root (skipped otherwise).
source "$(dirname "$0")/functions.sh"

unit=$testdir/../../packaging/systemd/blockmigrate-shim@.service
requires_root
[ -f "$unit" ] || skip "no $unit"
truncate -s 64M "$tmp/disk.img"
vmgid=$((40000 + RANDOM % 20000))
chmod 0711 "$tmp"
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
done_testing
