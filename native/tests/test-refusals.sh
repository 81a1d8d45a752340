#!/usr/bin/env bash
# Bad parameters and bad maps: nbdkit does not start.
source "$(dirname "$0")/functions.sh"

truncate -s 64M "$tmp/disk.img"
map=$tmp/disk.map
start "$tmp/disk.img" "$map"      # a sound map of this disk's geometry
stop

check "missing dirtymap= is refused" refused
check "blocksize=3000 is refused" refused dirtymap="$tmp/x.map" blocksize=3000
truncate -s 128M "$tmp/other.img"
check "a map of another geometry is refused" \
  refused dirtymap="$map" file="$tmp/other.img"
message "geometry mismatch" geometry
head -c 8192 /dev/zero > "$tmp/junk.map"; chmod 600 "$tmp/junk.map"
check "a corrupt map is refused" refused dirtymap="$tmp/junk.map"
done_testing
