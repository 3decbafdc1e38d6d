#!/usr/bin/env bash
# Builds (once) the realistic sparse test image the flash benchmark uses,
# and derives every input format from it:
#
#   disk.img          raw GPT disk, ~3 GiB virtual, ~1 GiB of data (sparse)
#   disk.img.zst      zstd -T0 -3
#   disk.img.gz       pigz (or gzip)
#   disk.img.xz       xz -T2 (multi-block)
#   disk.qcow2        qemu-img convert -O qcow2
#   disk.bmap         bmaptool create
#   disk.img.sha256   sha256 of disk.img (the hash alone)
#
# Disk layout: GPT; p1 a 64 MiB FAT ESP (kernel, initrd, a GRUB EFI
# binary); p2 an ext4 root made with `mkfs.ext4 -d` from a Debian bookworm
# debootstrap (kernel, systemd, cloud-init, openssh, build tools). Nothing
# is mounted: each filesystem is built as a separate file and copied into
# the sparse disk file at its partition offset.
#
# Everything lives under $BTY_CACHE/bench-image (default: <repo>/.cache,
# git-ignored). A step runs only when its output is missing; rebuilding
# disk.img drops the derived files. Delete the directory to start over.
#
# Env: BTY_CACHE, BENCH_MIRROR (Debian mirror for debootstrap),
#      BENCH_DISK_SIZE (default 3G), BENCH_SUITE (default bookworm).
# Prints the directory path on the last line of stdout.
set -euo pipefail

repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
# shellcheck source=lib.sh
. "$repo/scripts/lib.sh"
cache=${BTY_CACHE:-$repo/.cache}
dir=$cache/bench-image
suite=${BENCH_SUITE:-bookworm}
disk_size=${BENCH_DISK_SIZE:-3G}

# Partition geometry, in MiB.
esp_start=1
esp_size=64
root_start=$((esp_start + esp_size))

# Packages on top of minbase: a real bootable-ish cloud OS, ~0.8-1 GiB.
packages=(
  systemd-sysv udev dbus linux-image-amd64 initramfs-tools
  grub-efi-amd64-bin cloud-init python3-cffi-backend openssh-server sudo
  iproute2 ifupdown isc-dhcp-client netbase ca-certificates curl
  less vim-tiny locales python3 build-essential
)

