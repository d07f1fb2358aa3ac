#!/usr/bin/env bash
# What recording pulls of pushed content costs (issue 22's goal: within 3%):
# one berth binary twice, one with use recording off (BENCH_NO_USE_TRACKING=1,
# as lifecycle.sh does for mirrored content), each serving its own copy of
# one pushed image; wrk -t2 -c32 on the manifest GET by tag and by digest,
# ROUNDS times interleaved.
#
#   bash integration/bench/pushed_uses.sh      # ROUNDS=5 WRK_SECS=6
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}
WRK_SECS=${WRK_SECS:-6}
source integration/bench/lib.sh
MT=application/vnd.oci.image.manifest.v1+json

head -c 4096 /dev/urandom >"$WORK/layer"
declare -A PORT
for mode in on off; do
  port=$(free_port); PORT[$mode]=$port
  if [ "$mode" = off ]; then
    BENCH_NO_USE_TRACKING=1 start_berth "$WORK/data-$mode" "$port" --no-mirror >/dev/null
  else
    start_berth "$WORK/data-$mode" "$port" --no-mirror >/dev/null
  fi
  wait_http "http://127.0.0.1:$port/v2/"
  push_image "http://127.0.0.1:$port" bench/img latest "$WORK/layer"
done
DIGEST="sha256:$(sha256sum "$WORK/manifest-bench_img-latest.json" | cut -d' ' -f1)"
rps() { wrk -t2 -c32 -d"${WRK_SECS}s" -H "Accept: $MT" "$1" | awk '/Requests\/sec/ {print $2}'; }
declare -A R
for ref in latest "$DIGEST"; do
  for mode in on off; do rps "http://127.0.0.1:${PORT[$mode]}/v2/bench/img/manifests/$ref" >/dev/null; done
  for _ in $(seq 1 "$ROUNDS"); do
    for mode in on off; do R[$mode$ref]+=" $(rps "http://127.0.0.1:${PORT[$mode]}/v2/bench/img/manifests/$ref")"; done
  done
done
echo "| pushed manifest GET (req/s, median of $ROUNDS) | recording pulls | not recording | ratio |"
echo "|---|---|---|---|"
for ref in latest "$DIGEST"; do
  on=$(median ${R[on$ref]}); off=$(median ${R[off$ref]})
  kind=$([ "$ref" = latest ] && echo "by tag" || echo "by digest")
  echo "| $kind | $on | $off | $(python3 -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.3f}')" "$on" "$off")× |"
done
