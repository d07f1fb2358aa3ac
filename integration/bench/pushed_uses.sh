#!/usr/bin/env bash
# What recording pulls of pushed content costs (issue 22's goal: within 3%):
# one berth binary twice, one with use recording off (BENCH_NO_USE_TRACKING=1,
# as lifecycle.sh does for mirrored content), each serving its own copy of
# one pushed image; wrk -t2 -c32 on the manifest GET by tag and by digest,
# ROUNDS times interleaved. Besides req/s (which this machine's noise moves by
# more than the goal), the server's CPU time per request (utime + stime from
# /proc over each run, divided by the requests wrk completed): the cost itself.
#
#   bash integration/bench/pushed_uses.sh      # ROUNDS=5 WRK_SECS=6
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}
WRK_SECS=${WRK_SECS:-6}
source integration/bench/lib.sh
MT=application/vnd.oci.image.manifest.v1+json

head -c 4096 /dev/urandom >"$WORK/layer"
declare -A PORT PID
for mode in on off; do
  port=$(free_port); PORT[$mode]=$port
  if [ "$mode" = off ]; then
    PID[$mode]=$(BENCH_NO_USE_TRACKING=1 start_berth "$WORK/data-$mode" "$port" --no-mirror)
  else
    PID[$mode]=$(start_berth "$WORK/data-$mode" "$port" --no-mirror)
  fi
  wait_http "http://127.0.0.1:$port/v2/"
  push_image "http://127.0.0.1:$port" bench/img latest "$WORK/layer"
done
DIGEST="sha256:$(sha256sum "$WORK/manifest-bench_img-latest.json" | cut -d' ' -f1)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# measure MODE URL -> "req/s µs-of-server-CPU-per-request"
measure() {
  local t0 t1 out
  t0=$(cpu_ticks "${PID[$1]}")
  out=$(wrk -t2 -c32 -d"${WRK_SECS}s" -H "Accept: $MT" "$2")
  t1=$(cpu_ticks "${PID[$1]}")
  python3 -c '
import re, sys
t0, t1, hz = map(float, sys.argv[1:4])
text = sys.argv[4]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
n = int(re.search(r"(\d+) requests in", text).group(1))
print(rps, round((t1 - t0) / hz / n * 1e6, 2))' "$t0" "$t1" "$(getconf CLK_TCK)" "$out"
}
declare -A R C
for ref in latest "$DIGEST"; do
  for mode in on off; do measure "$mode" "http://127.0.0.1:${PORT[$mode]}/v2/bench/img/manifests/$ref" >/dev/null; done
  for _ in $(seq 1 "$ROUNDS"); do
    for mode in on off; do
      read -r rps cpu < <(measure "$mode" "http://127.0.0.1:${PORT[$mode]}/v2/bench/img/manifests/$ref")
      R[$mode$ref]+=" $rps"; C[$mode$ref]+=" $cpu"
    done
  done
done
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.3f}')" "$1" "$2"; }
echo "| pushed manifest GET (median of $ROUNDS) | recording pulls | not recording | ratio |"
echo "|---|---|---|---|"
for ref in latest "$DIGEST"; do
  kind=$([ "$ref" = latest ] && echo "by tag" || echo "by digest")
  on=$(median ${R[on$ref]}); off=$(median ${R[off$ref]})
  echo "| $kind, req/s | $on | $off | $(ratio "$on" "$off")× |"
  on=$(median ${C[on$ref]}); off=$(median ${C[off$ref]})
  echo "| $kind, server CPU µs per request | $on | $off | $(ratio "$on" "$off")× |"
done
