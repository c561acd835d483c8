# Sourced by run.sh and inspect.sh here: the peers of ../shared/peers/bench/peers.sh plus `mooring`.
#
# The shared peers.sh hard-codes its peers (port_of, start_peer) and may not be edited from this repository,
# so this file sources it (for AXUM_BIN, ACTIX_BIN, REDIS_URL, stop_peers, prime_cookie, rcli, and HERE, the
# shared bench folder with session.lua and summarize.py) and then redefines the per-peer functions with one
# more peer:
#
# | peer | app | port | cookie |
# |---|---|---|---|
# | mooring | crates/mooring-bench (mooring + mooring-redis, one multiplexed connection) | 3005 | `id` |
#
# EXPRESS_DIR lets express run from a copy with its node_modules outside ../shared (scripts/bench.sh makes one).
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PEERS_DIR="${PEERS_DIR:-$(cd "$REPO/../shared/peers" && pwd)}"
PEERS="${PEERS:-axum axum-p1 actix express mooring}"
# shellcheck source=/dev/null
source "$PEERS_DIR/bench/peers.sh"
MOORING_BIN="${MOORING_BIN:-$REPO/target/release/mooring-bench}"
EXPRESS_DIR="${EXPRESS_DIR:-$ROOT/express-session}"
export SESSION_DURABILITY="${SESSION_DURABILITY:-async}"  # the bench Redis has no replicas to WAIT for
port_of() { case $1 in axum) echo 3001;; actix) echo 3002;; express) echo 3003;; axum-p1) echo 3004;; mooring) echo 3005;; esac; }
cookie_name() { case $1 in express) echo connect.sid;; *) echo id;; esac; }
start_peer() { # peer -> PID[peer]
  local p=$1 port; port=$(port_of "$1")
  if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
    echo "port $port (peer $p) is already taken by another process" >&2; return 1
  fi
  case $p in
    axum) PORT=$port "$AXUM_BIN" >"$LOGDIR/$p.log" 2>&1 & ;;
    axum-p1) REDIS_POOL=1 PORT=$port "$AXUM_BIN" >"$LOGDIR/$p.log" 2>&1 & ;;
    actix) PORT=$port "$ACTIX_BIN" >"$LOGDIR/$p.log" 2>&1 & ;;
    express) PORT=$port node "$EXPRESS_DIR/server.js" >"$LOGDIR/$p.log" 2>&1 & ;;
    mooring) PORT=$port "$MOORING_BIN" >"$LOGDIR/$p.log" 2>&1 & ;;
    *) echo "unknown peer $p" >&2; return 1 ;;
  esac
  PID[$p]=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/plain" >/dev/null && return 0; sleep 0.2; done
  echo "peer $p did not come up; its log:" >&2; tail -20 "$LOGDIR/$p.log" >&2; return 1
}
