#!/usr/bin/env bash
# loadtest/bench/sizing.sh — what one idle socket costs a node, measured, for the cost
# model (cost.py sizes the fleet from it). One node on the memory engine (an idle socket
# costs the aws engine nothing more once its row is written: connects are priced
# separately), N sockets (default 19,000: this machine allows 20,000 descriptors per
# process) held idle at the defaults: the node's WebSocket ping every 30 s and the
# client's keepalive `{"action":"ping"}` every 30 s (sumu.js's and the load tester's
# default), no other frame. It measures:
#   - the node's RSS per socket (sumu-loadtest connect --server-pid);
#   - the kernel's memory per socket: the growth of the slab caches a TCP socket uses
#     (/proc/slabinfo: TCP, sock_inode_cache, filp, dentry, eventpoll_epi, ...) while the
#     sockets are held, halved (both ends of every socket are on this machine);
#   - the node's CPU per socket: its utime+stime over MEASURE_SECS (several ping rounds)
#     once every socket is open, divided by the sockets.
# Writes loadtest/bench/out/sizing/sizing.json (read by cost.py through cluster.sh, or
# `python3 loadtest/bench/cost.py cost-model.toml measured.json sizing.json`).
#
#   loadtest/bench/sizing.sh                  # N=19000, MEASURE_SECS=120
#   N=5000 MEASURE_SECS=60 loadtest/bench/sizing.sh
#
# Other engineers share this machine: the node's own CPU ticks are its own, but a busy
# machine slows everything; the report states the load average of the run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OUT="$ROOT/loadtest/bench/out/sizing"
N="${N:-19000}"
RAMP="${RAMP:-1000}"
SETTLE_SECS="${SETTLE_SECS:-15}"
MEASURE_SECS="${MEASURE_SECS:-120}"
mkdir -p "$OUT"
log() { printf '[sizing] %s\n' "$*" >&2; }

cargo build --release -p sumu-node -p sumu-loadtest >&2
NODE_BIN="$ROOT/target/release/sumu-node"
LT="$ROOT/target/release/sumu-loadtest"
CLK_TCK="$(getconf CLK_TCK)"
SECRET="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
PORT="$("$ROOT/infra/local/emulator" free-port)"

NODE_PID=""
LT_PID=""
cleanup() {
  if [ -n "$LT_PID" ]; then kill "$LT_PID" 2>/dev/null || true; fi
  if [ -n "$NODE_PID" ]; then kill -TERM "$NODE_PID" 2>/dev/null || true; wait "$NODE_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

# The slab caches of an open TCP socket and its descriptor: "name bytes" (active objects x size).
slab() {
  awk '$1 ~ /^(TCP|tcp_bind_bucket|sock_inode_cache|filp|dentry|eventpoll_epi|eventpoll_pwq|kmalloc-rcl-.*|skbuff_head_cache|inode_cache)$/ {print $1, $2 * $4}' /proc/slabinfo
}
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
metric() { curl -s --max-time 5 "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

log "node on 127.0.0.1:$PORT (memory engine, defaults: --ping-interval-secs 30)"
# Loopback is exempt from the per-address limits by default.
SUMU_HS256_SECRET="$SECRET" SUMU_LOG=warn "$NODE_BIN" --listen "127.0.0.1:$PORT" \
  >"$OUT/node.log" 2>&1 &
NODE_PID=$!
for _ in $(seq 1 100); do
  if curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/readyz"; then break; fi
  sleep 0.1
done

SLAB0="$(slab)"
LOAD0="$(cut -d' ' -f1 /proc/loadavg)"
HOLD=$((N / RAMP + SETTLE_SECS + MEASURE_SECS + 30))
log "$N sockets at $RAMP/s, held ${HOLD}s"
"$LT" connect --url "http://127.0.0.1:$PORT" --hs256-secret "$SECRET" -n "$N" --ramp "$RAMP" \
  --hold "${HOLD}s" --server-pid "$NODE_PID" --no-progress --json "$OUT/connect.json" \
  >"$OUT/connect.txt" 2>&1 &
LT_PID=$!

deadline=$((SECONDS + N / 100 + 120))
while [ "$SECONDS" -lt "$deadline" ]; do
  open="$(metric sumu_connections || true)"
  if [ "${open:-0}" -ge "$N" ]; then break; fi
  if ! kill -0 "$LT_PID" 2>/dev/null; then break; fi
  sleep 1
done
open="$(metric sumu_connections || true)"
log "$open sockets open; settling ${SETTLE_SECS}s, then measuring ${MEASURE_SECS}s"
sleep "$SETTLE_SECS"
T0="$(ticks "$NODE_PID")"; C0="$(date +%s.%N)"
PINGS0="$(metric 'sumu_frames_in_total{route="ping"}' || echo 0)"
sleep "$MEASURE_SECS"
T1="$(ticks "$NODE_PID")"; C1="$(date +%s.%N)"
PINGS1="$(metric 'sumu_frames_in_total{route="ping"}' || echo 0)"
SLAB1="$(slab)"
OPEN1="$(metric sumu_connections || echo 0)"
RSS_KIB="$(awk '/^VmRSS/ {print $2}' "/proc/$NODE_PID/status")"
LOAD1="$(cut -d' ' -f1 /proc/loadavg)"
wait "$LT_PID" || true
LT_PID=""

SLAB_DELTA="$(join <(echo "$SLAB0" | sort) <(echo "$SLAB1" | sort) | awk '{d += $3 - $2} END {print d + 0}')"
jq -n \
  --argjson n "$N" --argjson open "${OPEN1:-0}" \
  --argjson ticks "$((T1 - T0))" --argjson hz "$CLK_TCK" \
  --argjson secs "$(awk -v a="$C0" -v b="$C1" 'BEGIN {print b - a}')" \
  --argjson pings "$(( ${PINGS1%.*} - ${PINGS0%.*} ))" \
  --argjson slab "$SLAB_DELTA" --argjson rss_kib "$RSS_KIB" \
  --slurpfile connect "$OUT/connect.json" \
  --arg load0 "$LOAD0" --arg load1 "$LOAD1" --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" \
  '{
    sockets: $open,
    node_rss_per_socket_bytes: ($connect[0].server.rss_per_socket_bytes // null),
    node_rss_kib: $rss_kib,
    kernel_bytes_per_socket: ($slab / 2 / ($open | if . > 0 then . else 1 end) | round),
    node_cpu_cores: ($ticks / $hz / $secs),
    node_cpu_core_seconds_per_socket_hour: ($ticks / $hz / $secs / ($open | if . > 0 then . else 1 end) * 3600),
    client_pings_per_socket_minute: ($pings / $secs * 60 / ($open | if . > 0 then . else 1 end)),
    measure_secs: $secs,
    ping_interval_secs: 30,
    machine: {cpu: $cpu, cores: '"$(nproc)"', load1_before: ($load0 | tonumber), load1_after: ($load1 | tonumber)}
  }' >"$OUT/sizing.json"
cat "$OUT/sizing.json"
