#!/usr/bin/env bash
# What a quota check costs on a large store (issue 22): the store of
# retention.sh (TAGS manifests in REPOS repositories, indexed once), served by
# berth without and with a quota over `ci/*`; UPLOADS monolithic blob uploads
# of 4 KiB into ci/app0, sequentially, timed: the first apart (under a quota it
# counts the index), then the rest (each adds to the running count).
#
#   bash integration/bench/quota.sh      # TAGS=100000 REPOS=100 UPLOADS=100
set -euo pipefail
cd "$(dirname "$0")/../.."
TAGS=${TAGS:-100000}
REPOS=${REPOS:-100}
UPLOADS=${UPLOADS:-100}
source integration/bench/lib.sh
python3 integration/bench/make_store.py "$WORK/store" "$TAGS" "$REPOS"
"$BERTH" gc --dry-run --data "$WORK/store" >/dev/null  # builds the index once
printf '[[quota]]\nrepositories = ["ci/*"]\nmax_size = "100GiB"\n' >"$WORK/quota.toml"
upload() { # base: one 4 KiB blob
  head -c 4096 /dev/urandom >"$WORK/blob"
  curl -fsS -X POST --data-binary @"$WORK/blob" -H 'Content-Type: application/octet-stream' \
    "$1/v2/ci/app0/blobs/uploads/?digest=sha256:$(sha256sum "$WORK/blob" | cut -d' ' -f1)" -o /dev/null
}
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(now)"; }
declare -A FIRST REST
for mode in off on; do
  port=$(free_port)
  args=(--no-mirror)
  [ "$mode" = on ] && args+=(--config "$WORK/quota.toml")
  pid=$(start_berth "$WORK/store" "$port" "${args[@]}")
  wait_http "http://127.0.0.1:$port/v2/"
  t0=$(now)
  upload "http://127.0.0.1:$port"
  FIRST[$mode]=$(since "$t0")
  t0=$(now)
  for _ in $(seq 2 "$UPLOADS"); do upload "http://127.0.0.1:$port"; done
  REST[$mode]=$(since "$t0")
  stop_pid "$pid"
done
echo "| blob uploads into a store of $TAGS manifests (seconds) | no quota | a quota over ci/* |"
echo "|---|---|---|"
echo "| the first (the quota counts the index) | ${FIRST[off]} | ${FIRST[on]} |"
echo "| the next $((UPLOADS - 1)) (the running count) | ${REST[off]} | ${REST[on]} |"
