#!/usr/bin/env bash
# Per peer (mooring included): the Redis commands each request sends, the key layout, TTL and bytes of one
# session after 5 increments. Same questions as ../shared/peers/bench/inspect.sh, with two differences: every
# key of the session is measured (type, TTL, MEMORY USAGE; a mooring session is a hash, not a string), and each
# request gets its own MONITOR capture, so that the commands a client sends are told apart from the commands
# its Lua scripts run (INFO commandstats counts both), and its own count of round trips: the reads Redis
# processed during the request (INFO stats total_reads_processed, less the second INFO's own read and the
# end-of-file read of the first INFO's connection; a pipeline of several commands arrives in one read).
# Output: OUT/inspect.txt (readable) and OUT/inspect.tsv (peer, request, sent, commandstats, trips) +
# OUT/bytes.tsv (peer, keys, bytes), which table.py reads.
set -euo pipefail
source "$(dirname "$0")/peers.sh"
: "${OUT:?set OUT to the results folder}"; LOGDIR="$OUT/logs"; mkdir -p "$LOGDIR"
trap stop_peers EXIT
for p in $PEERS; do start_peer "$p"; done
stats() { rcli info commandstats | tr -d '\r' | sed -n 's/^cmdstat_\([a-z|]*\):calls=\([0-9]*\).*/\1=\2/p' |
          { grep -v -E '^(info|monitor|config\|[a-z]*)=' || true; } | sort | tr '\n' ' ' | sed 's/ $//'; }
reads() { rcli info stats | tr -d '\r' | sed -n 's/^total_reads_processed:\([0-9]*\)$/\1/p'; }
# measure peer label path [cookie]: one GET under MONITOR; prints the response's session cookie, if any.
measure() {
  local p=$1 label=$2 path=$3 cookie=${4:-} mon sent all body set r0 r1
  rcli config resetstat >/dev/null
  redis-cli -p "$REDIS_PORT" monitor >"$LOGDIR/monitor-$p-$label.txt" & mon=$!; sleep 0.3
  r0=$(reads)
  body=$(curl -sf -D "$LOGDIR/headers.txt" ${cookie:+-H "Cookie: $cookie"} "http://127.0.0.1:$(port_of "$p")$path")
  r1=$(reads)
  sleep 0.3; kill "$mon"; wait "$mon" 2>/dev/null || true
  all=$(stats)
  # Client commands show the client's address ("[0 127.0.0.1:53124]"), script commands "[0 lua]". The two
  # INFOs of reads() are not the app's.
  sent=$(grep -E '^[0-9.]+ \[[0-9]+ [0-9.]+:[0-9]+\]' "$LOGDIR/monitor-$p-$label.txt" | grep -v -c '"info" "stats"' || true)
  printf '%s\t%s\t%s\t%s\t%s\n' "$p" "$label" "$sent" "$all" "$((r1 - r0 - 2))" >>"$OUT/inspect.tsv"
  echo "GET $path${cookie:+ (cookie)} -> $body: $((r1 - r0 - 2)) round trip(s), $sent command(s) sent by the client;" \
       "commandstats: ${all:-(none)}" >&2
  { grep -v '^OK$' "$LOGDIR/monitor-$p-$label.txt" || true; } | sed 's/^/      /' | cut -c1-200 >&2
  set=$(tr -d '\r' <"$LOGDIR/headers.txt" | sed -n "s/^[Ss]et-[Cc]ookie: \($(cookie_name "$p")=[^;]*\).*/\1/p")
  echo "$set"
}
printf 'peer\trequest\tsent\tcommandstats\ttrips\n' >"$OUT/inspect.tsv"
printf 'peer\tkeys\tbytes\n' >"$OUT/bytes.tsv"
{
for p in $PEERS; do
  echo "=== $p"
  rcli flushall >/dev/null
  c=$(measure "$p" incr-new /incr)
  for _ in 1 2 3; do curl -sf -H "Cookie: $c" "http://127.0.0.1:$(port_of "$p")/incr" >/dev/null; done
  measure "$p" incr /incr "$c" >/dev/null
  measure "$p" read /read "$c" >/dev/null
  measure "$p" plain /plain "$c" >/dev/null
  echo "cookie: $c (${#c} bytes incl. name)"
  total=0; n=0
  for key in $(rcli --scan); do
    type=$(rcli type "$key"); bytes=$(rcli memory usage "$key")
    total=$((total + bytes)); n=$((n + 1))
    case $type in
      hash) size="HLEN $(rcli hlen "$key")"; value=$(rcli --no-raw hgetall "$key" | tr '\n' ' ') ;;
      string) size="STRLEN $(rcli strlen "$key")"; value=$(rcli --no-raw get "$key") ;;
      *) size="-"; value="-" ;;
    esac
    echo "key: $key (${#key} bytes); type: $type; encoding: $(rcli object encoding "$key");" \
         "TTL: $(rcli ttl "$key") s; $size; MEMORY USAGE: $bytes"
    echo "  value: ${value:0:200}"
  done
  echo "bytes per session (MEMORY USAGE of every key): $total in $n key(s)"
  printf '%s\t%s\t%s\n' "$p" "$n" "$total" >>"$OUT/bytes.tsv"
done
} 2>&1 | tee "$OUT/inspect.txt"
rcli flushall >/dev/null
