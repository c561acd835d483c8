#!/usr/bin/env bash
# Runs the bundled Redis pods' own scripts, taken from a rendered chart, as three "pods" on this machine and
# checks the safe-boot and safe-shutdown rules with real redis-server processes:
#
#   1. a pod other than ordinal 0 that finds no Sentinel refuses to start (exits non-zero, never self-elects);
#   2. ordinal 0 bootstraps as master when no peer Sentinel knows one; 1 and 2 join it as replicas;
#   3. the master's preStop pauses writes, has a peer Sentinel fail over, and returns once another pod is master;
#      an acknowledged write survives it;
#   4. the old master restarted (with its persisted Sentinel state) joins the new master as a replica;
#   5. the readiness and liveness probe script agrees on every pod.
#
# Each pod gets its own network namespace (as in Kubernetes, all use ports 6379 and 26379), joined by a bridge in
# another namespace; the chart's stable DNS names are in each namespace's /etc/hosts (ip netns exec mounts
# /etc/netns/NAME/hosts). The scripts run unchanged except for their absolute paths (/etc/redis, /data,
# /run/redis), which point into a per-pod directory. Needs root, iproute2, redis-server and redis-cli.
#
#   deploy/checks/redis_pods_test.sh RENDERED_MANIFEST WORK_DIR PYTHON_WITH_PYYAML
set -euo pipefail

manifest=$1
mkdir -p "$2"
work=$(cd "$2" && pwd) # absolute: Redis resolves the config's paths after it changes into its data dir
py=$3
tag="mrt$$"
password="pod-test-password"
pids=()

