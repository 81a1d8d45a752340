#!/usr/bin/env bash
# Builds the test guest: a Debian cloud kernel and a busybox initramfs whose /init (tools/guest/init)
# writes sequence-numbered blocks to /dev/vda.
#
#   tools/guest/build-guest.sh OUTDIR      ->  OUTDIR/vmlinuz, OUTDIR/initrd.gz
#
# Idempotent and cached: the kernel package is downloaded once into OUTDIR/deb/, and the initramfs is
# rebuilt only when init or this script changed (OUTDIR/stamp holds their checksum). Concurrent callers
# (several test assemblies) serialise on OUTDIR/.lock.
# GUEST_KERNEL_PKG overrides the kernel package (default: the one the testbed verified under TCG if
# the archive still has it, else what linux-image-cloud-amd64 depends on).
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build-guest.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
exec 9>"$out/.lock"
flock 9

want=$(cat "$here/init" "$here/build-guest.sh" | sha256sum | cut -d' ' -f1)
if [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.gz" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$want" ]; then
  echo "$out"; exit 0
fi

pkg=${GUEST_KERNEL_PKG:-}
if [ -z "$pkg" ]; then
  if apt-cache show linux-image-6.1.0-50-cloud-amd64 >/dev/null 2>&1; then
    pkg=linux-image-6.1.0-50-cloud-amd64
  else
    pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
  fi
fi
[ -n "$pkg" ] || { echo "build-guest: no cloud kernel package found (apt-get update?)" >&2; exit 1; }
# the initramfs needs a static busybox (Debian's busybox-static installs it as /bin/busybox)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' \
  || { echo "build-guest: busybox-static is not installed (tools/install-deps.sh)" >&2; exit 1; }

mkdir -p "$out/deb"
deb=$(ls "$out/deb/${pkg}"_*.deb 2>/dev/null | head -1 || true)
if [ -z "$deb" ]; then
  # apt-get download writes into the current directory; _apt cannot write there, hence the chmod
  (cd "$out/deb" && chmod 777 . && apt-get download "$pkg" >/dev/null 2>&1) \
    || { echo "build-guest: apt-get download $pkg failed" >&2; exit 1; }
  deb=$(ls "$out/deb/${pkg}"_*.deb | head -1)
fi

work=$(mktemp -d "$out/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$deb" "$work/k"
kver=$(ls "$work/k/lib/modules" | head -1)
root="$work/root"
mkdir -p "$root"/{bin,mods,proc,sys,dev,www,tmp}
cp /bin/busybox "$root/bin/busybox"
for a in sh mount insmod dd printf sleep cat echo ip httpd mkdir cut true chmod; do ln -sf busybox "$root/bin/$a"; done
for m in virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk failover net_failover virtio_net; do
  f=$(find "$work/k/lib/modules/$kver" -name "$m.ko*" | head -1)
  [ -n "$f" ] || { echo "build-guest: module $m missing in $pkg" >&2; exit 1; }
  case $f in
    *.ko) cp "$f" "$root/mods/$m.ko" ;;
    *.ko.xz) xz -dc "$f" > "$root/mods/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" > "$root/mods/$m.ko" ;;
    *) echo "build-guest: cannot unpack $f" >&2; exit 1 ;;
  esac
done
install -m 0755 "$here/init" "$root/init"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --owner=0:0 2>/dev/null | gzip -1) > "$out/initrd.gz.new"
cp "$work/k/boot/vmlinuz-$kver" "$out/vmlinuz.new"
mv "$out/vmlinuz.new" "$out/vmlinuz"
mv "$out/initrd.gz.new" "$out/initrd.gz"
echo "$pkg $kver" > "$out/kernel"
echo "$want" > "$out/stamp"
echo "$out"
