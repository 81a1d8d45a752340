#!/usr/bin/env bash
# Builds the Debian bookworm guest that SystemdGuestTests boots under QEMU (TCG) with systemd as
# PID 1, to install the .deb in and run its units with their real sandbox.
#
#   build-image.sh CACHEDIR DEB    ->  prints DIR, which holds
#        root.img   raw ext4 root file system (no partition table, no bootloader)
#        vmlinuz    the Debian cloud kernel
#        initrd.gz  a busybox initramfs: loads virtio, mounts /dev/vda, switch_root to systemd
#
# The root is debootstrap --variant=minbase plus systemd-sysv, udev and the Depends of DEB (the
# package itself is NOT in the image: the test installs it in the running guest).  The guest:
#   - systemd-networkd gives the first NIC 10.0.2.15/24 (QEMU user networking, no DHCP wait);
#   - bm-job.service mounts the job disk /dev/vdb and runs its run.sh (the test's steps);
#   - nothing else is enabled beyond what the packages enable (apt/e2scrub/fstrim timers masked).
# Cached: DIR is CACHEDIR/KEY, KEY a hash of this script, the suite, the kernel package and the
# names in DEB's Depends, so a new .deb with the same dependencies reuses the image.  Building it
# takes a few minutes (debootstrap + apt from the host's mirror); older images are removed.
# Concurrent callers serialise on CACHEDIR/.lock.  GUEST_KERNEL_PKG overrides the kernel package.
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C.UTF-8
cache=${1:?usage: build-image.sh CACHEDIR DEB}
deb=${2:?usage: build-image.sh CACHEDIR DEB}
suite=bookworm
die() { echo "build-image: $*" >&2; exit 1; }
for tool in debootstrap unshare chroot mke2fs cpio gzip dpkg-deb apt-get apt-cache busybox flock; do
  command -v "$tool" >/dev/null || die "missing $tool (tools/install-deps.sh)"
done
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
exec 9>"$cache/.lock"
flock 9

