#!/usr/bin/env bash
# TLS and authentication costs, side by side on loopback in one run: berth over
# plain HTTP, berth over TLS, and Distribution 2.8 over TLS (same certificate);
# then manifest GETs with authentication off and on (berth with Basic
# credentials, berth with a Bearer token from its /v2/token, Distribution with
# htpasswd). Medians of RUNS; wrk -t2 -c32.
#
#   bash integration/bench/tls_auth.sh        # RUNS=3 BLOB_MIB=256 WRK_SECS=10
#
# Not a test: nothing here asserts; numbers go to BENCHMARKS.md by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${RUNS:-3}
BLOB_MIB=${BLOB_MIB:-256}
WRK_SECS=${WRK_SECS:-10}
source integration/bench/lib.sh

make_certificate
USER_PW=bench:bench-password
echo bench-password | "$BERTH" htpasswd bench --stdin >"$WORK/htpasswd"
cat >"$WORK/tls.toml" <<TOML
[server.tls]
certificate = "$WORK/tls.crt"
key = "$WORK/tls.key"
TOML
cat >"$WORK/auth.toml" <<TOML
[auth.htpasswd]
path = "$WORK/htpasswd"
TOML

head -c $((BLOB_MIB * 1024 * 1024)) /dev/urandom >"$WORK/blob"
BLOB_D="sha256:$(sha256sum "$WORK/blob" | cut -d' ' -f1)"
MT=application/vnd.oci.image.manifest.v1+json

P1=$(free_port); start_berth "$WORK/b-plain" "$P1" --no-mirror >/dev/null
P2=$(free_port); start_berth "$WORK/b-tls" "$P2" --no-mirror --config "$WORK/tls.toml" >/dev/null
P3=$(free_port); start_berth "$WORK/b-auth" "$P3" --no-mirror --config "$WORK/auth.toml" >/dev/null
P4=$(free_port); start_distribution "$WORK/d-tls" "$P4" "" "tls: {certificate: $WORK/tls.crt, key: $WORK/tls.key}" >/dev/null
P5=$(free_port); start_distribution "$WORK/d-auth" "$P5" "auth: {htpasswd: {realm: bench, path: $WORK/htpasswd}}" >/dev/null
B1=http://127.0.0.1:$P1; B2=https://localhost:$P2; B3=http://127.0.0.1:$P3; D4=https://localhost:$P4; D5=http://127.0.0.1:$P5
for u in "$B1" "$B2" "$D4"; do wait_http "$u/v2/"; done
for u in "$B3" "$D5"; do until curl -fs -u "$USER_PW" -o /dev/null "$u/v2/"; do sleep 0.05; done; done
for u in "$B1" "$B2" "$D4"; do push_image "$u" bench/img latest "$WORK/blob"; done
for u in "$B3" "$D5"; do CURL_USER=$USER_PW push_image "$u" bench/img latest "$WORK/blob"; done

speed() { python3 integration/bench/get.py "$1"; }
declare -A S
for u in B1 B2 D4; do speed "${!u}/v2/bench/img/blobs/$BLOB_D" >/dev/null; done
for _ in $(seq 1 $((RUNS * 3))); do
  for u in B1 B2 D4; do S[$u]+=" $(speed "${!u}/v2/bench/img/blobs/$BLOB_D")"; done
done

wrk_rps() { # url [header] -> req/s
  wrk -t2 -c32 -d"${WRK_SECS}s" -H "Accept: $MT" ${2:+-H "$2"} "$1" | awk '/Requests\/sec/ {print $2}'; }
BASIC="Authorization: Basic $(printf %s "$USER_PW" | base64)"
TOKEN=$(curl -fsS -u "$USER_PW" "$B3/v2/token?service=bench&scope=repository:bench/img:pull" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
BEARER="Authorization: Bearer $TOKEN"
declare -A R
for _ in $(seq 1 "$RUNS"); do
  R[B1]+=" $(wrk_rps "$B1/v2/bench/img/manifests/latest")"
  R[B2]+=" $(wrk_rps "$B2/v2/bench/img/manifests/latest")"
  R[D4]+=" $(wrk_rps "$D4/v2/bench/img/manifests/latest")"
  R[B3b]+=" $(wrk_rps "$B3/v2/bench/img/manifests/latest" "$BASIC")"
  R[B3t]+=" $(wrk_rps "$B3/v2/bench/img/manifests/latest" "$BEARER")"
  R[D5]+=" $(wrk_rps "$D5/v2/bench/img/manifests/latest" "$BASIC")"
done
# Distribution without auth, for the auth ratio on its side (plain, same content).
P6=$(free_port); start_distribution "$WORK/d-auth" "$P6" >/dev/null; wait_http "http://127.0.0.1:$P6/v2/"
for _ in $(seq 1 "$RUNS"); do R[D6]+=" $(wrk_rps "http://127.0.0.1:$P6/v2/bench/img/manifests/latest")"; done

m() { median $1; }
python3 - "$(m "${S[B1]}")" "$(m "${S[B2]}")" "$(m "${S[D4]}")" "$(m "${R[B1]}")" "$(m "${R[B2]}")" "$(m "${R[D4]}")" \
  "$(m "${R[B3b]}")" "$(m "${R[B3t]}")" "$(m "${R[D5]}")" "$(m "${R[D6]}")" "$RUNS" "$BLOB_MIB" "$WRK_SECS" <<'PY'
import sys
bp, bt, dt, mp, mt, mdt, ab, at, da, dn = (float(x) for x in sys.argv[1:11])
runs, mib, secs = sys.argv[11:14]
print(f"TLS and auth, loopback; medians of {runs} runs; blob {mib} MiB (python client); wrk -t2 -c32 -d{secs}s; manifest GET by tag")
print("| measurement | berth, plain HTTP | berth, TLS | Distribution, TLS | berth TLS / plain | berth TLS / Distribution TLS |")
print("|---|---|---|---|---|---|")
print(f"| warm blob GET (GB/s) | {bp/1e9:.2f} | {bt/1e9:.2f} | {dt/1e9:.2f} | {bt/bp:.2f}x | {bt/dt:.2f}x |")
print(f"| manifest GET (req/s) | {mp:.0f} | {mt:.0f} | {mdt:.0f} | {mt/mp:.2f}x | {mt/mdt:.2f}x |")
print()
print("| manifest GET (req/s) | auth off | htpasswd, Basic on every request | Bearer token | on/off |")
print("|---|---|---|---|---|")
print(f"| berth | {mp:.0f} | {ab:.0f} | {at:.0f} | {ab/mp:.2f}x (Basic), {at/mp:.2f}x (token) |")
print(f"| Distribution 2.8 | {dn:.0f} | {da:.0f} | | {da/dn:.3f}x |")
PY
