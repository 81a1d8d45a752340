#!/bin/sh
# What SystemdGuestTests does inside the guest: root, run by bm-job.service under systemd (PID 1),
# from the job disk (/job: this script as run.sh, the .deb, receiver.key, trusted, params).
#
# Talks to the host over /dev/ttyS1, one line at a time: "BM-READY" once the receiver and the shim
# run (or "BM-FAIL why"), then waits for "DONE" (the host has migrated a disk in), collects what
# the host checks, purges the package, writes /run/bm-results as a tar to /dev/vdc and powers off.
# Every step's output lands in /run/bm-results; the host asserts, this script only records.
set -u
. /job/params        # DISK= SIZE= QEMU_GROUP=
ctl=/dev/ttyS1
out=/run/bm-results
mkdir -p "$out"
exec >"$out/job.log" 2>&1
# one descriptor for the whole run: a serial port drops what arrives while nobody has it open
exec 3<>"$ctl"
stty -F "$ctl" raw -echo 115200
say() { printf '%s\n' "$*" >&3; }
# run NAME CMD...: CMD's output and exit status into $out/NAME
run() { n=$1; shift; "$@" >"$out/$n" 2>&1; echo "exit=$?" >>"$out/$n"; }
finish() {
  tar -C "$out" -cf /dev/vdc . && sync
  say "BM-END"
  systemctl --no-block poweroff
  exit 0
}
img=/var/lib/blockmigrate/images/$DISK.img
units="blockmigrate-receiver.service blockmigrate-shim@$DISK.service"
show="ActiveState,SubState,Result,ExecMainStatus,NRestarts,MainPID,LoadState"

cut -d' ' -f1 /proc/uptime >"$out/uptime-at-job"
systemctl is-system-running >"$out/system-state-at-job" 2>&1
ps() { for p in /proc/[0-9]*; do printf '%s %s\n' "${p#/proc/}" "$(cat "$p/comm" 2>/dev/null)"; done; }

# --- install, as an admin would (its Depends are in the image) -------------------------------
run dpkg-install dpkg -i /job/blockmigrate.deb
grep -q '^exit=0$' "$out/dpkg-install" || { say "BM-FAIL dpkg -i"; finish; }
stat -c '%U:%G %a %n' /run/blockmigrate /run/blockmigrate/migrations /dev/shm/blockmigrate /var/lib/blockmigrate/images >"$out/dirs-after-install" 2>&1

# --- the receiver: key and trusted source, the shipped receiver.conf unchanged (listen [::]:7420)
install -m 0600 /job/receiver.key /etc/blockmigrate/receiver.key
install -m 0644 /job/trusted /etc/blockmigrate/trusted
run receiver-start systemctl enable --now blockmigrate-receiver.service

# --- the destination shim of the disk: gate mode on the image the receiver writes ---------------
addgroup --system --quiet "$QEMU_GROUP"
truncate -s "$SIZE" "$img" && chown blockmigrate:blockmigrate "$img" && chmod 0600 "$img"
sed -e "s|^IMAGE=.*|IMAGE=$img|" -e "s|^QEMU_GROUP=.*|QEMU_GROUP=$QEMU_GROUP|" -e 's|^#GATE=false|GATE=true|' \
  /usr/share/doc/blockmigrate/examples/disk.conf >"/etc/blockmigrate/disks/$DISK.conf"
run shim-start systemctl enable --now "blockmigrate-shim@$DISK.service"

# --- what runs, and how ----------------------------------------------------------------------
for u in $units; do systemctl show -p "$show" "$u"; echo; done >"$out/show-before" 2>&1
stat -c '%U:%G %a %F %n' "/run/blockmigrate/$DISK.sock" "/dev/shm/blockmigrate/$DISK.map" /dev/shm/blockmigrate /run/blockmigrate >"$out/modes" 2>&1
for u in $units; do
  pid=$(systemctl show -p MainPID --value "$u")
  echo "== $u pid=$pid comm=$(cat /proc/$pid/comm 2>/dev/null)"
  grep -E '^(Uid|Gid|CapEff|CapBnd|NoNewPrivs|Seccomp):' "/proc/$pid/status" 2>&1
  echo "uid_map: $(awk '{printf "%s %s %s;", $1, $2, $3}' "/proc/$pid/uid_map")"
  echo "mnt_ns_differs: $([ "$(readlink /proc/$pid/ns/mnt)" != "$(readlink /proc/1/ns/mnt)" ] && echo yes || echo no)"
done >"$out/sandbox" 2>&1
for u in $units; do echo "== $u"; systemd-analyze security --no-pager "$u" | tail -1; done >"$out/exposure" 2>&1
# the network the host's forward reaches (QEMU user networking: 10.0.2.15), and the receiver on it
{ for i in /sys/class/net/*; do echo "${i##*/} $(cat "$i/operstate")"; done; cat /proc/net/fib_trie /proc/net/tcp /proc/net/tcp6; } >"$out/network" 2>&1
run connect-from-guest bash -c 'exec 4<>/dev/tcp/10.0.2.15/7420'

# the source's map and socket stay where the host put them; tell the host to migrate
if grep -q '^ActiveState=active$' "$out/show-before" && [ "$(grep -c '^ActiveState=active$' "$out/show-before")" = 2 ]; then
  say "BM-READY"
else
  say "BM-FAIL units not active"
  journalctl -b --no-pager -o short-monotonic >"$out/journal-boot" 2>&1
  finish
fi
while read -r line <&3; do
  case $line in DONE*) break ;; esac
done

# --- after the migration ---------------------------------------------------------------------
for u in $units; do systemctl show -p "$show" "$u"; echo; done >"$out/show-after" 2>&1
sha256sum "$img" >"$out/image-sha256" 2>&1
cat "$img.blockmigrate-state" >"$out/image-state" 2>&1
run map blockmigrate map --json "/dev/shm/blockmigrate/$DISK.map"

# --- purge with both units running: prerm stops them ------------------------------------------
run dpkg-purge dpkg --purge blockmigrate
for u in $units; do systemctl show -p "$show" "$u"; echo; done >"$out/show-after-purge" 2>&1
systemctl list-units --all --no-legend 'blockmigrate*' >"$out/units-after-purge" 2>&1
ps | grep -E ' (nbdkit|blockmigrate)$' >"$out/processes-after-purge" 2>&1
for u in $units; do
  journalctl --no-pager -u "$u" -o cat >"$out/journal-$u.txt" 2>&1
  journalctl --no-pager -u "$u" -o json >"$out/journal-$u.json" 2>&1
done
journalctl -b --no-pager -p warning -o short-monotonic >"$out/journal-warnings" 2>&1
finish
