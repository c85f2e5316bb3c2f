#!/usr/bin/env bash
# loadtest/bench/cluster.sh — the fleet benchmark: the local 3-node cluster
# (infra/local/cluster: ministack, aws-engine nodes, HAProxy), in the same
# run 1 aws-engine node behind the same balancer, and the 3-node cluster again
# with the recovery window on (--recovery-window-secs 120: every request is
# recorded in DynamoDB before it is delivered). For each it measures:
#   - notification requests through the notifications queue (SendMessage ->
#     socket): unicast, multicast of K users spread over the nodes, broadcast
#     to every socket, at offered rates, and a saturating unicast run; delivery
#     p50/p99, requests/s and deliveries/s achieved, losses;
#   - the mesh's overhead: unicasts posted to node i mod N (POST /api/notify),
#     split by whether the socket was on that node: cross-node p99 / same-node p99;
#   - AWS calls per request and per delivery, per operation (every node's
#     sumu_aws_calls_total), background calls per node-second, calls per connect;
# then prices them with cost-model.toml (cost.py): sumu vs API Gateway WebSocket.
# Writes loadtest/bench/out/cluster/REPORT.md (and the JSON of every run).
#
#   loadtest/bench/cluster.sh                       # N=300 sockets, SECS=10 per run
#   N=1000 SECS=20 RATE_UNI=100 loadtest/bench/cluster.sh
#
# The emulator is ONE Python process on the same two cores as the nodes, HAProxy
# and the load tester: every figure that goes through AWS (queue polling, mesh
# inboxes, row look-ups) is bounded by it, not by sumu. Ratios measured side by
# side in this run (3 nodes vs 1, cross vs same node) are the figures to read.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OUT="$ROOT/loadtest/bench/out/cluster"
N="${N:-300}"
K="${K:-10}"
SECS="${SECS:-10}"
RATE_UNI="${RATE_UNI:-50}"
RATE_MULTI="${RATE_MULTI:-20}"
RATE_BCAST="${RATE_BCAST:-2}"
RATE_MAX="${RATE_MAX:-400}"
IDLE_SECS="${IDLE_SECS:-20}"
rm -rf "$OUT"
mkdir -p "$OUT"
log() { printf '[bench] %s\n' "$*" >&2; }

cargo build --release -p sumu-node -p sumu-loadtest >&2
LT="$ROOT/target/release/sumu-loadtest"

CURRENT=""
cleanup() { if [ -n "$CURRENT" ]; then SUMU_CLUSTER_DIR="$CURRENT" infra/local/cluster down >&2 || true; fi; }
trap cleanup EXIT

