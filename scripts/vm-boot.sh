#!/usr/bin/env bash
# Boots a raw disk image in QEMU (UEFI, OVMF) and waits for the boot marker
# that images from scripts/vm-image.sh print on the serial console:
#   BTY-BOOTED hostname=<hostname> ...
#
# Usage: scripts/vm-boot.sh DISK [TIMEOUT_S]
#   TIMEOUT_S defaults to 600 (a Debian boot under TCG takes ~4 minutes).
#
# Exit 0 and print the marker line when it appears (and every VM_EXPECT
# pattern has appeared too); exit 1 with the tail of the serial log on
# timeout or when QEMU exits first. QEMU is always killed on exit.
#
# Env: VM_ACCEL (default tcg,thread=single: multi-threaded TCG livelocked
#      a Debian boot here, see accel() in e2e/lab_test.go; e.g. kvm on
#      real hosts), VM_CPU (default max: every CPU feature TCG has, so
#      the guest's hashing and decoding use SHA-NI/AVX2 as on hardware),
#      VM_MEM (MiB, default 1536), VM_SNAPSHOT (default 1: guest writes go to a
#      temporary overlay and DISK is not modified; 0 writes to DISK),
#      VM_LOG (serial log path; default a temp file, removed on success),
#      VM_MARKER (default BTY-BOOTED),
#      VM_EXPECT (extended regexes, one per line, that must also appear in
#      the serial log, in any order; after the marker they get
#      VM_EXPECT_GRACE seconds more, default 60; the first line matching
#      each is printed after the marker line).
set -euo pipefail

log() { printf '[vm-boot] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: $0 DISK [TIMEOUT_S]" >&2; exit 2; }
disk=$1
timeout_s=${2:-600}
[ -f "$disk" ] || [ -b "$disk" ] || die "no such disk: $disk"
accel=${VM_ACCEL:-tcg,thread=single}
cpu=${VM_CPU:-max}
mem=${VM_MEM:-1536}
marker=${VM_MARKER:-BTY-BOOTED}
grace=${VM_EXPECT_GRACE:-60}
expects=()
while IFS= read -r re; do [ -n "$re" ] && expects+=("$re"); done <<<"${VM_EXPECT:-}"

ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.fd
ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.fd
if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || [ ! -f "$ovmf_code" ]; then
  [ "$(id -u)" = 0 ] || die "install qemu-system-x86 and ovmf"
  log "installing qemu-system-x86 ovmf"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    qemu-system-x86 ovmf >/dev/null
fi

tmp=$(mktemp -d)
serial=${VM_LOG:-$tmp/serial.log}
: >"$serial"
qpid=
cleanup() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
    kill "$qpid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$qpid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp "$ovmf_vars" "$tmp/OVMF_VARS.fd"
snap=on
[ "${VM_SNAPSHOT:-1}" = 0 ] && snap=off

log "booting $disk (accel=$accel, mem=${mem}M, timeout ${timeout_s}s, serial log $serial)"
qemu-system-x86_64 \
  -machine q35 -accel "$accel" -cpu "$cpu" -m "$mem" -smp 2 \
  -drive if=pflash,format=raw,unit=0,readonly=on,file="$ovmf_code" \
  -drive if=pflash,format=raw,unit=1,file="$tmp/OVMF_VARS.fd" \
  -drive file="$disk",format=raw,if=virtio,snapshot="$snap" \
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile= \
  -display none -monitor none -serial file:"$serial" \
  -no-reboot </dev/null >"$tmp/qemu.out" 2>&1 &
qpid=$!

# snapshot copies the serial log without carriage returns to $clean, for
# grep to read as a file: grep -q/-m1 at the end of a pipe would end the
# writer with SIGPIPE, which pipefail and set -e turn into exit 141.
clean=$tmp/serial.clean
snapshot() { tr -d '\r' <"$serial" >"$clean"; }

# missing_expect prints the first VM_EXPECT pattern not yet in the
# snapshot.
missing_expect() {
  local re
  for re in ${expects[@]+"${expects[@]}"}; do
    grep -aqE -- "$re" "$clean" || { echo "$re"; return 0; }
  done
  return 1
}

start=$SECONDS
marked=
while :; do
  snapshot
  if [ -z "$marked" ]; then
    line=$(grep -a -m1 "^$marker" "$clean" || true)
    if [ -n "$line" ]; then
      marked=$SECONDS
      log "marker after $((SECONDS - start))s"
    fi
  fi
  if [ -n "$marked" ]; then
    if ! missing=$(missing_expect); then
      echo "$line"
      for re in ${expects[@]+"${expects[@]}"}; do
        grep -a -m1 -E -- "$re" "$clean"
      done
      exit 0
    fi
    if [ $((SECONDS - marked)) -ge "$grace" ]; then
      log "marker seen but not /$missing/ within ${grace}s more; serial log tail:"
      tail -n 40 "$serial" | tr -d '\r' >&2
      exit 1
    fi
  fi
  if ! kill -0 "$qpid" 2>/dev/null; then
    log "QEMU exited before the marker ($((SECONDS - start))s):"
    cat "$tmp/qemu.out" >&2 || true
    tail -n 40 "$serial" | tr -d '\r' >&2
    exit 1
  fi
  if [ $((SECONDS - start)) -ge "$timeout_s" ]; then
    log "timeout after ${timeout_s}s; serial log tail:"
    tail -n 40 "$serial" | tr -d '\r' >&2
    exit 1
  fi
  sleep 2
done