log() { printf '[bench-image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ensure_tools installs (as root, via apt) the tools this script needs
# that scripts/install-deps.sh does not cover, e.g. mkfs.vfat and mtools.
ensure_tools() {
  declare -A pkg=(
    [debootstrap]=debootstrap [sgdisk]=gdisk [mkfs.ext4]=e2fsprogs
    [mkfs.vfat]=dosfstools [mcopy]=mtools [zstd]=zstd [xz]=xz-utils
    [pigz]=pigz [qemu-img]=qemu-utils [bmaptool]=bmap-tools
  )
  local tool missing=()
  for tool in "${!pkg[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${pkg[$tool]}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing packages: ${missing[*]}"
  log "installing: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null; }
}

# build_rootfs debootstraps the root filesystem tree into $dir/rootfs.
build_rootfs() {
  local root=$dir/rootfs
  [ -f "$dir/rootfs.done" ] && return 0
  [ "$(id -u)" = 0 ] || die "debootstrap needs root"
  command -v debootstrap >/dev/null || die "debootstrap missing (scripts/install-deps.sh bench)"
  rm -rf "$root"
  mkdir -p "$root"
  trap 'unmount_under "$dir/rootfs"' EXIT
  local m; m=$(debian_mirror "${BENCH_MIRROR:-}")
  log "debootstrap $suite from $m (minutes)"
  local IFS=,
  debootstrap --variant=minbase --include="${packages[*]}" \
    "$suite" "$root" "$m" >"$dir/debootstrap.log" 2>&1 ||
    { tail -n 30 "$dir/debootstrap.log" >&2; die "debootstrap failed (log: $dir/debootstrap.log)"; }
  unset IFS
  unmount_under "$root"
  trap - EXIT

  # A little identity so the image looks like one a user would flash.
  echo bty-bench >"$root/etc/hostname"
  printf 'LABEL=root / ext4 defaults 0 1\nLABEL=ESP /boot/efi vfat umask=0077 0 1\n' >"$root/etc/fstab"
  mkdir -p "$root/boot/efi"
  chroot "$root" apt-get clean >/dev/null 2>&1 || true
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
  touch "$dir/rootfs.done"
  log "rootfs: $(du -sh --apparent-size "$root" | cut -f1)"
}

# build_esp makes a FAT ESP file holding a GRUB EFI binary, kernel, initrd.
build_esp() {
  local out=$1 root=$dir/rootfs
  rm -f "$out"
  truncate -s "${esp_size}M" "$out"
  mkfs.vfat -F 32 -n ESP "$out" >/dev/null
  export MTOOLS_SKIP_CHECK=1
  mmd -i "$out" ::/EFI ::/EFI/BOOT ::/EFI/debian
  # A real GRUB EFI binary when grub-mkimage works in the chroot.
  if chroot "$root" grub-mkimage -O x86_64-efi -o /tmp/BOOTX64.EFI \
       -p /EFI/debian part_gpt fat ext2 normal linux configfile search \
       search_label echo >/dev/null 2>&1; then
    mcopy -i "$out" "$root/tmp/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
    rm -f "$root/tmp/BOOTX64.EFI"
  fi
  local k i
  k=$(ls "$root"/boot/vmlinuz-* 2>/dev/null | head -n1 || true)
  i=$(ls "$root"/boot/initrd.img-* 2>/dev/null | head -n1 || true)
  [ -n "$k" ] && mcopy -i "$out" "$k" ::/EFI/debian/vmlinuz
  [ -n "$i" ] && mcopy -i "$out" "$i" ::/EFI/debian/initrd.img
  printf 'search --label root --set root\nlinux /vmlinuz root=LABEL=root ro console=ttyS0\ninitrd /initrd.img\nboot\n' |
    mcopy -i "$out" - ::/EFI/debian/grub.cfg
}

# build_disk assembles the sparse GPT disk.img from the rootfs.
build_disk() {
  [ -f "$dir/disk.img" ] && return 0
  build_rootfs
  local tmp=$dir/disk.img.tmp
  rm -f "$tmp" "$dir"/esp.fs "$dir"/root.fs
  # Derived files belong to the old image.
  rm -f "$dir"/disk.img.{zst,gz,xz,sha256} "$dir"/disk.{qcow2,bmap}

  truncate -s "$disk_size" "$tmp"
  sgdisk --clear \
    --new=1:${esp_start}M:+${esp_size}M --typecode=1:EF00 --change-name=1:ESP \
    --new=2:${root_start}M:0 --typecode=2:8304 --change-name=2:root \
    "$tmp" >/dev/null
  # Root partition extent, in 512-byte sectors, as sgdisk laid it out.
  local first last
  read -r first last < <(sgdisk -i 2 "$tmp" |
    awk '/First sector/{f=$3} /Last sector/{l=$3} END{print f, l}')
  local root_bytes=$(((last - first + 1) * 512))

  log "ESP ($esp_size MiB FAT32)"
  build_esp "$dir/esp.fs"
  log "root ext4 ($((root_bytes >> 20)) MiB) from rootfs"
  truncate -s "$root_bytes" "$dir/root.fs"
  mkfs.ext4 -q -F -L root -d "$dir/rootfs" "$dir/root.fs"

  # Copy both filesystems in place, keeping the holes holes.
  dd if="$dir/esp.fs" of="$tmp" bs=1M seek=$esp_start conv=notrunc,sparse status=none
  dd if="$dir/root.fs" of="$tmp" bs=1M seek=$((first * 512 / 1048576)) \
    conv=notrunc,sparse status=none
  [ $((first * 512 % 1048576)) = 0 ] || die "root partition not MiB-aligned"
  rm -f "$dir/esp.fs" "$dir/root.fs"
  mv "$tmp" "$dir/disk.img"
}

# derive NAME CMD...: runs CMD (which writes "$out") only when NAME is missing.
derive() {
  local name=$1; shift
  [ -f "$dir/$name" ] && return 0
  log "making $name"
  local out=$dir/$name.tmp
  rm -f "$out"
  "$@" "$out"
  mv "$out" "$dir/$name"
}

mk_zst()   { zstd -q -T0 -3 -c "$dir/disk.img" >"$1"; }
mk_gz()    { if command -v pigz >/dev/null; then pigz -c "$dir/disk.img" >"$1"; else gzip -c "$dir/disk.img" >"$1"; fi; }
mk_xz()    { xz -T2 -c "$dir/disk.img" >"$1"; }
mk_qcow2() { qemu-img convert -f raw -O qcow2 "$dir/disk.img" "$1"; }
mk_bmap()  { bmaptool -q create -o "$1" "$dir/disk.img"; }
mk_sha()   { sha256sum "$dir/disk.img" | cut -d' ' -f1 >"$1"; }

# print_sizes shows every file's size; disk.img also its allocated bytes.
print_sizes() {
  local f
  printf '%-16s %14s %10s %12s\n' file bytes MiB allocated_MiB >&2
  for f in disk.img disk.img.zst disk.img.gz disk.img.xz disk.qcow2 disk.bmap; do
    [ -f "$dir/$f" ] || continue
    local b a
    b=$(stat -c %s "$dir/$f")
    a=$(( $(stat -c '%b * %B' "$dir/$f") ))
    printf '%-16s %14d %10d %12d\n' "$f" "$b" $((b >> 20)) $((a >> 20)) >&2
  done
  printf 'sha256(disk.img) %s\n' "$(cat "$dir/disk.img.sha256")" >&2
}

main() {
  mkdir -p "$dir"
  ensure_tools
  build_disk
  derive disk.img.sha256 mk_sha
  derive disk.img.zst mk_zst
  derive disk.img.gz mk_gz
  derive disk.img.xz mk_xz
  derive disk.qcow2 mk_qcow2
  derive disk.bmap mk_bmap
  print_sizes
  echo "$dir"
}

main "$@"
