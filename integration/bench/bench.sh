#!/usr/bin/env bash
# Side-by-side benchmark: berth vs CNCF Distribution 2.8 (Debian's docker-registry),
# on loopback, same content, measurements interleaved, medians of several runs.
# Prints one table of absolute figures and berth/Distribution ratios; the mirror
# rows (from mirror.sh) compare with Distribution in proxy mode.
# MIRROR=0 skips the mirror rows.
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
user root; daemon off; worker_processes 1; pid $WORK/nginx/pid; error_log $WORK/nginx/error.log;
events {}
http { access_log off; sendfile on; tcp_nopush on;
  server { listen 127.0.0.1:$NP; root $WORK/berth-data/docker/registry/v2/blobs; } }
NGX
nginx -c "$WORK/nginx/nginx.conf" & track $!
NGINX_URL="http://127.0.0.1:$NP/sha256/${BLOB_D:7:2}/${BLOB_D:7}/data"
wait_http "$NGINX_URL"

speed() { python3 integration/bench/get.py "$1"; }
for u in "$B/v2/bench/img/blobs/$BLOB_D" "$D/v2/bench/img/blobs/$BLOB_D" "$NGINX_URL"; do speed "$u" >/dev/null; done
# A GET takes a fraction of a second and loopback throughput on a VM varies a lot, so more runs here.
declare -A S
for _ in $(seq 1 $((RUNS * 3))); do
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

# --- push of a multi-layer image (skopeo, from a dir: layout) ----------------------
PUSH_LAYERS=${PUSH_LAYERS:-3}; PUSH_LAYER_MIB=${PUSH_LAYER_MIB:-110}
SRC=$WORK/push-src; mkdir -p "$SRC"
printf 'Directory Transport Version: 1.1\n' >"$SRC/version"
printf '{}' >"$SRC/config"; CFG_D=$(sha256sum "$SRC/config" | cut -d' ' -f1); mv "$SRC/config" "$SRC/$CFG_D"
layers=""
for i in $(seq 1 "$PUSH_LAYERS"); do
  head -c $((PUSH_LAYER_MIB * 1024 * 1024)) /dev/urandom >"$SRC/l"; h=$(sha256sum "$SRC/l" | cut -d' ' -f1); mv "$SRC/l" "$SRC/$h"
  layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:$h\",\"size\":$((PUSH_LAYER_MIB * 1024 * 1024))}"
done
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":2},"layers":[%s]}' "$CFG_D" "$layers" >"$SRC/manifest.json"
push_time() { # base repo -> seconds
  local t0
  # skopeo remembers where it pushed blobs and would cross-mount them instead of uploading.
  rm -f /var/lib/containers/cache/blob-info-cache-v1.* ~/.local/share/containers/cache/blob-info-cache-v1.*
  t0=$(now)
  skopeo copy -q --dest-tls-verify=false "dir:$SRC" "docker://${1#http://}/$2:1" >/dev/null || { echo "push to $1 failed" >&2; exit 1; }
  python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$(now)"
}
declare -A P
for r in $(seq 1 "$RUNS"); do
  P[b]+=" $(push_time "$B" "push/run$r")"
  P[d]+=" $(push_time "$D" "push/run$r")"
done
PUSH_B=$(median ${P[b]}); PUSH_D=$(median ${P[d]})

RSS_B=$(rss_mib "$BPID"); RSS_D=$(rss_mib "$DPID")

# --- start to first /v2/ 200 on a store of 100 000 blobs ---------------------------
BLOBS=${BLOBS:-100000}
python3 - "$WORK/big-store" "$BLOBS" <<'PY'
import hashlib, os, sys
root, n = sys.argv[1], int(sys.argv[2])
v2 = os.path.join(root, "docker/registry/v2")
for i in range(n):
    data = i.to_bytes(8, "big")
    h = hashlib.sha256(data).hexdigest()
    d = os.path.join(v2, "blobs/sha256", h[:2], h)
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "data"), "wb").write(data)
    l = os.path.join(v2, "repositories/many/_layers/sha256", h)
    os.makedirs(l, exist_ok=True)
    open(os.path.join(l, "link"), "w").write("sha256:" + h)