# "service.Operation count" lines: every node's sumu_aws_calls_total, summed.
calls() {
  local url
  for url in ${SUMU_CLUSTER_NODE_URLS//,/ }; do curl -s --max-time 5 "$url/metrics"; done \
    | awk -F'[{}, ]' '/^sumu_aws_calls_total\{/ {split($2,o,"\""); split($3,v,"\""); n[v[2]"."o[2]]+=$NF} END {for (k in n) print k, n[k]}' \
    | sort
}
# JSON object {op: (after-before)/div} of two calls() outputs.
per_json() {
  join -a2 -e0 -o 2.1,1.2,2.2 <(echo "$1") <(echo "$2") \
    | awk -v d="$3" 'BEGIN {printf "{"; s=""} $3>$2 {printf "%s\"%s\": %.4f", s, $1, ($3-$2)/d; s=", "} END {printf "}"}'
}

# fanout LABEL ARGS...: one run, JSON in $DIR/LABEL.json (exit code ignored: the report shows errors).
fanout() {
  local label="$1"; shift
  log "$LABEL: $label"
  "$LT" fanout --url "$SUMU_URL" --hs256-secret "$SUMU_HS256_SECRET" --nodes "$SUMU_CLUSTER_NODE_URLS" \
    -n "$N" --users "$N" --no-progress --drain-timeout 40s --json "$DIR/$label.json" "$@" \
    >"$DIR/$label.txt" 2>&1 || true
}

run_fleet() {
  LABEL="$1"
  local nodes="$2"
  shift 2   # the rest: extra node flags
  DIR="$OUT/$LABEL"
  mkdir -p "$DIR"
  CURRENT="$DIR/state"
  log "$LABEL: infra/local/cluster up --nodes $nodes"
  SUMU_CLUSTER_DIR="$CURRENT" infra/local/cluster up --nodes "$nodes" -- \
    --rate-limit-per-sec 1000 --rate-limit-burst 1000 "$@" >"$DIR/cluster.env"
  set -a
  # shellcheck disable=SC1091
  . "$DIR/cluster.env"
  set +a
  sleep 3
  local c0 c1 c2
  c0="$(calls)"; sleep "$IDLE_SECS"; c1="$(calls)"
  per_json "$c0" "$c1" "$((IDLE_SECS * nodes))" >"$DIR/background.json"
  "$LT" connect --url "$SUMU_URL" --hs256-secret "$SUMU_HS256_SECRET" -n "$N" --ramp 500 --hold 3s \
    --no-progress --json "$DIR/connect.json" >"$DIR/connect.txt" 2>&1 || true
  sleep 3   # the closes' row deletes and presence events
  c2="$(calls)"
  per_json "$c1" "$c2" "$N" >"$DIR/connect-calls.json"
  local count_uni=$((RATE_UNI * SECS)) count_multi=$((RATE_MULTI * SECS)) count_bcast=$((RATE_BCAST * SECS))
  fanout unicast --via sqs --mode unicast --rate "$RATE_UNI" --count "$count_uni" --inflight 16
  fanout multicast --via sqs --mode multicast -k "$K" --rate "$RATE_MULTI" --count "$count_multi" --inflight 16
  fanout broadcast --via sqs --mode broadcast --rate "$RATE_BCAST" --count "$count_bcast"
  fanout saturate --via sqs --mode unicast --rate "$RATE_MAX" --count "$((RATE_MAX * SECS))" --inflight 64
  fanout http-split --via http --api-key dev --mode unicast --rate "$RATE_UNI" --count "$count_uni" --inflight 16
  SUMU_CLUSTER_DIR="$CURRENT" infra/local/cluster down >&2
  CURRENT=""
}

run_fleet three 3
run_fleet one 1
run_fleet recovery 3 --recovery-window-secs 120

ms() { jq -r "(.latencies.$2.$3 // empty) / 1000 | . * 10 | round / 10" "$1" 2>/dev/null || true; }
val() { jq -r "$2 // empty" "$1" 2>/dev/null || true; }
row() {
  local name="$1" f3="$OUT/three/$2.json" f1="$OUT/one/$2.json"
  printf '| %s | %s | %s / %s | %s | %s | %s / %s / %s | %s / %s | %s / %s |\n' "$name" \
    "$(val "$f3" .config.rate_per_s)" \
    "$(printf '%.1f' "$(val "$f3" .rates.notifications_per_s)")" "$(printf '%.1f' "$(val "$f1" .rates.notifications_per_s)")" \
    "$(printf '%.0f' "$(val "$f3" .rates.deliveries_per_s)")" \
    "$(printf '%.0f' "$(val "$f1" .rates.deliveries_per_s)")" \
    "$(val "$f3" .counters.deliveries)" "$(val "$f3" .counters.expected_deliveries)" "$(val "$f3" .counters.lost)" \
    "$(ms "$f3" delivery p50_us)" "$(ms "$f3" delivery p99_us)" \
    "$(ms "$f1" delivery p50_us)" "$(ms "$f1" delivery p99_us)"
}
calls_row() {
  local f="$1"
  jq -r '.fleet as $f | "\($f.aws_calls_per_request * 100 | round / 100) per request, \($f.aws_calls_per_delivery * 1000 | round / 1000) per delivery: " + ([$f.aws_calls | to_entries[] | "\(.key)=\(.value)"] | join(", "))' "$f" 2>/dev/null || echo "-"
}

# Inputs of the cost model: the 3-node run.
jq -n --slurpfile bg "$OUT/three/background.json" --slurpfile cc "$OUT/three/connect-calls.json" \
  --slurpfile uni "$OUT/three/unicast.json" --slurpfile runi "$OUT/recovery/unicast.json" \
  '{nodes: 3, background_calls_per_node_s: $bg[0], calls_per_connect: $cc[0],
    calls_per_request: ($uni[0].fleet.aws_calls | with_entries(.value = .value / $uni[0].counters.notifications_accepted)),
    calls_per_request_recovery: ($runi[0].fleet.aws_calls | with_entries(.value = .value / $runi[0].counters.notifications_accepted))}' \
  >"$OUT/measured.json"

# history_calls RUN: the recovery fleet's history calls per request of RUN, next to the same
# run without recovery (DynamoDB UpdateItem/PutItem/GetItem/BatchGetItem/Query), as "op a -> b".
history_calls() {
  local on="$OUT/recovery/$1.json" off="$OUT/three/$1.json"
  jq -r -n --slurpfile on "$on" --slurpfile off "$off" '
    def per($f): $f.fleet.aws_calls | with_entries(select(.key | startswith("dynamodb."))
      | .value = (.value / $f.counters.notifications_accepted));
    (per($off[0])) as $a | (per($on[0])) as $b
    | ([$a, $b] | map(keys) | add | unique)
    | map("\(.)=\(($a[.] // 0) * 100 | round / 100) -> \(($b[.] // 0) * 100 | round / 100)")
    | join(", ")' 2>/dev/null || echo "-"
}
recovery_row() {
  local name="$1" off="$OUT/three/$2.json" on="$OUT/recovery/$2.json"
  printf '| %s | %s / %s | %s / %s | %s / %s | %s |\n' "$name" \
    "$(ms "$off" delivery p50_us)" "$(ms "$on" delivery p50_us)" \
    "$(ms "$off" delivery p99_us)" "$(ms "$on" delivery p99_us)" \
    "$(printf '%.1f' "$(val "$off" .rates.notifications_per_s)")" "$(printf '%.1f' "$(val "$on" .rates.notifications_per_s)")" \
    "$(history_calls "$2")"
}

