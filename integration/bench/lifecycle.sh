#!/usr/bin/env bash
# Cache-lifecycle benchmark rows, side by side in one run:
#   - garbage collection: `berth gc` against `registry garbage-collect` on two copies
#     of one store of BLOBS blobs (half of them garbage): time and peak RSS;
#   - start to the first /v2/ 200 on that store, with no index (first start: the
#     index is built in the background) and with one; and how long indexing takes;
#   - eviction: a mirror store of EVICT_BLOBS blobs of EVICT_KIB each, all expired:
#     blobs/s and GB/s freed by one pass;
#   - the cost of recording uses: mirrored manifest GETs by tag with and without it.
#
#   bash integration/bench/lifecycle.sh     # BLOBS=100000 EVICT_BLOBS=20000 EVICT_KIB=64 RUNS=3 WRK_SECS=10
#
# Not a test: nothing here asserts; numbers go to BENCHMARKS.md by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."

BLOBS=${BLOBS:-100000}
EVICT_BLOBS=${EVICT_BLOBS:-20000}
EVICT_KIB=${EVICT_KIB:-64}
RUNS=${RUNS:-3}
WRK_SECS=${WRK_SECS:-10}
source integration/bench/lib.sh
command -v /usr/bin/time >/dev/null || { apt-get update -qq; apt-get install -y -qq time >/dev/null; }

# --- a store of BLOBS blobs: every tenth blob is a manifest over the next nine ---------
# Half of the manifests are tagged; the other half are deleted (revision links
# removed), so their blobs are garbage.
python3 - "$WORK/store" "$BLOBS" <<'PY'
import hashlib, json, os, sys
root, n = sys.argv[1], int(sys.argv[2])
v2 = os.path.join(root, "docker/registry/v2")
def put_blob(data):
    h = hashlib.sha256(data).hexdigest()
    d = os.path.join(v2, "blobs/sha256", h[:2], h)
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "data"), "wb").write(data)
    return h
def link(path, h):
    os.makedirs(path, exist_ok=True)
    open(os.path.join(path, "link"), "w").write("sha256:" + h)
repo = os.path.join(v2, "repositories/many")
for m in range(n // 10):
    layers = [put_blob(b"%d-%d" % (m, i)) for i in range(8)]
    config = put_blob(b'{"m":%d}' % m)
    for h in layers + [config]:
        link(os.path.join(repo, "_layers/sha256", h), h)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + config, "size": 8},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + h, "size": 4} for h in layers]}).encode()
    mh = put_blob(manifest)
    if m % 2 == 0:
        link(os.path.join(repo, "_manifests/revisions/sha256", mh), mh)
        link(os.path.join(repo, "_manifests/tags/t%d/current" % m), mh)
        link(os.path.join(repo, "_manifests/tags/t%d/index/sha256" % m, mh), mh)
PY
cp -a "$WORK/store" "$WORK/r2"; cp -a "$WORK/store" "$WORK/berth"; cp -a "$WORK/store" "$WORK/start"

# --- garbage collection -------------------------------------------------------------
cat >"$WORK/gc.yml" <<YML
version: 0.1
storage: {filesystem: {rootdirectory: $WORK/r2}, delete: {enabled: true}}
http: {addr: 127.0.0.1:0}
YML
timed() { # command… -> "seconds peak_rss_mib"
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >/dev/null 2>&1
  awk '{printf "%s %.1f", $1, $2/1024}' "$WORK/time"
}
GC_D=$(timed docker-registry garbage-collect "$WORK/gc.yml")
GC_B=$(timed "$BERTH" gc --grace 0s --data "$WORK/berth")
LEFT_D=$(find "$WORK/r2/docker/registry/v2/blobs" -name data | wc -l)
LEFT_B=$(find "$WORK/berth/docker/registry/v2/blobs" -name data | wc -l)
# A second berth run: the index exists now (the first run built it).
cp -a "$WORK/store" "$WORK/berth2"; "$BERTH" gc --dry-run --grace 0s --data "$WORK/berth2" >/dev/null 2>&1
GC_B2=$(timed "$BERTH" gc --grace 0s --data "$WORK/berth2")

# --- start time, with and without an index ------------------------------------------------
first_200() { # data -> seconds from spawn to the first /v2/ 200
  local port pid t0; port=$(free_port); t0=$(now)
  pid=$(start_berth "$1" "$port" --no-mirror)
  until curl -fs -o /dev/null "http://127.0.0.1:$port/v2/"; do sleep 0.005; done
  python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$(now)"
  echo "$pid" >"$WORK/start.pid"
}
START_COLD=$(first_200 "$WORK/start")
PID=$(cat "$WORK/start.pid")
for _ in $(seq 1 600); do grep -q "indexed the data directory" "$WORK"/berth-*.log 2>/dev/null && break; sleep 0.1; done
INDEX_MS=$(grep -ho 'took=[0-9.]*[a-zµ]*' "$WORK"/berth-*.log | head -1 | cut -d= -f2)
stop_pid "$PID"
declare -a SW
for _ in $(seq 1 "$RUNS"); do SW+=("$(first_200 "$WORK/start")"); stop_pid "$(cat "$WORK/start.pid")"; done
START_WARM=$(median "${SW[@]}")

# --- eviction throughput ---------------------------------------------------------------------
python3 - "$WORK/mirror" "$EVICT_BLOBS" "$EVICT_KIB" <<'PY'
import hashlib, json, os, sys
root, n, kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
v2 = os.path.join(root, "docker/registry/v2")
pad = os.urandom(kib * 1024 - 16)
def put_blob(data):
    h = hashlib.sha256(data).hexdigest()
    d = os.path.join(v2, "blobs/sha256", h[:2], h)
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "data"), "wb").write(data)
    return h
