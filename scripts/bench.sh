#!/usr/bin/env bash
# Flash benchmark: `bty flash` against the reference tools (dd, zstd|dd,
# gzip|dd, xz|dd, qemu-img, bmaptool) on the image scripts/bench-image.sh
# builds, flashed onto file-backed loop devices. Results are ratios against
# `dd bs=4M conv=fsync` of the raw image in the same run (docs/reference.md,
# "Performance targets"); absolute times on this shared machine mean little.
#
# Two loop devices: REF takes every reference tool, BTY takes every bty
# run. Each is refilled with non-zero garbage (untimed) before every timed
# run, and the last round's bty results are compared with the image byte
# for byte (so skipping a zero range without zeroing it fails).
# Page caches are dropped before every timed run.
#
# Env:
#   BENCH_ROUNDS=3        rounds; each round runs every selected case once
#   BTY=bin/bty           the bty binary (relative to the repo root)
#   BENCH_FORMATS="raw qcow2 zst gz xz bmap zero verify"   subset to run;
#                         the raw dd reference always runs (the denominator)
#   BENCH_DIR=.cache      where the loop backing files go (in a temporary
#                         bench-run.XXXXXX directory, removed on exit)
#   BENCH_SKIP_BTY=1      time the reference tools only
#   BTY_CACHE=.cache      image cache (see scripts/bench-image.sh)
# Needs root. Writes the table to stdout and to $BTY_CACHE/bench-results.md.
set -euo pipefail

repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$repo"
# shellcheck source=lib.sh
. "$repo/scripts/lib.sh"
cache=${BTY_CACHE:-$repo/.cache}
export BTY_CACHE=$cache
rounds=${BENCH_ROUNDS:-3}
bty=${BTY:-bin/bty}
formats=${BENCH_FORMATS:-raw qcow2 zst gz xz bmap zero verify}
bench_dir=${BENCH_DIR:-$cache}
run_dir=""   # a fresh bench-run.XXXXXX under $bench_dir, removed on exit
skip_bty=${BENCH_SKIP_BTY:-0}
results=$cache/bench-results.md

# Targets for bty, × dd in the same run (docs/reference.md, "Performance targets").
declare -A target=([raw]=0.22 [qcow2]=0.22 [zst]=0.35 [gz]=1.0 [xz]=2.5)
rss_limit_mib=150
verify_limit_pct=30

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
has() { [[ " $formats " == *" $1 "* ]]; }

# ---------------------------------------------------------------- setup

loop_ref="" loop_bty=""
cleanup() {
  local l
  for l in "$loop_ref" "$loop_bty"; do
    [ -n "$l" ] && losetup -d "$l" 2>/dev/null || true
  done
  if [ -n "$run_dir" ]; then rm -rf "$run_dir"; fi
}
# On Ctrl-C or TERM, stop the timed command at once (it runs in its own
# process group, see timed), then exit; the EXIT trap cleans up.
child=""
on_signal() {
  log interrupted
  [ -n "$child" ] && kill -TERM -- "-$child" 2>/dev/null || true
  wait 2>/dev/null || true
  exit 130
}
trap cleanup EXIT
trap on_signal INT TERM

# make_loop FILE BYTES: a new loop device on a BYTES-long backing file
# (filled before each run, see one_round).
make_loop() {
  local file=$1 bytes=$2
  truncate -s "$bytes" "$file"
  losetup --find --show "$file"
}

# ---------------------------------------------------------------- timing

# Raw samples: times[case] and rss[case] are space-separated lists.
declare -A times=() rss=() failed=() identical=()

# timed CASE CMD...: drops caches, runs CMD under /usr/bin/time and records
# wall seconds and peak RSS (KiB). A failing command marks CASE failed.
timed() {
  local name=$1; shift
  local tf=$run_dir/time.out lf=$run_dir/$name.log
  drop_caches
  # In the background, in a new process group, so a signal's trap runs
  # without waiting for it and can stop the whole pipeline.
  local rc=0
  setsid /usr/bin/time -f '%e %M' -o "$tf" "$@" >"$lf" 2>&1 &
  child=$!
  wait "$child" || rc=$?
  child=""
  if [ $rc = 0 ]; then
    local e m
    read -r e m <"$tf"
    times[$name]+="$e "
    rss[$name]+="$m "
    log "  $name: ${e}s, $((m >> 10)) MiB"
  else
    failed[$name]=1
    log "  $name: FAILED (exit $rc); log tail:"
    tail -n 5 "$lf" >&2
    tail -n 1 "$tf" >&2 || true
  fi
}

