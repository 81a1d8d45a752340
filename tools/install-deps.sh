#!/usr/bin/env bash
# Installs every Debian package that building and testing BlockMigrate needs.
# Idempotent: packages that dpkg already reports as installed are skipped, and
# apt-get runs only when something is missing.
set -euo pipefail

packages=(
  # build
  build-essential cmake pkg-config nbdkit nbdkit-plugin-dev
  # NBD peers used by the tests and the benchmark
  libnbd-bin python3-libnbd qemu-utils qemu-system-x86
  # guests, network hosts, DNS
  busybox-static cpio socat iproute2 nftables bind9 bind9-dnsutils conntrack
  # packaging: NativeAOT publish links with clang; checks
  clang zlib1g-dev dpkg-dev fakeroot lintian systemd debootstrap bash-completion man-db
  # fuzzing: libFuzzer + sanitizer runtimes for clang (native/fuzz)
  libclang-rt-14-dev
  # misc (libzstd1: the engine's zstd codec, loaded through P/Invoke)
  xxd zstd lz4 libzstd1
  # libvirt adapter tests: two libvirtd in namespaces (tests/BlockMigrate.Hypervisor.Tests/Libvirt*)
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (${missing[*]}); run as root to install them" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
