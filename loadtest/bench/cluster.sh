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
#   - where the time goes: the nodes' own routing histograms per run
#     (sumu_route_seconds{path}, sumu_route_hop_seconds{hop}), and the bare SQS hop
#     (sumu-loadtest sqs-hop: send -> long-poll receive on a scratch queue) at idle
#     and during the unicast run, against the same emulator: the floor of the mesh;
#   - the CPU of every process per run (each emulator process, each node, HAProxy;
#     the load tester's own is in its JSON), the machine's busy share and load, and
#     which runs the emulator bounds (a ministack process near one core: it is one
#     Python thread);
# then prices them with cost-model.toml (cost.py): sumu vs API Gateway WebSocket.
# Writes loadtest/bench/out/cluster/REPORT.md (and the JSON of every run). The fleet of
# the bill is sized from loadtest/bench/sizing.sh's sizing.json (SIZING=path) if present.
#
#   loadtest/bench/cluster.sh                       # N=300 sockets, SECS=10 per run
#   N=1000 SECS=20 RATE_UNI=100 loadtest/bench/cluster.sh
#   EMULATORS=per-service loadtest/bench/cluster.sh # SNS+SQS on ministack too
#   EMULATORS=one loadtest/bench/cluster.sh         # one ministack process for all services
#
# The emulator is ministack (Python) on the same two cores as the nodes, HAProxy
# and the load tester: every figure that goes through AWS (queue polling, mesh
# inboxes, row look-ups) can be bounded by it rather than by sumu. By default
# (EMULATORS=fauxqs; infra/local/cluster --emulators) SNS+SQS run on fauxqs (Node.js,
# long polls woken at once, like AWS; ministack wakes them every 100 ms) and
# DynamoDB+Streams+CloudWatch on a ministack process of their own with its per-request
# log off (EMULATOR_LOG_LEVEL); the report shows each process's CPU beside the nodes'
# and flags the runs it bounds. Ratios measured side by side in this run (3 nodes vs 1, cross vs same
# node, the fleet vs the bare hop) are the figures to read.
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
RATE_HOP="${RATE_HOP:-20}"
EMULATORS="${EMULATORS:-fauxqs}"
export EMULATOR_LOG_LEVEL="${EMULATOR_LOG_LEVEL:-WARNING}"
# A ministack process above this share of one core bounds the run (one Python thread).
EMULATOR_BOUND_CORES=0.85
CLK_TCK="$(getconf CLK_TCK)"
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

# The recorded processes of the running cluster: emulator process(es), balancer, nodes.
procs() {
  echo emulator
  if [ -f "$CURRENT/emulator-data.pid" ]; then echo emulator-data; fi
  echo balancer
  tr ',' '\n' <<<"$SUMU_CLUSTER_NODES"
}
# "name ticks" per process (utime+stime), "machine busy total" (/proc/stat), the clock
# and the 1-minute load average.
snapshot() {
  local name pid t
  for name in $(procs); do
    pid="$(tr -dc '0-9' <"$CURRENT/$name.pid" 2>/dev/null || true)"
    t=0
    if [ -n "$pid" ] && [ -r "/proc/$pid/stat" ]; then
      t="$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')"
    fi
    echo "$name $t"
  done
  awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print "machine", t - $5 - $6, t}' /proc/stat
  echo "clock $(date +%s.%N)"
  echo "load $(cut -d' ' -f1 /proc/loadavg)"
}
# JSON of two snapshots: cores used by each process over the interval, the nodes' sum,
# the machine's busy share, the load average before and after.
cpu_json() {
  awk -v hz="$CLK_TCK" 'FNR == NR {b[$1] = $2; bt[$1] = $3; next} {a[$1] = $2; at[$1] = $3}
    END {
      secs = a["clock"] - b["clock"]; if (secs <= 0) secs = 1
      busy = (at["machine"] > bt["machine"]) ? 100 * (a["machine"] - b["machine"]) / (at["machine"] - bt["machine"]) : 0
      printf "{\"secs\": %.1f, \"load1_before\": %s, \"load1_after\": %s, \"machine_busy_pct\": %.1f, \"cores\": {", secs, b["load"], a["load"], busy
      s = ""; nodes = 0
      for (k in a) if (k != "clock" && k != "machine" && k != "load") {
        c = (a[k] - b[k]) / hz / secs; printf "%s\"%s\": %.3f", s, k, c; s = ", "
        if (k ~ /^n[0-9]+$/) nodes += c
      }
      printf "%s\"nodes\": %.3f}}\n", s, nodes
    }' <(echo "$1") <(echo "$2")
}

