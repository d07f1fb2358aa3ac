#!/usr/bin/env bash
# Blob push and GET throughput on the object backend, side by side in one run:
# berth on a local directory, berth on SeaweedFS (S3), and Distribution 2.8
# with its S3 driver on the same SeaweedFS. Each push is a fresh random blob
# (POST, then one PUT with the body); each GET streams one pushed blob.
# Medians of RUNS.
#
#   bash integration/bench/object_storage.sh        # RUNS=3 BLOB_MIB=256
#
# Needs SeaweedFS in /opt/berth-venv (`.ci/run` installs it).
# Not a test: nothing here asserts; numbers go to BENCHMARKS.md by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${RUNS:-3}
BLOB_MIB=${BLOB_MIB:-256}
source integration/bench/lib.sh
WEED=${WEED:-/opt/berth-venv/bin/weed}
ACCESS=GKtestaccesskey000000000
SECRET=testsecretkey0000000000000000000000000000000000000000000000000000

# --- SeaweedFS, one process, with a bucket ------------------------------------------
mkdir -p "$WORK/weed"
cat >"$WORK/weed/s3.json" <<JSON
{"identities":[{"name":"bench","credentials":[{"accessKey":"$ACCESS","secretKey":"$SECRET"}],
  "actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
S3P=$(free_port)
ports=()
for _ in 1 2 3 4 5 6 7; do ports+=("$(free_port)"); done
"$WEED" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$WORK/weed" -master.volumeSizeLimitMB=64 -volume.max=100 \
  -volume.preStopSeconds=0 -master.telemetry=false -filer -s3 -s3.port="$S3P" -s3.config="$WORK/weed/s3.json" \
  -s3.port.iceberg=0 -s3.port.lance=0 -master.port="${ports[0]}" -master.port.grpc="${ports[1]}" \
  -volume.port="${ports[2]}" -volume.port.grpc="${ports[3]}" -filer.port="${ports[4]}" \
  -filer.port.grpc="${ports[5]}" -s3.port.grpc="${ports[6]}" >"$WORK/weed.log" 2>&1 &
track $!
ENDPOINT=http://127.0.0.1:$S3P
until curl -s -o /dev/null "$ENDPOINT/"; do sleep 0.2; done
until [ "$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 aws:amz:us-east-1:s3 --user "$ACCESS:$SECRET" \
  -X PUT "$ENDPOINT/bench")" = 200 ]; do sleep 0.2; done

# --- the three registries -------------------------------------------------------------
P1=$(free_port); start_berth "$WORK/b-fs" "$P1" --no-mirror >/dev/null
P2=$(free_port)
BERTH_STORAGE__S3__ENDPOINT=$ENDPOINT BERTH_STORAGE__S3__BUCKET=bench BERTH_STORAGE__S3__PREFIX=berth \
  BERTH_STORAGE__S3__ACCESS_KEY=$ACCESS BERTH_STORAGE__S3__SECRET_KEY=$SECRET \
  start_berth "$WORK/b-s3" "$P2" --no-mirror >/dev/null
P3=$(free_port)
cat >"$WORK/d-s3.yml" <<YML
version: 0.1
log: {level: warn}
storage:
  s3: {regionendpoint: "$ENDPOINT", region: us-east-1, bucket: bench, rootdirectory: /dist,
       accesskey: $ACCESS, secretkey: $SECRET, secure: false, v4auth: true}
  delete: {enabled: true}
  # Served through Distribution, as berth serves them: by default it answers a blob GET
  # with a redirect to the S3 server, which clients often cannot reach.
  redirect: {disable: true}
http: {addr: "127.0.0.1:$P3"}
YML
env -u AWS_CA_BUNDLE docker-registry serve "$WORK/d-s3.yml" >"$WORK/d-s3.log" 2>&1 &
track $!
B1=http://127.0.0.1:$P1; B2=http://127.0.0.1:$P2; D3=http://127.0.0.1:$P3
for u in "$B1" "$B2" "$D3"; do wait_http "$u/v2/"; done

# --- pushes: a fresh blob each time ------------------------------------------------------
declare -A PUSH GET
for r in $(seq 1 "$RUNS"); do
  for u in B1 B2 D3; do
    head -c $((BLOB_MIB * 1024 * 1024)) /dev/urandom >"$WORK/blob-$u"
    t0=$(now); d=$(push_blob "${!u}" bench/img "$WORK/blob-$u"); t1=$(now)
    PUSH[$u]+=" $(python3 -c "print($BLOB_MIB * 1048576 / ($t1 - $t0) / 1e6)")"
    echo "$d" >"$WORK/digest-$u"
  done
done

# --- GETs of the last pushed blob --------------------------------------------------------
speed() { python3 integration/bench/get.py "$1"; }
for u in B1 B2 D3; do speed "${!u}/v2/bench/img/blobs/$(cat "$WORK/digest-$u")" >/dev/null; done
for _ in $(seq 1 "$RUNS"); do
  for u in B1 B2 D3; do GET[$u]+=" $(speed "${!u}/v2/bench/img/blobs/$(cat "$WORK/digest-$u")")"; done
done

m() { median $1; }
mb() { python3 -c "print(f'{$1:.0f}')"; }
gb() { python3 -c "print(f'{$1 / 1e9:.2f}')"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}x')"; }
pf=$(m "${PUSH[B1]}"); ps=$(m "${PUSH[B2]}"); pd=$(m "${PUSH[D3]}")
gf=$(m "${GET[B1]}"); gs=$(m "${GET[B2]}"); gd=$(m "${GET[D3]}")
echo
echo "$BLOB_MIB MiB blobs, medians of $RUNS"
echo "| measurement | berth, directory | berth, S3 | Distribution, S3 | berth S3 / directory | berth S3 / Distribution S3 |"
echo "|---|---|---|---|---|---|"
echo "| blob push, POST + PUT (MB/s) | $(mb "$pf") | $(mb "$ps") | $(mb "$pd") | $(ratio "$ps" "$pf") | $(ratio "$ps" "$pd") |"
echo "| blob GET (GB/s) | $(gb "$gf") | $(gb "$gs") | $(gb "$gd") | $(ratio "$gs" "$gf") | $(ratio "$gs" "$gd") |"
