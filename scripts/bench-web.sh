#!/usr/bin/env bash
# bty-web benchmark: PXE contacts per second with 10,000 machines (wrk),
# and 20 concurrent full downloads of a 1 GiB image from bty-web and from
# Debian's nginx serving the same file, in the same run.
#
# Usage: scripts/bench-web.sh   (root not needed; make bench-web installs
#        wrk, nginx and curl first)
# Env:   BENCH_WEB_SECONDS (wrk duration, default 20), BENCH_WEB_CONNS
#        (wrk connections, default 64), BENCH_WEB_IMAGE_MIB (default 1024),
#        BENCH_WEB_DOWNLOADS (default 20).
# Results: printed, and written to .cache/bench-web-results.md.
set -euo pipefail

repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
bin=$repo/bin/bty-web
secs=${BENCH_WEB_SECONDS:-20}
conns=${BENCH_WEB_CONNS:-64}
image_mib=${BENCH_WEB_IMAGE_MIB:-1024}
downloads=${BENCH_WEB_DOWNLOADS:-20}
machines=10000

log() { printf '[bench-web] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
for t in wrk nginx curl; do command -v "$t" >/dev/null || die "$t missing: run make bench-web (installs it)"; done
[ -x "$bin" ] || die "$bin missing: run make build"

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

log "image: ${image_mib} MiB of random bytes"
head -c "$((image_mib << 20))" /dev/urandom >"$work/images/bench.img"
# nginx's workers run as an unprivileged user when started by root.
chmod 755 "$work" "$work/images"; chmod 644 "$work/images/bench.img"

BTY_STATE_DIR=$work/state BTY_IMAGE_ROOT=$work/images BTY_WEB_HOST=127.0.0.1 \
  BTY_WEB_PORT=$web_port BTY_TFTP_PORT=0 BTY_ADMIN_PASSWORD=bench-password \
  BTY_LOG_LEVEL=warn "$bin" >"$work/web.log" 2>&1 &
pids+=($!)
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

log "populating $machines machines (discovery by PXE contact)"
seq 0 $((machines - 1)) | awk '{printf "-o\n/dev/null\nhttp://127.0.0.1:'"$web_port"'/pxe/52:54:00:%02x:%02x:%02x\n", int($1/65536)%256, int($1/256)%256, $1%256}' \
  | xargs -P 8 -n 600 curl -fs
token=$(curl -fs -X POST -H 'Content-Type: application/json' -d '{"password":"bench-password"}' "http://127.0.0.1:$web_port/auth/login" | sed -n 's/.*"token": "\([^"]*\)".*/\1/p')
count=$(curl -fs -H "Authorization: Bearer $token" "http://127.0.0.1:$web_port/machines" | grep -c '"mac"')
[ "$count" -ge "$machines" ] || die "only $count machines after populating"

log "wrk: ${secs}s, $conns connections, 2 threads, GET /pxe/{mac} over $count machines"
wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$work/pxe.lua" "http://127.0.0.1:$web_port" >"$work/wrk.txt"
rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
p99=$(awk '$1=="99%" {print $2}' "$work/wrk.txt")
p50=$(awk '$1=="50%" {print $2}' "$work/wrk.txt")
errs=$(grep -E 'Non-2xx|Socket errors' "$work/wrk.txt" || true)
cat "$work/wrk.txt" >&2

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
  echo "| measure | result | goal |"
  echo "|---|---|---|"
  echo "| GET /pxe/{mac}, $count machines, wrk -t2 -c$conns ${secs}s | $rps req/s, p50 $p50, p99 $p99 | >= 5000 req/s, p99 < 25 ms |"
  echo "| $downloads concurrent downloads of ${image_mib} MiB | bty-web $bty_rate MiB/s, nginx $nginx_rate MiB/s (best of 2 rounds each: ${bty_rates[*]} / ${nginx_rates[*]}) | bty-web >= 0.9x nginx |"
  echo "| ratio bty-web / nginx | $ratio | >= 0.90 |"
  if [ -n "$errs" ]; then echo; echo "wrk reported: $errs"; fi
} | tee "$out"
