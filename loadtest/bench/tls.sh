#!/usr/bin/env bash
# TLS benchmark: what wss costs a server, measured side by side in one run on this machine.
#   sumu      target/release/sumu-node with --tls-listen (only when `sumu-node --help` lists
#             --tls-listen; until then the sumu column is reported as not available)
#   ws-node   Node.js + ws behind Node's https server (peers/ws-node --tls-listen)
# Rows (each on a freshly started server, all traffic on loopback; HS256 tokens so that
# token checks cost next to nothing and the TLS handshake dominates):
#   idle-ws           BENCH_TLS_SOCKETS idle ws:// sockets: server RSS per socket (the baseline)
#   idle-wss-ecdsa    the same over wss:// with an ECDSA P-256 certificate: RSS per socket
#   idle-wss-rsa      the same with an RSA 2048 certificate
#   connect-ws        BENCH_TLS_HANDSHAKES connects as fast as the server takes them: connects/s
#   connect-wss-ecdsa the same over wss (each a full TLS handshake, no resumption): handshakes/s
#   connect-wss-rsa   the same with the RSA 2048 certificate
# Output: loadtest/bench/out/tls/PEER/ROW.{json,txt,err}, server logs, the test CA and
#         certificates (out/tls/pki), and loadtest/bench/out/tls/REPORT.md.
#
# Usage: loadtest/bench/tls.sh
# Environment (defaults in brackets):
#   BENCH_TLS_PEERS [sumu,ws-node]   BENCH_TLS_SOCKETS [5000]   BENCH_TLS_HANDSHAKES [3000]
#   BENCH_TLS_RAMP [2000] connects/s of the idle ramps   BENCH_TLS_INFLIGHT [64] connects in flight
#   BENCH_SKIP_BUILD [0] 1 = use the binaries already in target/release
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT="$HERE/out/tls"
PKI="$OUT/pki"
BIN="$ROOT/target/release"
PEERS=${BENCH_TLS_PEERS:-sumu,ws-node}
SOCKETS=${BENCH_TLS_SOCKETS:-5000}
HANDSHAKES=${BENCH_TLS_HANDSHAKES:-3000}
RAMP=${BENCH_TLS_RAMP:-2000}
INFLIGHT=${BENCH_TLS_INFLIGHT:-64}
API_KEY=bench
SECRET=bench-tls-secret

log() { printf '[tls-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

mkdir -p "$OUT" "$PKI"
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building sumu-node and sumu-loadtest (release)"
  (cd "$ROOT" && cargo build --release -p sumu-node -p sumu-loadtest)
fi
for b in sumu-node sumu-loadtest; do
  [ -x "$BIN/$b" ] || { log "missing $BIN/$b"; exit 1; }
done
SUMU_TLS=0
if "$BIN/sumu-node" --help 2>/dev/null | grep -q -- '--tls-listen'; then SUMU_TLS=1; fi
if [[ ",$PEERS," == *",ws-node,"* ]]; then
  log "installing the ws-node peer (npm ci)"
  (cd "$HERE/peers/ws-node" && npm ci --no-audit --no-fund --silent)
fi

# --- test PKI: one CA per key type, a leaf for 127.0.0.1 (full chain = leaf + CA) --------
make_pki() { # NAME openssl-genpkey-args...
  local name=$1; shift
  local d="$PKI/$name"
  [ -s "$d/fullchain.pem" ] && return 0
  mkdir -p "$d"
  openssl genpkey "$@" -out "$d/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$d/ca.key" -days 30 -subj "/CN=sumu bench $name CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
    -out "$d/ca.pem" 2>/dev/null
  openssl genpkey "$@" -out "$d/key.pem" 2>/dev/null
  openssl req -new -key "$d/key.pem" -subj "/CN=127.0.0.1" -out "$d/leaf.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$d/leaf.ext"
  openssl x509 -req -in "$d/leaf.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 30 -extfile "$d/leaf.ext" -out "$d/leaf.pem" 2>/dev/null
  cat "$d/leaf.pem" "$d/ca.pem" >"$d/fullchain.pem"
}
make_pki ecdsa -algorithm EC -pkeyopt ec_paramgen_curve:P-256
make_pki rsa -algorithm RSA -pkeyopt rsa_keygen_bits:2048

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PEER_PID=""
PLAIN_PORT=""
TLS_PORT=""
start_peer() { # PEER CERTNAME|- LOGFILE
  local peer=$1 pki=$2 logfile=$3
  PLAIN_PORT=$(free_port)
  TLS_PORT=$(free_port)
  local tls_args=()
  if [ "$pki" != - ]; then
    tls_args=(--tls-listen "127.0.0.1:$TLS_PORT" --tls-cert "$PKI/$pki/fullchain.pem" --tls-key "$PKI/$pki/key.pem")
  fi
  case "$peer" in
    sumu)
      "$BIN/sumu-node" --listen "127.0.0.1:$PLAIN_PORT" --hs256-secret "$SECRET" \
        --api-key "$API_KEY" --log warn "${tls_args[@]}" >"$logfile" 2>&1 &
      ;;
    ws-node)
      node "$HERE/peers/ws-node/server.js" --listen "127.0.0.1:$PLAIN_PORT" --api-key "$API_KEY" \
        "${tls_args[@]}" >"$logfile" 2>&1 &
      ;;
    *) log "unknown peer $peer"; return 1;;
  esac
  PEER_PID=$!
  for _ in $(seq 1 300); do
    if curl -sf -o /dev/null "http://127.0.0.1:$PLAIN_PORT/readyz" \
       && { [ "$pki" = - ] || (exec 3<>"/dev/tcp/127.0.0.1/$TLS_PORT") 2>/dev/null; }; then
      return 0
    fi
    if ! kill -0 "$PEER_PID" 2>/dev/null; then
      log "$peer exited at start; see $logfile"; PEER_PID=""; return 1
    fi
    sleep 0.1
  done
  log "$peer not ready in 30 s"; stop_peer; return 1
}

