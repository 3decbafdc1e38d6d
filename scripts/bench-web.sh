#!/usr/bin/env bash
# bty-web benchmark: PXE contacts per second with 10,000 machines (wrk),
# quiet and then under attack (scripts/webattack: 2,000 slow-body
# connections, wrong logins from 48 addresses, 100 idle SSE streams, a
# discovery flood), and 20 concurrent full downloads of a 1 GiB image
# from bty-web and from Debian's nginx serving the same file, in the
# same run.
#
# Usage: scripts/bench-web.sh   (root not needed; make bench-web installs
#        wrk, nginx and curl first; Go builds scripts/webattack)
# Env:   BENCH_WEB_SECONDS (wrk duration, default 20), BENCH_WEB_CONNS
#        (wrk connections, default 64), BENCH_WEB_IMAGE_MIB (default 1024),
#        BENCH_WEB_DOWNLOADS (default 20), BENCH_WEB_ATTACK (1; 0 skips
#        the attacked run), BENCH_WEB_ATTACK_FLAGS (extra webattack
#        attack flags, e.g. "-slow 4000"), GO (go).
# Results: printed, and written to .cache/bench-web-results.md.
set -euo pipefail

repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
bin=$repo/bin/bty-web
secs=${BENCH_WEB_SECONDS:-20}
conns=${BENCH_WEB_CONNS:-64}
image_mib=${BENCH_WEB_IMAGE_MIB:-1024}
downloads=${BENCH_WEB_DOWNLOADS:-20}
machines=10000
attack=${BENCH_WEB_ATTACK:-1}
attack_flags=${BENCH_WEB_ATTACK_FLAGS:-}
GO=${GO:-go}
command -v "$GO" >/dev/null || GO=/usr/local/go/bin/go

log() { printf '[bench-web] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
for t in wrk nginx curl; do command -v "$t" >/dev/null || die "$t missing: run make bench-web (installs it)"; done
[ -x "$bin" ] || die "$bin missing: run make build"
command -v "$GO" >/dev/null || die "go missing (set GO): it builds scripts/webattack"
# The attack holds ~2,300 connections: both ends need that many files
# (bty-web inherits this limit, and its own BTY_MAX_CONNS is 4096).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 8192 ] || die "open files limit $(ulimit -n): the attack needs 8192 (raise the hard limit)"

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
  shuf -i 20000-60000 -n 1; }
web_port=$(free_port)
nginx_port=$(free_port)
mkdir -p "$work/images" "$work/state"
CGO_ENABLED=0 "$GO" build -C "$repo" -o "$work/webattack" ./scripts/webattack || die "building scripts/webattack failed"

log "image: ${image_mib} MiB of random bytes"
head -c "$((image_mib << 20))" /dev/urandom >"$work/images/bench.img"
# nginx's workers run as an unprivileged user when started by root.
chmod 755 "$work" "$work/images"; chmod 644 "$work/images/bench.img"

BTY_STATE_DIR=$work/state BTY_IMAGE_ROOT=$work/images BTY_WEB_HOST=127.0.0.1 \
  BTY_WEB_PORT=$web_port BTY_TFTP_PORT=0 BTY_ADMIN_PASSWORD=bench-password \
  BTY_LOG_LEVEL=warn "$bin" >"$work/web.log" 2>&1 &
web_pid=$!
pids+=($web_pid)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$web_port/healthz" >/dev/null && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$web_port/healthz" >/dev/null || { cat "$work/web.log" >&2; die "bty-web did not start"; }

cat >"$work/nginx.conf" <<EOF
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $work/nginx-tmp;
  proxy_temp_path $work/nginx-tmp;
  fastcgi_temp_path $work/nginx-tmp;
  uwsgi_temp_path $work/nginx-tmp;
  scgi_temp_path $work/nginx-tmp;
  server {
    listen 127.0.0.1:$nginx_port;
    location /images/ { alias $work/images/; }
  }
}
EOF
mkdir -p "$work/nginx-tmp"
nginx -c "$work/nginx.conf" -p "$work" 2>"$work/nginx-start.log" || { cat "$work/nginx-start.log" >&2; die "nginx did not start"; }