# fanout LABEL ARGS...: one run, JSON in $DIR/LABEL.json, CPU in $DIR/LABEL.cpu.json (exit
# code ignored: the report shows errors). --settle 3s: the AWS calls are counted from 3 s after
# the ramp, once the leader has read the connects' stream records (its idle reads back off to
# 1 s) and made their presence calls, so a request's count holds no connect's calls.
fanout() {
  local label="$1" s0 s1; shift
  log "$LABEL: $label"
  s0="$(snapshot)"
  "$LT" fanout --url "$SUMU_URL" --hs256-secret "$SUMU_HS256_SECRET" --nodes "$SUMU_CLUSTER_NODE_URLS" \
    -n "$N" --users "$N" --no-progress --drain-timeout 40s --settle 3s --json "$DIR/$label.json" "$@" \
    >"$DIR/$label.txt" 2>&1 || true
  s1="$(snapshot)"
  cpu_json "$s0" "$s1" >"$DIR/$label.cpu.json"
}

# sqs_hop LABEL: the bare SQS hop on a scratch queue of this cluster's emulator.
sqs_hop() {
  "$LT" sqs-hop --rate "$RATE_HOP" --count "$((RATE_HOP * SECS))" --quiet \
    --json "$DIR/$1.json" >"$DIR/$1.txt" 2>&1 || true
}