def link(path, h):
    os.makedirs(path, exist_ok=True)
    open(os.path.join(path, "link"), "w").write("sha256:" + h)
for r in range(n // 10):
    repo = os.path.join(v2, "repositories/_mirror/docker.io/library/img%d" % r)
    layers = [put_blob(b"%016d" % (r * 10 + i) + pad) for i in range(9)]
    for h in layers:
        link(os.path.join(repo, "_layers/sha256", h), h)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + layers[0], "size": 1},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + h, "size": 1} for h in layers[1:]]}).encode()
    mh = put_blob(manifest)
    link(os.path.join(repo, "_manifests/revisions/sha256", mh), mh)
    link(os.path.join(repo, "_manifests/tags/1/current"), mh)
PY
EVICT_BYTES=$(du -sb "$WORK/mirror/docker/registry/v2/blobs" | cut -f1)
EP=$(free_port)
EPID=$(BERTH_MIRROR__TTL=2s BERTH_MIRROR__EVICTION_INTERVAL=3s start_berth "$WORK/mirror" "$EP" --mirror docker.io=http://127.0.0.1:9)
for _ in $(seq 1 1200); do grep -q "evicted mirrored content" "$WORK/berth-$EP.log" && break; sleep 0.1; done
EVICT_LINE=$(grep "evicted mirrored content" "$WORK/berth-$EP.log" | head -1)
stop_pid "$EPID"

# --- the cost of recording uses: mirrored manifest GETs by tag ----------------------------
UP=$(free_port); UPID=$(start_distribution "$WORK/upstream" "$UP")
wait_http "http://127.0.0.1:$UP/v2/"
head -c 4096 /dev/urandom >"$WORK/layer"
push_image "http://127.0.0.1:$UP" library/bench latest "$WORK/layer"
MT=application/vnd.oci.image.manifest.v1+json
mget() { # extra env -> req/s of mirrored manifest GETs by tag
  local port pid rps
  port=$(free_port)
  pid=$(env "$@" "$BERTH" serve --data "$WORK/m-$port" --listen "127.0.0.1:$port" --mirror "docker.io=http://127.0.0.1:$UP" \
    >"$WORK/berth-$port.log" 2>&1 & echo $!)
  track "$pid"
  wait_http "http://127.0.0.1:$port/v2/"
  curl -fsS -H "Accept: $MT" -o /dev/null "http://127.0.0.1:$port/v2/bench/manifests/latest"
  rps=$(wrk -t2 -c32 -d"${WRK_SECS}s" -H "Accept: $MT" "http://127.0.0.1:$port/v2/bench/manifests/latest" | awk '/Requests\/sec/ {print $2}')
  stop_pid "$pid"; echo "$rps"
}
declare -a WITH WITHOUT
for _ in $(seq 1 "$RUNS"); do WITH+=("$(mget RUST_LOG=warn)"); WITHOUT+=("$(mget RUST_LOG=warn BENCH_NO_USE_TRACKING=1)"); done
stop_pid "$UPID"

python3 - "$BLOBS" "$GC_B" "$GC_D" "$GC_B2" "$LEFT_B" "$LEFT_D" "$START_COLD" "$START_WARM" "$INDEX_MS" \
  "$EVICT_BLOBS" "$EVICT_BYTES" "$EVICT_LINE" "${WITH[*]}" "${WITHOUT[*]}" <<'PY'
import re, statistics, sys
a = sys.argv[1:]
n = int(a[0])
(gb, gbr), (gd, gdr), (gb2, gb2r) = (tuple(map(float, x.split())) for x in a[1:4])
left_b, left_d = int(a[4]), int(a[5])
cold, warm, index = float(a[6]), float(a[7]), a[8]
eb, ebytes, line = int(a[9]), int(a[10]), a[11]
with_, without = [float(x) for x in a[12].split()], [float(x) for x in a[13].split()]
m = re.search(r"blobs=(\d+).*bytes_freed=(\d+).*millis=(\d+)", line)
blobs, freed, ms = (int(m.group(i)) for i in (1, 2, 3)) if m else (0, 0, 1)
print("| measurement | berth | Distribution | berth/Distribution |")
print("|---|---|---|---|")
print(f"| gc of {n} blobs, half garbage: time (s) | {gb:.1f} (index built in the run) | {gd:.1f} | {gb/gd:.2f}x |")
print(f"| gc, index already built: time (s) | {gb2:.1f} | {gd:.1f} | {gb2/gd:.2f}x |")
print(f"| gc peak RSS (MiB) | {gbr:.0f} | {gdr:.0f} | {gbr/gdr:.2f}x |")
print(f"| blobs left by gc | {left_b} | {left_d} | |")
print(f"| start to first /v2/ 200 on {n} blobs, no index yet (ms) | {cold*1000:.0f} | | |")
print(f"| start to first /v2/ 200, index present (ms) | {warm*1000:.0f} | | |")
print(f"| building the index in the background | {index} | | |")
print(f"| eviction: {eb} blobs of {ebytes // max(eb,1) // 1024} KiB expired | {blobs/(ms/1000):.0f} blobs/s, {freed/(ms/1000)/1e9:.2f} GB/s | | |")
mw, mo = statistics.median(with_), statistics.median(without)
print(f"| mirrored manifest GET by tag, recording uses (req/s) | {mw:.0f} vs {mo:.0f} without | | {mw/mo:.3f}x |")
PY
