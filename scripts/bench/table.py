"""The docs/performance.md table from one run: OUT/raw.tsv (run.sh), OUT/inspect.tsv and OUT/bytes.tsv
(inspect.sh). Medians over repetitions, like the shared summarize.py. Usage: table.py OUT"""
import csv, statistics, sys
from collections import defaultdict

out = sys.argv[1]
rows = list(csv.DictReader(open(f"{out}/raw.tsv"), delimiter="\t"))
agg = defaultdict(lambda: defaultdict(list))
for r in rows:
    for k in ("rps", "p50_us", "p99_us", "non2xx", "sockerr"):
        agg[(r["peer"], r["route"])][k].append(float(r[k]))
peers = list(dict.fromkeys(r["peer"] for r in rows))
med = lambda p, rt, k="rps": statistics.median(agg[(p, rt)][k]) if agg[(p, rt)][k] else float("nan")

sent, cmds, size = defaultdict(dict), defaultdict(dict), {}
try:
    for r in csv.DictReader(open(f"{out}/inspect.tsv"), delimiter="\t"):
        sent[r["peer"]][r["request"]] = f"{r.get('trips', '?')} ({r['sent']})"
        cmds[r["peer"]][r["request"]] = r["commandstats"] or "-"
    for r in csv.DictReader(open(f"{out}/bytes.tsv"), delimiter="\t"):
        size[r["peer"]] = f"{r['bytes']} ({r['keys']} key{'s' if r['keys'] != '1' else ''})"
except FileNotFoundError:
    pass

print("| peer | rps /plain | rps /read | rps /incr | rps /incr new | /read ÷ /plain | /incr ÷ /plain"
      " | p99 /incr ms | bytes per session | round trips (commands sent): /read, /incr, new | errors |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
for p in peers:
    errors = sum(sum(a["non2xx"]) + sum(a["sockerr"]) for (q, _), a in agg.items() if q == p)
    s = sent.get(p, {})
    print(f"| {p} | {med(p, 'plain'):,.0f} | {med(p, 'read'):,.0f} | {med(p, 'incr'):,.0f}"
          f" | {med(p, 'incr-new'):,.0f} | {med(p, 'read') / med(p, 'plain'):.2f}"
          f" | {med(p, 'incr') / med(p, 'plain'):.2f} | {med(p, 'incr', 'p99_us') / 1000:.2f}"
          f" | {size.get(p, '-')} | {s.get('read', '-')}, {s.get('incr', '-')}, {s.get('incr-new', '-')}"
          f" | {int(errors)} |")

if cmds:
    print()
    print("Redis commands per request, from INFO commandstats (which also counts the commands a Lua script runs):")
    print()
    print("| peer | GET /read | GET /incr | GET /incr, no cookie (new session) | GET /plain |")
    print("|---|---|---|---|---|")
    for p in peers:
        c = cmds.get(p, {})
        print(f"| {p} | {c.get('read', '-')} | {c.get('incr', '-')} | {c.get('incr-new', '-')} | {c.get('plain', '-')} |")

if "mooring" in peers and "actix" in peers:
    m = lambda rt, k="rps": med("mooring", rt, k)
    a = lambda rt, k="rps": med("actix", rt, k)
    targets = [
        ("/read ÷ /plain ≥ 0.65", m("read") / m("plain"), 0.65, True, "{:.2f}"),
        ("/incr ÷ /plain ≥ 0.45", m("incr") / m("plain"), 0.45, True, "{:.2f}"),
        ("/incr rps ≥ 1.3 × actix-session's", m("incr") / a("incr"), 1.3, True, "{:.2f}×"),
        ("p99 of /incr ≤ actix-session's", m("incr", "p99_us") / 1000, a("incr", "p99_us") / 1000, False, "{:.2f} ms"),
    ]
    print()
    print("| target | mooring | needed | verdict |")
    print("|---|---:|---:|---|")
    for name, got, need, higher, fmt in targets:
        ok = got >= need if higher else got <= need
        gap = (got / need - 1) * 100
        verdict = "met" if ok else "missed"
        print(f"| {name} | {fmt.format(got)} | {fmt.format(need)} | {verdict} ({gap:+.0f} %) |")