run_fleet() {
  LABEL="$1"
  local nodes="$2"
  shift 2   # the rest: extra node flags
  DIR="$OUT/$LABEL"
  mkdir -p "$DIR"
  CURRENT="$DIR/state"
  log "$LABEL: infra/local/cluster up --nodes $nodes --emulators $EMULATORS"
  SUMU_CLUSTER_DIR="$CURRENT" infra/local/cluster up --nodes "$nodes" --emulators "$EMULATORS" -- \
    --rate-limit-per-sec 1000 --rate-limit-burst 1000 "$@" >"$DIR/cluster.env"
  set -a
  # shellcheck disable=SC1091
  . "$DIR/cluster.env"
  set +a
  sleep 3
  local c0 c1 c2 s0 s1
  c0="$(calls)"; s0="$(snapshot)"; sleep "$IDLE_SECS"; c1="$(calls)"; s1="$(snapshot)"
  per_json "$c0" "$c1" "$((IDLE_SECS * nodes))" >"$DIR/background.json"
  cpu_json "$s0" "$s1" >"$DIR/idle.cpu.json"
  "$LT" connect --url "$SUMU_URL" --hs256-secret "$SUMU_HS256_SECRET" -n "$N" --ramp 500 --hold 3s \
    --no-progress --json "$DIR/connect.json" >"$DIR/connect.txt" 2>&1 || true
  sleep 3   # the closes' row deletes and presence events
  c2="$(calls)"
  per_json "$c1" "$c2" "$N" >"$DIR/connect-calls.json"
  local count_uni=$((RATE_UNI * SECS)) count_multi=$((RATE_MULTI * SECS)) count_bcast=$((RATE_BCAST * SECS))
  log "$LABEL: the bare SQS hop at idle"
  sqs_hop sqs-hop-idle
  # The same hop while the unicast run loads the fleet (started with it, as long).
  sqs_hop sqs-hop-loaded &
  local hop_pid=$!
  fanout unicast --via sqs --mode unicast --rate "$RATE_UNI" --count "$count_uni" --inflight 16
  wait "$hop_pid" || true
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
# cpu_row FLEET RUN: one row of the CPU table.
cpu_row() {
  local f="$OUT/$1/$2.cpu.json"
  [ -f "$f" ] || return 0
  jq -r --arg fl "$1" --arg run "$2" --argjson bound "$EMULATOR_BOUND_CORES" '
    def c(k): (.cores[k] // null) | if . == null then "-" else (. * 100 | round / 100 | tostring) end;
    [.cores | to_entries[] | select(.key | startswith("emulator")) | .value] as $emu
    | (if ($emu | map(select(. >= $bound)) | length) > 0 then "**the emulator**"
       elif .machine_busy_pct >= 90 then "the machine"
       else "-" end) as $by
    | "| \($fl) | \($run) | \(c("emulator")) | \(c("emulator-data")) | \(c("nodes")) | \(c("balancer")) | \(.machine_busy_pct) | \(.load1_before) | \($by) |"' "$f"
}
# hops_row FLEET RUN: the nodes' routing histograms of one run, "p50 / p99 (count)" each.
hops_row() {
  local f="$OUT/$1/$2.json"
  jq -r --arg fl "$1" --arg run "$2" '
    def q(k): (.fleet.route[k] // null) | if . == null then "-" else "\(.p50_ms * 10 | round / 10) / \(.p99_ms * 10 | round / 10) (\(.count))" end;
    "| \($fl) | \($run) | \(q("hop=queue_wait")) | \(q("hop=lookup")) | \(q("hop=inbox_send")) | \(q("hop=mesh_publish")) | \(q("hop=inbox_wait")) | \(q("hop=deliver_local")) | \(q("hop=deliver_mesh")) | \(q("path=local")) | \(q("path=mesh")) |"' "$f" 2>/dev/null || true
}
hop_cell() { jq -r '"\((.latencies.hop.p50_us // 0) / 100 | round / 10) / \((.latencies.hop.p99_us // 0) / 100 | round / 10) (\(.counters.received // 0) of \(.counters.sent // 0))"' "$1" 2>/dev/null || echo "-"; }
calls_row() {
  local f="$1"
  jq -r '.fleet as $f | "\($f.aws_calls_per_request * 100 | round / 100) per request, \($f.aws_calls_per_delivery * 1000 | round / 1000) per delivery: " + ([$f.aws_calls | to_entries[] | "\(.key)=\(.value)"] | join(", "))' "$f" 2>/dev/null || echo "-"
}

# Inputs of the cost model: the 3-node run.
jq -n --slurpfile bg "$OUT/three/background.json" --slurpfile cc "$OUT/three/connect-calls.json" \
  --slurpfile uni "$OUT/three/unicast.json" --slurpfile sat "$OUT/three/saturate.json" \
  --slurpfile runi "$OUT/recovery/unicast.json" \
  '{nodes: 3, background_calls_per_node_s: $bg[0], calls_per_connect: $cc[0],
    calls_per_request: ($uni[0].fleet.aws_calls | with_entries(.value = .value / $uni[0].counters.notifications_accepted)),
    request_rate: $uni[0].config.rate_per_s,
    calls_per_request_high_rate: ($sat[0].fleet.aws_calls | with_entries(.value = .value / $sat[0].counters.notifications_accepted)),
    high_rate: $sat[0].config.rate_per_s,
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
  echo "**What bounds these figures:** the AWS stand-ins (EMULATORS=$EMULATORS: $(case "$EMULATORS" in
    fauxqs) echo "SNS+SQS on fauxqs, one Node.js process whose long polls wake at once as AWS's do; DynamoDB+Streams+CloudWatch on one ministack (Python) process" ;;
    per-service) echo "ministack (Python) processes, one for SNS+SQS, one for DynamoDB+Streams+CloudWatch; ministack wakes long polls every 100 ms, AWS at once" ;;
    *) echo "one ministack (Python) process for every service; it wakes long polls every 100 ms, AWS at once" ;;
  esac)) share the two cores with the nodes, HAProxy, the load tester and whatever else runs"
  echo "on the machine. The bare SQS hop below is the floor of every cross-node delivery on this stand-in."
  echo "Each run's CPU per process is in the CPU table: a run in which an emulator process used ~one"
  echo "core (each is one thread of Python or JavaScript) is **bounded by the emulator**, and its rates"
  echo "say nothing of sumu's. Side-by-side ratios of this run are the figures to read (3 nodes vs 1;"
  echo "cross-node vs same-node; the fleet vs the bare hop)."
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
  echo "Throughput from 1 to 3 nodes (saturating unicast run): $(jq -rn --slurpfile a "$OUT/three/saturate.json" --slurpfile b "$OUT/one/saturate.json" '
    ($a[0].rates.deliveries_per_s // 0) as $t | ($b[0].rates.deliveries_per_s // 0) as $o
    | "\($t * 10 | round / 10) deliveries/s on 3 nodes, \($o * 10 | round / 10) on 1 node: x\(if $o > 0 then ($t / $o * 100 | round / 100) else "-" end)"' 2>/dev/null || echo "-")."
  echo "Read it with the CPU table: if the emulator bounds both runs, this ratio is the emulator's."
  echo
  echo "## CPU per run (cores; 1.0 = one full core)"
  echo
  echo "Each process's utime+stime over the run (/proc), the ramp of the sockets and the drain included;"
  echo "machine = busy share of all $(nproc) cores; load = 1-minute load average at the start (other"
  echo "engineers' builds and tests share this machine). The load tester's own CPU is in each run's JSON"
  echo "(\`machine.cpu\`). 'bound by': a ministack process at >= $EMULATOR_BOUND_CORES core, or the machine >= 90% busy."
  echo
  echo "| fleet | run | emulator (SNS+SQS$( [ "$EMULATORS" = one ] && echo ", all"; [ "$EMULATORS" = fauxqs ] && echo ": fauxqs")) | emulator-data (DynamoDB) | nodes | HAProxy | machine busy % | load | bound by |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---|"
  # recovery: the third fleet (--recovery-window-secs), whose history writes load DynamoDB most.
  for fl in three one recovery; do
    for r in idle unicast multicast broadcast saturate http-split; do cpu_row "$fl" "$r"; done
  done
  echo
  echo "## Where the time goes: the nodes' routing histograms"
  echo
  echo "From every node's \`sumu_route_hop_seconds{hop}\` and \`sumu_route_seconds{path}\` over each run"
  echo "(summed over nodes; p50 / p99 ms estimated from the buckets, and the count). path=local: from the"
  echo "router taking the request to the payload at its own sockets; path=mesh: the same to the payload"
  echo "at another node's sockets (through SendMessage, that node's inbox long poll and delivery)."
  echo "The notifications queue's own wait (queue_wait) comes before both."
  echo
  echo "| fleet | run | queue_wait | lookup | inbox_send | mesh_publish | inbox_wait | deliver_local | deliver_mesh | path=local | path=mesh |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for fl in three one; do
    for r in unicast multicast broadcast saturate; do hops_row "$fl" "$r"; done
  done
  echo
  echo "**The floor: the bare SQS hop** (\`sumu-loadtest sqs-hop\`: SendMessage to a scratch queue of the"
  echo "same emulator, one 10 s long poll receiving batches of 10 as a node's inbox does; send start ->"
  echo "received, p50 / p99 ms; $RATE_HOP messages/s for ${SECS} s). 'During unicast' ran beside the unicast"
  echo "run (adding ~3 calls per message to the emulator's load). The mesh path cannot beat this hop:"
  echo "compare path=mesh and inbox_wait above with it."
  echo
  echo "| fleet | at idle | during the unicast run |"
  echo "|---|---|---|"
  for fl in three one; do
    echo "| $fl | $(hop_cell "$OUT/$fl/sqs-hop-idle.json") | $(hop_cell "$OUT/$fl/sqs-hop-loaded.json") |"
  done
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
  SIZING="${SIZING:-$ROOT/loadtest/bench/out/sizing/sizing.json}"
  if [ -f "$SIZING" ]; then
    cp "$SIZING" "$OUT/sizing.json"
    python3 "$ROOT/loadtest/bench/cost.py" "$ROOT/loadtest/bench/cost-model.toml" "$OUT/measured.json" "$OUT/sizing.json"
  else
    python3 "$ROOT/loadtest/bench/cost.py" "$ROOT/loadtest/bench/cost-model.toml" "$OUT/measured.json"
  fi
} >"$OUT/REPORT.md"
log "wrote $OUT/REPORT.md"
cat "$OUT/REPORT.md"