# check CASE DEV: is the first $size bytes of DEV the image, bit for bit?
check() {
  local name=$1 dev=$2 out
  drop_caches
  if [ -n "${failed[$name]:-}" ]; then
    identical[$name]=FAIL
  elif out=$(cmp -n "$size" "$img/disk.img" "$dev" 2>&1); then
    identical[$name]=PASS
  else
    identical[$name]=FAIL
    log "  $name: NOT bit-identical: $out"
  fi
  log "  $name: bit-identical ${identical[$name]}"
}

# ---------------------------------------------------------------- cases

# The reference command for each case, run through bash -c.
ref_cmd() {
  local d=$loop_ref
  case $1 in
    raw)   echo "dd if=$img/disk.img of=$d bs=4M conv=fsync status=none" ;;
    zst)   echo "zstd -dc $img/disk.img.zst | dd of=$d bs=4M conv=fsync status=none" ;;
    gz)    echo "gzip -dc $img/disk.img.gz | dd of=$d bs=4M conv=fsync status=none" ;;
    xz)    echo "xz -dc -T2 $img/disk.img.xz | dd of=$d bs=4M conv=fsync status=none" ;;
    qcow2) echo "qemu-img convert -n -f qcow2 -O raw $img/disk.qcow2 $d && sync $d" ;;
    bmap)  echo "bmaptool -q copy --bmap $img/disk.bmap $img/disk.img $d" ;;
    zero)  echo "dd if=/dev/zero of=$d bs=4M count=$((size >> 22)) oflag=direct conv=fsync status=none" ;;
  esac
}
declare -A ref_name=(
  [raw]="dd bs=4M conv=fsync" [zst]="zstd -dc | dd" [gz]="gzip -dc | dd"
  [xz]="xz -dc -T2 | dd" [qcow2]="qemu-img convert -n" [bmap]="bmaptool copy"
  [zero]="dd /dev/zero oflag=direct" [verify]="(bty raw)"
)
declare -A input=(
  [raw]=disk.img [zst]=disk.img.zst [gz]=disk.img.gz [xz]=disk.img.xz
  [qcow2]=disk.qcow2 [verify]=disk.img
)

# run_bty CASE: one bty flash run onto the bty device.
run_bty() {
  local c=$1 extra=()
  [ "$c" = verify ] && extra=(--verify)
  timed "bty-$c" "$bty" flash --image "$img/${input[$c]}" --target "$loop_bty" \
    --yes --progress none "${extra[@]}"
}

# Every timed run writes over a "used disk": the device it writes is
# refilled with garbage (untimed) right before it. On this host the time to
# write the image depends a lot on what the device held before (seen: 2.7 s
# over the image itself, 7-15 s over garbage), so a reference run and a bty
# run are only comparable from the same starting state. It also makes every
# bty run a correctness test; the last round's are checked byte for byte.
run_order=(raw qcow2 zst gz xz bmap zero verify)

# one_round R: every selected case once; the last round also checks bty.
one_round() {
  local r=$1 c last=0
  [ "$r" = "$rounds" ] && last=1
  log "round $r/$rounds"
  for c in "${run_order[@]}"; do
    [ "$c" = raw ] || has "$c" || continue
    if [ "$c" != verify ]; then
      fill_garbage "$loop_ref" "$size"
      timed "ref-$c" bash -c "$(ref_cmd "$c")"
    fi
    # bty runs: formats it reads, when selected and not skipped.
    if [ -z "${input[$c]:-}" ] || [ "$skip_bty" = 1 ] || ! has "$c"; then
      continue
    fi
    fill_garbage "$loop_bty" "$size"
    run_bty "$c"
    if [ $last = 1 ]; then check "bty-$c" "$loop_bty"; fi
  done
  return 0
}

# ---------------------------------------------------------------- report

# Statistics over a space-separated sample list on stdin ("" when empty).
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{v[NR]=$1} END{if(!NR) exit
  if(NR%2) print v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2]+v[NR/2+1])/2}'; }
maxof()  { tr ' ' '\n' | awk 'NF' | sort -g | tail -n1; }
minof()  { tr ' ' '\n' | awk 'NF' | sort -g | head -n1; }
best()   { [ -n "${failed[$1]:-}" ] && { echo ""; return; }; minof <<<"${times[$1]:-}"; }
div()    { awk -v a="$1" -v b="$2" 'BEGIN{ if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b==0) print "-"; else printf "%.2f", a/b }'; }
le()     { awk -v a="$1" -v b="$2" 'BEGIN{ exit !(a!="-" && a+0 <= b+0) }'; }
med()    { [ -n "${failed[$1]:-}" ] && { echo ""; return; }; median <<<"${times[$1]:-}"; }

