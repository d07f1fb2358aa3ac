#!/usr/bin/env bash
# Cold pulls over a real link: the upstream (a plain Distribution) sits behind
# a simulated WAN link (wan_link.py: one token bucket shared by all
# connections, a delay on request bytes), and the same image is pulled
# directly across the link, through berth's mirror and through Distribution's
# proxy, in one run. Pulls are skopeo copies into dir: layouts on tmpfs (the
# client verifies every digest). What crossed the link is read from the
# upstream's access log.
#
#   bash integration/bench/wan.sh
#     LINKS="1000:20 100:80"  link rate in Mbit/s : round trip in ms
#     CLIENTS="1 8 32"        concurrent pulls; 1 is repeated RUNS times
#     RUNS=3 LAYER_MIB=110 LAYERS=3
#     DIST_MAX_MBIT=1000      Distribution's proxy and concurrent direct pulls
#                             only on links at least this fast (slow links
#                             make them minutes long: they fetch per client)
#     CONC_RUNS=1             repeats of each concurrent row (medians)
#     BASE_BIN=…              also an older berth build, for before/after
#
# Not a test: nothing here asserts; numbers go to BENCHMARKS.md by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."
LINKS=${LINKS:-1000:20 100:80}
CLIENTS=${CLIENTS:-1 8 32}
RUNS=${RUNS:-3}
LAYER_MIB=${LAYER_MIB:-110}
LAYERS=${LAYERS:-3}
DIST_MAX_MBIT=${DIST_MAX_MBIT:-1000}
source integration/bench/lib.sh
OUT=$(mktemp -d /dev/shm/berth-wan.XXXXXX)
trap 'rm -rf "$OUT"; cleanup' EXIT

start_upstream
IMAGE_BYTES=$(( LAYERS * LAYER_MIB * 1024 * 1024 + 2 ))
LAYER_D="sha256:$(sha256sum "$WORK/layer1" | cut -d' ' -f1)"

secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }
# pulls BASE N -> seconds for N concurrent skopeo copies of the image
pulls() {
  local t0 pids=() i
  t0=$(now)
  for i in $(seq 1 "$2"); do
    skopeo copy -q --src-tls-verify=false "docker://${1#http://}/library/big:1" "dir:$OUT/p$i" >/dev/null & pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || { echo "pull failed" >&2; exit 1; }; done
  secs "$t0" "$(now)"
  rm -rf "$OUT"/p*
}
# CPU seconds used so far: cpu PID…, or the whole machine's (all cores) without one.
cpu() {
  if [ $# = 0 ]; then awk '/^cpu / {print ($2+$3+$4+$7+$8) / 100}' /proc/stat; return; fi
  local p t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done
  python3 -c "print($t / $(getconf CLK_TCK))"
}
# cpu_split MIRROR_PID BEFORE -> "mirror simulation clients" CPU seconds since BEFORE ("m s all")
cpu_now() { echo "$(cpu "$1") $(cpu "$lpid" "$UP_PID") $(cpu)"; }
cpu_split() {
  python3 -c "import sys; a=[float(x) for x in sys.argv[1].split()]; b=[float(x) for x in sys.argv[2].split()]; d=[y-x for x,y in zip(a,b)]; print(f'{d[0]:.1f}/{d[1]:.1f}/{d[2]-d[0]-d[1]:.1f}')" "$2" "$(cpu_now "$1")"
}
# ttfb URL -> seconds to the first byte of the body
ttfb() { curl -fsS -o /dev/null -w '%{time_starttransfer}\n' "$1"; }

start_link() { # mbit rtt -> "pid port"
  local port; port=$(free_port)
  python3 integration/bench/wan_link.py "$port" "127.0.0.1:$UP_PORT" "$1" "$2" >"$WORK/link-$port.log" 2>&1 &
  track $!; local pid=$!
  until grep -q ready "$WORK/link-$port.log"; do sleep 0.02; done
  echo "$pid $port"
}
start_mirror() { # kind link_port -> "pid port", once it answers
  local port pid bin=$BERTH; port=$(free_port)
  case $1 in
    berth|base) [ "$1" = base ] && bin=$BASE_BIN
      pid=$(BERTH=$bin start_berth "$WORK/m-$port" "$port" --mirror "docker.io=http://127.0.0.1:$2") ;;
    distribution) pid=$(start_distribution "$WORK/m-$port" "$port" "proxy: {remoteurl: http://127.0.0.1:$2}") ;;
  esac
  wait_http "http://127.0.0.1:$port/v2/" >&2
  echo "$pid $port"
}
stop_mirror() { stop_pid "$1"; rm -rf "$WORK/m-$2"; }

