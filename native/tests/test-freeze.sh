#!/usr/bin/env bash
# A freeze holds writes; thaw releases them, and they are marked.
source "$(dirname "$0")/functions.sh"

truncate -s 64M "$tmp/disk.img"
map=$tmp/disk.map
start "$tmp/disk.img" "$map"

bm "$map" freeze 5000
( qio -c 'write 0 4096'; touch "$tmp/written" ) &
writer=$!
sleep 1
check "a write waits while frozen" test ! -e "$tmp/written" -a "$(bm "$map" word0)" = 0x0
bm "$map" thaw
wait $writer
check "the held write completes after thaw and is marked" test "$(bm "$map" word0)" = 0x1
stop
done_testing
