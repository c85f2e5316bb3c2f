# Sourced by the benchmark scripts (run.sh, tls.sh): stopping the peer server
# they started, whose pid is in PEER_PID. SIGTERM, up to 10 s, then SIGKILL;
# PEER_PID is empty afterwards, so calling it twice is harmless.
stop_peer() {
  if [ -n "$PEER_PID" ]; then
    kill "$PEER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$PEER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$PEER_PID" 2>/dev/null || true
    wait "$PEER_PID" 2>/dev/null || true
    PEER_PID=""
  fi
}
