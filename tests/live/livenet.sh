#!/usr/bin/env bash
# The private network of the live suite: a network namespace of its own (nothing in it reaches the
# host's interfaces or any other host), a veth pair carrying LIVE_ADDR, and `livekit-server --dev`
# bound to that address. It also runs in a PID namespace of its own, so when it ends, every process
# started in it (server, workers, job processes) ends with it: nothing and no namespace is left.
#
#   tests/live/livenet.sh run CMD...  CMD inside the namespace, server up; exit status of CMD
#   tests/live/livenet.sh serve       the namespace + server in the foreground (make live-server)
#
# Why not 127.0.0.1: WebRTC stacks leave loopback out of their ICE host candidates, so on loopback
# alone signalling connects and media never flows ("wait_pc_connection timed out").
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
LIVE_ADDR=${LIVE_ADDR:-10.77.0.1}
LIVE_BIN=${LIVE_BIN:-$root/.cache/bin}
LIVE_LOG_DIR=${LIVE_LOG_DIR:-$root/.cache/live}
server_bin=$LIVE_BIN/livekit-server

die() { echo "livenet: $*" >&2; exit 2; }
# This machine cannot host the private network: 77, which `make test-live` reports as a skip
# (a failure with CI=true).
cannot() { echo "livenet: $*" >&2; exit 77; }

# Inside the new namespaces (PID 1 of the PID namespace): network, server, then the command.
inner() {
  local mode=$1; shift
  ip link set lo up
  ip link add lk0 type veth peer name lk1
  ip addr add "$LIVE_ADDR/24" dev lk0
  ip link set lk0 up
  ip link set lk1 up
  mkdir -p "$LIVE_LOG_DIR"
  local log=$LIVE_LOG_DIR/livekit-server-$(date +%s)-$RANDOM.log  # one per run: runs may overlap
  "$server_bin" --dev --bind "$LIVE_ADDR" >"$log" 2>&1 &
  local server=$!
  # Ready when the HTTP port answers (bash's /dev/tcp: no curl needed).
  local ready=""
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/$LIVE_ADDR/7880") 2>/dev/null; then ready=1; break; fi
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$ready" ]; then
    echo "livenet: livekit-server did not start; its log ($log):" >&2
    tail -n 20 "$log" >&2
    exit 2
  fi
  export LIVEKIT_URL="ws://$LIVE_ADDR:7880" LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret
  export LIVE_SERVER_LOG=$log LIVE_NETNS=1
  if [ "$mode" = serve ]; then
    cat <<INFO
livekit-server $("$server_bin" --version | awk '{print $NF}') is up in a private network namespace.
  URL:     $LIVEKIT_URL
  keys:    LIVEKIT_API_KEY=devkey  LIVEKIT_API_SECRET=secret
  log:     $log
In another terminal, from $root (as root; the namespace is this process's):
  nsenter --net=/proc/$(cat "$LIVE_LOG_DIR/serve.pid")/ns/net env LIVEKIT_URL=$LIVEKIT_URL LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret make dev
  nsenter --net=/proc/$(cat "$LIVE_LOG_DIR/serve.pid")/ns/net env LIVEKIT_URL=$LIVEKIT_URL LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret make room SCENARIO=dispatch_checkin IDENTITY=caller-jamie
Ctrl-C stops the server and removes the namespace.
INFO
    wait "$server"
    return
  fi
  set +e
  "$@"
  local status=$?
  kill "$server" 2>/dev/null
  wait "$server" 2>/dev/null
  return $status
}

case "${1:-}" in
  __inner) shift; inner "$@"; exit $? ;;
  run|serve) ;;
  *) die "usage: $0 run CMD... | serve" ;;
esac
mode=$1; shift
[ -x "$server_bin" ] || cannot "no $server_bin: run \`make livekit\` first"
[ "$mode" = serve ] || [ $# -gt 0 ] || die "run needs a command"
[ "$(id -u)" = 0 ] || cannot "needs root for its private network namespace (ip link, unshare --net)"
command -v unshare >/dev/null && command -v ip >/dev/null || cannot "needs unshare (util-linux) and ip (iproute2)"
unshare --net --pid --fork --mount-proc true 2>/dev/null || cannot "unshare --net --pid failed: no private network namespace here"
mkdir -p "$LIVE_LOG_DIR"
export LIVE_ADDR LIVE_BIN LIVE_LOG_DIR
if [ "$mode" = serve ]; then
  unshare --net --pid --fork --mount-proc "$0" __inner serve &
  child=$!
  # the namespace's first process, as the host sees it, for nsenter
  for _ in $(seq 1 50); do
    pid=$(pgrep -P "$child" | head -n 1 || true)
    [ -n "$pid" ] && break
    sleep 0.1
  done
  echo "${pid:-$child}" >"$LIVE_LOG_DIR/serve.pid"
  trap 'kill "$child" 2>/dev/null; wait "$child" 2>/dev/null; rm -f "$LIVE_LOG_DIR/serve.pid"' INT TERM EXIT
  wait "$child"
else
  exec unshare --net --pid --fork --mount-proc "$0" __inner run "$@"
fi
