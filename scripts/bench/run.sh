#!/usr/bin/env bash
# Throughput and latency of the peers and mooring, interleaved: for each repetition, for each peer, for each
# route, one wrk run. The method is ../shared/peers/bench/run.sh's, line for line (warm-up, wrk -t1 -c32 -d10s
# with the shared session.lua, FLUSHALL after each peer, the CPU-interference check with up to 3 tries); only
# the peer list comes from ./peers.sh, which adds `mooring`. Output: OUT/raw.tsv, OUT/attempts.tsv, and
# OUT/summary.md from the shared summarize.py.
# Needs: redis-server on 127.0.0.1:$REDIS_PORT, wrk, curl, python3 (node for express). scripts/bench.sh runs it.
set -euo pipefail
source "$(dirname "$0")/peers.sh"
REPS="${REPS:-3}" DUR="${DUR:-10s}" CONNS="${CONNS:-32}" THREADS="${THREADS:-1}"
: "${OUT:?set OUT to the results folder}"; LOGDIR="$OUT/logs"; mkdir -p "$LOGDIR"
trap stop_peers EXIT
for p in $PEERS; do start_peer "$p"; done
rcli ping >/dev/null
REDIS_PID=$(rcli info server | tr -d '\r' | sed -n 's/^process_id://p')
MAX_OTHERS="${MAX_OTHERS:-15}"  # % of one core used by processes not ours -> retry
cols="rep\tpeer\troute\trps\tp50_us\tp99_us\trequests\tnon2xx\tsockerr\tothers_pct\tsteal_pct\ttry\tstart"
echo -e "$cols" >"$OUT/raw.tsv"; echo -e "$cols" >"$OUT/attempts.tsv"
# CPU accounting (jiffies) to spot interference from other tenants of the box.
cpu() { awk '/^cpu /{print $2+$3+$4+$7+$8, $9}' /proc/stat; }  # user+nice+system+irq+softirq, steal
ptime() { local s=0 p; for p in "$@"; do s=$((s + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $s; }
snap() { # pids... -> S_BUSY S_STEAL S_MINE (jiffies) S_T (ns); must run in this shell
  read -r S_BUSY S_STEAL < <(cpu)
  times >"$OUT/.times"  # 2nd line: user/sys of reaped children (wrk and helpers)
  S_MINE=$(( $(ptime "$@") + $(awk 'NR==2{split($1,a,/[ms]/); split($2,b,/[ms]/);
             printf "%d", (a[1]*60+a[2]+b[1]*60+b[2])*100}' "$OUT/.times") ))
  S_T=$(date +%s%N)
}
bench() { # rep peer route path cookie
  local line v try b0 st0 m0 t0 others steal start
  for try in 1 2 3; do
    snap "${PID[$2]}" "$REDIS_PID"; b0=$S_BUSY st0=$S_STEAL m0=$S_MINE t0=$S_T
    start=$(date +%T)
    line=$(COOKIE="$5" wrk -t"$THREADS" -c"$CONNS" -d"$DUR" -s "$HERE/session.lua" \
           "http://127.0.0.1:$(port_of "$2")$4" | tee -a "$LOGDIR/wrk.log" | grep '^RESULT')
    snap "${PID[$2]}" "$REDIS_PID"
    others=$(( ((S_BUSY - b0) - (S_MINE - m0)) * 1000000000 / (S_T - t0) ))
    steal=$(( (S_STEAL - st0) * 1000000000 / (S_T - t0) ))
    v=$(echo "${line#RESULT }" | sed 's/[a-z0-9_]*=//g')
    v="$1\t$2\t$3\t${v// /$'\t'}\t$others\t$steal\t$try\t$start"
    echo -e "$v" >>"$OUT/attempts.tsv"
    echo "rep=$1 $2 $3 try=$try others=${others}% steal=${steal}% $line"
    [ "$others" -le "$MAX_OTHERS" ] && break
    sleep 5
  done
  echo -e "$v" >>"$OUT/raw.tsv"
}
for p in $PEERS; do  # warm-up (not recorded)
  wrk -t1 -c"$CONNS" -d3s "http://127.0.0.1:$(port_of "$p")/plain" >/dev/null
  wrk -t1 -c"$CONNS" -d3s -s "$HERE/session.lua" "http://127.0.0.1:$(port_of "$p")/incr" >/dev/null
done
rcli flushall >/dev/null
for rep in $(seq "$REPS"); do
  for p in $PEERS; do
    c=$(prime_cookie "$p"); [ -n "$c" ] || { echo "no cookie from $p" >&2; exit 1; }
    bench "$rep" "$p" plain /plain ""
    bench "$rep" "$p" read /read "$c"
    bench "$rep" "$p" incr /incr "$c"
    bench "$rep" "$p" incr-new /incr ""
    echo "$p keys after rep $rep: $(rcli dbsize)" >>"$LOGDIR/dbsize.log"
    rcli flushall >/dev/null
  done
done
python3 "$HERE/summarize.py" "$OUT/raw.tsv" | tee "$OUT/summary.md"