# Depends: "a (>= 1), b | c, d" -> "a b d" (the first of each alternative; versions are checked by
# dpkg when the test installs the .deb in the guest)
deps=$(dpkg-deb --field "$deb" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/[[:space:]]//g' | grep -v '^$' | sort -u | tr '\n' ' ')
[ -n "$deps" ] || die "$deb has no Depends"
kpkg=${GUEST_KERNEL_PKG:-}
if [ -z "$kpkg" ]; then
  # the kernel tools/guest verified under TCG when the archive still has it
  if apt-cache show linux-image-6.1.0-50-cloud-amd64 >/dev/null 2>&1; then
    kpkg=linux-image-6.1.0-50-cloud-amd64
  else
    kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
  fi
fi
[ -n "$kpkg" ] || die "no cloud kernel package found (apt-get update?)"

key=$({ cat "$0"; echo "$suite|$kpkg|$deps"; } | sha256sum | cut -c1-16)
out=$cache/$key
if [ -f "$out/done" ]; then echo "$out"; exit 0; fi
for old in "$cache"/[0-9a-f]*; do   # earlier images (other keys)
  [ -d "$old" ] && [[ $(basename "$old") =~ ^[0-9a-f]{16}$ ]] && rm -rf --one-file-system "$old"
done

work=$cache/work.$$
cleanup() {
  # never delete through a mount (debootstrap mounts /proc and /sys in the root while it runs)
  if grep -q " $work/" /proc/self/mountinfo; then echo "build-image: $work still has mounts, left in place" >&2; return; fi
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
mkdir -p "$work"
root=$work/root
start=$(date +%s)

mirror=http://deb.debian.org/debian
for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
  [ -f "$f" ] || continue
  m=$(grep -v '^[[:space:]]*#' "$f" | grep -o 'http[^ ]*/debian/\?' | head -1 || true)
  [ -n "$m" ] && { mirror=$m; break; }
done
echo "build-image: debootstrap $suite from $mirror (a few minutes)" >&2
debootstrap --variant=minbase --include=systemd-sysv,udev "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }

# Runs a script inside the root: /proc in a private mount namespace (gone with the command).
inroot() {
  unshare --mount --propagation private --fork -- /bin/sh -c \
    'mount -t proc proc "$0/proc" && exec chroot "$0" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive /bin/sh -c "$1"' \
    "$root" "$1"
}

# the .deb's dependencies from the host's apt sources (the same nbdkit the filter was built against)
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
  rm -f "$root/etc/apt/sources.list"
else
  cp /etc/apt/sources.list "$root/etc/apt/sources.list"
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
inroot "apt-get update -qq && apt-get install -y -qq --no-install-recommends $deps && apt-get clean && rm -rf /var/lib/apt/lists/*" \
  >"$work/apt.log" 2>&1 || { tail -30 "$work/apt.log" >&2; die "apt-get install $deps failed"; }
rm -f "$root/etc/resolv.conf"

# --- the guest's configuration -------------------------------------------------------------
echo bmguest >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 bmguest\n::1 localhost ip6-localhost\n' >"$root/etc/hosts"
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$root/etc/machine-id"; echo >>"$root/etc/machine-id"
cat >"$root/etc/fstab" <<'EOF'
# the initramfs mounts /dev/vda read-write on /
EOF
mkdir -p "$root/etc/systemd/network"
cat >"$root/etc/systemd/network/10-qemu-user.network" <<'EOF'
# QEMU user networking (slirp): fixed address, no DHCP round trip at boot
[Match]
Name=en* eth*
[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
cat >"$root/usr/local/sbin/bm-job" <<'EOF'
#!/bin/sh
# Runs the test's steps from the job disk (/dev/vdb, ext4, read-only).  Without one: nothing.
mkdir -p /job
if mount -o ro /dev/vdb /job 2>/dev/null && [ -f /job/run.sh ]; then exec /bin/sh /job/run.sh; fi
echo "bm-job: no job disk" >&2
EOF
chmod 0755 "$root/usr/local/sbin/bm-job"
cat >"$root/etc/systemd/system/bm-job.service" <<'EOF'
[Unit]
Description=BlockMigrate systemd test: the job on /dev/vdb
After=basic.target network.target systemd-networkd.service systemd-journald.service

[Service]
Type=simple
ExecStart=/usr/local/sbin/bm-job
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
EOF
inroot "systemctl enable systemd-networkd.service bm-job.service && systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer" \
  >"$work/enable.log" 2>&1 || { cat "$work/enable.log" >&2; die "systemctl enable in the root failed"; }

# --- kernel and initramfs --------------------------------------------------------------------
mkdir -p "$cache/deb"
kdeb=$(ls "$cache/deb/${kpkg}"_*.deb 2>/dev/null | head -1 || true)
if [ -z "$kdeb" ]; then
  (cd "$cache/deb" && chmod 777 . && apt-get download "$kpkg" >/dev/null 2>&1) || die "apt-get download $kpkg failed"
  kdeb=$(ls "$cache/deb/${kpkg}"_*.deb | head -1)
fi
dpkg-deb -x "$kdeb" "$work/k"
kver=$(ls "$work/k/lib/modules" | head -1)
ird=$work/initramfs
mkdir -p "$ird"/{bin,mods,proc,sys,dev,newroot}
cp "$(command -v busybox)" "$ird/bin/busybox"
for a in sh mount umount insmod sleep mkdir cat echo switch_root poweroff; do ln -s busybox "$ird/bin/$a"; done
# virtio-pci, the block device (root, job and result disks) and the NIC; ext4 is built in.
# The cloud kernel ships no modules.dep in its package: dependency order by hand.
mods="virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk failover net_failover virtio_net"
for m in $mods; do
  f=$(find "$work/k/lib/modules/$kver" -name "$m.ko*" | head -1)
  [ -n "$f" ] || die "module $m missing in $kpkg"
  case $f in
    *.ko) cp "$f" "$ird/mods/$m.ko" ;;
    *.ko.xz) xz -dc "$f" >"$ird/mods/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" >"$ird/mods/$m.ko" ;;
    *) die "cannot unpack $f" ;;
  esac
done
cat >"$ird/init" <<EOF
#!/bin/sh
# initramfs of the systemd test guest: modules, mount the root, hand over to systemd
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $mods; do insmod /mods/\$m.ko || echo "initramfs: insmod \$m failed"; done
i=0; while [ ! -b /dev/vda ] && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i+1)); done
if ! mount -t ext4 -o rw /dev/vda /newroot; then echo "initramfs: cannot mount /dev/vda"; poweroff -f; fi
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
EOF
chmod 0755 "$ird/init"

mkdir -p "$work/out"
(cd "$ird" && find . | LC_ALL=C sort | cpio -o -H newc --owner=0:0 2>/dev/null | gzip -1) >"$work/out/initrd.gz"
cp "$work/k/boot/vmlinuz-$kver" "$work/out/vmlinuz"
# the root file system: ext4 made straight from the tree (owners and modes kept), sparse, with
# room for the received images
mke2fs -q -t ext4 -L bmroot -m 0 -d "$root" "$work/out/root.img" 2G >&2 \
  || die "mke2fs -d failed"
{ echo "suite=$suite"; echo "kernel=$kpkg $kver"; echo "depends=$deps"; echo "built in $(( $(date +%s) - start ))s"; } >"$work/out/info"
touch "$work/out/done"
mv "$work/out" "$out"
echo "build-image: $(tail -1 "$out/info") -> $out" >&2
echo "$out"
