#!/usr/bin/env bash
# Benchmarks sumu against its peers on this machine, in one run, with the same scenarios:
#   sumu      target/release/sumu-node (memory engine, RS256 tokens verified via --jwks-file)
#   ws-node   Node.js + ws (peers/ws-node; decodes the token without verifying it)
#   peer-min  target/release/sumu-peer-min, minimal tokio-tungstenite broadcaster
#             (near-physical-limit reference; decodes the token without verifying it)
#   sumu-baseline  the sumu-node binary named by BENCH_BASELINE_BIN, run exactly like sumu
#             (a before/after comparison of two builds in one run)
# Scenarios (each on a freshly started server; all traffic on loopback):
#   connect-small    hold BENCH_SMALL (10k) sockets: held, server RSS per socket, connect latency
#   connect-large    hold BENCH_LARGE (50k) sockets (10k users x 5 sockets): held, RSS per socket
#   broadcast        BENCH_SMALL receivers, broadcasts over POST /api/notify at a modest rate:
#                    delivery p50/p99
#   broadcast-burst  the same receivers, BENCH_BURST_COUNT broadcasts at BENCH_BURST_RATE/s:
#                    deliveries/s the server sustains, and latency under that load
#   connect-rs256    BENCH_SMALL RS256-token connects as fast as the server takes them: connects/s
# Output: loadtest/bench/out/PEER/SCENARIO.{json,txt,svg}, server logs, and
#         loadtest/bench/out/REPORT.md (absolute figures and sumu / peer ratios).
#
# Usage: loadtest/bench/run.sh
# Environment (defaults in brackets):
#   BENCH_PEERS [sumu,ws-node,peer-min]  which servers, in column order (first = ratio base)
#   BENCH_SMALL [10000]  BENCH_LARGE [50000]  BENCH_LARGE_USERS [10000]
#   BENCH_RAMP [5000] connects/s of the connect-small/-large ramps and fan-out set-up
#   BENCH_BROADCASTS [20] broadcasts, BENCH_BROADCAST_RATE [2] per second
#   BENCH_BURST_COUNT [50] broadcasts, BENCH_BURST_RATE [50] per second
#   BENCH_HOLD [5s] hold time of connect scenarios
#   BENCH_SKIP_BUILD [0] 1 = use the binaries already in target/release
#   BENCH_BASELINE_BIN [none] another sumu-node binary, for the sumu-baseline peer
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT="$HERE/out"
BIN="$ROOT/target/release"
PEERS=${BENCH_PEERS:-sumu,ws-node,peer-min}
SMALL=${BENCH_SMALL:-10000}
LARGE=${BENCH_LARGE:-50000}
LARGE_USERS=${BENCH_LARGE_USERS:-10000}
RAMP=${BENCH_RAMP:-5000}
BROADCASTS=${BENCH_BROADCASTS:-20}
BROADCAST_RATE=${BENCH_BROADCAST_RATE:-2}
HOLD=${BENCH_HOLD:-5s}
BURST_COUNT=${BENCH_BURST_COUNT:-50}
BURST_RATE=${BENCH_BURST_RATE:-50}
API_KEY=bench
AUD=sumu-bench
PORT_BASE=${BENCH_PORT_BASE:-18700}

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

mkdir -p "$OUT/keys"
# Each server and the load tester hold one descriptor per socket (plus slack).
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
log "open-file limit: $(ulimit -n)"

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building sumu-node and sumu-loadtest (release)"
  (cd "$ROOT" && cargo build --release -p sumu-node -p sumu-loadtest)
fi
for b in sumu-node sumu-loadtest sumu-peer-min; do
  [ -x "$BIN/$b" ] || { log "missing $BIN/$b"; exit 1; }
done
if [[ ",$PEERS," == *",ws-node,"* ]]; then
  log "installing the ws-node peer (npm ci)"
  (cd "$HERE/peers/ws-node" && npm ci --no-audit --no-fund --silent)
fi

# RS256 key pair for the whole run (sumu verifies with the public key).
if [ ! -s "$OUT/keys/private.pem" ]; then
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$OUT/keys/private.pem" 2>/dev/null
  openssl pkey -in "$OUT/keys/private.pem" -pubout -out "$OUT/keys/public.pem"
fi

PEER_PID=""
PEER_URL=""
port_of() {
  case "$1" in sumu) echo $((PORT_BASE + 0));; ws-node) echo $((PORT_BASE + 1));; peer-min) echo $((PORT_BASE + 2));; sumu-baseline) echo $((PORT_BASE + 4));; *) echo $((PORT_BASE + 3));; esac
}

