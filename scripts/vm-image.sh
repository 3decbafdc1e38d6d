#!/usr/bin/env bash
# Builds (once) a small bootable Debian bookworm disk image with cloud-init,
# for QEMU tests that flash it with bty and boot it (scripts/vm-boot.sh).
#
# Usage: scripts/vm-image.sh [OUT_DIR]
#   OUT_DIR defaults to <repo>/.cache/vm-image (git-ignored).
#
# Output in OUT_DIR:
#   disk.img          raw GPT disk, 1.25 GiB virtual, sparse
#   disk.img.sha256   sha256 of disk.img (the hash alone)
#   rootfs/           the root tree (kept so rebuilding the disk is quick)
#
# Disk layout: GPT; p1 a 256 MiB FAT32 ESP (label ESP) holding systemd-boot
# as EFI/BOOT/BOOTX64.EFI, loader/loader.conf, loader/entries/bty.conf, the
# kernel and initrd; p2 an ext4 root (label root) made with `mkfs.ext4 -d`.
# The kernel finds its root by a fixed PARTUUID (ROOT_PARTUUID below).
# Nothing is mounted: each filesystem is built as a separate file (the ESP
# is filled with mtools) and copied into the sparse disk file at its
# partition offset.
#
# The guest: hostname bty-vm, root without a password on the serial
# console, cloud-init with `datasource_list: [NoCloud, None]` (a seed under
# /var/lib/cloud/seed/nocloud-net/ is picked up), and bty-booted.service,
# which once boot has finished (cloud-init included) prints to /dev/ttyS0:
#   BTY-BOOTED hostname=<hostname> state=<running or degraded>[ failed=<unit,...>]
#
# The rootfs is slim: dpkg leaves out docs, man pages, locales and kernel
# modules a VM never loads (sound, GPU, media, wireless, ...), and the
# initrd holds only the virtio/SATA/NVMe disk and ext4 modules
# (MODULES=list), so it is small and quick to build and to boot.
#
# Caching: a step runs only when its output is missing, and outputs appear
# only when complete (rootfs.done is touched last; disk.img is renamed into
# place after its hash is written), so an interrupted or failed build is
# redone by the next run, never taken as valid. OUT_DIR/recipe holds the
# hash of this script and lib.sh; when it differs the cache is rebuilt.
# A lock (OUT_DIR/.lock) serialises concurrent runs. Delete OUT_DIR to
# rebuild by hand. Needs root (debootstrap, chroot).
#
# Env: VM_MIRROR (Debian mirror for debootstrap; default: apt's),
#      VM_SEED_ROOTFS (a debootstrapped bookworm tree with linux-image-amd64
#      and cloud-init to copy instead of running debootstrap, e.g.
#      <repo>/.cache/bench-image/rootfs; default none: always debootstrap,
#      as CI does).
# Prints the disk path on the last line of stdout.
set -euo pipefail

repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
# shellcheck source=lib.sh
. "$repo/scripts/lib.sh"
out=${1:-$repo/.cache/vm-image}
suite=bookworm

# Partition geometry, in MiB. The last MiB is left for the backup GPT.
disk_mib=1280
esp_start=1
esp_size=256
root_start=$((esp_start + esp_size))
root_size=$((disk_mib - root_start - 1))

DISK_GUID=5b7a9f0e-6c1d-4b7e-9d3a-000000b7e000
ESP_PARTUUID=5b7a9f0e-6c1d-4b7e-9d3a-000000b7e001
ROOT_PARTUUID=5b7a9f0e-6c1d-4b7e-9d3a-000000b7e002
HOSTNAME_=bty-vm

packages=(
  systemd-sysv udev dbus linux-image-amd64 initramfs-tools systemd-boot-efi
  cloud-init python3-cffi-backend iproute2 ifupdown isc-dhcp-client netbase
  openssh-server
  ca-certificates less
)

