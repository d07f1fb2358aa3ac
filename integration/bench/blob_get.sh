#!/usr/bin/env bash
# Warm blob GET against the best static server: berth and nginx serve the same
# file (nginx from berth's own blob store: sendfile, open_file_cache,
# keep-alive), over plain HTTP and over TLS with the same certificate (berth:
# rustls; nginx: OpenSSL). One client at a time, interleaved, medians of RUNS*3.
# Two clients: curl (what the issue measured) and get.py (a lean reader with a
# 4 MiB buffer, so the client is not the limit on plain HTTP).
#
#   bash integration/bench/blob_get.sh        # RUNS=3 BLOB_MIB=256
#   BASE_BIN=/path/to/old/berth bash …        # adds the old build's columns
#
# Not a test: nothing here asserts; numbers go to BENCHMARKS.md by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${RUNS:-3}
BLOB_MIB=${BLOB_MIB:-256}
source integration/bench/lib.sh

make_certificate
cat >"$WORK/tls.toml" <<TOML
[server.tls]
certificate = "$WORK/tls.crt"
key = "$WORK/tls.key"
TOML

head -c $((BLOB_MIB * 1024 * 1024)) /dev/urandom >"$WORK/blob"
BLOB_D="sha256:$(sha256sum "$WORK/blob" | cut -d' ' -f1)"

declare -A URL
builds=(berth)
[ -n "${BASE_BIN:-}" ] && builds+=(base)
for b in "${builds[@]}"; do
  bin=$BERTH; [ "$b" = base ] && bin=$BASE_BIN
  p=$(free_port); BERTH=$bin start_berth "$WORK/$b" "$p" --no-mirror >/dev/null
  q=$(free_port); BERTH=$bin start_berth "$WORK/$b-tls" "$q" --no-mirror --config "$WORK/tls.toml" >/dev/null
  URL[$b]=http://127.0.0.1:$p/v2/bench/img/blobs/$BLOB_D
  URL[$b-tls]=https://localhost:$q/v2/bench/img/blobs/$BLOB_D
  wait_http "http://127.0.0.1:$p/v2/"; wait_http "https://localhost:$q/v2/"
  push_image "http://127.0.0.1:$p" bench/img latest "$WORK/blob"
  push_image "https://localhost:$q" bench/img latest "$WORK/blob"
done

NP=$(free_port); NQ=$(free_port); NR=$(free_port)
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<NGX
user root; daemon off; worker_processes 2; pid $WORK/nginx/pid; error_log $WORK/nginx/error.log;
events { worker_connections 1024; }
http { access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;
  open_file_cache max=1000 inactive=60s;
  server { listen 127.0.0.1:$NP; root $WORK/berth/docker/registry/v2/blobs; }
  server { listen 127.0.0.1:$NQ ssl; root $WORK/berth/docker/registry/v2/blobs;
    ssl_certificate $WORK/tls.crt; ssl_certificate_key $WORK/tls.key; }
  # Like for like with berth's cipher choice: AES-128-GCM preferred over the client's order.
  server { listen 127.0.0.1:$NR ssl; root $WORK/berth/docker/registry/v2/blobs;
    ssl_certificate $WORK/tls.crt; ssl_certificate_key $WORK/tls.key; ssl_prefer_server_ciphers on;
    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256; } }
NGX
nginx -c "$WORK/nginx/nginx.conf" & track $!
NPATH=/sha256/${BLOB_D:7:2}/${BLOB_D:7}/data
URL[nginx]=http://127.0.0.1:$NP$NPATH
URL[nginx-tls]=https://localhost:$NQ$NPATH
URL[nginx128-tls]=https://localhost:$NR$NPATH
wait_http "${URL[nginx]}"; wait_http "${URL[nginx-tls]}"; wait_http "${URL[nginx128-tls]}"

targets=(nginx nginx-tls nginx128-tls berth berth-tls); [ -n "${BASE_BIN:-}" ] && targets+=(base base-tls)
py() { python3 integration/bench/get.py "$1"; }
cu() { curl -fsS -o /dev/null -w '%{speed_download}\n' "$1"; }
declare -A S
for t in "${targets[@]}"; do py "${URL[$t]}" >/dev/null; cu "${URL[$t]}" >/dev/null; done
for _ in $(seq 1 $((RUNS * 3))); do
  for t in "${targets[@]}"; do
    S[py$t]+=" $(py "${URL[$t]}")"
    S[cu$t]+=" $(cu "${URL[$t]}")"
  done
done

echo "warm ${BLOB_MIB} MiB blob GET, loopback, one client; medians of $((RUNS * 3)); nginx: sendfile (plain), OpenSSL (TLS)"
echo "| client | nginx plain (GB/s) | berth plain | ratio | nginx TLS (client's cipher order) | nginx TLS (AES-128 preferred) | berth TLS | ratio to the better nginx | berth TLS/plain |${BASE_BIN:+ before: plain | before: TLS |}"
echo "|---|---|---|---|---|---|---|---|---|${BASE_BIN:+---|---|}"
for c in cu py; do
  np=$(median ${S[${c}nginx]}); nt=$(median ${S[${c}nginx-tls]}); nr=$(median ${S[${c}nginx128-tls]})
  bp=$(median ${S[${c}berth]}); bt=$(median ${S[${c}berth-tls]})
  extra=""
  [ -n "${BASE_BIN:-}" ] && extra=$(python3 -c "import sys; a=[float(x) for x in sys.argv[1:]]; print(f' {a[0]/1e9:.2f} ({a[0]/a[2]:.2f}x) | {a[1]/1e9:.2f} ({a[1]/a[3]:.2f}x) |')" \
    "$(median ${S[${c}base]})" "$(median ${S[${c}base-tls]})" "$np" "$(python3 -c "print(max($nt, $nr))")")
  python3 -c "import sys; n,b,nt,nr,bt=(float(x) for x in sys.argv[2:7]); print(f'| {sys.argv[1]} | {n/1e9:.2f} | {b/1e9:.2f} | {b/n:.2f}x | {nt/1e9:.2f} | {nr/1e9:.2f} | {bt/1e9:.2f} | {bt/max(nt,nr):.2f}x | {bt/b:.2f}x |' + sys.argv[7])" \
    "$([ $c = cu ] && echo curl || echo get.py)" "$np" "$bp" "$nt" "$nr" "$bt" "$extra"
done