start_peer() { # NAME LOGFILE
  local name=$1 logfile=$2 port
  port=$(port_of "$name")
  PEER_URL="http://127.0.0.1:$port"
  case "$name" in
    sumu|sumu-baseline)
      local bin="$BIN/sumu-node"
      if [ "$name" = sumu-baseline ]; then
        bin=${BENCH_BASELINE_BIN:?set BENCH_BASELINE_BIN to the baseline sumu-node binary}
      fi
      "$bin" --listen "127.0.0.1:$port" --jwks-file "$OUT/keys/public.pem" \
        --jwt-audiences "$AUD" --api-key "$API_KEY" --log warn >"$logfile" 2>&1 &
      ;;
    ws-node)
      node "$HERE/peers/ws-node/server.js" --listen "127.0.0.1:$port" --api-key "$API_KEY" >"$logfile" 2>&1 &
      ;;
    peer-min)
      "$BIN/sumu-peer-min" --listen "127.0.0.1:$port" --api-key "$API_KEY" >"$logfile" 2>&1 &
      ;;
    *) log "unknown peer $name"; return 1;;
  esac
  PEER_PID=$!
  for _ in $(seq 1 300); do
    if curl -sf -o /dev/null "$PEER_URL/readyz"; then return 0; fi
    if ! kill -0 "$PEER_PID" 2>/dev/null; then
      log "$name exited at start; see $logfile"; PEER_PID=""; return 1
    fi
    sleep 0.1
  done
  log "$name not ready in 30 s"; stop_peer; return 1
}

# shellcheck source=loadtest/bench/peer.sh
. "$HERE/peer.sh"
trap stop_peer EXIT

run() { # PEER SCENARIO loadtest-args...
  local peer=$1 scenario=$2; shift 2
  local dir="$OUT/$peer"
  mkdir -p "$dir"
  rm -f "$dir/$scenario.json"
  log "$peer / $scenario"
  if ! start_peer "$peer" "$dir/$scenario.server.log"; then return 0; fi
  local args=("$@")
  local i
  for i in "${!args[@]}"; do args[$i]=${args[$i]//@PID@/$PEER_PID}; done
  "$BIN/sumu-loadtest" "${args[@]}" --url "$PEER_URL" \
    --private-key "$OUT/keys/private.pem" --aud "$AUD" \
    --json "$dir/$scenario.json" --plot "$dir/$scenario.svg" >"$dir/$scenario.txt" 2>"$dir/$scenario.err" \
    || log "$peer / $scenario: sumu-loadtest exit $? (errors counted or run failed; see $dir/$scenario.txt/.err)"
  stop_peer
  # Let the kernel recycle the closed sockets (TIME_WAIT) before the next run.
  sleep 2
}

IFS=',' read -r -a PEER_LIST <<<"$PEERS"
for peer in "${PEER_LIST[@]}"; do
  run "$peer" connect-small connect -n "$SMALL" --ramp "$RAMP" --hold "$HOLD" --server-pid @PID@
  run "$peer" connect-large connect -n "$LARGE" --users "$LARGE_USERS" --ramp "$RAMP" --hold "$HOLD" \
    --connect-timeout 10s --server-pid @PID@
  run "$peer" broadcast fanout -n "$SMALL" --ramp "$RAMP" --mode broadcast --rate "$BROADCAST_RATE" \
    --count "$BROADCASTS" --drain-timeout 30s --api-key "$API_KEY"
  run "$peer" broadcast-burst fanout -n "$SMALL" --ramp "$RAMP" --mode broadcast --rate "$BURST_RATE" \
    --count "$BURST_COUNT" --inflight 4 --drain-timeout 60s --api-key "$API_KEY" --server-pid @PID@
  run "$peer" connect-rs256 connect -n "$SMALL" --ramp 1000000 --max-inflight 256 --hold 1s
done

PREAMBLE="Run $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), \
$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, Linux $(uname -r); \
node $(node --version 2>/dev/null || echo n/a), ws $(node -p "require('$HERE/peers/ws-node/node_modules/ws/package.json').version" 2>/dev/null || echo n/a). \
Command: \`loadtest/bench/run.sh\` (BENCH_SMALL=$SMALL BENCH_LARGE=$LARGE BENCH_RAMP=$RAMP BENCH_BROADCASTS=$BROADCASTS BENCH_BROADCAST_RATE=$BROADCAST_RATE BENCH_BURST_COUNT=$BURST_COUNT BENCH_BURST_RATE=$BURST_RATE). \
Server and load tester share the same cores over loopback, so every figure is bounded by this machine \
(see the machine notes below). sumu verifies each RS256 token; ws-node and peer-min only decode it."

"$BIN/sumu-loadtest" bench-report --dir "$OUT" --peers "$PEERS" --output "$OUT/REPORT.md" --preamble "$PREAMBLE"
log "wrote $OUT/REPORT.md"
cat "$OUT/REPORT.md"
