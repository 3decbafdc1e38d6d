#!/usr/bin/env bash
# Installs the Debian packages bty's tests (or benchmarks, or the VM test)
# use, only when a tool is missing. Usage: scripts/install-deps.sh test|bench|vm
#   vm: the test tools plus what scripts/vm-image.sh and scripts/vm-boot.sh
#       need (debootstrap, mtools, dosfstools, QEMU, OVMF) and exfat-fuse
#       (the USB test puts an image on the stick's exFAT partition).
#   media: what bty-media needs (the test tools cover it).
set -euo pipefail
what=${1:-test}

# tool -> package
declare -A pkg=(
  [qemu-img]=qemu-utils [zstd]=zstd [gzip]=gzip [xz]=xz-utils [bzip2]=bzip2
  [sgdisk]=gdisk [sfdisk]=fdisk [mkfs.ext4]=e2fsprogs [losetup]=mount
  [blockdev]=util-linux [setpriv]=util-linux [sha256sum]=coreutils
  [mkfs.btrfs]=btrfs-progs [mkfs.xfs]=xfsprogs [mkfs.vfat]=dosfstools
  [cryptsetup]=cryptsetup-bin [pvcreate]=lvm2 [blkid]=util-linux
  [debugfs]=e2fsprogs [mkswap]=util-linux
  [curl]=curl [ip]=iproute2 [dnsmasq]=dnsmasq-base [/usr/lib/ipxe/ipxe.efi]=ipxe
  [chromium]=chromium [tmux]=tmux
  [mkfs.exfat]=exfatprogs [mcopy]=mtools [cpio]=cpio [ipmi_sim]=openipmi
  [/usr/sbin/sshd]=openssh-server [ssh]=openssh-client
)
case $what in
  test|media) ;;
  bench)
    pkg+=([bmaptool]=bmap-tools [debootstrap]=debootstrap
          [/usr/bin/time]=time [tc]=iproute2 [jq]=jq [python3]=python3
          [partx]=util-linux [mountpoint]=util-linux) ;;
  bench-web)
    pkg+=([wrk]=wrk [nginx]=nginx [curl]=curl) ;;
  vm)
    pkg+=([debootstrap]=debootstrap [mcopy]=mtools [mkfs.vfat]=dosfstools
          [mkfs.exfat]=exfatprogs [mount.exfat-fuse]=exfat-fuse
          [qemu-system-x86_64]=qemu-system-x86 [/usr/share/OVMF/OVMF_CODE_4M.fd]=ovmf
          [mountpoint]=util-linux [flock]=util-linux) ;;
  *) echo "usage: $0 test|media|bench|bench-web|vm" >&2; exit 2 ;;
esac

missing=()
for tool in "${!pkg[@]}"; do
  if [[ $tool == /* ]]; then [ -e "$tool" ] && continue
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
