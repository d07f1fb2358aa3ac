# Helpers shared by the benchmark scripts (sourced, not run).
export DEBIAN_FRONTEND=noninteractive
for pkg_bin in docker-registry:docker-registry wrk:wrk nginx-light:nginx curl:curl skopeo:skopeo; do
  command -v "${pkg_bin##*:}" >/dev/null || { apt-get update -qq; apt-get install -y -qq "${pkg_bin%%:*}" >/dev/null; }
done
cargo build --release --quiet --bin berth
BERTH=$PWD/target/release/berth

WORK=$(mktemp -d /tmp/berth-bench.XXXXXX)
# Servers are started inside $(…) subshells, so their pids go to a file, not a variable.
track() { echo "$1" >>"$WORK/pids"; }
cleanup() {
  [ -n "${KEEP:-}" ] && { echo "kept $WORK" >&2; return; }
  [ -f "$WORK/pids" ] && while read -r p; do kill "$p" 2>/dev/null || true; done <"$WORK/pids"
  wait 2>/dev/null || true; rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.05; done; echo "not ready: $1" >&2; exit 1; }
median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.argv[1:]]; print(statistics.median(v))' "$@"; }
rss_mib() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
now() { date +%s.%N; }
# Waits for the exit even of a server started in a subshell (not our child): the
# next berth on the same data directory needs the index the last one held.
stop_pid() {
  kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true
  for _ in $(seq 1 400); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
}

# start_berth DATA PORT [ARGS…] -> pid
start_berth() {
  local data=$1 port=$2; shift 2
  "$BERTH" serve --data "$data" --listen "127.0.0.1:$port" "$@" >"$WORK/berth-$port.log" 2>&1 &
  track $!; echo $!
}
# start_distribution DATA PORT [EXTRA_YAML] [EXTRA_HTTP] -> pid (JSON access log in $WORK/r2-PORT.log)
start_distribution() {
  cat >"$WORK/r2-$2.yml" <<YML
version: 0.1
log: {level: info, formatter: json}
storage: {filesystem: {rootdirectory: $1}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$2${4:+, $4}}
${3:-}
YML
  docker-registry serve "$WORK/r2-$2.yml" >"$WORK/r2-$2.log" 2>&1 &
  track $!; echo $!
}

# curl with the pushing user, if CURL_USER=user:password is set (TLS: CURL_CA_BUNDLE=ca.crt).
bcurl() { curl ${CURL_USER:+-u "$CURL_USER"} "$@"; }

# push_blob BASE REPO FILE -> digest (POST then PUT: works on Distribution and berth)
push_blob() {
  local d loc sep
  d="sha256:$(sha256sum "$3" | cut -d' ' -f1)"
  loc=$(bcurl -fsS -X POST -D - -o /dev/null "$1/v2/$2/blobs/uploads/" | awk 'tolower($1)=="location:" {print $2}' | tr -d '\r')
  case "$loc" in http*) ;; *) loc="$1$loc" ;; esac
  sep=$([[ "$loc" == *\?* ]] && echo '&' || echo '?')
  bcurl -fsS -H 'Content-Type: application/octet-stream' -T "$3" "$loc${sep}digest=$d" -o /dev/null
  echo "$d"
}

# push_image BASE REPO TAG LAYER_FILE… : OCI manifest over a {} config and the layers
push_image() {
  local base=$1 repo=$2 tag=$3; shift 3
  printf '{}' >"$WORK/config.json"
  local cd layers="" f d
  cd=$(push_blob "$base" "$repo" "$WORK/config.json")
  for f in "$@"; do
    d=$(push_blob "$base" "$repo" "$f")
    layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"$d\",\"size\":$(stat -c %s "$f")}"
  done
  local mf="$WORK/manifest-${repo//\//_}-$tag.json"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":2},"layers":[%s]}' "$cd" "$layers" >"$mf"
  bcurl -fsS -X PUT -H "Content-Type: application/vnd.oci.image.manifest.v1+json" --data-binary @"$mf" "$base/v2/$repo/manifests/$tag" -o /dev/null
}

# upstream_served LOG FROM_LINE -> "bytes requests" of successful blob GETs after FROM_LINE
upstream_served() {
  python3 - "$1" "$2" <<'PY'
import json, sys
n = b = 0
for i, line in enumerate(open(sys.argv[1], errors="replace")):
    if i < int(sys.argv[2]) or not line.startswith("{"):
        continue
    e = json.loads(line)
    if e.get("http.request.method") == "GET" and "/blobs/" in e.get("http.request.uri", "") and e.get("http.response.status") in (200, 206):
        n += 1; b += int(e.get("http.response.written", 0))
print(b, n)
PY
}
lines() { wc -l <"$1"; }

# A CA and a certificate for localhost in $WORK (ca.crt, tls.crt, tls.key); clients are told the CA.
make_certificate() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$WORK/ca.key" -out "$WORK/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
    -keyout "$WORK/tls.key" -out "$WORK/tls.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$WORK/ext"
  openssl x509 -req -days 2 -in "$WORK/tls.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" -CAcreateserial \
    -extfile "$WORK/ext" -out "$WORK/tls.crt" 2>/dev/null
  export CA=$WORK/ca.crt CURL_CA_BUNDLE=$WORK/ca.crt
}

# pull BASE -> seconds a skopeo pull of library/big:1 (start_upstream's image) through BASE took
pull() {
  local t0 out="$WORK/pull.$RANDOM"
  t0=$(now)
  skopeo copy -q --src-tls-verify=false "docker://${1#http://}/library/big:1" "dir:$out" >/dev/null
  python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$(now)"
  rm -rf "$out"
}

# start_upstream: a plain Distribution holding library/big:1, LAYERS layers of LAYER_MIB MiB
# (sets UP_PORT, UP_PID, UP, UP_LOG)
start_upstream() {
  UP_PORT=$(free_port)
  UP_PID=$(start_distribution "$WORK/upstream" "$UP_PORT")
  UP=http://127.0.0.1:$UP_PORT
  UP_LOG=$WORK/r2-$UP_PORT.log
  wait_http "$UP/v2/"
  local i layer_files=()
  for i in $(seq 1 "$LAYERS"); do
    head -c $((LAYER_MIB * 1024 * 1024)) /dev/urandom >"$WORK/layer$i"; layer_files+=("$WORK/layer$i")
  done
  push_image "$UP" library/big 1 "${layer_files[@]}"
}
