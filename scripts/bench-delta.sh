#!/usr/bin/env bash
# Delta flash benchmark: a full flash against delta flashes of the bench
# image (scripts/bench-image.sh, ~3 GiB virtual, ~1 GiB of data) served
# over HTTP by bty-web, on a link shaped to BENCH_DELTA_RATE (1 Gbit/s) so
# the network, not loopback, is the limit.
#
#   network  a network namespace with a veth pair to the root namespace
#            (10.250.77.0/30, addresses this script creates and removes),
#            both ends shaped with tc tbf; bty-web runs in the namespace
#            and serves the image and its chunk store (GET /images/NAME,
#            GET /images/NAME/chunks once GET /images says it is ready).
#   target   a loop device on a file-backed device of the image's size; bty
#            runs in the root namespace. Page caches are dropped before
#            every timed run.
#   cases    full   the full flash (the baseline), over garbage;
#            same   a delta flash of the target right after the full flash
#            garbage  a delta flash onto garbage: every chunk fetched and
#                   decoded in parallel (the chunked form of a full flash)
#                   (nothing differs);
#            X %    for X in BENCH_DELTA_CHANGES (1 5 25): the flashed root
#                   filesystem is mounted and X % of the image's data bytes
#                   (its non-zero 1 MiB chunks) are changed as a CI job
#                   would: half of it as new files of random bytes, half by
#                   overwriting existing files (the largest under /usr,
#                   in place); then a delta flash.
#            After every flash the device must read back bit-identical to
#            the image (sha256 of its first IMAGE_SIZE bytes).
#   read     the device's read time of the image's data chunks (O_DIRECT,
#            8 MiB reads, one at a time, what dd bs=8M iflag=direct does),
#            and of the whole image with dd, after dropping caches: what
#            a delta flash of an unchanged target is compared with.
#
# Goals (the issue): at 5 % changed, <= 0.15x the full flash's wall time
# and <= 10 % of its bytes fetched; the unchanged target's delta flash <=
# the data read time + 10 %. A miss is reported, not an error.
#
# Env:
#   BENCH_ROUNDS=1              rounds (every case once per round; medians)
#   BENCH_DELTA_CHANGES="1 5 25" percentages of the data to change
#   BENCH_DELTA_RATE=1gbit      tc tbf rate of both veth ends
#   BENCH_DELTA_STORE=web       web: bty-web's own store (GET
#                               /images/NAME/chunks); local: bty index
#                               builds NAME.btyc into the image root and
#                               the flashes pass --chunks (for a bty-web
#                               without chunk stores)
#   BTY=bin/bty BTY_WEB=bin/bty-web   the binaries (relative to the repo)
#   BENCH_DIR=$BTY_CACHE        where the loop backing file and the server's
#                               directories go (a bench-delta.XXXXXX
#                               directory, removed on exit)
#   BTY_CACHE=.cache            image cache (see scripts/bench-image.sh)
# Needs root. Writes the table to stdout and $BTY_CACHE/bench-delta-results.md.
set -euo pipefail

repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$repo"
# shellcheck source=lib.sh
. "$repo/scripts/lib.sh"
cache=${BTY_CACHE:-$repo/.cache}
export BTY_CACHE=$cache
rounds=${BENCH_ROUNDS:-1}
changes=${BENCH_DELTA_CHANGES:-1 5 25}
rate=${BENCH_DELTA_RATE:-1gbit}
store_mode=${BENCH_DELTA_STORE:-web}
bty=${BTY:-bin/bty}
bty_web=${BTY_WEB:-bin/bty-web}
bench_dir=${BENCH_DIR:-$cache}
results=$cache/bench-delta-results.md

# Goals (the issue).
goal_time=0.15 goal_fetched=0.10 goal_same=1.10 goal_pct=5

# The link: names carry the PID so a stale run's never collide.
ns=bty-bench-$$
veth_host=btyd$$h veth_srv=btyd$$s
net=10.250.77
addr_host=$net.1 addr_srv=$net.2
port=8080
image_name=disk.img.zst
chunk=$((1 << 20))

