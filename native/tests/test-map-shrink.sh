#!/usr/bin/env bash
# A map truncated under a running shim: the write fails, nbdkit lives on.
source "$(dirname "$0")/functions.sh"

truncate -s 64M "$tmp/disk.img"
map=$tmp/disk.map
start "$tmp/disk.img" "$map"
truncate -s 4096 "$map"
check "a write to a shrunken map fails" bash -c "! qemu-io -f raw '$uri' -c 'write 0 4k' >/dev/null 2>&1"
check "nbdkit survives a shrunken map" kill -0 "$pid"
check "reads still work" qio -c "read 0 4k"
grep -q "shrank" "$tmp/log" || fail "shrink message: $(cat "$tmp/log")"
stop
done_testing
