#!/usr/bin/env bash
# The throttle in the map's header slows writers to its rate.
source "$(dirname "$0")/functions.sh"

truncate -s 64M "$tmp/disk.img"
map=$tmp/disk.map
start "$tmp/disk.img" "$map"

bm "$map" throttle 4000000
t0=$(date +%s%N); qio -c 'write 0 8M'; t1=$(date +%s%N)
bm "$map" throttle 0
check "8 MiB at 4 MB/s takes about 2 s" test $(( (t1 - t0) / 1000000 )) -ge 1500
stop
done_testing