# wrk: every request a MAC from a set of 10,000.
cat >"$work/pxe.lua" <<EOF
local n = 0
local id = 0
setup = function(thread) id = id + 1; thread:set("tid", id) end
request = function()
  n = n + 1
  local i = (n * 7919 + (tid or 0) * 104729) % $machines
  return wrk.format("GET", string.format("/pxe/52:54:00:%02x:%02x:%02x", math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256))
end
EOF

# Created with PUT /machines (boot policy tui, as a discovered machine
# has): discovery by PXE contact, as this bench did first, records at
# most BTY_DISCOVERY_BURST (10) machines per client address and
# BTY_MAX_UNCLAIMED (1,000) in all since the discovery gate.
log "populating $machines machines (PUT /machines/{mac}, webattack seed)"
"$work/webattack" seed -url "http://127.0.0.1:$web_port" -password bench-password -machines "$machines" || die "seeding the machines failed"
token=$(curl -fs -X POST -H 'Content-Type: application/json' -d '{"password":"bench-password"}' "http://127.0.0.1:$web_port/auth/login" | sed -n 's/.*"token": "\([^"]*\)".*/\1/p')
# GET /machines answers a page; X-Total-Count counts them all.
count=$(curl -fs -o /dev/null -D - -H "Authorization: Bearer $token" "http://127.0.0.1:$web_port/machines?limit=1" | tr -d '\r' | sed -n 's/^[Xx]-[Tt]otal-[Cc]ount: *//p')
count=${count:-0}
[ "$count" -ge "$machines" ] || die "only $count machines after populating"

# to_ms 10.20ms|1.05s|500.00us|2.00m -> milliseconds
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
  f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
  if (f < 0) { print "NaN"; exit } printf "%.2f", n * f }'; }
# run_wrk NAME: wrk on GET /pxe/{mac}, same settings every time; sets
# NAME_rps, NAME_p50, NAME_p99 (as wrk prints them), NAME_p99ms, NAME_errs.
run_wrk() {
  local name=$1 f=$work/wrk-$1.txt
  wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$work/pxe.lua" "http://127.0.0.1:$web_port" >"$f"
  cat "$f" >&2
  printf -v "${name}_rps" '%s' "$(awk '/Requests\/sec/ {print $2}' "$f")"
  printf -v "${name}_p50" '%s' "$(awk '$1=="50%" {print $2}' "$f")"
  printf -v "${name}_p99" '%s' "$(awk '$1=="99%" {print $2}' "$f")"
  printf -v "${name}_p99ms" '%s' "$(to_ms "$(awk '$1=="99%" {print $2}' "$f")")"
  printf -v "${name}_errs" '%s' "$(grep -E 'Non-2xx|Socket errors' "$f" | tr '\n' ' ' || true)"
}
# metric REGEX: the sum of bty-web's /metrics series whose line matches
# (labels come sorted by name; a route label holds a space).
metric() {
  curl -fs "http://127.0.0.1:$web_port/metrics" | awk -v re="$1" '!/^#/ && $0 ~ re {s += $NF} END {printf "%.0f", s}'
}

load_quiet=$(cut -d' ' -f1-3 /proc/loadavg)
log "wrk (quiet): ${secs}s, $conns connections, 2 threads, GET /pxe/{mac} over $count machines"
run_wrk quiet
rps=$quiet_rps p50=$quiet_p50 p99=$quiet_p99 errs=$quiet_errs

