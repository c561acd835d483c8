"""What one session call costs inside Redis: INFO commandstats usec_per_call of the mooring-redis scripts
(extracted from crates/mooring-redis/src/scripts.rs, so the SHA1s are the store's own) next to plain
commands and stripped-down scripts, to tell the script machinery from the work. A load is no script: it is
the HGETALL and PEXPIREAT rows, pipelined. usec_per_call is time spent
executing the command in Redis's main thread (a script's includes the commands it calls); reading the
request and writing the reply come on top and are about the same for every command.

Usage: REDIS_PORT=6390 python3 scripts/bench/lua-cost.py   (a private redis-server; it is FLUSHALLed)
"""
import os, re, subprocess, sys, time

PORT = os.environ.get("REDIS_PORT", "6390")
N, CONNS, REPS = int(os.environ.get("N", "30000")), 4, int(os.environ.get("REPS", "3"))
HERE = os.path.dirname(os.path.abspath(__file__))
src = open(os.path.join(HERE, "../../crates/mooring-redis/src/scripts.rs")).read()
raw = dict(re.findall(r'const (\w+): &str = r"(.*?)";', src, re.S))
APPLY = raw["META"] + raw["APPLY"]


def cli(*args, stdin=None):
    return subprocess.run(["redis-cli", "-p", PORT, *args], input=stdin, capture_output=True,
                          check=True).stdout.decode(errors="replace").strip()


def usec_per_call(cmd):
    cli("config", "resetstat")
    subprocess.run(["redis-benchmark", "-p", PORT, "-c", str(CONNS), "-n", str(N), "-q", *cmd],
                   capture_output=True, check=True)
    stats = {}
    for line in cli("info", "commandstats").splitlines():
        m = re.match(r"cmdstat_([a-z|]+):calls=(\d+),usec=\d+,usec_per_call=([\d.]+),rejected_calls=(\d+),failed_calls=(\d+)", line)
        if m and m[1] != "info" and not m[1].startswith("config"):
            if int(m[4]) or int(m[5]):
                sys.exit(f"{cmd}: {m[1]} failed: {line}")
            stats[m[1]] = (int(m[2]), float(m[3]))
    return stats


cli("flushall")
now = int(time.time() * 1000)
meta = (5).to_bytes(4, "big") + now.to_bytes(6, "big") + (43_200_000).to_bytes(4, "big")
# A session hash as mooring-redis writes it (metadata field "", attribute n = 5), and a string of the size
# of the peers' records, written with RESP on stdin since the values are binary.
def resp(*parts):
    out = b"*%d\r\n" % len(parts)
    for p in parts:
        p = p if isinstance(p, bytes) else str(p).encode()
        out += b"$%d\r\n%s\r\n" % (len(p), p)
    return out
key, skey = "KD2xVXfG4fJYJE", "YXr1vou2UisJU1WHjqdQxvk3w0sapt9l5GZKpHrnQHeEFSp1YaJQkOUQlF2mFvja"
subprocess.run(["redis-cli", "-p", PORT, "--pipe"], input=resp("HSET", key, b"", meta, "n", b"\x01\x05")
               + resp("SET", skey, '{"n":"5"}'), capture_output=True, check=True)
sha = {name: cli("script", "load", body) for name, body in {
    "return 1": "return 1",
    "return HGETALL": "return redis.call('HGETALL', KEYS[1])",
    "HGETALL + PEXPIREAT, string argument": "local h = redis.call('HGETALL', KEYS[1]) "
                                            "redis.call('PEXPIREAT', KEYS[1], ARGV[1]) return h",
    "apply": APPLY}.items()}
idle = 7_200_000
cases = [
    ("GET (actix-session's read)", ["GET", skey]),
    ("SET ... XX EX (actix-session's write)", ["SET", skey, '{"n":"6"}', "XX", "EX", "86400"]),
    ("HGETALL", ["HGETALL", key]),
    ("PEXPIREAT", ["PEXPIREAT", key, str(now + idle)]),
    ("EVALSHA: return 1", ["EVALSHA", sha["return 1"], "0"]),
    ("EVALSHA: return HGETALL", ["EVALSHA", sha["return HGETALL"], "1", key]),
    ("EVALSHA: HGETALL + PEXPIREAT, string argument",
     ["EVALSHA", sha["HGETALL + PEXPIREAT, string argument"], "1", key, str(now + idle)]),
    ("EVALSHA apply (mooring-redis, /incr's write)",
     ["EVALSHA", sha["apply"], "1", key, str(now), str(now + idle), "", "65536", "", "1", "n", "xy"]),
]
results = {name: [] for name, _ in cases}
for _ in range(REPS):  # interleaved repetitions, median reported
    for name, cmd in cases:
        stats = usec_per_call(cmd)
        top = cmd[0].lower()
        results[name].append((stats[top][1], {k: v[1] for k, v in stats.items() if k != top}))
print(f"| command | µs per call in Redis (median of {REPS}) | of which the commands it calls |")
print("|---|---:|---|")
for name, runs in results.items():
    runs.sort(key=lambda r: r[0])
    total, inner = runs[len(runs) // 2]
    print(f"| {name} | {total:.2f} | {', '.join(f'{k} {v:.2f}' for k, v in sorted(inner.items())) or '-'} |")
cli("flushall")
