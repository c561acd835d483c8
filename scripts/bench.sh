#!/usr/bin/env bash
# The benchmark of issue 3, run by hand (not in CI: ~15 minutes on a quiet machine, more when other tenants
# force retries; and noisy).
#
# Builds the bench app (crates/mooring-bench) and the peers of ../shared/peers (into target/peers, outside
# their tree; express is copied there and `npm ci`-installed, or skipped when npm is missing), starts a
# private redis-server on a free port, and runs ONE interleaved comparison of every peer plus `mooring`:
#   1. ../shared/peers/bench/redis-ceiling.sh  the store's own ceiling (redis-benchmark GET/SET, c32)
#   2. scripts/bench/run.sh                    3 reps x 5 peers x 4 routes x wrk -t1 -c32 -d10s, interleaved
#   3. scripts/bench/inspect.sh                commands per request, key layout, bytes per session
#   4. scripts/bench/table.py                  the table of docs/performance.md, with the targets
#   5. with PROFILE=1: scripts/bench/cpu-split.sh (CPU per request of the app and of Redis) and
#      scripts/bench/lua-cost.py (Redis's execution time of each command and script)
# Results go to OUT (default target/bench/<date>); the table is OUT/table.md.
#
# Knobs (passed on): PEERS, REPS, DUR, CONNS, THREADS, MAX_OTHERS, REDIS_PORT (default: first free from
# 6390), SESSION_DURABILITY (default async), SKIP_BUILD=1, QUIET_WAIT (s, default 600) and QUIET_PCT (default 20)
# for the wait for a quiet machine before the run.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PEERS_DIR="${PEERS_DIR:-$(cd "$REPO/../shared/peers" && pwd)}"
export OUT="${OUT:-$REPO/target/bench/$(date +%Y%m%d-%H%M%S)}"
PEER_TARGET="${PEER_TARGET:-$REPO/target/peers}"
mkdir -p "$OUT/logs" "$PEER_TARGET"
OUT="$(cd "$OUT" && pwd)"  # absolute: redis-server resolves its log file after changing to --dir
say() { printf '\n== %s\n' "$*"; }

say "tools"
if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y wrk >/dev/null || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
  else echo "wrk is missing: apt-get install wrk" >&2; exit 1; fi
fi
for tool in redis-server redis-cli redis-benchmark curl python3 cargo; do
  command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 1; }
done
PEERS="${PEERS:-axum axum-p1 actix express mooring}"
if [[ " $PEERS " == *" express "* ]] && ! command -v npm >/dev/null; then
  echo "npm is not installed: the express peer is skipped" | tee "$OUT/skipped.txt"
  PEERS="$(echo " $PEERS " | sed 's/ express / /; s/^ *//; s/ *$//')"
fi
export PEERS

if [ -z "${SKIP_BUILD:-}" ]; then
  say "build (release)"
  (cd "$REPO" && cargo build --release --locked -p mooring-bench)
  for crate in axum-tower-sessions actix-session; do
    CARGO_TARGET_DIR="$PEER_TARGET" cargo build --release --locked \
      --manifest-path "$PEERS_DIR/$crate/Cargo.toml"
  done
  if [[ " $PEERS " == *" express "* ]]; then
    mkdir -p "$PEER_TARGET/express-session"
    cp "$PEERS_DIR"/express-session/{package.json,package-lock.json,server.js} "$PEER_TARGET/express-session/"
    chmod u+w "$PEER_TARGET"/express-session/*
    (cd "$PEER_TARGET/express-session" && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
export CARGO_TARGET_DIR="$PEER_TARGET"  # where the shared peers.sh looks for the peer binaries
export EXPRESS_DIR="$PEER_TARGET/express-session"
export MOORING_BIN="$REPO/target/release/mooring-bench"

say "waiting for a quiet machine"
# Other tenants (builds, test suites) share the 2 cores: wait up to QUIET_WAIT s for a 10 s window in which
# less than QUIET_PCT % of one core is busy. run.sh still checks every wrk run and retries a disturbed one.
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
waited=0
while :; do
  read -r b0 t0 < <(busy); sleep 10; read -r b1 t1 < <(busy)
  pct=$(( (b1 - b0) * 100 * $(nproc) / (t1 - t0) ))
  echo "busy: ${pct}% of one core over 10 s"
  [ "$pct" -lt "${QUIET_PCT:-20}" ] && break
  waited=$((waited + 10))
  if [ "$waited" -ge "${QUIET_WAIT:-600}" ]; then echo "still busy after ${waited}s; running anyway" >&2; break; fi
done

say "private redis-server"
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [ -z "${REDIS_PORT:-}" ]; then
  REDIS_PORT=6390
  while ! port_free "$REDIS_PORT"; do REDIS_PORT=$((REDIS_PORT + 1)); done
fi
port_free "$REDIS_PORT" || { echo "port $REDIS_PORT is taken" >&2; exit 1; }
[ "$REDIS_PORT" != 6379 ] || { echo "6379 is not ours to use" >&2; exit 1; }
export REDIS_PORT
# The peers' settings: no persistence, no replicas (so mooring runs with SESSION_DURABILITY=async).
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --dir "$OUT" --pidfile "$OUT/redis.pid" --logfile "$OUT/logs/redis.log"
trap 'kill "$(cat "$OUT/redis.pid" 2>/dev/null)" 2>/dev/null || true' EXIT
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
echo "redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') on 127.0.0.1:$REDIS_PORT"

{
  echo "date: $(date -u +'%Y-%m-%d %H:%M UTC')"
  echo "machine: $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(free -g | awk '/^Mem:/{print $2}') GiB RAM, $(uname -sr)"
  echo "tools: $(rustc --version), wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'), node $(node --version 2>/dev/null || echo -)"
  echo "load before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "commit: $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet -- crates/mooring crates/mooring-redis crates/mooring-bench || echo ' (+ local changes)')"
  echo "peers: $PEERS; SESSION_DURABILITY=${SESSION_DURABILITY:-async}"
} | tee "$OUT/machine.txt"

say "Redis ceiling"
bash "$PEERS_DIR/bench/redis-ceiling.sh" | tee "$OUT/redis-ceiling.txt"
say "interleaved run"
bash "$REPO/scripts/bench/run.sh"
say "inspection"
bash "$REPO/scripts/bench/inspect.sh" >/dev/null
say "table ($OUT/table.md)"
python3 "$REPO/scripts/bench/table.py" "$OUT" | tee "$OUT/table.md"
if [ -n "${PROFILE:-}" ]; then  # ~2.5 more minutes: where the time goes (docs/performance.md)
  say "CPU per request (app, redis-server)"
  PEERS="mooring actix axum-p1" bash "$REPO/scripts/bench/cpu-split.sh" | tee "$OUT/cpu-split.txt"
  say "cost of each Redis command and script, in Redis"
  python3 "$REPO/scripts/bench/lua-cost.py" | tee "$OUT/lua-cost.md"
fi