log() { printf '[bench-delta] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- cleanup

run_dir="" loop="" part_loop="" mnt="" web_pid="" ns_made=0 child=""
cleanup() {
  set +e
  if [ -n "$mnt" ] && mountpoint -q "$mnt" 2>/dev/null; then umount "$mnt" || umount -l "$mnt"; fi
  [ -n "$part_loop" ] && losetup -d "$part_loop" 2>/dev/null
  [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null
  if [ -n "$web_pid" ]; then kill "$web_pid" 2>/dev/null; wait "$web_pid" 2>/dev/null; fi
  # Deleting the namespace deletes its veth end, and so the pair.
  [ "$ns_made" = 1 ] && ip netns del "$ns" 2>/dev/null
  ip link del "$veth_host" 2>/dev/null
  [ -n "$run_dir" ] && rm -rf "$run_dir"
  return 0
}
on_signal() {
  log interrupted
  # Only the timed bty (its own process group): a bare wait would wait
  # for bty-web too, which cleanup stops.
  if [ -n "$child" ]; then
    kill -TERM -- "-$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  exit 130
}
trap cleanup EXIT
trap on_signal INT TERM

# ---------------------------------------------------------------- helpers

now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a-b}'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b==0) print "-"; else printf "%.3f", a/b }'; }
le()  { awk -v a="$1" -v b="$2" 'BEGIN{ exit !(a!="-" && a!="" && a+0 <= b+0) }'; }
mib() { awk -v b="$1" 'BEGIN{ if (b !~ /^[0-9]+$/) print "-"; else printf "%.1f", b/1048576 }'; }
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{v[NR]=$1} END{if(!NR) exit
  if(NR%2) print v[(NR+1)/2]; else printf "%.3f\n", (v[NR/2]+v[NR/2+1])/2}'; }
rx_bytes() { cat "/sys/class/net/$veth_host/statistics/rx_bytes"; }

# ---------------------------------------------------------------- network and server

setup_net() {
  ip -br addr | grep -q "[[:space:]]$net\." && die "$net.0/30 is already in use on this host"
  ip netns add "$ns"; ns_made=1
  ip link add "$veth_host" type veth peer name "$veth_srv"
  ip link set "$veth_srv" netns "$ns"
  ip addr add "$addr_host/30" dev "$veth_host"
  ip link set "$veth_host" up
  ip -n "$ns" addr add "$addr_srv/30" dev "$veth_srv"
  ip -n "$ns" link set "$veth_srv" up
  ip -n "$ns" link set lo up
  # Both directions: the data (server to host) and the ACKs.
  tc qdisc add dev "$veth_host" root tbf rate "$rate" burst 256kb latency 50ms
  tc -n "$ns" qdisc add dev "$veth_srv" root tbf rate "$rate" burst 256kb latency 50ms
  log "link: $addr_host <-> $addr_srv (namespace $ns), tbf $rate both ways"
}

start_web() {
  local d=$run_dir/web
  mkdir -p "$d/state" "$d/images"
  # A link out of the image root is not served: hard link, else copy.
  ln "$img/$image_name" "$d/images/$image_name" 2>/dev/null ||
    cp "$img/$image_name" "$d/images/$image_name"
  ip netns exec "$ns" env BTY_STATE_DIR="$d/state" BTY_IMAGE_ROOT="$d/images" \
    BTY_WEB_HOST="$addr_srv" BTY_WEB_PORT=$port BTY_TFTP_PORT=0 \
    BTY_ADMIN_PASSWORD="bench-$RANDOM$RANDOM" BTY_LOG_LEVEL=warn \
    "$bty_web" >"$run_dir/web.log" 2>&1 &
  web_pid=$!
  local _
  for _ in $(seq 100); do
    curl -fs "$base/healthz" >/dev/null && break
    kill -0 "$web_pid" 2>/dev/null || break
    sleep 0.1
  done
  curl -fs "$base/healthz" >/dev/null || { cat "$run_dir/web.log" >&2; die "bty-web did not start"; }
  log "bty-web $("$bty_web" --version 2>&1 | head -n1) at $base (pid $web_pid)"
}

# image_entry prints GET /images's entry for the image (JSON).
image_entry() { curl -fs "$base/images" | jq -c --arg n "$image_name" '.[] | select(.name == $n)'; }