report() {
  local dd_t dd_b c rt bt rr br bb tgt mem ok
  dd_t=$(med ref-raw) dd_b=$(best ref-raw)
  echo "## bty flash benchmark"
  echo
  echo "$(date -u '+%F %T UTC'), $(git describe --always --dirty 2>/dev/null), rounds: $rounds," \
       "$(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
  [ "$skip_bty" = 1 ] || echo "bty: $("$bty" --version 2>&1 | head -n1)"
  echo "image: $size bytes virtual, $(( $(stat -c '%b * %B' "$img/disk.img") >> 20 )) MiB allocated;" \
       "dd reference: ${dd_t:-?} s"
  echo
  echo "| format | reference tool | ref median s | bty median s | bty/dd | bty/dd best | ref/dd | target (×dd) | peak RSS MiB | bit-identical |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for c in raw qcow2 zst gz xz bmap zero verify; do
    [ "$c" = raw ] || has "$c" || continue
    if [ "$c" = verify ] && [ "$skip_bty" = 1 ]; then continue; fi
    rt="" bt="" bb="" mem="-" ok="-" tgt="-"
    [ "$c" != verify ] && rt=$(med "ref-$c")
    if [ -n "${input[$c]:-}" ] && [ "$skip_bty" != 1 ] && has "$c"; then
      bt=$(med "bty-$c") bb=$(best "bty-$c")
      [ -n "${failed[bty-$c]:-}" ] && bt=error
      mem=$(maxof <<<"${rss[bty-$c]:-}")
      mem=${mem:+$((mem >> 10))}
      ok=${identical[bty-$c]:-"-"}
    fi
    rr=$(div "$rt" "$dd_t")
    br=$(div "$bt" "$dd_t")
    bb=$(div "$bb" "$dd_b")
    if [ -n "${target[$c]:-}" ]; then
      tgt="≤ ${target[$c]}"
      # Met only when within the ratio and bit-identical.
      if [ "$br" != "-" ]; then
        if le "$br" "${target[$c]}" && [ "$ok" = PASS ]; then tgt+=" ✓"; else tgt+=" ✗"; fi
      fi
    fi
    if [ "$mem" != "-" ] && [ -n "$mem" ]; then
      if [ "$mem" -le $rss_limit_mib ]; then mem+=" ✓"; else mem+=" ✗"; fi
    fi
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
      "$c" "${ref_name[$c]//|/\\|}" "${rt:--}" "${bt:--}" "$br" "$bb" "$rr" "$tgt" "${mem:--}" "$ok"
  done
  echo
  local v r
  v=$(med bty-verify) r=$(med bty-raw)
  if has verify && has raw && [ -n "$v" ] && [ -n "$r" ]; then
    local pct
    pct=$(awk -v v="$v" -v r="$r" 'BEGIN{printf "%.0f", (v-r)/r*100}')
    echo "- \`--verify\` overhead: ${pct} % over bty raw (target ≤ ${verify_limit_pct} %)" \
         "$( [ "$pct" -le $verify_limit_pct ] && echo ✓ || echo ✗ )"
  fi
  if has zero; then
    echo "- device write limit (whole image of zeros, O_DIRECT): $(div "$(med ref-zero)" "$dd_t") × dd"
  fi
  echo "- bty/dd best: fastest bty run over fastest dd run (least disturbed by other load);" \
       "dd samples: $(minof <<<"${times[ref-raw]:-}")..$(maxof <<<"${times[ref-raw]:-}") s"
  echo "- peak RSS target: ≤ ${rss_limit_mib} MiB; samples per case: $rounds"
  # Every sample, to judge the noise behind the medians.
  echo
  echo "samples (s):"
  local k
  for k in $(printf '%s\n' "${!times[@]}" | sort); do
    echo "- $k: ${times[$k]}"
  done
}

# ---------------------------------------------------------------- main

main() {
  [ "$(id -u)" = 0 ] || die "needs root (loop devices, drop_caches)"
  [ -x /usr/bin/time ] || die "/usr/bin/time missing (apt-get install time)"
  if [ "$skip_bty" != 1 ]; then
    [ -x "$bty" ] || die "$bty missing: run make build (or BENCH_SKIP_BTY=1)"
    "$bty" flash --help >/dev/null 2>&1 || die "$bty flash does not work yet (BENCH_SKIP_BTY=1 to skip it)"
  fi

  img=$("$repo/scripts/bench-image.sh" | tail -n1)
  size=$(stat -c %s "$img/disk.img")
  [ $((size % (4 << 20))) = 0 ] || die "image size $size is not a multiple of 4 MiB"

  mkdir -p "$bench_dir"
  run_dir=$(mktemp -d "$bench_dir/bench-run.XXXXXX")
  log "two ${size}-byte loop backing files in $run_dir"
  loop_ref=$(make_loop "$run_dir/ref.loop" "$size")
  loop_bty=$(make_loop "$run_dir/bty.loop" "$size")
  log "reference device $loop_ref, bty device $loop_bty"

  local r
  for ((r = 1; r <= rounds; r++)); do one_round "$r"; done

  report | tee "$results"
  log "results written to $results"
}

main "$@"
