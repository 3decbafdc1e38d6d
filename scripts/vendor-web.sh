#!/usr/bin/env bash
# Re-fetches the browser UI's vendored assets from the npm registry and
# checks each tarball against the integrity pinned here. The files are
# committed under internal/server/web/static/vendor and embedded in
# bty-web, so building or running bty needs neither npm nor a CDN.
# Usage: scripts/vendor-web.sh   (needs npm, node's sha512 via openssl)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=internal/server/web/static/vendor

# package@version  sha512 integrity (from `npm view PKG@VER dist.integrity`)
pkgs=(
  "htmx.org@2.0.11 sha512-Thx/WtpeOQqSrqBCw/A1cwGJGg4UrVa3+sW0GmrM3p4gJgO89ecH4qtbnyzDDWFvBTqjnIMCgELTNt636dtamA=="
  "htmx-ext-sse@2.2.4 sha512-LJmxVhykyflBWgh5PvbRidcyuqMHlgfajmmzumvKctv9puvsufeH6OaejSMZTNTnEI8O2wXXn4ZZtBdpEMqmEQ=="
  "@picocss/pico@2.1.1 sha512-kIDugA7Ps4U+2BHxiNHmvgPIQDWPDU4IeU6TNRdvXQM1uZX+FibqDQT2xUOnnO2yq/LUHcwnGlu1hvf4KfXnMg=="
)
# tarball member -> vendored file
declare -A files=(
  [htmx.org:package/dist/htmx.min.js]=htmx.min.js
  [htmx.org:package/LICENSE]=htmx.LICENSE
  [htmx-ext-sse:package/dist/sse.min.js]=htmx-ext-sse.min.js
  [htmx-ext-sse:package/LICENSE]=htmx-ext-sse.LICENSE
  [@picocss/pico:package/css/pico.min.css]=pico.min.css
  [@picocss/pico:package/LICENSE.md]=pico.LICENSE.md
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest"
for entry in "${pkgs[@]}"; do
  spec=${entry% *} want=${entry#* }
  name=${spec%@*}
  tgz=$(cd "$work" && npm pack --silent "$spec" 2>/dev/null | tail -1)
  got="sha512-$(openssl dgst -sha512 -binary "$work/$tgz" | base64 -w0)"
  if [ "$got" != "$want" ]; then
    echo "$spec: integrity $got does not match the pinned $want" >&2
    exit 1
  fi
  mkdir -p "$work/$name"
  tar -xzf "$work/$tgz" -C "$work/$name"
  for key in "${!files[@]}"; do
    [ "${key%%:*}" = "$name" ] || continue
    cp "$work/$name/${key#*:}" "$dest/${files[$key]}"
  done
  echo "vendored $spec"
done
( cd "$dest" && sha256sum -- *.js *.css > SHA256SUMS )
