#!/usr/bin/env bash
# What the signature policy costs, side by side in one run: a Distribution
# upstream holds library/big:1 (LAYERS layers of LAYER_MIB MiB) and its cosign
# signature (made here with OpenSSL); one berth mirrors it with no policy, the
# other with `enforce` over docker.io/library/*.
#   - mirrored manifest GET by tag, warm (the verdict cached), `wrk -t2 -c32`,
#     ROUNDS times interleaved: enforce against off;
#   - a cold pull (skopeo) through a fresh berth, RUNS times: enforce (the
#     signature tag, the referrers list and the payload fetched and checked
#     before the first byte) against off.
#
#   bash integration/bench/trust.sh      # ROUNDS=3 WRK_SECS=8 RUNS=3 LAYERS=3 LAYER_MIB=32 (PERF=file: a profile)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
WRK_SECS=${WRK_SECS:-8}
RUNS=${RUNS:-3}
LAYERS=${LAYERS:-3}
LAYER_MIB=${LAYER_MIB:-32}
source integration/bench/lib.sh
MT=application/vnd.oci.image.manifest.v1+json

start_upstream
# The signature: cosign's payload for the manifest's digest, signed with a P-256 key.
DIGEST="sha256:$(sha256sum "$WORK/manifest-library_big-1.json" | cut -d' ' -f1)"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/sign.key" 2>/dev/null
openssl pkey -in "$WORK/sign.key" -pubout -out "$WORK/sign.pub"
printf '{"critical":{"identity":{"docker-reference":"docker.io/library/big"},"image":{"docker-manifest-digest":"%s"},"type":"cosign container image signature"},"optional":null}' \
  "$DIGEST" >"$WORK/payload.json"
SIG=$(openssl dgst -sha256 -sign "$WORK/sign.key" "$WORK/payload.json" | base64 -w0)
PD=$(push_blob "$UP" library/big "$WORK/payload.json")
printf '{}' >"$WORK/empty.json"
CD=$(push_blob "$UP" library/big "$WORK/empty.json")
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":2},"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"%s","size":%s,"annotations":{"dev.cosignproject.cosign/signature":"%s"}}]}' \
  "$MT" "$CD" "$PD" "$(stat -c %s "$WORK/payload.json")" "$SIG" >"$WORK/sig.json"
curl -fsS -X PUT -H "Content-Type: $MT" --data-binary @"$WORK/sig.json" \
  "$UP/v2/library/big/manifests/sha256-${DIGEST#sha256:}.sig" -o /dev/null

cat >"$WORK/enforce.toml" <<TOML
[[mirror.verify]]
repositories = ["docker.io/library/*"]
keys = ["$WORK/sign.pub"]
mode = "enforce"
TOML
start_mirror() { # off|enforce -> "pid port"
  local port; port=$(free_port)
  local extra=()
  [ "$1" = enforce ] && extra=(--config "$WORK/enforce.toml")
  echo "$(start_berth "$WORK/m-$1-$port" "$port" "${extra[@]}" --mirror "docker.io=$UP") $port"
}

declare -A COLD
for _ in $(seq 1 "$RUNS"); do
  for mode in off enforce; do
    read -r pid port < <(start_mirror $mode)
    wait_http "http://127.0.0.1:$port/v2/"
    COLD[$mode]+=" $(pull "http://127.0.0.1:$port")"
    stop_pid "$pid"
  done
done

# Warm: one berth of each kind, the image pulled once through each.
declare -A URL RPS PID
for mode in off enforce; do
  read -r pid port < <(start_mirror $mode)
  PID[$mode]=$pid
  wait_http "http://127.0.0.1:$port/v2/"
  pull "http://127.0.0.1:$port" >/dev/null
  URL[$mode]="http://127.0.0.1:$port/v2/library/big/manifests/1"
  curl -fsS -o /dev/null -H "Accept: $MT" "${URL[$mode]}"
done
rps() { wrk -t2 -c32 -d"${WRK_SECS}s" -H "Accept: $MT" "$1" | awk '/Requests\/sec/ {print $2}'; }
for mode in off enforce; do rps "${URL[$mode]}" >/dev/null; done # warm-up
for _ in $(seq 1 "$ROUNDS"); do
  for mode in off enforce; do RPS[$mode]+=" $(rps "${URL[$mode]}")"; done
done

if [ -n "${PERF:-}" ]; then # a profile of the enforcing server under wrk, to $PERF
  perf record -g -o "$PERF" -p "${PID[enforce]}" -- sleep "$WRK_SECS" >/dev/null 2>&1 &
  rps "${URL[enforce]}" >/dev/null
  wait
fi
off=$(median ${RPS[off]}); enf=$(median ${RPS[enforce]})
coff=$(median ${COLD[off]}); cenf=$(median ${COLD[enforce]})
echo "| signature policy (median) | off | enforce | enforce / off |"
echo "|---|---|---|---|"
python3 -c "print(f'| mirrored manifest GET by tag, warm, req/s ($ROUNDS × ${WRK_SECS} s) | {$off:.0f} | {$enf:.0f} | {$enf/$off:.3f}× |')"
python3 -c "print(f'| cold pull of $((LAYERS * LAYER_MIB)) MiB through a fresh berth, s ($RUNS runs) | {$coff:.2f} | {$cenf:.2f} | {$cenf/$coff:.3f}× |')"
for k in "${!RPS[@]}"; do echo "  req/s $k:${RPS[$k]}" >&2; done
for k in "${!COLD[@]}"; do echo "  cold $k:${COLD[$k]}" >&2; done
