#!/usr/bin/env bash
# Installs the Debian packages bty's tests (or benchmarks) use, only when a
# tool is missing. Usage: scripts/install-deps.sh test|bench
set -euo pipefail
what=${1:-test}

# tool -> package
declare -A pkg=(
  [qemu-img]=qemu-utils [zstd]=zstd [gzip]=gzip [xz]=xz-utils [bzip2]=bzip2
  [sgdisk]=gdisk [sfdisk]=fdisk [mkfs.ext4]=e2fsprogs [losetup]=mount
  [blockdev]=util-linux [setpriv]=util-linux [sha256sum]=coreutils
  [mkfs.btrfs]=btrfs-progs
)
if [ "$what" = bench ]; then
  pkg+=([bmaptool]=bmap-tools [debootstrap]=debootstrap
        [/usr/bin/time]=time)
fi

missing=()
for tool in "${!pkg[@]}"; do
  if [[ $tool == /* ]]; then [ -x "$tool" ] && continue
  else command -v "$tool" >/dev/null 2>&1 && continue; fi
  missing+=("${pkg[$tool]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "missing packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
mapfile -t uniq < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "installing: ${uniq[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${uniq[@]}" >/dev/null