# shellcheck source=loadtest/bench/peer.sh
. "$HERE/peer.sh"
trap stop_peer EXIT

row() { # PEER ROW CERTNAME|- loadtest-args...
  local peer=$1 name=$2 pki=$3; shift 3
  local dir="$OUT/$peer"
  mkdir -p "$dir"
  rm -f "$dir/$name.json"
  if [ "$peer" = sumu ] && [ "$SUMU_TLS" != 1 ] && [ "$pki" != - ]; then
    log "$peer / $name: skipped (sumu-node has no --tls-listen yet)"
    return 0
  fi
  log "$peer / $name"
  start_peer "$peer" "$pki" "$dir/$name.server.log" || return 0
  local target=(--url "http://127.0.0.1:$PLAIN_PORT")
  if [ "$pki" != - ]; then
    target=(--url "https://127.0.0.1:$TLS_PORT" --ca-file "$PKI/$pki/ca.pem"
            --http-url "http://127.0.0.1:$PLAIN_PORT")
  fi
  local args=("$@")
  local i
  for i in "${!args[@]}"; do args[$i]=${args[$i]//@PID@/$PEER_PID}; done
  "$BIN/sumu-loadtest" "${args[@]}" "${target[@]}" --hs256-secret "$SECRET" \
    --json "$dir/$name.json" --no-progress >"$dir/$name.txt" 2>"$dir/$name.err" \
    || log "$peer / $name: sumu-loadtest exit $? (see $dir/$name.txt/.err)"
  stop_peer
  sleep 2 # let TIME_WAIT sockets go before the next server
}

IFS=',' read -r -a PEER_LIST <<<"$PEERS"
for peer in "${PEER_LIST[@]}"; do
  row "$peer" idle-ws - connect -n "$SOCKETS" --ramp "$RAMP" --hold 3s --server-pid @PID@
  row "$peer" idle-wss-ecdsa ecdsa connect -n "$SOCKETS" --ramp "$RAMP" --hold 3s --server-pid @PID@
  row "$peer" idle-wss-rsa rsa connect -n "$SOCKETS" --ramp "$RAMP" --hold 3s --server-pid @PID@
  row "$peer" connect-ws - connect -n "$HANDSHAKES" --ramp 1000000 --max-inflight "$INFLIGHT" --hold 0s
  row "$peer" connect-wss-ecdsa ecdsa connect -n "$HANDSHAKES" --ramp 1000000 --max-inflight "$INFLIGHT" --hold 0s
  row "$peer" connect-wss-rsa rsa connect -n "$HANDSHAKES" --ramp 1000000 --max-inflight "$INFLIGHT" --hold 0s
done

# --- report ------------------------------------------------------------------------------
python3 - "$OUT" "$PEERS" "$SUMU_TLS" "$SOCKETS" "$HANDSHAKES" "$INFLIGHT" <<'PY'
import json, os, platform, subprocess, sys, time
out, peers, sumu_tls, sockets, handshakes, inflight = sys.argv[1:7]
peers = peers.split(",")

def load(peer, row):
    try:
        with open(os.path.join(out, peer, row + ".json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def rss_kib(peer, row):
    r = load(peer, row)
    if not r or r.get("errors") or not r.get("server"):
        return None
    return r["server"]["rss_per_socket_bytes"] / 1024

def rate(peer, row):
    r = load(peer, row)
    if not r or r.get("errors"):
        return None
    return r.get("rates", {}).get("connects_per_s")

def busy(peer, row):
    r = load(peer, row)
    try:
        return r["machine"]["cpu"]["machine_busy_pct_mean"]
    except (TypeError, KeyError):
        return None

def cell(v, fmt):
    return "n/a" if v is None else fmt.format(v)

def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b

cpu = ""
try:
    cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
except (OSError, StopIteration):
    pass
node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip() or "n/a"
lines = [
    "# TLS benchmark: sumu and the Node ws peer, side by side",
    "",
    f"Run {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())} on {os.cpu_count()} cores ({cpu}), "
    f"Linux {platform.release()}, node {node}. Command: `loadtest/bench/tls.sh` "
    f"(BENCH_TLS_SOCKETS={sockets} BENCH_TLS_HANDSHAKES={handshakes} BENCH_TLS_INFLIGHT={inflight}). "
    "Server and load tester share the machine over loopback. Certificates: a test CA and a leaf "
    "for 127.0.0.1 (full chain), ECDSA P-256 or RSA 2048. Handshakes are full (the load tester "
    "disables session resumption) and each includes the WebSocket upgrade.",
    "",
]
if sumu_tls != "1":
    lines += ["sumu: wss rows not measured yet, `sumu-node --help` does not list `--tls-listen` "
              "(the TLS module waits to be wired in; the rows fill in on the next run).", ""]
lines += ["| row | " + " | ".join(peers) + " |", "|---|" + "---|" * len(peers)]
rows = [
    ("RSS per idle ws socket (KiB)", lambda p: rss_kib(p, "idle-ws"), "{:.1f}"),
    ("RSS per idle wss socket, ECDSA P-256 (KiB)", lambda p: rss_kib(p, "idle-wss-ecdsa"), "{:.1f}"),
    ("RSS per idle wss socket, RSA 2048 (KiB)", lambda p: rss_kib(p, "idle-wss-rsa"), "{:.1f}"),
    ("wss / ws RSS per socket (ECDSA)", lambda p: ratio(rss_kib(p, "idle-wss-ecdsa"), rss_kib(p, "idle-ws")), "{:.2f}x"),
    ("ws connects/s", lambda p: rate(p, "connect-ws"), "{:.0f}"),
    ("wss handshakes/s, ECDSA P-256", lambda p: rate(p, "connect-wss-ecdsa"), "{:.0f}"),
    ("wss handshakes/s, RSA 2048", lambda p: rate(p, "connect-wss-rsa"), "{:.0f}"),
    ("machine CPU busy during wss ECDSA handshakes (%)", lambda p: busy(p, "connect-wss-ecdsa"), "{:.0f}"),
]
for label, f, fmt in rows:
    lines.append(f"| {label} | " + " | ".join(cell(f(p), fmt) for p in peers) + " |")
lines += ["", "Target (issue 11): sumu's RSS per wss socket below ws-node's, and at most 2x "
          "sumu's own ws figure."]
lines += ["", "Handshakes/s are only comparable between columns when the machine was otherwise "
          "idle: a busy figure near 100% with the load tester using a fraction of a core means "
          "other processes took the CPU (see each row's .txt for the machine notes)."]
if "sumu" in peers and "ws-node" in peers:
    lines += ["", "sumu / ws-node:", ""]
    for label, row, kind in [("RSS per idle wss socket (ECDSA)", "idle-wss-ecdsa", "rss"),
                             ("wss handshakes/s (ECDSA)", "connect-wss-ecdsa", "rate"),
                             ("wss handshakes/s (RSA)", "connect-wss-rsa", "rate")]:
        f = rss_kib if kind == "rss" else rate
        lines.append(f"- {label}: {cell(ratio(f('sumu', row), f('ws-node', row)), '{:.2f}x')}")
failed = []
for p in peers:
    for row in ["idle-ws", "idle-wss-ecdsa", "idle-wss-rsa", "connect-ws", "connect-wss-ecdsa", "connect-wss-rsa"]:
        r = load(p, row)
        if r and r.get("errors"):
            failed.append(f"- {p} / {row}: errors {json.dumps(r['errors'])}")
if failed:
    lines += ["", "Rows with errors (their figures are left out):", ""] + failed
with open(os.path.join(out, "REPORT.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
PY
log "wrote $OUT/REPORT.md"
cat "$OUT/REPORT.md"
