#!/bin/bash
# Builds (once) the boot files and dom0 root filesystem of the real-Xen test tier, from
# Debian bookworm packages, and prints the folder that holds them:
#
#   xen                 Xen 4.17 (xen-hypervisor-4.17-amd64), a multiboot ELF for qemu -kernel
#   vmlinuz             Debian's kernel (linux-image-amd64), booted as the PV dom0
#   boot.cpio.gz        busybox initramfs: mounts rootfs/ over 9p under a tmpfs overlay
#   rootfs/             debootstrap --variant=minbase + xen-utils-4.17, xenstore-utils;
#                       /sbin/xenode-init (dom0's PID 1); the tests' hotplug script for
#                       disks and NICs, /opt/xenode/xenode-hotplug (image/dom0-hotplug.c);
#                       the test guest in /opt/xenode/guest/ (the same kernel as an
#                       ELF image, vmlinux: xl boots it without decompressing it)
#                       (with xenode.relay on its command line it lends dom0 its XenStore
#                       connections over its console: image/guest-relay.c)
#
# The folder is ${XENODE_XEN_CACHE:-${XDG_CACHE_HOME:-~/.cache}/xenode-xen}/image-<key>,
# where <key> hashes everything the image is made from: this script, scripts/xen/image/,
# and the Debian versions of the hypervisor and kernel packages. A changed input builds a
# new image beside the old one (older ones are removed); a build that fails leaves nothing.
#
# Needs root (debootstrap chroots), apt access to a Debian mirror, and the host tools
# listed in $host_tools. Log: <cache>/build.log. `build-image.sh --key` only prints <key>.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${XENODE_XEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xenode-xen}
suite=bookworm
dom0_packages=xen-utils-4.17,xenstore-utils,kmod,busybox,iproute2,procps,libstdc++6
# kernel modules dom0 loads (with their dependencies)
dom0_modules="xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs xen-blkback xen-netback xen-pciback
  9p 9pnet_virtio virtio_pci overlay loop bridge ext4"
boot_modules="virtio_pci 9pnet_virtio 9p overlay"
# the test guest's frontends, so devices attached to it connect (the guest loads them)
guest_modules="xen-blkfront xen-netfront xen-pcifront"
host_tools="debootstrap busybox:busybox-static cpio depmod:kmod gcc:build-essential xz:xz-utils apt-get"

