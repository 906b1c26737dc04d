#!/usr/bin/env bash
# The private network of the live suite: a network namespace of its own (nothing in it reaches the
# host's interfaces or any other host), a veth pair carrying LIVE_ADDR, and `livekit-server --dev`
# bound to that address. It also runs in a PID namespace of its own, so when it ends, every process
# started in it (server, workers, job processes) ends with it: nothing and no namespace is left.
#
#   tests/live/livenet.sh run CMD...  CMD inside the namespace, server up; exit status of CMD
#   tests/live/livenet.sh serve       the namespace + server in the foreground (make live-server),
#                                     with telephony (Redis, a second server, livekit-sip) when built
#   tests/live/livenet.sh telephony DIR   (inside the namespace) start the telephony stack in the
#                                     background, write DIR/telephony.env, return once it is ready
#
# Telephony: LiveKit's SIP service talks to the server only through Redis, and trunks and dispatch
# rules live in the server, so it needs a server that has Redis (a config file; `--dev` alone has
# no SIP APIs). The non-SIP tests keep their `--dev` server; the telephony tests get their own on
# TEL_PORT, with the same keys, so neither one's runtime depends on the other.
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
sip_bin=$LIVE_BIN/livekit-sip
TEL_PORT=${TEL_PORT:-7980}        # the telephony server: HTTP/WS, then RTC TCP +1, UDP +2
TEL_REDIS_PORT=${TEL_REDIS_PORT:-6379}
TEL_SIP_PORT=${TEL_SIP_PORT:-5060}
TEL_SIP_HEALTH_PORT=${TEL_SIP_HEALTH_PORT:-5061}

die() { echo "livenet: $*" >&2; exit 2; }
# This machine cannot host the private network: 77, which `make test-live` reports as a skip
# (a failure with CI=true).
cannot() { echo "livenet: $*" >&2; exit 77; }

# Ready when the TCP port answers (bash's /dev/tcp: no curl needed), or the process is gone.
wait_port() {
  local host=$1 port=$2 pid=$3
  for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# Inside the namespace: redis-server, a livekit-server with a config file (Redis, the same keys)
# and livekit-sip, in the background. Writes $dir/telephony.env (URLs, SIP address, PIDs, logs).
telephony() {
  local dir=$1
  [ -x "$sip_bin" ] || { echo "livenet: no $sip_bin: run \`make sip\` first" >&2; return 77; }
  command -v redis-server >/dev/null || { echo "livenet: no redis-server: run \`make redis\`" >&2; return 77; }
  mkdir -p "$dir"
  local url="ws://$LIVE_ADDR:$TEL_PORT" redis="127.0.0.1:$TEL_REDIS_PORT"
  redis-server --bind 127.0.0.1 --port "$TEL_REDIS_PORT" --save "" --appendonly no \
    >"$dir/redis.log" 2>&1 &
  local redis_pid=$!
  wait_port 127.0.0.1 "$TEL_REDIS_PORT" "$redis_pid" || { tail -n 20 "$dir/redis.log" >&2; return 2; }
  cat >"$dir/livekit.yaml" <<YAML
port: $TEL_PORT
bind_addresses: ["$LIVE_ADDR"]
rtc:
  tcp_port: $((TEL_PORT + 1))
  udp_port: $((TEL_PORT + 2))
  node_ip: $LIVE_ADDR
  use_external_ip: false
redis:
  address: $redis
keys:
  devkey: secret
logging:
  level: info
YAML
  "$server_bin" --config "$dir/livekit.yaml" >"$dir/livekit-server.log" 2>&1 &
  local server_pid=$!
  wait_port "$LIVE_ADDR" "$TEL_PORT" "$server_pid" || {
    echo "livenet: the telephony livekit-server did not start:" >&2; tail -n 20 "$dir/livekit-server.log" >&2; return 2; }
  # livekit-sip needs an up non-loopback interface (lk0 here) or it refuses to start.
  cat >"$dir/sip.yaml" <<YAML
api_key: devkey
api_secret: secret
ws_url: $url
redis:
  address: $redis
sip_port: $TEL_SIP_PORT
rtp_port: 20000-20100
listen_ip: $LIVE_ADDR
nat_1_to_1_ip: $LIVE_ADDR
health_port: $TEL_SIP_HEALTH_PORT
# A real phone streams RTP all call long; SIPp sends only what it plays, so livekit-sip's
# no-media hang-up (15 s) would end the test calls between a caller's lines.
media_timeout: 120s
media_timeout_initial: 120s
# It refuses to place calls ("cpu exhausted") while the machine's idle CPU is under 10%; the
# test machine's CPU is shared with the tests themselves (and other work): never refuse.
max_cpu_utilization: 1.0
logging:
  level: info
YAML
  "$sip_bin" --config "$dir/sip.yaml" >"$dir/livekit-sip.log" 2>&1 &
  local sip_pid=$!
  wait_port 127.0.0.1 "$TEL_SIP_HEALTH_PORT" "$sip_pid" || {
    echo "livenet: livekit-sip did not start:" >&2; tail -n 20 "$dir/livekit-sip.log" >&2; return 2; }
  cat >"$dir/telephony.env" <<ENV
TEL_LIVEKIT_URL=$url
TEL_SIP_ADDR=$LIVE_ADDR:$TEL_SIP_PORT
TEL_PIDS=$sip_pid $server_pid $redis_pid
TEL_SERVER_LOG=$dir/livekit-server.log
TEL_SIP_LOG=$dir/livekit-sip.log
ENV
}

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
INFO
    if telephony "$LIVE_LOG_DIR/telephony"; then
      # shellcheck disable=SC1091
      . "$LIVE_LOG_DIR/telephony/telephony.env"
      local ns="nsenter --net=/proc/$(cat "$LIVE_LOG_DIR/serve.pid")/ns/net"
      cat <<INFO
Telephony: a second livekit-server with Redis at $TEL_LIVEKIT_URL (same keys) and livekit-sip
on $TEL_SIP_ADDR (logs in $LIVE_LOG_DIR/telephony/). Against that server:
  $ns env LIVEKIT_URL=$TEL_LIVEKIT_URL LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret make dev
  $ns env LIVEKIT_URL=$TEL_LIVEKIT_URL LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret .venv/bin/python -m workers.telephony sync
then call a number of the catalog's telephony.inbound with SIPp (the phone):
  $ns sipp -sn uac_pcap $TEL_SIP_ADDR -s +15550100000 -i $LIVE_ADDR -p 5070 -m 1
INFO
    else
      echo "(no telephony: see above; \`make sip\` builds it)"
    fi
    echo "Ctrl-C stops the servers and removes the namespace."
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
  telephony)
    [ "${LIVE_NETNS:-}" = 1 ] || die "telephony runs inside the namespace (livenet.sh run ...)"
    [ $# = 2 ] || die "usage: $0 telephony DIR"
    telephony "$2"; exit $? ;;
  run|serve) ;;
  *) die "usage: $0 run CMD... | serve | telephony DIR" ;;
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
