#!/usr/bin/env bash
# What a quota check costs on a large store (issue 22): the store of
# retention.sh (TAGS manifests in REPOS repositories, indexed once), served by
# berth without and with a quota over `ci/*`; UPLOADS monolithic blob uploads
# of 4 KiB into ci/app0, sequentially, timed (each upload commit under a quota
# counts the quota's use from the index).
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
uploads() { # base -> seconds for UPLOADS uploads
  local t0; t0=$(now)
  for i in $(seq 1 "$UPLOADS"); do
    head -c 4096 /dev/urandom >"$WORK/blob"
    curl -fsS -X POST --data-binary @"$WORK/blob" -H 'Content-Type: application/octet-stream' \
      "$1/v2/ci/app0/blobs/uploads/?digest=sha256:$(sha256sum "$WORK/blob" | cut -d' ' -f1)" -o /dev/null
  done
  python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$t0" "$(now)"
}
declare -A T
for mode in off on; do
  port=$(free_port)
  args=(--no-mirror)
  [ "$mode" = on ] && args+=(--config "$WORK/quota.toml")
  pid=$(start_berth "$WORK/store" "$port" "${args[@]}")
  wait_http "http://127.0.0.1:$port/v2/"
  T[$mode]=$(uploads "http://127.0.0.1:$port")
  stop_pid "$pid"
done
echo "| $UPLOADS blob uploads into a store of $TAGS manifests | no quota | a quota over ci/* |"
echo "|---|---|---|"
echo "| seconds | ${T[off]} | ${T[on]} |"