# wait_store waits (up to 30 min) until bty-web has hashed the image and,
# in web mode, built its chunk store: nothing runs in the server's
# background while flashes are timed.
wait_store() {
  local e state sum t0=$SECONDS said=""
  while :; do
    e=$(image_entry || true)
    sum=$(jq -r '.decoded_sha256 // empty' <<<"$e")
    state=$(jq -r '.chunks.state // empty' <<<"$e")
    [ -n "$(jq -r '.error // empty' <<<"$e")" ] && die "bty-web cannot serve the image: $e"
    if [ "$store_mode" = web ]; then
      case $state in
        ready) [ -n "$sum" ] && break ;;
        failed) die "bty-web's chunk store build failed: $(jq -r '.chunks.error' <<<"$e")" ;;
        "") if [ -n "$sum" ] && [ $((SECONDS - t0)) -gt 120 ]; then
              die "bty-web hashed the image but reports no chunk store (no \"chunks\" in GET /images): a bty-web without chunk stores? BENCH_DELTA_STORE=local uses bty index instead"
            fi ;;
      esac
    elif [ -n "$sum" ]; then
      break
    fi
    [ $((SECONDS - t0)) -gt 1800 ] && die "bty-web not ready after 30 min: $e"
    if [ "$state" != "$said" ]; then log "waiting for bty-web: chunk store ${state:-not listed yet}"; said=$state; fi
    sleep 2
  done
  [ "$sum" = "$sha" ] || die "bty-web's decoded sha256 $sum is not the image's $sha"
  if [ "$store_mode" = web ]; then
    store_url=$base/images/$image_name/chunks
    log "chunk store ready after $((SECONDS - t0)) s: $(jq -c .chunks <<<"$e")"
    curl -fsI "$store_url" >/dev/null || die "GET $store_url fails though GET /images says ready"
  fi
}

# local_store builds the store with bty index into the image root, where
# bty-web serves it as /images/NAME.btyc.
local_store() {
  local out=$run_dir/web/images/$image_name.btyc
  log "building the chunk store with bty index (BENCH_DELTA_STORE=local)"
  "$bty" index --quiet --output "$out" "$run_dir/web/images/$image_name" >/dev/null
  store_url=$base/images/$image_name.btyc
  curl -fsI "$store_url" >/dev/null || die "bty-web does not serve $store_url"
}

# check_rate downloads 200 MiB of the image and prints the rate: the
# shaping must hold it at about $rate.
check_rate() {
  local bps
  drop_caches
  bps=$(curl -fs -o /dev/null -r 0-$((200 * chunk - 1)) -w '%{speed_download}' "$base/images/$image_name")
  link_mbit=$(awk -v b="$bps" 'BEGIN{printf "%.0f", b*8/1e6}')
  log "link check: 200 MiB at $link_mbit Mbit/s"
  local want
  want=$(awk -v r="$rate" 'BEGIN{ n=r+0; if (r ~ /gbit$/) n*=1000; else if (r ~ /kbit$/) n/=1000; print n }')
  awk -v g="$link_mbit" -v w="$want" 'BEGIN{exit !(g <= w*1.05)}' ||
    die "the link ran at $link_mbit Mbit/s, above $rate: the shaping does not hold"
}

# ---------------------------------------------------------------- the image's data

# scan_data lists the image's non-zero 1 MiB chunks (what a chunk store
# calls data) as "first_chunk count" runs into $run_dir/data.runs.
scan_data() {
  python3 - "$img/disk.img" "$chunk" >"$run_dir/data.runs" <<'EOF'
import os, sys
path, cs = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
zero = bytes(cs)
n = (size + cs - 1) // cs
data = bytearray(n)
off = 0
while off < size:
    try:
        off = os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        break
    end = os.lseek(fd, off, os.SEEK_HOLE)
    i = off // cs
    while i * cs < end:
        b = os.pread(fd, cs, i * cs)
        if b != zero[:len(b)]:
            data[i] = 1
        i += 1
    off = i * cs
i = 0
while i < n:
    if data[i]:
        j = i
        while j + 1 < n and data[j + 1]:
            j += 1
        print(i, j - i + 1)
        i = j + 1
    else:
        i += 1
EOF
  data_chunks=$(awk '{s += $2} END{print s + 0}' "$run_dir/data.runs")
  data_bytes=$((data_chunks * chunk))
}

# read_data DEV reads the data runs with O_DIRECT, 8 MiB at a time.
read_data() {
  python3 - "$1" "$run_dir/data.runs" "$chunk" <<'EOF'
import mmap, os, sys
dev, runs, cs = sys.argv[1], sys.argv[2], int(sys.argv[3])
step = 8 << 20
buf = mmap.mmap(-1, step)
fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
for line in open(runs):
    first, count = map(int, line.split())
    off, left = first * cs, count * cs
    while left > 0:
        k = min(step, left)
        if os.preadv(fd, [memoryview(buf)[:k]], off) != k:
            sys.exit("short read at %d" % off)
        off += k
        left -= k
EOF
}

