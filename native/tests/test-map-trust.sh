#!/usr/bin/env bash
# Who may touch a map (dirtymap.c): created 0600; maps and directories open to
# others, symlinks and (as root) other users' files are refused.
source "$(dirname "$0")/functions.sh"

truncate -s 64M "$tmp/disk.img"
map=$tmp/disk.map
start "$tmp/disk.img" "$map"
stop

check "the map was created 0600" test "$(stat -c %a "$map")" = 600
chmod 660 "$map"
check "a map with group bits is refused" refused dirtymap="$map" blocksize=64K
message "gives group or others access" mode
chmod 600 "$map"
ln -s "$map" "$tmp/link.map"
check "a symlinked map is refused" refused dirtymap="$tmp/link.map" blocksize=64K
message "symbolic link" symlink
mkdir -m 0770 "$tmp/open"
check "a map directory writable by group is refused" refused dirtymap="$tmp/open/new.map"
message "writable by group or others" dir
check "... and nothing was created in it" test ! -e "$tmp/open/new.map"
if [ "$(id -u)" = 0 ]; then
  mkdir -m 0755 "$tmp/planted"; chown 65534:65534 "$tmp/planted"
  check "a map directory owned by another user is refused" refused dirtymap="$tmp/planted/vm.map"
  message "owned by uid 65534" owner
  cp --preserve=mode "$map" "$tmp/foreign.map"; chown 65534 "$tmp/foreign.map"
  check "a map owned by another user is refused" refused dirtymap="$tmp/foreign.map" blocksize=64K
  chmod 0711 "$tmp"
  nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
  check "(another user can run commands here)" nobody test -x "$tmp"
  check "another user cannot read the map" bash -c "! nobody cat '$map' >/dev/null 2>&1"
  check "another user cannot write the map" bash -c "! nobody dd of='$map' conv=notrunc count=0 2>/dev/null"
  chmod 0700 "$tmp"
fi
done_testing