cleanup() {
    local pid i
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    for i in 0 1 2; do
        ip netns del "$tag-p$i" 2>/dev/null || true
        rm -rf "/etc/netns/$tag-p$i"
    done
    ip netns del "$tag-br" 2>/dev/null || true
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    for f in "$work"/p*/*.log; do echo "--- $f" >&2; tail -n 20 "$f" >&2; done
    exit 1
}

# The Redis ConfigMap of the rendered chart, one file per key.
mkdir -p "$work/config"
"$py" - "$manifest" "$work/config" <<'PY'
import os, sys, yaml
manifest, out = sys.argv[1:]
maps = [d for d in yaml.safe_load_all(open(manifest)) if d and d["kind"] == "ConfigMap"
        and d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "redis"]
assert len(maps) == 1, "one Redis ConfigMap expected"
for key, value in maps[0]["data"].items():
    open(os.path.join(out, key), "w").write(value)
PY
eval "$(grep -E '^(STS|HEADLESS|DOMAIN|MASTER_SET)=' "$work/config/common.sh")"
host() { echo "$STS-$1.$HEADLESS.$DOMAIN"; }

# Network: a bridge namespace and one namespace per pod.
ip netns add "$tag-br"
ip -n "$tag-br" link add br0 type bridge
ip -n "$tag-br" link set br0 up
for i in 0 1 2; do
    ip netns add "$tag-p$i"
    ip link add "v$i" netns "$tag-br" type veth peer name eth0 netns "$tag-p$i"
    ip -n "$tag-br" link set "v$i" master br0 up
    ip -n "$tag-p$i" addr add "10.231.7.1$i/24" dev eth0
    ip -n "$tag-p$i" link set eth0 up
    ip -n "$tag-p$i" link set lo up
    mkdir -p "/etc/netns/$tag-p$i"
    {
        echo "127.0.0.1 localhost"
        for j in 0 1 2; do echo "10.231.7.1$j $(host "$j")"; done
    } >"/etc/netns/$tag-p$i/hosts"
done

# Per-pod directories and path-adjusted copies of the scripts.
for i in 0 1 2; do
    mkdir -p "$work/p$i/etc" "$work/p$i/data" "$work/p$i/run"
    for f in "$work"/config/*; do
        sed -e "s#/etc/redis#$work/p$i/etc#g" -e "s#/run/redis#$work/p$i/run#g" -e "s#/data#$work/p$i/data#g" \
            "$f" >"$work/p$i/etc/$(basename "$f")"
    done
done

in_pod() {
    local i=$1
    shift
    ip netns exec "$tag-p$i" env -i PATH="$PATH" POD_NAME="$STS-$i" NAMESPACE=shop REDIS_PASSWORD="$password" "$@"
}
cli() {
    local i=$1
    shift
    in_pod "$i" env REDISCLI_AUTH="$password" timeout 5 redis-cli "$@" 2>/dev/null
}
start() { # start POD redis|sentinel; $pid_KIND_POD is the server process itself (every step execs the next)
    (exec ip netns exec "$tag-p$1" env -i PATH="$PATH" POD_NAME="$STS-$1" NAMESPACE=shop REDIS_PASSWORD="$password" \
        sh "$work/p$1/etc/start-$2.sh") >>"$work/p$1/$2.log" 2>&1 &
    pids+=($!)
    eval "pid_$2_$1=$!"
}
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 5))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    fail "$what (after ${seconds}s)"
}
role() { cli "$1" -p 6379 --raw ROLE | head -n 1; }
is_role() { [ "$(role "$1")" = "$2" ]; }
linked() { cli "$1" -p 6379 INFO replication | grep -q '^master_link_status:up'; }
sentinel_up() { cli "$1" -p 26379 PING | grep -q PONG; }
master_seen_by() { cli "$1" -p 26379 --raw SENTINEL get-master-addr-by-name "$MASTER_SET" | head -n 1; }
replicas_known_by() { [ "$(cli "$1" -p 26379 SENTINEL replicas "$MASTER_SET" | grep -c '^name$')" -ge "$2" ]; }

# 1. Ordinal 2 alone: no Sentinel anywhere knows a master, and it is not ordinal 0.
start 2 redis
pid=$pid_redis_2
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$pid" 2>/dev/null; then fail "ordinal 2 started without a known master"; fi
if wait "$pid"; then fail "ordinal 2 exited 0 without a known master"; fi
grep -q "not ordinal 0" "$work/p2/redis.log" || fail "ordinal 2 did not say why it refused"
cli 2 -p 6379 PING | grep -q PONG && fail "a Redis answers in pod 2"
echo "ok: ordinal 2 refuses to start while no Sentinel knows a master"

# 2. Ordinal 0 bootstraps; 1 and 2 join it.
start 0 redis
wait_for 20 "ordinal 0 becomes master" is_role 0 master
grep -q "ordinal 0 bootstraps as master" "$work/p0/redis.log" || fail "ordinal 0 did not bootstrap"
start 0 sentinel
wait_for 20 "sentinel 0 answers" sentinel_up 0
for i in 1 2; do
    start "$i" redis
    wait_for 30 "pod $i replicates" linked "$i"
    grep -q "joining master $(host 0)" "$work/p$i/redis.log" || fail "pod $i did not join $(host 0)"
    start "$i" sentinel
    wait_for 20 "sentinel $i answers" sentinel_up "$i"
done
for i in 0 1 2; do
    [ "$(master_seen_by "$i")" = "$(host 0)" ] || fail "sentinel $i does not see $(host 0) as master"
done
wait_for 40 "the Sentinels know both replicas" replicas_known_by 1 2
echo "ok: ordinal 0 bootstrapped, pods 1 and 2 replicate from it, every Sentinel agrees"

# 3. The master's preStop: the write acknowledged before it must be on the new master.
[ "$(cli 0 -p 6379 SET before-failover kept)" = OK ] || fail "write to the master"
[ "$(cli 0 -p 6379 WAIT 2 2000)" = 2 ] || fail "the replicas did not acknowledge the write"
started=$(date +%s)
in_pod 0 sh "$work/p0/etc/prestop-redis.sh" >"$work/p0/prestop.log" 2>&1 || fail "preStop failed"
took=$(($(date +%s) - started))
new=$(master_seen_by 1)
[ -n "$new" ] && [ "$new" != "$(host 0)" ] || fail "after preStop the master is still '$new'"
for i in 1 2; do
    [ "$(host "$i")" = "$new" ] && new_ordinal=$i
done
wait_for 10 "the new master reports itself master" is_role "$new_ordinal" master
[ "$(cli "$new_ordinal" -p 6379 GET before-failover)" = kept ] || fail "the acknowledged write is gone"
echo "ok: preStop on the master handed over to $new in ${took}s; the acknowledged write is there"

# 4. Stop pod 0 (redis and sentinel), start it again: it must follow the new master.
old_run_id=$(cli 0 -p 6379 INFO server | tr -d '\r' | sed -n 's/^run_id://p')
kill "$pid_sentinel_0" "$pid_redis_0"
wait "$pid_sentinel_0" 2>/dev/null || true
wait "$pid_redis_0" 2>/dev/null || true
if cli 0 -p 6379 PING | grep -q PONG || cli 0 -p 26379 PING | grep -q PONG; then fail "pod 0 did not stop"; fi
grep -q "^sentinel monitor $MASTER_SET " "$work/p0/data/sentinel/sentinel.conf" || fail "sentinel 0 kept no state"
: >"$work/p0/redis.log"
start 0 redis
wait_for 30 "the old master replicates from the new one" linked 0
[ "$(cli 0 -p 6379 INFO server | tr -d '\r' | sed -n 's/^run_id://p')" != "$old_run_id" ] || fail "pod 0 is the old process"
grep -q "joining master $new" "$work/p0/redis.log" || fail "pod 0 did not join $new"
start 0 sentinel
wait_for 20 "sentinel 0 answers again" sentinel_up 0
wait_for 20 "sentinel 0 (restored state) sees the new master" test "$(master_seen_by 0)" = "$new"
echo "ok: the old master came back as a replica of $new; its Sentinel restored its state from the PVC"

# 5. Probes.
for i in 0 1 2; do
    in_pod "$i" sh "$work/p$i/etc/probe.sh" liveness >/dev/null || fail "liveness probe fails on pod $i"
    in_pod "$i" sh "$work/p$i/etc/probe.sh" readiness >/dev/null || fail "readiness probe fails on pod $i"
done
cli 0 -p 6379 SHUTDOWN NOSAVE >/dev/null || true
wait "$pid_redis_0" 2>/dev/null || true
in_pod 0 sh "$work/p0/etc/probe.sh" readiness >/dev/null 2>&1 && fail "readiness passes on a stopped Redis"
in_pod 0 sh "$work/p0/etc/probe.sh" liveness >/dev/null 2>&1 && fail "liveness passes on a stopped Redis"
echo "ok: liveness and readiness pass on every pod, and both fail on a stopped one"