# ---------------------------------------------------------------- cases

# Per case: space-separated samples.
declare -A wall=() cpu=() fetched=() written=() zeroed=() rx=() equal=() total=() ident=() isdelta=() failed=()

# flash CASE DELTA(0|1): one timed bty flash onto $loop, caches dropped.
flash() {
  local name=$1 delta=$2
  local args=() out=$run_dir/$name.json t0 t1 rx0 rc=0
  args=(flash --image "$base/images/$image_name" --target "$loop" --yes --json
        --progress none --sha256 "$sha")
  if [ "$delta" = 1 ]; then
    args+=(--delta)
    [ "$store_mode" = local ] && args+=(--chunks "$store_url")
  fi
  drop_caches
  rx0=$(rx_bytes)
  t0=$(now)
  setsid /usr/bin/time -f '%U %S' -o "$run_dir/$name.time" \
    "$bty" "${args[@]}" >"$out" 2>"$run_dir/$name.log" &
  child=$!
  wait "$child" || rc=$?
  child=""
  t1=$(now)
  if [ $rc != 0 ] || [ "$(jq -r .ok "$out" 2>/dev/null)" != true ]; then
    failed[$name]=1
    log "  $name: FAILED (exit $rc): $(jq -r '.error // empty' "$out" 2>/dev/null)"
    tail -n 5 "$run_dir/$name.log" >&2
    if ! kill -0 "$web_pid" 2>/dev/null; then
      tail -n 20 "$run_dir/web.log" >&2
      die "bty-web is gone: the remaining cases cannot run (nothing written to $results)"
    fi
    return 0
  fi
  local r
  r=$(jq -c .result "$out")
  wall[$name]+="$(sub "$t1" "$t0") "
  cpu[$name]+="$(awk '{printf "%.2f", $1 + $2}' "$run_dir/$name.time") "
  rx[$name]+="$(($(rx_bytes) - rx0)) "
  fetched[$name]+="$(jq -r .bytes_fetched <<<"$r") "
  written[$name]+="$(jq -r .bytes_written <<<"$r") "
  zeroed[$name]+="$(jq -r .bytes_zeroed <<<"$r") "
  equal[$name]=$(jq -r .chunks_equal <<<"$r")
  total[$name]=$(jq -r .chunks_total <<<"$r")
  isdelta[$name]=$(jq -r .delta <<<"$r")
  if [ "$delta" = 1 ] && [ "${isdelta[$name]}" != true ]; then
    log "  $name: NOT a delta flash: $(jq -r '.notes | join("; ")' <<<"$r")"
  fi
  log "  $name: $(sub "$t1" "$t0") s (CPU $(awk '{print $1 " user, " $2 " sys"}' "$run_dir/$name.time")), fetched $(mib "$(jq -r .bytes_fetched <<<"$r")") MiB," \
      "wrote $(mib "$(jq -r .bytes_written <<<"$r")") MiB, chunks equal ${equal[$name]}/${total[$name]}"
  verify "$name"
}

# verify CASE: the device's first $size bytes hash to the image's sha256.
verify() {
  local got
  drop_caches
  got=$(dd if="$loop" bs=4M count=$((size >> 22)) iflag=direct status=none | sha256sum | cut -d' ' -f1)
  if [ "$got" = "$sha" ]; then
    [ "${ident[$1]:-PASS}" = PASS ] && ident[$1]=PASS
  else
    ident[$1]=FAIL
    log "  $1: NOT bit-identical (sha256 $got)"
  fi
}

# timed_read CASE CMD...: wall time of a read of the device, cold.
timed_read() {
  local name=$1 t0 t1; shift
  drop_caches
  t0=$(now)
  "$@"
  t1=$(now)
  wall[$name]+="$(sub "$t1" "$t0") "
  log "  $name: $(sub "$t1" "$t0") s"
}

