#!/usr/bin/env bash
# The manifest GET against the best static server: berth serving a pushed
# manifest by tag and by digest, and nginx (2 workers, sendfile,
# open_file_cache, unlimited keep-alive) serving the same bytes as a file,
# `wrk -t2 -c32`, ROUNDS times interleaved. Prints a Markdown table of medians.
#
#   bash integration/bench/hot_path.sh        (BASE_BIN=… adds another berth build)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
WRK_SECS=${WRK_SECS:-8}
source integration/bench/lib.sh
MT=application/vnd.oci.image.manifest.v1+json
head -c $((1024 * 1024)) /dev/urandom >"$WORK/layer"

BP=$(free_port); B=http://127.0.0.1:$BP
start_berth "$WORK/b-data" "$BP" >/dev/null
wait_http "$B/v2/"
push_image "$B" bench/img latest "$WORK/layer"
DIGEST="sha256:$(sha256sum "$WORK/manifest-bench_img-latest.json" | cut -d' ' -f1)"
if [ -n "${BASE_BIN:-}" ]; then
  AP=$(free_port); A=http://127.0.0.1:$AP
  BERTH=$BASE_BIN start_berth "$WORK/a-data" "$AP" >/dev/null
  wait_http "$A/v2/"
  push_image "$A" bench/img latest "$WORK/layer"
fi

NP=$(free_port); mkdir -p "$WORK/nginx/www"
cp "$WORK/manifest-bench_img-latest.json" "$WORK/nginx/www/manifest"
cat >"$WORK/nginx/nginx.conf" <<NGX
user root; daemon off; worker_processes 2; pid $WORK/nginx/pid; error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http { access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000000;
  open_file_cache max=1000; default_type $MT;
  server { listen 127.0.0.1:$NP; root $WORK/nginx/www; } }
NGX
nginx -c "$WORK/nginx/nginx.conf" & track $!
N=http://127.0.0.1:$NP/manifest
wait_http "$N"

rps() { wrk -t2 -c32 -d"${WRK_SECS}s" -H "Accept: $MT" "$1" | awk '/Requests\/sec/ {print $2}'; }
declare -A R
urls=(n "$N" t "$B/v2/bench/img/manifests/latest" d "$B/v2/bench/img/manifests/$DIGEST")
[ -n "${BASE_BIN:-}" ] && urls+=(at "$A/v2/bench/img/manifests/latest" ad "$A/v2/bench/img/manifests/$DIGEST")
for ((i = 0; i < ${#urls[@]}; i += 2)); do rps "${urls[i+1]}" >/dev/null; done # warm-up
for _ in $(seq 1 "$ROUNDS"); do
  for ((i = 0; i < ${#urls[@]}; i += 2)); do R[${urls[i]}]+=" $(rps "${urls[i+1]}")"; done
done
n=$(median ${R[n]})
echo "| server, manifest GET (median of $ROUNDS × ${WRK_SECS} s) | req/s | × nginx |"
echo "|---|---|---|"
row() { python3 -c "print(f'| $1 | {$2:.0f} | {$2/$n:.2f}× |')"; }
row "nginx, the same bytes as a static file" "$n"
[ -n "${BASE_BIN:-}" ] && row "base build, by tag" "$(median ${R[at]})" && row "base build, by digest" "$(median ${R[ad]})"
row "berth, by tag" "$(median ${R[t]})"
row "berth, by digest" "$(median ${R[d]})"
for k in "${!R[@]}"; do echo "  runs $k:${R[$k]}" >&2; done
