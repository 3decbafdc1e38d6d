# Shell helpers shared by scripts/bench-image.sh and scripts/vm-image.sh.
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