# change PCT: mount the target's root filesystem and change PCT % of the
# image's data bytes: half new files of random bytes, half overwriting
# the largest existing files under /usr in place.
change() {
  local pct=$1 budget new over left f sz n
  budget=$((data_bytes * pct / 100))
  new=$((budget / 2)) over=$((budget - budget / 2))
  part_loop=$(losetup --find --show --offset "$root_off" --sizelimit "$root_size" "$loop")
  mount -t ext4 "$part_loop" "$mnt"
  local avail
  avail=$(df -B1 --output=avail "$mnt" | tail -n1)
  [ "$new" -lt $((avail - 16 * chunk)) ] ||
    die "the root filesystem has $(mib "$avail") MiB free, too little for $(mib "$new") MiB of new files"
  mkdir -p "$mnt/var/tmp/bench-delta"
  left=$new n=0
  while [ "$left" -gt 0 ]; do
    sz=$((left < 8 * chunk ? left : 8 * chunk))
    head -c "$sz" /dev/urandom >"$mnt/var/tmp/bench-delta/new-$n.bin"
    left=$((left - sz)) n=$((n + 1))
  done
  left=$over
  while read -r sz f; do
    [ "$left" -le 0 ] && break
    sz=$((sz < left ? sz : left))
    head -c "$sz" /dev/urandom | dd of="$f" bs=1M iflag=fullblock conv=notrunc status=none
    left=$((left - sz))
  done < <(find "$mnt/usr" -xdev -type f -size +64k -printf '%s %p\n' | sort -rn)
  [ "$left" -le 0 ] || log "  only $(mib $((over - left))) MiB of existing files to overwrite"
  umount "$mnt"
  losetup -d "$part_loop"; part_loop=""
  sync
  log "  changed $pct %: $(mib "$new") MiB of new files, $(mib "$over") MiB of existing files overwritten"
}

one_round() {
  local r=$1 x
  log "round $r/$rounds"
  fill_garbage "$loop" "$size"
  flash full 0
  flash same 1
  timed_read read-data read_data "$loop"
  timed_read read-dd dd if="$loop" of=/dev/null bs=8M count=$((size >> 23)) iflag=direct status=none
  for x in $changes; do
    change "$x"
    flash "$x%" 1
  done
  # A delta onto garbage: a full flash through the chunk store (every
  # chunk fetched, decoded in parallel), against the zstd stream above.
  fill_garbage "$loop" "$size"
  flash garbage 1
}

# ---------------------------------------------------------------- report

med() { median <<<"${1:-}"; }

report() {
  local full_t full_f full_w c t f w z n rt rf rw ok label same_t read_t
  full_t=$(med "${wall[full]:-}") full_f=$(med "${fetched[full]:-}") full_w=$(med "${written[full]:-}")
  echo "## bty delta flash benchmark"
  echo
  echo "$(date -u '+%F %T UTC'), $(git describe --always --dirty 2>/dev/null), rounds: $rounds," \
       "$(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "bty: $("$bty" --version 2>&1 | head -n1); served by bty-web over a veth pair shaped to $rate" \
       "(tc tbf both ways; 200 MiB download: $link_mbit Mbit/s); chunk store: $store_desc"
  echo "image: $image_name, $(mib "$(stat -c %s "$img/$image_name")") MiB file, $size bytes decoded," \
       "$data_chunks data chunks of 1 MiB ($(mib "$data_bytes") MiB; X % below is of these)"
  echo
  echo "| case | wall s | × full | bty CPU s | fetched MiB | × full | on the wire MiB | written MiB | × full | zeroed MiB | chunks equal / total | bit-identical |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  for c in full same $(for x in $changes; do echo "$x%"; done) garbage; do
    case $c in
      full) label="full flash (baseline)" ;;
      same) label="delta, unchanged target" ;;
      garbage) label="delta onto garbage (a full flash through the chunk store)" ;;
      *) label="delta, $c of the data changed" ;;
    esac
    if [ -n "${failed[$c]:-}" ]; then
      echo "| $label | error | | | | | | | | | | FAIL |"
      continue
    fi
    [ "$c" != full ] && [ "${isdelta[$c]:-}" != true ] && label+=" (NOT delta: flashed in full)"
    t=$(med "${wall[$c]:-}") f=$(med "${fetched[$c]:-}")
    w=$(med "${written[$c]:-}") z=$(med "${zeroed[$c]:-}") n=$(med "${rx[$c]:-}")
    rt=$(div "$t" "$full_t") rf=$(div "$f" "$full_f") rw=$(div "$w" "$full_w")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$t" "$rt" "$(med "${cpu[$c]:-}")" \
      "$(mib "$f")" "$rf" "$(mib "$n")" "$(mib "$w")" "$rw" "$(mib "$z")" \
      "$([ "$c" = full ] && echo - || echo "${equal[$c]:-}/${total[$c]:-}")" "${ident[$c]:--}"
  done
  read_t=$(med "${wall[read-data]:-}")
  echo "| device read of the data chunks (O_DIRECT, 8 MiB) | $read_t | $(div "$read_t" "$full_t") | | | | | | | | | |"
  t=$(med "${wall[read-dd]:-}")
  echo "| device read of the whole image (dd bs=8M iflag=direct) | $t | $(div "$t" "$full_t") | | | | | | | | | |"
  echo
  # Goals.
  t=$(med "${wall[$goal_pct%]:-}") f=$(med "${fetched[$goal_pct%]:-}")
  rt=$(div "$t" "$full_t") rf=$(div "$f" "$full_f")
  ok=MISS; le "$rt" $goal_time && [ "${ident[$goal_pct%]:-}" = PASS ] && ok=PASS
  echo "- goal, $goal_pct % changed, wall time ≤ $goal_time × full: $rt → $ok"
  ok=MISS; le "$rf" $goal_fetched && [ "${ident[$goal_pct%]:-}" = PASS ] && ok=PASS
  echo "- goal, $goal_pct % changed, bytes fetched ≤ $goal_fetched × full: $rf → $ok"
  n=$(med "${rx[$goal_pct%]:-}")
  echo "- (not a goal) $goal_pct % changed, bytes on the wire / the full flash's: $(div "$n" "$(med "${rx[full]:-}")")"
  same_t=$(med "${wall[same]:-}")
  ok=MISS; le "$(div "$same_t" "$read_t")" $goal_same && [ "${ident[same]:-}" = PASS ] && ok=PASS
  echo "- goal, unchanged target ≤ $goal_same × the data read time: ${same_t:-?} s / ${read_t:-?} s =" \
       "$(div "$same_t" "$read_t") → $ok"
  echo "- wall time: the bty process, start to exit (includes fetching the store's index); 'on the wire':" \
       "bytes received on the host's veth (HTTP and TCP/IP overhead included); bty CPU: user + sys;" \
       "medians over $rounds round(s)"
  echo
  echo "samples (s):"
  local k
  for k in $(printf '%s\n' "${!wall[@]}" | sort); do echo "- $k: ${wall[$k]}"; done
}