mirrors=(berth); [ -n "${BASE_BIN:-}" ] && mirrors+=(base)
ROWS=() CPUROWS=()
row() { ROWS+=("$*"); }
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}')" "$1" "$2"; }
bytes_x() { python3 -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}')" "$1" "$IMAGE_BYTES"; }

for link in $LINKS; do
  mbit=${link%%:*} rtt=${link##*:}
  read -r lpid lport < <(start_link "$mbit" "$rtt")
  L="$mbit Mbit/s, $rtt ms"
  with_dist=$([ "$mbit" -ge "$DIST_MAX_MBIT" ] && echo 1 || true)
  for n in $CLIENTS; do
    reps=${CONC_RUNS:-1}; [ "$n" = 1 ] && reps=$RUNS
    declare -A T=() B=() F=() CPU=()
    for _ in $(seq 1 "$reps"); do
      if [ "$n" = 1 ] || [ -n "$with_dist" ]; then
        T[direct]+=" $(pulls "http://127.0.0.1:$lport" "$n")"
        [ "$n" = 1 ] && F[direct]+=" $(ttfb "http://127.0.0.1:$lport/v2/library/big/blobs/$LAYER_D")"
      fi
      kinds=("${mirrors[@]}"); [ -n "$with_dist" ] && kinds+=(distribution)
      for kind in "${kinds[@]}"; do
        if [ "$n" = 1 ]; then # the first byte of a cold blob, on a fresh mirror
          read -r pid port < <(start_mirror "$kind" "$lport")
          F[$kind]+=" $(ttfb "http://127.0.0.1:$port/v2/library/big/blobs/$LAYER_D")"
          stop_mirror "$pid" "$port"
        fi
        read -r pid port < <(start_mirror "$kind" "$lport")
        from=$(lines "$UP_LOG"); c0=$(cpu_now "$pid")
        T[$kind]+=" $(pulls "http://127.0.0.1:$port" "$n")"
        CPU[$kind]=$(cpu_split "$pid" "$c0")
        read -r bytes _ < <(upstream_served "$UP_LOG" "$from")
        B[$kind]+=" $bytes"
        if [ "$kind" != distribution ]; then
          c0=$(cpu_now "$pid")
          T[$kind-warm]+=" $(pulls "http://127.0.0.1:$port" "$n")"
          CPU[$kind-warm]=$(cpu_split "$pid" "$c0")
        fi
        stop_mirror "$pid" "$port"
      done
    done
    med() { median ${T[$1]}; }
    for kind in "${mirrors[@]}"; do
      c=$(med "$kind"); w=$(med "$kind-warm"); b=$(median ${B[$kind]})
      line="| $L | $n | $kind | cold $c s | warm $w s | cold/warm $(ratio "$c" "$w")x | link bytes $(bytes_x "$b")x image |"
      CPUROWS+=("| $L | $n | $kind | ${CPU[$kind]} | ${CPU[$kind-warm]} |")
      [ -n "${T[direct]:-}" ] && line+=" direct $(med direct) s, cold/direct $(ratio "$c" "$(med direct)")x |"
      [ -n "${F[$kind]:-}" ] && line+=" first byte $(median ${F[$kind]}) s vs direct $(median ${F[direct]}) s |"
      row "$line"
    done
    if [ -n "${T[distribution]:-}" ]; then
      c=$(med distribution); b=$(median ${B[distribution]})
      line="| $L | $n | Distribution proxy | cold $c s | | | link bytes $(bytes_x "$b")x image | direct $(med direct) s, cold/direct $(ratio "$c" "$(med direct)")x |"
      [ -n "${F[distribution]:-}" ] && line+=" first byte $(median ${F[distribution]}) s |"
      row "$line"
    fi
    declare -p T B F CPU >&2
    unset T B F CPU
  done
  stop_pid "$lpid"
done

echo "cold pulls over a simulated link; image $((IMAGE_BYTES / 1048576)) MiB in $LAYERS layers; skopeo to tmpfs; single pulls: medians of $RUNS"
echo "| link | clients | server | cold | warm | cold/warm | crossed the link | direct | first byte of a cold blob |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "CPU seconds during the last pull of each kind: mirror / upstream and link (the simulation) / clients and the rest"
echo "| link | clients | server | cold | warm |"
echo "|---|---|---|---|---|"
printf '%s\n' "${CPUROWS[@]}"
