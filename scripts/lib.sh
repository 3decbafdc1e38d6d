# shellcheck shell=bash
# Shell helpers shared by the bench and image scripts (bench.sh,
# bench-delta.sh, bench-image.sh, vm-image.sh).
# Source it; it defines functions only.

# debian_mirror prints the Debian mirror to debootstrap from: $1 if set,
# else the first plain Debian URI apt is configured with.
debian_mirror() {
  if [ -n "${1:-}" ]; then echo "$1"; return; fi
  local m
  m=$(grep -hoE '(URIs:|^deb) +https?://[^ ]+/debian/?( |$)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
        /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '{print $2}' | head -n1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

# unmount_under undoes any mount left below a directory (debootstrap may
# leave proc/sys mounted when it fails).
unmount_under() {
  local root=$1 m
  [ -d "$root" ] || return 0
  for m in $(awk -v r="$root" 'index($2, r"/") == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}

# drop_caches makes a timed run start cold, so runs are comparable.
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# fill_garbage DEV_OR_FILE BYTES writes a repeated random 64 MiB block over
# the first BYTES of the target (BYTES a multiple of 4 MiB); the block is
# kept in $run_dir/garbage.bin (the caller's run directory).
fill_garbage() {
  # shellcheck disable=SC2154 # run_dir is the caller's
  local dst=$1 bytes=$2 blk=$run_dir/garbage.bin step=$((64 << 20)) off
  [ -f "$blk" ] || head -c $step /dev/urandom >"$blk"
  for ((off = 0; off < bytes; off += step)); do
    dd if="$blk" of="$dst" bs=4M seek=$((off >> 22)) \
       count=$(((bytes - off < step ? bytes - off : step) >> 22)) \
       conv=notrunc status=none
  done
  sync "$dst"
}