PY
first_200() { # kind -> seconds from spawn to the first 200 on /v2/
  local port pid t0; port=$(free_port); t0=$(now)
  if [ "$1" = berth ]; then pid=$(start_berth "$WORK/big-store" "$port"); else pid=$(start_distribution "$WORK/big-store" "$port"); fi
  until curl -fs -o /dev/null "http://127.0.0.1:$port/v2/"; do sleep 0.005; done
  python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$(now)"
  stop_pid "$pid"
}
declare -A ST
for _ in $(seq 1 "$RUNS"); do ST[b]+=" $(first_200 berth)"; ST[d]+=" $(first_200 distribution)"; done
START_B=$(median ${ST[b]}); START_D=$(median ${ST[d]})
# --- peak RSS against blob size: a fresh server takes one push and 3 GETs --------------
rss_for() { # berth|distribution MiB -> peak RSS in MiB
  local port pid d f=$WORK/rss-blob-$2
  [ -f "$f" ] || head -c $(($2 * 1024 * 1024)) /dev/urandom >"$f"
  port=$(free_port)
  if [ "$1" = berth ]; then pid=$(start_berth "$WORK/rss-$1-$2" "$port"); else pid=$(start_distribution "$WORK/rss-$1-$2" "$port"); fi
  wait_http "http://127.0.0.1:$port/v2/"
  d=$(push_blob "http://127.0.0.1:$port" rss/img "$f")
  for _ in 1 2 3; do python3 integration/bench/get.py "http://127.0.0.1:$port/v2/rss/img/blobs/$d" >/dev/null; done
  rss_mib "$pid"; stop_pid "$pid"; rm -rf "$WORK/rss-$1-$2"
}
RSS_SMALL=${RSS_SMALL:-16}; RSS_BIG=${RSS_BIG:-1024}
RSS_SIZES="$(rss_for berth "$RSS_SMALL") $(rss_for berth "$RSS_BIG") $(rss_for distribution "$RSS_SMALL") $(rss_for distribution "$RSS_BIG") $RSS_SMALL $RSS_BIG"

python3 - "$BLOB_B" "$BLOB_D_" "$BLOB_N" "${R[tag]}" "${R[digest]}" "$RSS_B" "$RSS_D" "$RUNS" "$BLOB_MIB" "$WRK_SECS" \
  "$PUSH_B $PUSH_D $((PUSH_LAYERS * PUSH_LAYER_MIB))" "$START_B $START_D $BLOBS" "$RSS_SIZES" <<'PY'
import sys
bb, bd, bn = (float(x) for x in sys.argv[1:4])
tag = [float(x) for x in sys.argv[4].split()]
dig = [float(x) for x in sys.argv[5].split()]
rb, rd = float(sys.argv[6]), float(sys.argv[7])
runs, mib, secs = sys.argv[8:11]
print(f"berth vs Distribution 2.8 (plain; proxy mode for mirror rows), loopback; medians of {runs} runs; blob {mib} MiB; wrk -t2 -c32 -d{secs}s")
print(f"| measurement | berth | Distribution | berth/Distribution |")
print(f"|---|---|---|---|")
print(f"| warm blob GET (GB/s) | {bb/1e9:.2f} | {bd/1e9:.2f} | {bb/bd:.2f}x |")
print(f"| warm blob GET vs nginx sendfile ({bn/1e9:.2f} GB/s) | {bb/bn:.2f}x | {bd/bn:.2f}x | |")
print(f"| manifest GET by tag (req/s) | {tag[0]:.0f} | {tag[2]:.0f} | {tag[0]/tag[2]:.2f}x |")
print(f"| manifest GET by tag p99 (ms) | {tag[1]:.2f} | {tag[3]:.2f} | {tag[1]/tag[3]:.3f}x |")
print(f"| manifest GET by digest (req/s) | {dig[0]:.0f} | {dig[2]:.0f} | {dig[0]/dig[2]:.2f}x |")
print(f"| manifest GET by digest p99 (ms) | {dig[1]:.2f} | {dig[3]:.2f} | {dig[1]/dig[3]:.3f}x |")
pb, pd, pmib = (float(x) for x in sys.argv[11].split())
sb, sd, nblobs = (float(x) for x in sys.argv[12].split())
print(f"| push of a {pmib:.0f} MiB 3-layer image, skopeo (s) | {pb:.2f} | {pd:.2f} | {pb/pd:.2f}x |")
print(f"| peak RSS after the above (MiB) | {rb:.1f} | {rd:.1f} | {rb/rd:.2f}x |")
print(f"| start to first /v2/ 200 on {nblobs:.0f} blobs (ms) | {sb*1000:.0f} | {sd*1000:.0f} | {sb/sd:.2f}x |")
b1, b2, d1, d2, m1, m2 = (float(x) for x in sys.argv[13].split())
print(f"| peak RSS, push + 3 GETs of one {m1:.0f} MiB / {m2:.0f} MiB blob (MiB) | {b1:.1f} / {b2:.1f} | {d1:.1f} / {d2:.1f} | {b2/d2:.2f}x |")
PY

if [ "${MIRROR:-1}" = 1 ]; then
  ROWS_ONLY=1 RUNS=$RUNS bash integration/bench/mirror.sh
fi
