#!/usr/bin/env bash
# Writes, zeroes and trims mark the blocks they touch; reads and flushes nothing.
source "$(dirname "$0")/functions.sh"

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
stop
done_testing
