#!/usr/bin/env bash
# What notifications cost the client, side by side in one run: three berths
# serve one image (each its own copy), one with no endpoint, one sending every
# event to a receiver that answers at once (nginx), one whose endpoint is down
# (a closed port); and Distribution 2.8 without and with the same live
# endpoint. wrk -t2 -c32 on the manifest GET, ROUNDS times interleaved;
# afterwards, how many events the live endpoint got and how many wait for the
# dead one (none may be lost: each request is one pull event).
#
#   bash integration/bench/notifications.sh      # ROUNDS=3 WRK_SECS=8
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
WRK_SECS=${WRK_SECS:-8}
source integration/bench/lib.sh
MT=application/vnd.oci.image.manifest.v1+json

# The receiver: nginx answering every POST 204, counting them in its access log.
RPORT=$(free_port)
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log $WORK/nginx/access.log;
  client_body_temp_path $WORK/nginx;
  server { listen 127.0.0.1:$RPORT; location / { return 204; } }
}
NGINX
nginx -c "$WORK/nginx/nginx.conf"
trap 'nginx -c "$WORK/nginx/nginx.conf" -s stop 2>/dev/null || true; cleanup' EXIT
DEAD=$(free_port)

declare -A PORT PID
for mode in off live dead; do
  port=$(free_port); PORT[$mode]=$port
  args=()
  if [ "$mode" != off ]; then
    url=$([ "$mode" = live ] && echo "http://127.0.0.1:$RPORT/events" || echo "http://127.0.0.1:$DEAD/events")
    printf '[[notifications.endpoints]]\nname = "%s"\nurl = "%s"\n' "$mode" "$url" >"$WORK/$mode.toml"
    args=(--config "$WORK/$mode.toml")
  fi
  PID[$mode]=$(start_berth "$WORK/data-$mode" "$port" --no-mirror "${args[@]}")
  wait_http "http://127.0.0.1:$port/v2/"
  head -c 4096 /dev/urandom >"$WORK/layer"
  push_image "http://127.0.0.1:$port" bench/img latest "$WORK/layer"
done

# Distribution, without and with the live endpoint (its queue is in memory).
for mode in doff dlive; do
  port=$(free_port); PORT[$mode]=$port
  extra=""
  [ "$mode" = dlive ] && extra="notifications: {endpoints: [{name: live, url: \"http://127.0.0.1:$RPORT/events\", timeout: 1s, threshold: 10, backoff: 1s}]}"
  PID[$mode]=$(start_distribution "$WORK/data-$mode" "$port" "$extra")
  wait_http "http://127.0.0.1:$port/v2/"
  push_image "http://127.0.0.1:$port" bench/img latest "$WORK/layer"
done
MODES="off live dead doff dlive"

rps() { wrk -t2 -c32 -d"${WRK_SECS}s" -H "Accept: $MT" "$1" | awk '/Requests\/sec/ {print $2}'; }
declare -A R
for mode in $MODES; do rps "http://127.0.0.1:${PORT[$mode]}/v2/bench/img/manifests/latest" >/dev/null; done # warm-up
for _ in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    R[$mode]+=" $(rps "http://127.0.0.1:${PORT[$mode]}/v2/bench/img/manifests/latest")"
  done
done
metric() { curl -fsS "http://127.0.0.1:${PORT[$1]}/metrics" | awk -v m="$2{endpoint=\"$1\"}" '$1==m {print $2}'; }
# Wait (bounded) for the live endpoint to catch up, then count.
for _ in $(seq 1 600); do [ "$(metric live berth_notifications_pending)" = 0 ] && break; sleep 0.1; done
off=$(median ${R[off]}); live=$(median ${R[live]}); dead=$(median ${R[dead]})
doff=$(median ${R[doff]}); dlive=$(median ${R[dlive]})
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}')" "$1" "$2"; }
echo "| manifest GET, req/s (median of $ROUNDS) | no endpoint | endpoint up | endpoint down |"
echo "|---|---|---|---|"
echo "| berth | $off | $live ($(ratio "$live" "$off")×) | $dead ($(ratio "$dead" "$off")×) |"
echo "| Distribution 2.8 | $doff | $dlive ($(ratio "$dlive" "$doff")×) | |"
echo "| berth ÷ Distribution | $(ratio "$off" "$doff")× | $(ratio "$live" "$dlive")× | |"
echo
echo "live endpoint: sent $(metric live berth_notifications_sent_total) events, pending $(metric live berth_notifications_pending)," \
  "envelopes received $(wc -l <"$WORK/nginx/access.log")"
echo "dead endpoint: pending $(metric dead berth_notifications_pending), failed deliveries $(metric dead berth_notifications_failed_total)"
echo "queue files: live $(du -h "$WORK/data-live/.berth/events.redb" | cut -f1), dead $(du -h "$WORK/data-dead/.berth/events.redb" | cut -f1)"