log() { printf '[vm-image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

ensure_tools() {
  declare -A pkg=(
    [debootstrap]=debootstrap [sgdisk]=gdisk [mkfs.ext4]=e2fsprogs
    [mkfs.vfat]=dosfstools [mcopy]=mtools
  )
  local tool missing=()
  for tool in "${!pkg[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${pkg[$tool]}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

seed_rootfs() {
  local s=${VM_SEED_ROOTFS:-none}
  [ "$s" != none ] || return 1
  [ -e "$s/vmlinuz" ] && [ -e "$s/initrd.img" ] && [ -d "$s/etc/cloud" ] &&
    [ -x "$s/lib/systemd/systemd" ] || { log "seed $s lacks kernel/cloud-init/systemd; ignoring"; return 1; }
  echo "$s"
}

# build_rootfs makes $out/rootfs: a copy of a seed tree, else debootstrap.
build_rootfs() {
  local root=$out/rootfs
  [ -f "$out/rootfs.done" ] && return 0
  [ "$(id -u)" = 0 ] || die "needs root (debootstrap/chroot)"
  unmount_under "$root"
  rm -rf "$root"
  local seed
  if seed=$(seed_rootfs); then
    log "copying seed rootfs $seed"
    cp -a "$seed" "$root"
  else
    debootstrap_rootfs "$root"
  fi

  # systemd-boot's EFI binary (a seed may lack it). apt in the chroot
  # works without /proc for a package with no maintainer scripts.
  if [ ! -f "$root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ]; then
    log "installing systemd-boot-efi in the rootfs"
    cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
    chroot "$root" apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq \
      --no-install-recommends systemd-boot-efi >/dev/null
  fi
  [ -f "$root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ] || die "no systemd-bootx64.efi in rootfs"
  configure_rootfs "$root"
  chroot "$root" apt-get clean >/dev/null 2>&1 || true
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
  touch "$out/rootfs.done"
  log "rootfs: $(du -sh --apparent-size "$root" | cut -f1)"
}

# debootstrap_rootfs debootstraps in two stages so that dpkg, which
# unpacks every package in the second stage, already sees the slimming
# config (path excludes, unsafe-io) and the initramfs config.
debootstrap_rootfs() {
  local root=$1 m t0=$SECONDS
  m=$(debian_mirror "${VM_MIRROR:-}")
  mkdir -p "$root"
  log "debootstrap $suite from $m (a few minutes; log: $out/debootstrap.log)"
  local IFS=,
  debootstrap --foreign --variant=minbase --include="${packages[*]}" \
    "$suite" "$root" "$m" >"$out/debootstrap.log" 2>&1 ||
    { tail -n 30 "$out/debootstrap.log" >&2; die "debootstrap (first stage) failed (log: $out/debootstrap.log)"; }
  unset IFS
  log "first stage (download, extract): $((SECONDS - t0))s"

  mkdir -p "$root/etc/dpkg/dpkg.cfg.d" "$root/etc/initramfs-tools/conf.d" \
    "$root/usr/share/initramfs-tools/modules.d"
  local k
  {
    echo '# bty test VM: no docs, no locales, no kernel modules a VM never loads'
    for k in /usr/share/doc /usr/share/man /usr/share/info /usr/share/locale \
             /usr/share/lintian /usr/share/linda; do
      echo "path-exclude=$k/*"
    done
    echo 'path-include=/usr/share/doc/*/copyright'
    echo 'path-include=/usr/share/locale/locale.alias'
    for k in sound drivers/gpu drivers/media drivers/net/wireless \
             drivers/infiniband drivers/staging drivers/iio drivers/comedi \
             drivers/bluetooth drivers/isdn drivers/hwmon drivers/mtd \
             drivers/thunderbolt drivers/fpga net/wireless net/mac80211 \
             net/bluetooth; do
      echo "path-exclude=/lib/modules/*/kernel/$k/*"
      echo "path-exclude=/usr/lib/modules/*/kernel/$k/*"
    done
  } >"$root/etc/dpkg/dpkg.cfg.d/90-bty-slim"
  # No fsync per file while building (removed once the rootfs is done).
  echo force-unsafe-io >"$root/etc/dpkg/dpkg.cfg.d/91-bty-build-unsafe-io"
  # A small initrd: the disk controllers QEMU offers, and ext4.
  echo MODULES=list >"$root/etc/initramfs-tools/conf.d/90-bty-vm"
  printf '%s\n' virtio_pci virtio_blk virtio_scsi sd_mod ahci nvme ext4 \
    >"$root/usr/share/initramfs-tools/modules.d/bty-vm"

  trap 'unmount_under "$out/rootfs"' EXIT
  chroot "$root" /debootstrap/debootstrap --second-stage >>"$out/debootstrap.log" 2>&1 ||
    { unmount_under "$root"; tail -n 30 "$out/debootstrap.log" >&2; die "debootstrap (second stage) failed (log: $out/debootstrap.log)"; }
  unmount_under "$root"
  trap - EXIT
  rm -f "$root/etc/dpkg/dpkg.cfg.d/91-bty-build-unsafe-io"
  log "second stage (install): $((SECONDS - t0))s in all"
}

configure_rootfs() {
  local root=$1
  echo "$HOSTNAME_" >"$root/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$HOSTNAME_" >"$root/etc/hosts"
  cat >"$root/etc/fstab" <<EOF
PARTUUID=$ROOT_PARTUUID / ext4 defaults,errors=remount-ro 0 1
PARTUUID=$ESP_PARTUUID /boot/efi vfat umask=0077,nofail 0 2
EOF
  mkdir -p "$root/boot/efi"
  # A fresh machine-id on first boot; no leftovers from the build host.
  : >"$root/etc/machine-id"
  rm -f "$root/var/lib/dbus/machine-id"
  echo 'nameserver 10.0.2.3' >"$root/etc/resolv.conf"
  chroot "$root" passwd -d root >/dev/null
  # Let a virtio NIC come up by DHCP if present (cloud-init may also do it).
  mkdir -p "$root/etc/network/interfaces.d"
  cat >"$root/etc/network/interfaces.d/bty" <<'EOF'
allow-hotplug enp0s2 ens2 ens3 eth0
iface enp0s2 inet dhcp
iface ens2 inet dhcp
iface ens3 inet dhcp
iface eth0 inet dhcp
EOF

  echo LANG=C.UTF-8 >"$root/etc/default/locale"
  mkdir -p "$root/etc/cloud/cloud.cfg.d"
  cat >"$root/etc/cloud/cloud.cfg.d/90-bty-datasource.cfg" <<'EOF'
# bty: a NoCloud seed (e.g. /var/lib/cloud/seed/nocloud-net/) is used when
# present; otherwise cloud-init falls back to None.
datasource_list: [ NoCloud, None ]
# The image generates no locales (cc_locale would fail on en_US.UTF-8);
# C.UTF-8 is built into glibc and matches /etc/default/locale: a no-op.
locale: C.UTF-8
EOF

  # Type=simple so it does not hold up boot ($$ is a literal $ for systemd): it waits for the boot to
  # finish (cloud-init's final stage included), then prints the marker.
  cat >"$root/etc/systemd/system/bty-booted.service" <<'EOF'
[Unit]
Description=Print the bty boot marker on the serial console

[Service]
Type=simple
ExecStart=/bin/sh -c 'st=$$(systemctl is-system-running --wait 2>/dev/null); f=$$(systemctl list-units --state=failed --no-legend --plain 2>/dev/null | cut -d" " -f1 | paste -sd, -); echo "BTY-BOOTED hostname=$$(hostname) state=$$st$${f:+ failed=$$f}" >/dev/ttyS0'

[Install]
WantedBy=multi-user.target
EOF
  mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
  ln -sf /etc/systemd/system/bty-booted.service \
    "$root/etc/systemd/system/multi-user.target.wants/bty-booted.service"
  ln -sf /lib/systemd/system/multi-user.target "$root/etc/systemd/system/default.target"
}

build_disk() {
  local root=$out/rootfs esp=$out/esp.part rootimg=$out/root.part disk=$out/disk.img
  rm -f "$disk" "$disk.sha256" "$disk.tmp" "$esp" "$rootimg"
  trap 'rm -f "$out/disk.img.tmp" "$out/esp.part" "$out/root.part"' EXIT

  log "ESP (${esp_size} MiB FAT32, systemd-boot)"
  truncate -s "${esp_size}M" "$esp"
  mkfs.vfat -F 32 -n ESP "$esp" >/dev/null
  local kernel initrd
  kernel=$(readlink -f "$root/vmlinuz"); initrd=$(readlink -f "$root/initrd.img")
  [ -f "$kernel" ] && [ -f "$initrd" ] || die "no kernel/initrd in rootfs"
  local tmp; tmp=$(mktemp -d)
  printf 'default bty.conf\ntimeout 0\nconsole-mode keep\n' >"$tmp/loader.conf"
  cat >"$tmp/bty.conf" <<EOF
title   Debian bookworm (bty test VM)
linux   /vmlinuz
initrd  /initrd.img
options root=PARTUUID=$ROOT_PARTUUID rw console=tty0 console=ttyS0,115200 panic=5
EOF
  export MTOOLS_SKIP_CHECK=1
  mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries
  mcopy -i "$esp" "$root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
  mcopy -i "$esp" "$tmp/loader.conf" ::/loader/loader.conf
  mcopy -i "$esp" "$tmp/bty.conf" ::/loader/entries/bty.conf
  mcopy -i "$esp" "$kernel" ::/vmlinuz
  mcopy -i "$esp" "$initrd" ::/initrd.img
  rm -rf "$tmp"

  log "root (${root_size} MiB ext4 from rootfs; a minute)"
  truncate -s "${root_size}M" "$rootimg"
  mkfs.ext4 -q -F -L root -d "$root" "$rootimg"

  log "disk (${disk_mib} MiB GPT, sparse)"
  truncate -s "${disk_mib}M" "$disk.tmp"
  sgdisk -Z -U "$DISK_GUID" \
    -n "1:${esp_start}M:+${esp_size}M" -t 1:ef00 -c 1:ESP -u "1:$ESP_PARTUUID" \
    -n "2:${root_start}M:+${root_size}M" -t 2:8304 -c 2:root -u "2:$ROOT_PARTUUID" \
    "$disk.tmp" >/dev/null
  dd if="$esp" of="$disk.tmp" bs=1M seek="$esp_start" conv=notrunc,sparse status=none
  dd if="$rootimg" of="$disk.tmp" bs=1M seek="$root_start" conv=notrunc,sparse status=none
  rm -f "$esp" "$rootimg"
  sha256sum "$disk.tmp" | cut -d' ' -f1 >"$disk.sha256"
  sync -f "$disk.tmp"
  mv "$disk.tmp" "$disk"
  trap - EXIT
  log "disk.img: $(du -h --apparent-size "$disk" | cut -f1) virtual, $(du -h "$disk" | cut -f1) allocated"
}

main() {
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  exec 9>"$out/.lock"
  flock -n 9 || { log "waiting for another vm-image.sh run on $out"; flock 9; }
  local recipe
  recipe=$(cat "$repo/scripts/vm-image.sh" "$repo/scripts/lib.sh" | sha256sum | cut -d' ' -f1)
  recipe+=" seed=${VM_SEED_ROOTFS:-none}"
  if [ "$(cat "$out/recipe" 2>/dev/null)" != "$recipe" ]; then
    [ -e "$out/rootfs.done" ] || [ -e "$out/disk.img" ] && log "recipe changed: rebuilding $out"
    rm -f "$out/rootfs.done" "$out/disk.img" "$out/disk.img.sha256"
  fi
  if [ -f "$out/disk.img" ] && [ -f "$out/disk.img.sha256" ]; then
    log "cached: $out/disk.img"
  else
    local t0=$SECONDS
    ensure_tools
    build_rootfs
    # The recipe is recorded once the rootfs it describes is complete.
    echo "$recipe" >"$out/recipe"
    build_disk
    log "built in $((SECONDS - t0))s"
  fi
  echo "$out/disk.img"
}

main "$@"
