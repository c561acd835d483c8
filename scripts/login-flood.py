#!/usr/bin/env python3
"""Login flood against a running inventory instance, sampling its memory.

N clients loop `GET /login` + `POST /login` with a wrong password (a fresh random email each time, so every
attempt costs a hash and no per-account lockout stops it) for D seconds, while one real user signs in every
second, retrying after a 503 as its Retry-After says. Prints the process's peak RSS (VmHWM) and current RSS
(VmRSS), the status counts, and how the real user fared.

    python3 scripts/login-flood.py --url http://127.0.0.1:8080 --pid PID --clients 40 --seconds 15 \
        --user real@example.test --password 'correct horse battery'

The user must exist (the script registers it first when --register is given).
"""

import argparse
import collections
import re
import secrets
import threading
import time

import requests

CSRF = re.compile(r'name="_csrf" value="([^"]+)"')


def status_of(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def kib(value):
    return int(value.split()[0])


def login(session, base, email, password):
    page = session.get(f"{base}/login", timeout=30)
    match = CSRF.search(page.text)
    if not match:
        return page.status_code
    res = session.post(
        f"{base}/login",
        data={"email": email, "password": password, "_csrf": match.group(1)},
        allow_redirects=False,
        timeout=30,
    )
    return res


def attacker(base, stop, counts, lock):
    session = requests.Session()
    while not stop.is_set():
        try:
            res = login(session, base, f"nobody-{secrets.token_hex(6)}@example.test", "wrong password")
            code = res if isinstance(res, int) else res.status_code
        except requests.RequestException as e:
            code = type(e).__name__
        with lock:
            counts[code] += 1


def real_user(base, email, password, stop, outcome):
    while not stop.is_set():
        session = requests.Session()
        started = time.monotonic()
        retries = 0
        while not stop.is_set():
            try:
                res = login(session, base, email, password)
            except requests.RequestException as e:
                outcome["errors"].append(type(e).__name__)
                break
            code = res if isinstance(res, int) else res.status_code
            if code == 303:
                outcome["ok"] += 1
                outcome["latency"].append(time.monotonic() - started)
                outcome["retries"].append(retries)
                break
            if code == 503:
                retries += 1
                time.sleep(float(res.headers.get("retry-after", "1")))
                continue
            outcome["errors"].append(code)
            break
        time.sleep(1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--register", action="store_true")
    args = parser.parse_args()
    base = args.url.rstrip("/")

    if args.register:
        s = requests.Session()
        page = s.get(f"{base}/register", timeout=30)
        token = CSRF.search(page.text).group(1)
        s.post(
            f"{base}/register",
            data={"email": args.user, "password": args.password, "password_confirm": args.password, "_csrf": token},
            allow_redirects=False,
            timeout=30,
        )

    before = status_of(args.pid)
    stop = threading.Event()
    counts = collections.Counter()
    lock = threading.Lock()
    outcome = {"ok": 0, "latency": [], "retries": [], "errors": []}
    threads = [threading.Thread(target=attacker, args=(base, stop, counts, lock)) for _ in range(args.clients)]
    threads.append(threading.Thread(target=real_user, args=(base, args.user, args.password, stop, outcome)))
    for t in threads:
        t.start()
    peak_rss = 0
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        peak_rss = max(peak_rss, kib(status_of(args.pid)["VmRSS"]))
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()
    after = status_of(args.pid)
    print(f"clients={args.clients} seconds={args.seconds}")
    print(f"RSS before: {kib(before['VmRSS']) / 1024:.1f} MiB")
    print(f"VmHWM (peak RSS of the process): {kib(after['VmHWM']) / 1024:.1f} MiB")
    print(f"peak sampled VmRSS during the flood: {peak_rss / 1024:.1f} MiB; after: {kib(after['VmRSS']) / 1024:.1f} MiB")
    print(f"threads after: {after['Threads']}")
    print(f"attacker responses: {dict(counts)}")
    lat = sorted(outcome["latency"])
    print(
        f"real user: {outcome['ok']} sign-ins succeeded, 503 retries per sign-in {outcome['retries']}, "
        f"latency max {lat[-1] if lat else float('nan'):.2f} s, failures {outcome['errors']}"
    )


if __name__ == "__main__":
    main()
