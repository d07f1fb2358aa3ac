#!/usr/bin/env bash
# A/B of two berth builds on the manifest GET (by tag, by digest): each serves
# its own data directory holding the same small image, and `wrk -t2 -c32` runs
# against them in turn, ROUNDS times interleaved, so both see the same machine.
# A change to the request path says in BENCHMARKS.md what this printed.
#
#   BASE_BIN=/path/to/old/berth bash integration/bench/ab.sh
#
# (build the old one with e.g. `git worktree add /tmp/base REV && cd /tmp/base &&
# cargo build --release --bin berth`). The new one is this checkout's release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${BASE_BIN:?set BASE_BIN to the berth binary to compare against}"
ROUNDS=${ROUNDS:-3}
WRK_SECS=${WRK_SECS:-8}
source integration/bench/lib.sh
MT=application/vnd.oci.image.manifest.v1+json
head -c $((1024 * 1024)) /dev/urandom >"$WORK/layer"

AP=$(free_port); BP=$(free_port)
BERTH=$BASE_BIN; APID=$(start_berth "$WORK/a-data" "$AP")
BERTH=$PWD/target/release/berth; BPID=$(start_berth "$WORK/b-data" "$BP")
A=http://127.0.0.1:$AP; B=http://127.0.0.1:$BP
wait_http "$A/v2/"; wait_http "$B/v2/"
push_image "$A" bench/img latest "$WORK/layer"; push_image "$B" bench/img latest "$WORK/layer"
DIGEST="sha256:$(sha256sum "$WORK/manifest-bench_img-latest.json" | cut -d' ' -f1)"

rps() { wrk -t2 -c32 -d"${WRK_SECS}s" -H "Accept: $MT" "$1" | awk '/Requests\/sec/ {print $2}'; }
declare -A R
for ref in latest "$DIGEST"; do
  rps "$A/v2/bench/img/manifests/$ref" >/dev/null; rps "$B/v2/bench/img/manifests/$ref" >/dev/null  # warm-up
  for _ in $(seq 1 "$ROUNDS"); do
    R[a$ref]+=" $(rps "$A/v2/bench/img/manifests/$ref")"
    R[b$ref]+=" $(rps "$B/v2/bench/img/manifests/$ref")"
  done
done
echo "| manifest GET | base (req/s, median of $ROUNDS) | this build | ratio |"
echo "|---|---|---|---|"
for ref in latest "$DIGEST"; do
  a=$(median ${R[a$ref]}); b=$(median ${R[b$ref]})
  kind=$([ "$ref" = latest ] && echo "by tag" || echo "by digest")
  python3 -c "print(f'| $kind | {$a:.0f} | {$b:.0f} | {$b/$a:.2f}x |')"
  echo "  runs: base${R[a$ref]}; this${R[b$ref]}" >&2
done