S3="$OUT/three/http-split.json"
{
  echo "# The fleet on one machine: cluster benchmark"
  echo
  echo "$(date -u +%FT%TZ) on $(nproc) cores; command: \`N=$N K=$K SECS=$SECS RATE_UNI=$RATE_UNI RATE_MULTI=$RATE_MULTI RATE_BCAST=$RATE_BCAST RATE_MAX=$RATE_MAX loadtest/bench/cluster.sh\`."
  echo "Each fleet: \`infra/local/cluster up\` (ministack, aws-engine nodes, HAProxy leastconn), $N sockets"
  echo "through HAProxy (one user each), requests sent by the load tester as a backend would: SendMessage"
  echo "to the notifications queue. Delivery latency = SendMessage -> frame at the socket."
  echo
  echo "**What bounds these figures:** the emulator is one Python process sharing the two cores with"
  echo "the nodes, HAProxy and the load tester. It polls long-polled queues every 100 ms and serves"
  echo "~1-3k calls/s in total, so queue latency (p50 ~50 ms+), requests/s and deliveries/s through"
  echo "the queue and the mesh are the emulator's, not sumu's. Side-by-side ratios of this run are"
  echo "the figures to read (3 nodes vs 1; cross-node vs same-node)."
  echo
  echo "## Notification requests through the queue"
  echo
  echo "| run | offered req/s | achieved req/s (3 nodes / 1 node) | deliveries/s 3 nodes | deliveries/s 1 node | 3 nodes: delivered / expected / lost | 3 nodes p50 / p99 ms | 1 node p50 / p99 ms |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  row "unicast" unicast
  row "multicast of $K users" multicast
  row "broadcast to $N sockets" broadcast
  row "unicast, saturating" saturate
  echo
  echo "## The mesh's overhead (3 nodes)"
  echo
  echo "Unicasts posted with \`POST /api/notify\` to node i mod 3, so the routing node is known:"
  echo "same-node = the socket is on the node that routed the request (local delivery); cross-node ="
  echo "it is on another node (one SQS SendMessage to that node's inbox, its long poll, delivery)."
  echo
  echo "| path | deliveries | p50 ms | p99 ms |"
  echo "|---|---:|---:|---:|"
  echo "| same-node | $(val "$S3" .fleet.deliveries_same_node) | $(ms "$S3" delivery_same_node p50_us) | $(ms "$S3" delivery_same_node p99_us) |"
  echo "| cross-node | $(val "$S3" .fleet.deliveries_cross_node) | $(ms "$S3" delivery_cross_node p50_us) | $(ms "$S3" delivery_cross_node p99_us) |"
  echo
  echo "cross-node p99 / same-node p99 = **$(jq -r '((.latencies.delivery_cross_node.p99_us // 0) / ((.latencies.delivery_same_node.p99_us // 0) + 0.000001)) * 10 | round / 10' "$S3")**"
  echo
  echo "## AWS calls"
  echo
  echo "All nodes' \`sumu_aws_calls_total\` over the run, background work included (long polls,"
  echo "heartbeats, the leader's stream reads and presence publishes): at these low request rates the"
  echo "per-request figures are upper bounds (the idle row shows the background alone), and so is"
  echo "the delivery cost computed from them below."
  echo
  echo "| fleet | run | calls |"
  echo "|---|---|---|"
  for fl in three one; do
    for r in unicast multicast broadcast; do
      echo "| $fl | $r | $(calls_row "$OUT/$fl/$r.json") |"
    done
    echo "| $fl | idle, per node-second | $(jq -c . "$OUT/$fl/background.json") |"
    echo "| $fl | per connect (+ close) | $(jq -c . "$OUT/$fl/connect-calls.json") |"
  done
  echo
  echo "Sockets per node after the ramp (3 nodes, unicast run): $(jq -c .fleet.sockets_per_node "$OUT/three/unicast.json")"
  echo
  echo "## The recovery window: routing with recovery off vs on (3 nodes, same emulator)"
  echo
  echo "The same runs on a 3-node fleet with \`--recovery-window-secs 120\`: every request is recorded in"
  echo "\`<prefix>History\` (positions, claim, slots: three DynamoDB round trips) before it is delivered."
  echo "The sockets are plain ones: this is the routing cost every request pays once the window is on."
  echo
  echo "| run | p50 ms off / on | p99 ms off / on | achieved req/s off / on | DynamoDB calls per request, off -> on |"
  echo "|---|---:|---:|---:|---|"
  recovery_row "unicast" unicast
  recovery_row "multicast of $K users" multicast
  recovery_row "broadcast to $N sockets" broadcast
  recovery_row "unicast, saturating" saturate
  echo
  python3 "$ROOT/loadtest/bench/cost.py" "$ROOT/loadtest/bench/cost-model.toml" "$OUT/measured.json"
} >"$OUT/REPORT.md"
log "wrote $OUT/REPORT.md"
cat "$OUT/REPORT.md"
