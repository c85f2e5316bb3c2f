#!/usr/bin/env bash
# Measures the aws engine through the local emulator (ministack): connects/s,
# publishes/s, and how many AWS calls one connect, one publish and one
# multicast of K users cost (from the node's sumu_aws_calls_total counters).
# The emulator is one Python process (~1-3k calls/s): these are figures of the
# emulator-bound path, not of sumu's own speed.
#
#   loadtest/bench/aws-costs.sh            # N=1000 sockets, K=10
#   N=2000 K=25 loadtest/bench/aws-costs.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
N="${N:-1000}"
K="${K:-10}"
OUT="$ROOT/loadtest/bench/out/aws-costs"
mkdir -p "$OUT"
cargo build --release -p sumu-node -p sumu-loadtest >&2
infra/local/emulator install >&2
PORT=$(infra/local/emulator free-port)
EP=$(infra/local/emulator start --port "$PORT")
NODE_PID=""
cleanup() {
  [ -n "$NODE_PID" ] && kill "$NODE_PID" 2>/dev/null || true
  infra/local/emulator stop --port "$PORT" >&2 || true
}
trap cleanup EXIT
export SUMU_AWS_ENDPOINT="$EP" SUMU_NAME_PREFIX=Bench AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test SUMU_LOG=warn
eval "$(target/release/sumu-node bootstrap | sed 's/^/export /')"
target/release/sumu-node --engine aws --listen 127.0.0.1:0 --hs256-secret bench --api-key bench \
  --rate-limit-per-sec 1000 --rate-limit-burst 1000 > "$OUT/node.out" 2> "$OUT/node.err" &
NODE_PID=$!
for _ in $(seq 100); do grep -q "listening on" "$OUT/node.out" 2>/dev/null && break; sleep 0.1; done
ADDR=$(awk '/listening on/ {print $4; exit}' "$OUT/node.out")
URL="http://$ADDR"

# Sum of AWS calls so far, per operation, as "op count" lines.
calls() { curl -s "$URL/metrics" | awk -F'[{}, ]' '/^sumu_aws_calls_total\{/ {split($2,o,"\""); split($3,v,"\""); n[v[2]"."o[2]]+=$NF} END {for (k in n) print k, n[k]}' | sort; }
total() { calls | awk '{s+=$2} END {print s+0}'; }
per() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN {printf "%.2f", (b-a)/n}'; }
diffops() { join -a2 -e0 -o 2.1,1.2,2.2 <(echo "$1") <(echo "$2") | awk -v n="$3" '$3>$2 {printf "%s=%.2f ", $1, ($3-$2)/n}'; }

LT=target/release/sumu-loadtest
C0=$(calls); T0=$(total)
$LT connect --url "$URL" -n "$N" --ramp 2000 --hs256-secret bench --hold 2s --no-progress --json "$OUT/connect.json" > "$OUT/connect.txt"
C1=$(calls); T1=$(total)
PUBS=$((N * 2))
$LT publish --url "$URL" -n 100 --hs256-secret bench --rate 20 --duration 5s --no-progress --json "$OUT/publish.json" > "$OUT/publish.txt" || true
C2=$(calls); T2=$(total)
REQS=20
$LT fanout --url "$URL" -n "$((K * 4))" --users "$((K * 4))" --hs256-secret bench --mode multicast -k "$K" --count "$REQS" --rate 5 \
  --via sqs --queue-url "$SUMU_NOTIFICATIONS_QUEUE_URL" --aws-endpoint "$EP" --aws-region us-east-1 --no-progress --json "$OUT/fanout.json" > "$OUT/fanout.txt" || true
C3=$(calls); T3=$(total)

field() { awk -v k="$1" '$1 == k {print $2; exit}' "$2"; }
ACKS=$(field acked "$OUT/publish.txt")
{
  echo "# aws engine through ministack ($(date -u +%FT%TZ), N=$N, K=$K)"
  echo
  echo "Per-operation AWS calls divided by the count of what the step did. Background work"
  echo "(long polls, heartbeats, the leader's stream reads, presence publishes) runs during"
  echo "every step and is included."
  echo
  echo "| step | figure | AWS calls per unit, by operation |"
  echo "|---|---:|---|"
  echo "| $N connects (held 2 s, then closed) | $(field connects_per_s "$OUT/connect.txt") connects/s | $(per "$T0" "$T1" "$N") per connect: $(diffops "$C0" "$C1" "$N") |"
  echo "| publish, 100 sockets x 20/s for 5 s | ${ACKS:-0} acks, $(field acks_per_s "$OUT/publish.txt") acks/s | $(per "$T1" "$T2" "${ACKS:-1}") per ack: $(diffops "$C1" "$C2" "${ACKS:-1}") |"
  echo "| $REQS multicasts of K=$K users via SQS | $(field deliveries "$OUT/fanout.txt") deliveries | $(per "$T2" "$T3" "$REQS") per request: $(diffops "$C2" "$C3" "$REQS") |"
} | tee "$OUT/REPORT.md"