log() { echo "[xen image $(date +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "building the image needs root (debootstrap chroots into it)"
for t in $host_tools; do
  command -v "${t%%:*}" >/dev/null || die "${t%%:*} is missing: apt-get install -y ${t##*:}"
done
# the guest and the boot initramfs have no libc: busybox must be the static one
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || die "/bin/busybox is not static: apt-get install -y busybox-static"
[ -e /usr/include/xen/io/xs_wire.h ] || die "Xen headers are missing: apt-get install -y libxen-dev"

# Debian versions of what the image is made from; they change the key when the mirror
# moves. One apt-cache call: under load each one costs seconds.
packages_meta() { apt-cache show --no-all-versions linux-image-amd64 xen-hypervisor-4.17-amd64 xen-utils-4.17 2>/dev/null; }
meta=$(packages_meta || true)
if ! grep -q '^Package: xen-hypervisor-4.17-amd64' <<<"$meta"; then
  log "apt has no package lists yet: apt-get update"
  apt-get update -qq -o DPkg::Lock::Timeout=600 >&2
  meta=$(packages_meta || true)
fi
kernel_pkg=$(awk '/^Package: linux-image-amd64$/{p=1} p && /^Depends:/{print; exit}' <<<"$meta" | grep -o 'linux-image-[0-9][^ ,]*' | head -1 || true)
[ -n "$kernel_pkg" ] || die "apt cannot resolve linux-image-amd64"
kver=${kernel_pkg#linux-image-}
inputs=$(
  cat "$here/build-image.sh" "$here"/image/*
  echo "$suite $dom0_packages $dom0_modules $boot_modules $guest_modules"
  awk '/^Package:/{p=$2} /^Version:/{print p, $2}' <<<"$meta"
)
key=$(printf '%s' "$inputs" | sha256sum | cut -c1-16)
image=$cache/image-$key
if [ "${1:-}" = --key ]; then   # for CI caches: what the image would be called
  echo "$key"
  exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9   # one build at a time; a second caller waits, then finds the image built
if [ -f "$image/complete" ]; then
  echo "$image"
  exit 0
fi

start=$(date +%s)
work=$cache/building-$key
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
exec 3>>"$cache/build.log"
log "building $image (log: $cache/build.log)"
echo "=== $(date -u +%FT%TZ) building $key" >&3

# ------------------------------------------------ hypervisor and kernel, from their .debs
mirror=$(awk '/^URIs:/{print $2; exit} /^deb /{print $2; exit}' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
mkdir -p "$work/debs" "$work/ex"
(cd "$work/debs" && apt-get download xen-hypervisor-4.17-amd64 "$kernel_pkg") >&3 2>&1 ||
  die "apt-get download failed (see $cache/build.log)"
for d in "$work"/debs/*.deb; do dpkg-deb -x "$d" "$work/ex"; done
zcat "$work"/ex/boot/xen-4.17-amd64.gz >"$work/xen"
cp "$work/ex/boot/vmlinuz-$kver" "$work/vmlinuz"
depmod -b "$work/ex" "$kver"
log "hypervisor and kernel $kver extracted after $(($(date +%s) - start))s"

# ------------------------------------------------------------------- dom0 root filesystem
debootstrap --variant=minbase --include="$dom0_packages" "$suite" "$work/rootfs" "$mirror" >&3 2>&1 ||
  die "debootstrap failed (see $cache/build.log)"
log "debootstrap done after $(($(date +%s) - start))s"
rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/usr/share/doc "$work"/rootfs/usr/share/man

# Copies modules and what they depend on from the extracted kernel into a root.
copy_modules() { # DEST module...
  local dest=$1; shift
  for m in "$@"; do modprobe -d "$work/ex" -S "$kver" --show-depends "$m"; done |
    awk '/^insmod/{print $2}' | sort -u | while read -r f; do
      rel=${f#"$work/ex"/}
      mkdir -p "$dest/$(dirname "$rel")"
      cp "$f" "$dest/$rel"
    done
  mkdir -p "$dest/lib/modules/$kver"
  cp "$work/ex/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$dest/lib/modules/$kver/"
  depmod -b "$dest" "$kver"
}
rm -rf "$work/rootfs/lib/modules"
# shellcheck disable=SC2086
copy_modules "$work/rootfs" $dom0_modules
install -m 0755 "$here/image/dom0-init" "$work/rootfs/sbin/xenode-init"
# the tests' hotplug script for disks and NICs (image/dom0-hotplug.c says why)
mkdir -p "$work/rootfs/opt/xenode"
gcc -static -O2 -Wall -o "$work/rootfs/opt/xenode/xenode-hotplug" "$here/image/dom0-hotplug.c" >&3 2>&1 ||
  die "building xenode-hotplug failed (see $cache/build.log)"
# xenconsoled logs each guest's console to /var/log/xen/console/guest-<name>.log
echo 'XENCONSOLED_ARGS="--log=guest"' >>"$work/rootfs/etc/default/xen"
echo dom0 >"$work/rootfs/etc/hostname"

# --------------------------------------------- the test guest: same kernel, busybox init
guest=$work/rootfs/opt/xenode/guest
mkdir -p "$guest" "$work/guest-root"/{bin,dev,proc,sys}
# The guest boots the kernel's ELF image, not the bzImage: for a bzImage xl decompresses
# the xz payload itself, in dom0 under TCG, which made every guest creation 13-18 s longer
# (xl create 19-22 s against 6-7 s; measured in the tier). The payload is the first xz
# stream in the bzImage; what xz finds after it is the bzImage's tail.
xz_at=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$work/vmlinuz" | head -1 | cut -d: -f1)
[ -n "$xz_at" ] || die "no xz payload in $work/vmlinuz: the kernel is compressed otherwise"
tail -c +$((xz_at + 1)) "$work/vmlinuz" | xz -dcq >"$guest/vmlinux" 2>/dev/null || true
[ "$(head -c 4 "$guest/vmlinux" | od -An -c | tr -d ' ')" = '177ELF' ] || die "the kernel's xz payload is not an ELF image"
cp /bin/busybox "$work/guest-root/bin/busybox"
for prog in guest-xs guest-relay; do
  gcc -static -O2 -Wall -o "$work/guest-root/bin/xenode-$prog" "$here/image/$prog.c" >&3 2>&1 ||
    die "building xenode-$prog failed (see $cache/build.log)"
done
# shellcheck disable=SC2086
copy_modules "$work/guest-root" $guest_modules
install -m 0755 "$here/image/guest-init" "$work/guest-root/init"
(cd "$work/guest-root" && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"$guest/initramfs.cpio.gz"
cat >"$guest/guest.cfg" <<'EOF'
# The test guest, as xl.cfg; tests may also build their own config around the same files.
name = "xenode-guest"
type = "pv"
kernel = "/opt/xenode/guest/vmlinux"
ramdisk = "/opt/xenode/guest/initramfs.cpio.gz"
extra = "console=hvc0 quiet"
memory = 128
vcpus = 1
on_poweroff = "destroy"
on_crash = "destroy"
EOF

# ------------------------------------------ boot initramfs: 9p root under a tmpfs overlay
mkdir -p "$work/bootfs"/{bin,dev,proc,sys,lower,rw,newroot}
cp /bin/busybox "$work/bootfs/bin/busybox"
# shellcheck disable=SC2086
copy_modules "$work/bootfs" $boot_modules
install -m 0755 "$here/image/boot-init" "$work/bootfs/init"
(cd "$work/bootfs" && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"$work/boot.cpio.gz"

rm -rf "$work/debs" "$work/ex" "$work/bootfs" "$work/guest-root"
echo "$kver" >"$work/kernel-version"
printf '%s\n' "$inputs" | tail -4 >"$work/inputs"
touch "$work/complete"
mv "$work" "$image"
# keep the previous image too: a run that started before this build may still boot it
ls -1dt "$cache"/image-* | tail -n +3 | while read -r old; do rm -rf "$old"; done
trap - EXIT
log "image built in $(($(date +%s) - start))s: $image ($(du -sh "$image" | cut -f1))"
echo "$image"
