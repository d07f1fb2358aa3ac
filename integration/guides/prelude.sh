# Sourced before the README's guides (see integration/guides.rs), inside a
# private mount namespace: scratch copies of /etc/docker, /etc/containerd,
# /etc/containers and /etc/hosts (with "myhost" for berth), a private dockerd,
# containerd and podman storage, and a `systemctl` that restarts those. The
# guides then run as written; nothing of the machine's own configuration changes.
set -euo pipefail
: "${W:?the work directory}"

for d in /etc/docker /etc/containerd /etc/containers; do
  mkdir -p "$W/etc$d" "$d"
  cp -a "$d/." "$W/etc$d/"
  mount --bind "$W/etc$d" "$d"
done
mkdir -p /etc/containers/registries.conf.d
rm -f /etc/docker/daemon.json /etc/containers/registries.conf.d/*berth*
{ cat /etc/hosts; echo "127.0.0.1 myhost"; } >"$W/hosts"
mount --bind "$W/hosts" /etc/hosts

export DOCKER_HOST="unix://$W/docker.sock" DOCKER_CONFIG="$W/docker-client"
export CONTAINERD_ADDRESS="$W/containerd.sock"
export CONTAINERS_STORAGE_CONF="$W/storage.conf"
printf '[storage]\ndriver = "vfs"\nrunroot = "%s"\ngraphroot = "%s"\n' "$W/podman-run" "$W/podman-root" >"$CONTAINERS_STORAGE_CONF"
: >"$W/containerd.toml"

# Polls (bounded) until the command succeeds.
wait_for() {
  for _ in $(seq 600); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for: $*" >&2
  return 1
}

stop_pid() {
  [ -f "$1" ] || return 0
  local pid
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$1"
}

start_dockerd() {
  stop_pid "$W/dockerd.pid"
  dockerd --config-file /etc/docker/daemon.json --data-root "$W/docker-data" --exec-root "$W/docker-exec" \
    --pidfile "$W/dockerd.pid" -H "$DOCKER_HOST" --storage-driver=vfs --iptables=false --ip6tables=false \
    --bridge=none >>"$W/dockerd.log" 2>&1 &
  wait_for docker version
}

start_containerd() {
  stop_pid "$W/containerd.pid"
  containerd --config "$W/containerd.toml" --root "$W/containerd-root" --state "$W/containerd-state" \
    --address "$CONTAINERD_ADDRESS" >>"$W/containerd.log" 2>&1 &
  echo $! >"$W/containerd.pid"
  wait_for ctr version
}

systemctl() {
  if [ "$1" != restart ]; then
    echo "systemctl $*: only restart is provided here" >&2
    return 1
  fi
  case "$2" in
    docker) start_dockerd ;;
    containerd) start_containerd ;;
    *) echo "systemctl: no unit $2 here" >&2; return 1 ;;
  esac
}

trap 'stop_pid "$W/dockerd.pid"; stop_pid "$W/containerd.pid"' EXIT
start_containerd