# ---------------------------------------------------------------- main

main() {
  [ "$(id -u)" = 0 ] || die "needs root (network namespace, tc, loop devices, mount, drop_caches)"
  local t
  for t in ip tc jq curl python3 losetup partx sha256sum /usr/bin/time; do
    command -v "$t" >/dev/null || die "$t missing (scripts/install-deps.sh bench)"
  done
  [ -x "$bty" ] || die "$bty missing: run make build"
  [ -x "$bty_web" ] || die "$bty_web missing: run make build"
  case $store_mode in web|local) ;; *) die "BENCH_DELTA_STORE must be web or local, not $store_mode" ;; esac
  bty=$(realpath "$bty") bty_web=$(realpath "$bty_web")

  img=$("$repo/scripts/bench-image.sh" | tail -n1)
  size=$(stat -c %s "$img/disk.img")
  [ $((size % (8 << 20))) = 0 ] || die "image size $size is not a multiple of 8 MiB"
  sha=$(tr -d ' \n' <"$img/disk.img.sha256")
  # The root filesystem: partition 2 (bench-image.sh's layout).
  local start sectors
  read -r start sectors < <(partx -g -o START,SECTORS -n 2 "$img/disk.img")
  root_off=$((start * 512)) root_size=$((sectors * 512))

  mkdir -p "$bench_dir"
  run_dir=$(mktemp -d "$bench_dir/bench-delta.XXXXXX")
  mnt=$run_dir/mnt; mkdir -p "$mnt"
  base=http://$addr_srv:$port

  scan_data
  log "image: $size bytes, $data_chunks data chunks of 1 MiB; root fs at offset $root_off"
  setup_net
  start_web
  wait_store
  if [ "$store_mode" = local ]; then
    local_store
    store_desc="bty index output served by bty-web as /images/$image_name.btyc (--chunks; BENCH_DELTA_STORE=local)"
  else
    store_desc="bty-web's own, GET /images/$image_name/chunks"
  fi
  # Once the server is idle (its hashing and store build done).
  check_rate

  truncate -s "$size" "$run_dir/target.loop"
  loop=$(losetup --find --show "$run_dir/target.loop")
  log "target $loop"

  local r
  for ((r = 1; r <= rounds; r++)); do one_round "$r"; done

  report | tee "$results"
  log "results written to $results"
}

main "$@"