attack_rows=() sanity_rows=() sanity_ok=1 load_attacked=
if [ "$attack" = 1 ]; then
  log "attacked run: webattack up first (2,000 slow bodies, 48 wrong-login loops, 100 idle SSE streams, discovery flood), then the same wrk"
  refused0=$(metric '^bty_discoveries_refused_total')
  login429_0=$(metric '^bty_http_requests_total[{].*code="429".*route="POST /auth/login"')
  login401_0=$(metric '^bty_http_requests_total[{].*code="401".*route="POST /auth/login"')
  # shellcheck disable=SC2086 # attack_flags are words
  "$work/webattack" attack -url "http://127.0.0.1:$web_port" -password bench-password -machines "$machines" \
    -duration "$((secs + 120))s" -ready-file "$work/attack-ready" $attack_flags >"$work/attack.out" 2>"$work/attack.err" &
  attack_pid=$!
  pids+=($attack_pid)
  for _ in $(seq 300); do [ -f "$work/attack-ready" ] && break; kill -0 "$attack_pid" 2>/dev/null || break; sleep 0.1; done
  [ -f "$work/attack-ready" ] || { cat "$work/attack.err" >&2; die "webattack did not get its load up"; }
  cat "$work/attack.err" >&2
  sse_before=$(metric '^bty_sse_subscribers')
  # Peak memory of the attacked run: VmHWM reset now (clear_refs 5),
  # and VmRSS and open descriptors sampled every 200 ms.
  hwm_reset=0
  echo 5 2>/dev/null >"/proc/$web_pid/clear_refs" && hwm_reset=1
  (
    max_rss=0 max_fds=0
    while [ ! -f "$work/sampler-stop" ]; do
      r=$(awk '/^VmRSS:/ {print $2}' "/proc/$web_pid/status" 2>/dev/null || echo 0)
      f=$(find "/proc/$web_pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
      [ "${r:-0}" -gt "$max_rss" ] && max_rss=$r
      [ "$f" -gt "$max_fds" ] && max_fds=$f
      echo "$max_rss $max_fds" >"$work/sampler.out"
      sleep 0.2
    done
  ) &
  sampler_pid=$!
  pids+=($sampler_pid)
  load_attacked=$(cut -d' ' -f1-3 /proc/loadavg)
  log "wrk (attacked): same settings"
  run_wrk attacked
  sse_after=$(metric '^bty_sse_subscribers')
  refused=$(( $(metric '^bty_discoveries_refused_total') - refused0 ))
  login429=$(( $(metric '^bty_http_requests_total[{].*code="429".*route="POST /auth/login"') - login429_0 ))
  login401=$(( $(metric '^bty_http_requests_total[{].*code="401".*route="POST /auth/login"') - login401_0 ))
  heap_inuse=$(metric '^go_memstats_heap_inuse_bytes')
  goroutines=$(metric '^go_goroutines')
  touch "$work/sampler-stop"; wait "$sampler_pid" || true
  read -r max_rss_kib max_fds <"$work/sampler.out"
  hwm_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$web_pid/status")
  kill -INT "$attack_pid" 2>/dev/null || true
  wait "$attack_pid" || { cat "$work/attack.err" >&2; die "webattack failed"; }
  tail -n +2 "$work/attack.err" >&2
  cat "$work/attack.out" >&2
  av() { awk -F= -v k="$1" '$1 == k {print $2}' "$work/attack.out"; }

  peak_kib=$max_rss_kib
  [ "$hwm_reset" = 1 ] && [ "$hwm_kib" -gt "$peak_kib" ] && peak_kib=$hwm_kib
  peak_mib=$((peak_kib / 1024))
  ratio_rps=$(awk -v a="$attacked_rps" -v q="$rps" 'BEGIN {printf "%.2f", a / q}')
  pf() { if awk "BEGIN {exit !($1)}"; then echo PASS; else echo FAIL; fi; }
  tput_ok=$(pf "$ratio_rps >= 0.50")
  p99_ok=$(pf "$attacked_p99ms < 100")
  mem_ok=$(pf "$peak_mib < 500")
  hwm_note="VmHWM since the attack was up $((hwm_kib / 1024)) MiB"
  [ "$hwm_reset" = 1 ] || hwm_note="VmHWM not resettable here, lifetime $((hwm_kib / 1024)) MiB"
  attack_rows+=(
    "| throughput, GET /pxe/{mac} | $rps req/s | $attacked_rps req/s | attacked/quiet $ratio_rps, goal >= 0.50 | $tput_ok |"
    "| p99 latency | $p99 | $attacked_p99 | goal < 100 ms under attack | $p99_ok |"
    "| p50 latency | $p50 | $attacked_p50 | | |"
    "| bty-web peak RSS during the attacked run | | $peak_mib MiB | goal < 500 MiB (VmRSS sampled every 200 ms: max $((max_rss_kib / 1024)) MiB; $hwm_note; at the end: Go heap in use $((heap_inuse >> 20)) MiB, $goroutines goroutines) | $mem_ok |"
  )
  [ -n "$attacked_errs" ] && attack_rows+=("| wrk errors under attack | | $attacked_errs | | |")

  # The attack happened: each part shows on the server's side too.
  check() { # check NAME VALUE MIN DETAIL
    local ok=ok
    [ "$2" -ge "$3" ] || { ok=FAIL; sanity_ok=0; }
    sanity_rows+=("| $1 | $2 | >= $3 | $ok | $4 |")
  }
  slow=$(av slow_target) sse=$(av sse_target)
  check "slow-body connections held (webattack, min while wrk ran and after)" "$(av slow_held_min)" 1 "max $(av slow_held_max), at the end $(av slow_held_end), from $(av slow_source_addrs) addresses; opened $(av slow_opened), refused at once (conn caps) $(av slow_refused), ended by bty-web: $(av slow_ended_by_server) (status:count; BTY_BODY_TIMEOUT 30 s); $(av slow_body_bytes) body bytes trickled"
  check "bty-web open descriptors (max sampled)" "$max_fds" "$slow" "the slow bodies and streams are real connections on the server"
  check "bty_sse_subscribers (after ramp / after wrk)" "$(( sse_before < sse_after ? sse_before : sse_after ))" "$sse" "$sse_before / $sse_after; webattack: connected at the end $(av sse_connected_end), refused $(av sse_refused)"
  check "wrong logins answered 429 (bty_http_requests_total)" "$login429" 1 "401 (password checked and wrong): $login401; webattack saw $(av logins) at $(av logins_per_s)/s"
  check "bty_discoveries_refused_total (during the run)" "$refused" 1 "webattack's flood: $(av discover) at $(av discover_per_s)/s"
fi
# downloads URL: N concurrent full downloads, prints MiB/s total.
downloads_rate() {
  local url=$1 start end
  start=$(date +%s.%N)
  local dl=() failed=0
  for _ in $(seq "$downloads"); do curl -fs -o /dev/null "$url" & dl+=($!); done
  for j in "${dl[@]}"; do wait "$j" || failed=1; done
  end=$(date +%s.%N)
  [ "$failed" = 0 ] || die "a download from $url failed"
  awk -v s="$start" -v e="$end" -v n="$downloads" -v m="$image_mib" 'BEGIN {printf "%.0f", n*m/(e-s)}'
}

log "downloads: $downloads concurrent x ${image_mib} MiB, bty-web and nginx alternating (2 rounds each)"
bty_rates=() nginx_rates=()
for _ in 1 2; do
  bty_rates+=("$(downloads_rate "http://127.0.0.1:$web_port/images/bench.img")")
  nginx_rates+=("$(downloads_rate "http://127.0.0.1:$nginx_port/images/bench.img")")
done
best() { printf '%s\n' "$@" | sort -n | tail -1; }
bty_rate=$(best "${bty_rates[@]}")
nginx_rate=$(best "${nginx_rates[@]}")
ratio=$(awk -v a="$bty_rate" -v b="$nginx_rate" 'BEGIN {printf "%.2f", a/b}')

out=$repo/.cache/bench-web-results.md
mkdir -p "$repo/.cache"
{
  echo "# bty-web benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
  echo
  echo "Load average before the quiet wrk: $load_quiet${load_attacked:+; before the attacked wrk (webattack up): $load_attacked} (wrk, webattack and bty-web share the cores; anything else running skews both runs)."
  echo
  echo "| measure | result | goal |"
  echo "|---|---|---|"
  echo "| GET /pxe/{mac}, $count machines, wrk -t2 -c$conns ${secs}s | $rps req/s, p50 $p50, p99 $p99 | >= 5000 req/s, p99 < 25 ms |"
  echo "| $downloads concurrent downloads of ${image_mib} MiB | bty-web $bty_rate MiB/s, nginx $nginx_rate MiB/s (best of 2 rounds each: ${bty_rates[*]} / ${nginx_rates[*]}) | bty-web >= 0.9x nginx |"
  echo "| ratio bty-web / nginx | $ratio | >= 0.90 |"
  if [ -n "$errs" ]; then echo; echo "wrk reported: $errs"; fi
  if [ "$attack" = 1 ]; then
    echo
    echo "## Under attack (scripts/webattack, same wrk settings)"
    echo
    echo "| measure | quiet | attacked | goal | result |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${attack_rows[@]}"
    echo
    echo "Attack sanity (the attacked run was attacked):"
    echo
    echo "| check | value | want | ok | detail |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${sanity_rows[@]}"
  fi
} | tee "$out"
[ "$sanity_ok" = 1 ] || die "the attack did not fully happen (see the sanity table): the attacked numbers do not measure an attacked server"
