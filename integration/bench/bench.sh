#!/usr/bin/env bash
# Side-by-side benchmark: berth vs CNCF Distribution 2.8 (Debian's docker-registry),
# on loopback, same content, measurements interleaved, medians of several runs.
# Prints one table of absolute figures and berth/Distribution ratios.
#
#   bash integration/bench/bench.sh            # RUNS=5 BLOB_MIB=256 WRK_SECS=10 by default
#
# Not a test: nothing here asserts; numbers go to BENCHMARKS.md by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${RUNS:-5}
BLOB_MIB=${BLOB_MIB:-256}
WRK_SECS=${WRK_SECS:-10}
source integration/bench/lib.sh

# --- content: one big blob, one small image --------------------------------------
head -c $((BLOB_MIB * 1024 * 1024)) /dev/urandom >"$WORK/blob"
BLOB_D="sha256:$(sha256sum "$WORK/blob" | cut -d' ' -f1)"
MT=application/vnd.oci.image.manifest.v1+json

seed() { push_image "$1" bench/img latest "$WORK/blob"; }

BP=$(free_port); BPID=$(start_berth "$WORK/berth-data" "$BP")
DP=$(free_port); DPID=$(start_distribution "$WORK/r2-data" "$DP")
B=http://127.0.0.1:$BP; D=http://127.0.0.1:$DP
wait_http "$B/v2/"; wait_http "$D/v2/"
seed "$B"; seed "$D"
MANIFEST_D="sha256:$(sha256sum "$WORK/manifest-bench_img-latest.json" | cut -d' ' -f1)"

# sendfile reference: nginx serving berth's copy of the blob.
NP=$(free_port)
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<NGX
user root; daemon off; worker_processes 2; pid $WORK/nginx/pid; error_log $WORK/nginx/error.log;
events {}
http { access_log off; sendfile on; tcp_nopush on;
  server { listen 127.0.0.1:$NP; root $WORK/berth-data/docker/registry/v2/blobs; } }
NGX
nginx -c "$WORK/nginx/nginx.conf" & PIDS+=($!)
NGINX_URL="http://127.0.0.1:$NP/sha256/${BLOB_D:7:2}/${BLOB_D:7}/data"
wait_http "$NGINX_URL"

speed() { curl -fsS -o /dev/null -w '%{speed_download}' "$1"; }
declare -A S
for _ in $(seq 1 "$RUNS"); do
  S[b]+=" $(speed "$B/v2/bench/img/blobs/$BLOB_D")"
  S[d]+=" $(speed "$D/v2/bench/img/blobs/$BLOB_D")"
  S[n]+=" $(speed "$NGINX_URL")"
done
GB() { python3 -c "print(f'{$1/1e9:.2f}')"; }
BLOB_B=$(median ${S[b]}); BLOB_D_=$(median ${S[d]}); BLOB_N=$(median ${S[n]})

wrk_run() { # url -> "rps p99ms"
  wrk -t2 -c32 -d"${WRK_SECS}s" --latency -H "Accept: $MT" "$1" | awk '
    /Requests\/sec/ {rps=$2}
    $1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; p99=v}
    END {print rps, p99}'; }
declare -A R
for kind in tag digest; do
  ref=$([ $kind = tag ] && echo latest || echo "$MANIFEST_D")
  read -r rb pb < <(wrk_run "$B/v2/bench/img/manifests/$ref")
  read -r rd pd < <(wrk_run "$D/v2/bench/img/manifests/$ref")
  R[$kind]="$rb $pb $rd $pd"
done

RSS_B=$(rss_mib "$BPID"); RSS_D=$(rss_mib "$DPID")
python3 - "$BLOB_B" "$BLOB_D_" "$BLOB_N" "${R[tag]}" "${R[digest]}" "$RSS_B" "$RSS_D" "$RUNS" "$BLOB_MIB" "$WRK_SECS" <<'PY'
import sys
bb, bd, bn = (float(x) for x in sys.argv[1:4])
tag = [float(x) for x in sys.argv[4].split()]
dig = [float(x) for x in sys.argv[5].split()]
rb, rd = float(sys.argv[6]), float(sys.argv[7])
runs, mib, secs = sys.argv[8:11]
print(f"berth vs Distribution 2.8 (plain), loopback; medians of {runs} runs; blob {mib} MiB; wrk -t2 -c32 -d{secs}s")
print(f"| measurement | berth | Distribution | berth/Distribution |")
print(f"|---|---|---|---|")
print(f"| warm blob GET (GB/s) | {bb/1e9:.2f} | {bd/1e9:.2f} | {bb/bd:.2f}x |")
print(f"| warm blob GET vs nginx sendfile ({bn/1e9:.2f} GB/s) | {bb/bn:.2f}x | {bd/bn:.2f}x | |")
print(f"| manifest GET by tag (req/s) | {tag[0]:.0f} | {tag[2]:.0f} | {tag[0]/tag[2]:.2f}x |")
print(f"| manifest GET by tag p99 (ms) | {tag[1]:.2f} | {tag[3]:.2f} | {tag[1]/tag[3]:.3f}x |")
print(f"| manifest GET by digest (req/s) | {dig[0]:.0f} | {dig[2]:.0f} | {dig[0]/dig[2]:.2f}x |")
print(f"| manifest GET by digest p99 (ms) | {dig[1]:.2f} | {dig[3]:.2f} | {dig[1]/dig[3]:.3f}x |")
print(f"| peak RSS (MiB) | {rb:.1f} | {rd:.1f} | {rb/rd:.2f}x |")
PY
