#!/usr/bin/env bash
# Sibling mirrors: the cold-pull time of N sites, each a berth with its own
# data directory, with and without `mirror.peers`, the upstream (a plain
# Distribution) behind the simulated WAN link (wan_link.py). Two ways:
#   in turn    the image pulled through site 1, then 2, …, N (each site's time)
#   at once    one pull per site, all at the same moment (the slowest's time)
# and how many image-sizes crossed the link (the upstream's access log).
# Spegel's published figure to set beside it: a 10 MB image pulled in 1,220 ms
# from the registry, 210 ms from a peer (50 nodes, their README).
#
#   bash integration/bench/peers.sh
#     LINK=1000:20     link rate in Mbit/s : round trip in ms
#     SITES=3 RUNS=3   sites; repeats (medians)
#     IMAGES="10:1 330:3"  image MiB : layers
#
# Not a test: nothing here asserts; numbers go to BENCHMARKS.md by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."
LINK=${LINK:-1000:20}
SITES=${SITES:-3}
RUNS=${RUNS:-3}
IMAGES=${IMAGES:-10:1 330:3}
source integration/bench/lib.sh
OUT=$(mktemp -d /dev/shm/berth-peers.XXXXXX)
trap 'rm -rf "$OUT"; cleanup' EXIT
TOKEN=bench-token-long-enough-for-berth

secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }
# pull_at PORT TAG -> seconds for one skopeo copy of library/big:TAG through the site on PORT
pull_at() {
  local t0 dir="$OUT/p$1"
  t0=$(now)
  skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$1/library/big:$2" "dir:$dir" >/dev/null
  secs "$t0" "$(now)"
  rm -rf "$dir"
}

UP_PORT=$(free_port)
UP_PID=$(start_distribution "$WORK/upstream" "$UP_PORT")
UP=http://127.0.0.1:$UP_PORT UP_LOG=$WORK/r2-$UP_PORT.log
wait_http "$UP/v2/"
for image in $IMAGES; do
  mib=${image%%:*} layers=${image##*:} files=()
  for i in $(seq 1 "$layers"); do
    head -c $((mib * 1048576 / layers)) /dev/urandom >"$WORK/l$mib-$i"; files+=("$WORK/l$mib-$i")
  done
  push_image "$UP" library/big "$mib" "${files[@]}"
done
lport=$(free_port)
python3 integration/bench/wan_link.py "$lport" "127.0.0.1:$UP_PORT" "${LINK%%:*}" "${LINK##*:}" >"$WORK/link.log" 2>&1 &
track $!
until grep -q ready "$WORK/link.log"; do sleep 0.02; done

# start_sites MODE -> the sites' ports (fresh data directories; MODE alone|siblings)
PIDS=()
start_sites() {
  local ports=() p peers="" i
  for i in $(seq 1 "$SITES"); do ports+=("$(free_port)"); done
  for p in "${ports[@]}"; do peers+="${peers:+, }\"http://127.0.0.1:$p\""; done
  local cfg="$WORK/$1.toml"
  {
    if [ "$1" = siblings ]; then
      printf '[mirror]\npeers = [%s]\npeer_token = "%s"\npeer_timeout = "1s"\n\n' "$peers" "$TOKEN"
    fi
    printf '[[mirror.upstreams]]\nhost = "docker.io"\nurl = "http://127.0.0.1:%s"\n' "$lport"
  } >"$cfg"
  PIDS=()
  for p in "${ports[@]}"; do
    PIDS+=("$(start_berth "$WORK/site-$p" "$p" --config "$cfg")")
  done
  for p in "${ports[@]}"; do wait_http "http://127.0.0.1:$p/v2/" >&2; done
  echo "${ports[@]}"
}
stop_sites() {
  local p; for p in "${PIDS[@]}"; do stop_pid "$p"; done
  rm -rf "$WORK"/site-*
}

ROWS=()
for image in $IMAGES; do
  mib=${image%%:*}
  bytes=$(( mib * 1048576 ))
  for mode in alone siblings; do
    declare -A T=()
    crossed_turn=() crossed_once=()
    for _ in $(seq 1 "$RUNS"); do
      read -r -a ports < <(start_sites "$mode")
      from=$(lines "$UP_LOG")
      for i in "${!ports[@]}"; do T[$i]+=" $(pull_at "${ports[$i]}" "$mib")"; done
      read -r b _ < <(upstream_served "$UP_LOG" "$from"); crossed_turn+=("$b")
      stop_sites
      read -r -a ports < <(start_sites "$mode")
      from=$(lines "$UP_LOG")
      t0=$(now) pids=()
      for p in "${ports[@]}"; do pull_at "$p" "$mib" >/dev/null & pids+=($!); done
      for p in "${pids[@]}"; do wait "$p"; done
      T[once]+=" $(secs "$t0" "$(now)")"
      read -r b _ < <(upstream_served "$UP_LOG" "$from"); crossed_once+=("$b")
      stop_sites
    done
    turn=""
    for i in $(seq 0 $((SITES - 1))); do turn+="${turn:+ / }$(median ${T[$i]})"; done
    x() { python3 -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}')" "$1" "$bytes"; }
    ROWS+=("| $mib MiB | $mode | $turn s | $(x "$(median "${crossed_turn[@]}")")x | $(median ${T[once]}) s | $(x "$(median "${crossed_once[@]}")")x |")
    declare -p T >&2
    unset T
  done
done

echo "$SITES sites, upstream behind a ${LINK%%:*} Mbit/s, ${LINK##*:} ms link; skopeo to tmpfs; medians of $RUNS"
echo "| image | sites | in turn: site 1 / 2 / … | crossed the link | at once: slowest | crossed the link |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
