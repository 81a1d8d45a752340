#!/usr/bin/env bash
# Destination (gate=true): a read of a gated block waits until it is released.
source "$(dirname "$0")/functions.sh"

truncate -s 64M "$tmp/disk.img"
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
done_testing
