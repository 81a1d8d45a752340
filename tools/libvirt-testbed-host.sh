#!/bin/bash
# libvirt-testbed-host.sh NETNS IP DIR
# One libvirt "host" for tests (derived from the shared test-bed recipe libvirt_two_hosts.sh): libvirtd +
# virtlogd inside network namespace NETNS (which must exist), in their own mount and UTS namespaces:
# private tmpfs on /run, /var/lib, /var/cache and /var/log, with DIR/{run,lib,cache,log} bound on their
# libvirt directories and DIR/etc on /etc/libvirt (own libvirtd.conf, qemu.conf, host UUID, hostname
# NETNS). /etc/passwd and /etc/group are bind-mounted copies that add the user libvirt-qemu and the
# groups kvm and libvirt-qemu when the host lacks them (libvirtd resolves them before it reads
# qemu.conf). Nothing on the host's own file systems changes. libvirtd listens on IP:16509 (TCP, no
# auth: a test namespace only) and runs QEMU as root without a security driver or cgroups (TCG).
# The script execs libvirtd (foreground), so its PID is libvirtd's; virtlogd's is in DIR/virtlogd.pid,
# and each domain's QEMU in DIR/run/qemu/NAME.pid.
set -euo pipefail
N=$1; IP=$2; B=$3
mkdir -p "$B"/{run,lib,cache,log,etc}
cat > "$B/etc/libvirtd.conf" <<CONF
listen_tls = 0
listen_tcp = 1
auth_tcp = "none"
listen_addr = "$IP"
host_uuid = "$(cat /proc/sys/kernel/random/uuid)"
CONF
cat > "$B/etc/qemu.conf" <<CONF
user = "root"
group = "root"
security_driver = "none"
cgroup_controllers = [ ]
migration_address = "$IP"
CONF
cp /etc/passwd "$B/passwd"; cp /etc/group "$B/group"
getent group kvm >/dev/null || echo "kvm:x:64998:" >> "$B/group"
getent group libvirt-qemu >/dev/null || echo "libvirt-qemu:x:64999:" >> "$B/group"
id libvirt-qemu >/dev/null 2>&1 || echo "libvirt-qemu:x:64999:64999::/var/lib/libvirt:/usr/sbin/nologin" >> "$B/passwd"
exec ip netns exec "$N" unshare --mount --uts --propagation private bash -c '
  set -e; B=$1; N=$2
  mount --bind "$B/passwd" /etc/passwd; mount --bind "$B/group" /etc/group
  for d in /run /var/lib /var/cache /var/log; do mount -t tmpfs -o mode=755 tmpfs "$d"; done
  mkdir -p /run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt
  mount --bind "$B/run" /run/libvirt; mount --bind "$B/lib" /var/lib/libvirt
  mount --bind "$B/cache" /var/cache/libvirt; mount --bind "$B/log" /var/log/libvirt; mount --bind "$B/etc" /etc/libvirt
  hostname "$N"; virtlogd -d -p "$B/virtlogd.pid"; exec libvirtd --listen -p "$B/libvirtd.pid"' bash "$B" "$N"
