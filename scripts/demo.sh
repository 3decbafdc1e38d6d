#!/usr/bin/env bash
# bty's main job on any Linux box, no spare disk needed: build a small
# bootable-looking GPT image with an ext4 root, compress it, and flash it
# onto a loop device full of garbage with bty, verified, then prove the
# device holds exactly the image. Needs root (loop devices).
#   make demo            # or: sudo scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: needs root for a loop device: sudo make demo" >&2; exit 3; }
BTY=${BTY:-bin/bty}
work=$(mktemp -d /tmp/bty-demo.XXXXXX)
loop=""
cleanup() { [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

echo "== building a 256 MiB GPT disk image with an ext4 root partition"
mkdir -p "$work/root/etc"
echo "demo image built $(date -u +%FT%TZ)" > "$work/root/etc/bty-demo"
head -c 32M /dev/urandom > "$work/root/payload.bin"
truncate -s 256M "$work/disk.img"
sgdisk -n 1:2048:+32M -t 1:ef00 -c 1:ESP -n 2:0:0 -t 2:8300 -c 2:root "$work/disk.img" >/dev/null
start=$(sgdisk -i 2 "$work/disk.img" | awk '/First sector/ {print $3}')
end=$(sgdisk -i 2 "$work/disk.img" | awk '/Last sector/ {print $3}')
truncate -s $(( (end - start + 1) * 512 )) "$work/root.ext4"
mkfs.ext4 -q -F -d "$work/root" "$work/root.ext4"
dd if="$work/root.ext4" of="$work/disk.img" bs=1M seek=$((start * 512)) oflag=seek_bytes conv=notrunc,sparse status=none
zstd -q -T0 "$work/disk.img" -o "$work/disk.img.zst"
want=$(sha256sum < "$work/disk.img" | cut -d' ' -f1)

echo "== a 512 MiB loop device full of random bytes as the target"
head -c 512M /dev/urandom > "$work/target.raw"
loop=$(losetup -f --show "$work/target.raw")

echo "== bty inspect image / flash --dry-run / flash --yes --verify"
"$BTY" inspect image "$work/disk.img.zst"
"$BTY" flash --image "$work/disk.img.zst" --target "$loop" --dry-run
"$BTY" flash --image "$work/disk.img.zst" --target "$loop" --yes --verify --sha256 "$want"

got=$(head -c "$(stat -c %s "$work/disk.img")" "$loop" | sha256sum | cut -d' ' -f1)
echo "image sha256:  $want"
echo "target sha256: $got (first $(stat -c %s "$work/disk.img") bytes)"
[ "$got" = "$want" ] && echo "demo: bit-identical" || { echo "demo: MISMATCH" >&2; exit 1; }
