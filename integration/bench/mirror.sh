#!/usr/bin/env bash
# Mirror benchmark: berth's mirror vs CNCF Distribution 2.8 in proxy mode, both
# in front of one upstream (a plain Distribution), on loopback. Measures cold
# and warm pulls of a multi-layer image (skopeo), the direct pull from the
# upstream as reference, and what the upstream serves for 16 concurrent cold
# GETs of one large blob. Medians of RUNS runs; caches start empty each run;
# a cold pull's ratio to direct is taken within its run, then the median.
#
#   bash integration/bench/mirror.sh     # RUNS=3 LAYER_MIB=110 LAYERS=3 BLOB_MIB=256
# bench.sh runs it with ROWS_ONLY=1 and appends its rows to the one table.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}
LAYER_MIB=${LAYER_MIB:-110}
LAYERS=${LAYERS:-3}
BLOB_MIB=${BLOB_MIB:-256}
CONCURRENT=${CONCURRENT:-16}
source integration/bench/lib.sh

start_upstream
head -c $((BLOB_MIB * 1024 * 1024)) /dev/urandom >"$WORK/one"
push_image "$UP" library/one 1 "$WORK/one"
ONE_D="sha256:$(sha256sum "$WORK/one" | cut -d' ' -f1)"
IMAGE_BYTES=$(( LAYERS * LAYER_MIB * 1024 * 1024 + 2 ))

start_mirror() { # kind -> "pid port"
  local port; port=$(free_port)
  if [ "$1" = berth ]; then
    echo "$(start_berth "$WORK/m-$port" "$port" --mirror "docker.io=$UP") $port"
  else
    echo "$(start_distribution "$WORK/m-$port" "$port" "proxy: {remoteurl: $UP}") $port"
  fi
}

declare -A COLD WARM BYTES RSS
DIRECT=""
for _ in $(seq 1 "$RUNS"); do
  DIRECT+=" $(pull "$UP")"
  for kind in berth distribution; do
    read -r pid port < <(start_mirror $kind)
    wait_http "http://127.0.0.1:$port/v2/"
    from=$(lines "$UP_LOG")
    COLD[$kind]+=" $(pull "http://127.0.0.1:$port")"
    read -r bytes _ < <(upstream_served "$UP_LOG" "$from")
    BYTES[$kind]+=" $bytes"
    WARM[$kind]+=" $(pull "http://127.0.0.1:$port")"
    RSS[$kind]+=" $(rss_mib "$pid")"
    stop_pid "$pid"
  done
done

declare -A CBYTES CREQS
for kind in berth distribution; do
  read -r pid port < <(start_mirror $kind)
  wait_http "http://127.0.0.1:$port/v2/"
  # The manifest first, as a client would (and so the proxy knows the repository).
  curl -fsS -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://127.0.0.1:$port/v2/library/one/manifests/1"
  from=$(lines "$UP_LOG")
  getters=()
  for _ in $(seq 1 "$CONCURRENT"); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/library/one/blobs/$ONE_D" & getters+=($!)
  done
  wait "${getters[@]}"
  read -r b n < <(upstream_served "$UP_LOG" "$from")
  CBYTES[$kind]=$b; CREQS[$kind]=$n
  stop_pid "$pid"
done

python3 - "$RUNS" "$IMAGE_BYTES" "$BLOB_MIB" "$CONCURRENT" "$DIRECT" "${COLD[berth]}" "${COLD[distribution]}" \
  "${WARM[berth]}" "${WARM[distribution]}" "${BYTES[berth]}" "${BYTES[distribution]}" \
  "${CBYTES[berth]} ${CREQS[berth]}" "${CBYTES[distribution]} ${CREQS[distribution]}" "${RSS[berth]}" "${RSS[distribution]}" <<'PY'
import statistics as st, sys
a = sys.argv
runs, image, blob_mib, conc = int(a[1]), int(a[2]), int(a[3]), int(a[4])
med = lambda s: st.median(float(x) for x in s.split())
direct, cb, cd, wb, wd, bb, bd = (med(x) for x in a[5:12])
# Each cold pull against the direct pull of its own run: paired ratios cancel
# the machine's drift between runs.
paired = lambda cold: st.median(float(c) / float(d) for c, d in zip(a[cold].split(), a[5].split()))
rcb, rcd = paired(6), paired(7)
(cbb, cbn), (cdb, cdn) = (map(int, x.split()) for x in a[12:14])
rb, rd = med(a[14]), med(a[15])
blob = blob_mib * 1024 * 1024
import os
if not os.environ.get("ROWS_ONLY"):
    print(f"mirror: berth vs Distribution 2.8 proxy, one upstream, loopback; medians of {runs} runs; image {image/2**20:.0f} MiB")
    print("| measurement | berth | Distribution proxy | berth/Distribution |")
    print("|---|---|---|---|")
print(f"| mirror: cold pull of {image/2**20:.0f} MiB (s) [direct from upstream: {direct:.2f} s] | {cb:.2f} ({rcb:.2f}x direct) | {cd:.2f} ({rcd:.2f}x direct) | {cb/cd:.2f}x |")
print(f"| mirror: warm pull (s) | {wb:.2f} | {wd:.2f} | {wb/wd:.2f}x |")
print(f"| mirror: upstream bytes, cold pull (x image) | {bb/image:.2f} | {bd/image:.2f} | {bb/bd:.2f}x |")
print(f"| mirror: upstream bytes, {conc} concurrent cold GETs of a {blob_mib} MiB blob (x blob) | {cbb/blob:.2f} ({cbn} GETs) | {cdb/blob:.2f} ({cdn} GETs) | {cbb/max(cdb,1):.2f}x |")
print(f"| mirror: peak RSS after cold+warm pull (MiB) | {rb:.1f} | {rd:.1f} | {rb/rd:.2f}x |")
PY
