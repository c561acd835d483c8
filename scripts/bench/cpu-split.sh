#!/usr/bin/env bash
# Where the CPU goes, per request: CPU microseconds spent by the app and by redis-server for each route,
# from /proc/<pid>/stat before and after one wrk run (wrk's own CPU is not counted). Less sensitive to other
# tenants than rps, since it counts CPU time, not wall time. The last column is INFO commandstats: the part
# of Redis's time spent executing each command, the rest of redis_us_per_req being network I/O and the
# event loop. Needs a redis-server on REDIS_PORT (bench.sh
# starts one; or run it by hand as below). Output: OUT/cpu-split.tsv and a table on stdout.
#   OUT=target/bench/x REDIS_PORT=6390 PEERS="mooring actix" scripts/bench/cpu-split.sh
set -euo pipefail
source "$(dirname "$0")/peers.sh"
DUR="${DUR:-10s}" CONNS="${CONNS:-32}"
: "${OUT:?set OUT to the results folder}"; LOGDIR="$OUT/logs"; mkdir -p "$LOGDIR"
trap stop_peers EXIT
for p in $PEERS; do start_peer "$p"; done
REDIS_PID=$(rcli info server | tr -d '\r' | sed -n 's/^process_id://p')
HZ=$(getconf CLK_TCK)
# CPU jiffies of a process and all its threads (utime + stime).
jif() { awk '{print $14+$15}' "/proc/$1/stat"; }
# Per command (INFO commandstats): calls per request and microseconds per call. A script's time (evalsha)
# includes the commands it runs, which are also listed on their own.
cmd_stats() { rcli info commandstats | tr -d '\r' | grep -v -E '^cmdstat_(info|config)' |
  sed -n 's/^cmdstat_\([a-z|]*\):calls=\([0-9]*\),usec=[0-9]*,usec_per_call=\([0-9.]*\).*/\1 \2 \3/p' |
  awk -v n="$1" '{printf "%s%s %.2f/req %.2fus", sep, $1, $2 / n, $3; sep="; "}'; }
printf 'peer\troute\trps\tapp_us_per_req\tredis_us_per_req\tcommandstats\n' >"$OUT/cpu-split.tsv"
for p in $PEERS; do
  c=$(prime_cookie "$p")
  for spec in plain:/plain: read:/read:c incr:/incr:c incr-new:/incr:; do
    IFS=: read -r route path with_cookie <<<"$spec"
    cookie=""; [ -n "$with_cookie" ] && cookie=$c
    rcli config resetstat >/dev/null
    a0=$(jif "${PID[$p]}"); r0=$(jif "$REDIS_PID")
    line=$(COOKIE="$cookie" wrk -t1 -c"$CONNS" -d"$DUR" -s "$HERE/session.lua" \
           "http://127.0.0.1:$(port_of "$p")$path" | grep '^RESULT')
    a1=$(jif "${PID[$p]}"); r1=$(jif "$REDIS_PID")
    rps=$(sed 's/.*rps=\([0-9.]*\).*/\1/' <<<"$line"); n=$(sed 's/.*requests=\([0-9]*\).*/\1/' <<<"$line")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "$route" "$rps" \
      "$(( (a1 - a0) * 1000000 / HZ / n ))" "$(( (r1 - r0) * 1000000 / HZ / n ))" \
      "$(cmd_stats "$n")" >>"$OUT/cpu-split.tsv"
  done
  rcli flushall >/dev/null
done
column -t -s "$(printf '\t')" "$OUT/cpu-split.tsv"
