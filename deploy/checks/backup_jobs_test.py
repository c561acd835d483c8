"""The backup and drill CronJobs' database and scratch-Redis commands, run as rendered (scripts/validate-deploy.sh).

  backup_jobs_test.py MYSQL_MANIFEST POSTGRESQL_MANIFEST

For each engine, the `dump` init container of RELEASE-backup-database is run against a real server (the test
servers of MOORING_TEST_MYSQL_URL / MOORING_TEST_POSTGRES_URL) on a database seeded with a table of binary
data, a trigger, a routine and an event (MySQL) or a sequence and a view (PostgreSQL). The drill's
`load-database` init container then loads that dump into a fresh database, as into its scratch server, and the
two must hold the same rows and objects. A truncated dump must make the loader fail (so a bad backup fails the
drill). The drill's scratch Redis command runs on a free port and its startup probe must pass. Wiring is
checked too: `moor backup-db --file` reads the file the dump writes, on the same emptyDir, with the matching
--engine, `moor drill --restored-database-url` names the scratch database's own user, port and database, the
drill reads the live data with the app's own ConfigMap, REDIS_* secrets and DATABASE_URL, and the dump's host
and port are the database's rendered Service.

Only what the test servers need is substituted: the database host (the chart's Service name) becomes the test
server's, the user and password the test credentials, the database names fresh ones, the paths a temporary
directory, the Redis port a free one; every flag is used as rendered. The local clients are MariaDB 10.11's
and PostgreSQL 15's, the chart's images MySQL 8.4 and PostgreSQL 16: the flags exist in both.

Hand-written: no tool runs a pod's containers without a container engine, and none exists here.
"""

import os
import secrets
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

import yaml

MYSQL_URL = os.environ.get("MOORING_TEST_MYSQL_URL", "mysql://mooring:mooring@127.0.0.1:3306/mysql")
POSTGRES_URL = os.environ.get("MOORING_TEST_POSTGRES_URL", "postgres://mooring:mooring@127.0.0.1:5432/postgres")


def fail(message):
    sys.exit(f"backup_jobs_test: {message}")


def run(cmd, env=None, check=True, stdin=None):
    out = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True, stdin=stdin)
    if check and out.returncode != 0:
        fail(f"{shlex.join(cmd)} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return out


def cronjob_pod(manifest, suffix):
    for doc in yaml.safe_load_all(open(manifest)):
        if doc and doc["kind"] == "CronJob" and doc["metadata"]["name"].endswith(suffix):
            return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    fail(f"{manifest}: no CronJob *{suffix}")


def container(pod, name):
    for c in pod.get("initContainers", []) + pod["containers"]:
        if c["name"] == name:
            return c
    fail(f"no container {name}")


def mounts(c):
    return {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}


def env_value(c, name):
    for e in c.get("env", []):
        if e["name"] == name:
            return e.get("value")
    return None


def substitute(args, replacements):
    """args with each exact value or --flag=value prefix in replacements swapped; every key must be used."""
    used, out = set(), []
    for a in args:
        for old, new in replacements.items():
            if a == old or (old.endswith("=") and a.startswith(old)):
                a = new if a == old else old + new
                used.add(old)
                break
        out.append(a)
    unused = set(replacements) - used
    if unused:
        fail(f"the rendered command {args} lacks {sorted(unused)}: the chart changed, update this test")
    return out


def check_wiring(pod, dump, backup, dump_file, engine):
    assert f"--result-file={dump_file}" in dump["command"] or f"--file={dump_file}" in dump["command"], dump["command"]
    cmd = backup["command"]
    assert cmd[:2] == ["/usr/local/bin/moor", "backup-db"], cmd
    assert cmd[cmd.index("--file") + 1] == dump_file, f"moor backup-db reads {cmd[cmd.index('--file') + 1]}, the dump writes {dump_file}"
    assert cmd[cmd.index("--engine") + 1] == engine, cmd
    directory = os.path.dirname(dump_file)
    assert mounts(dump).get(directory) == mounts(backup).get(directory) is not None, "dump and backup share no emptyDir"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts(dump)[directory]], "the dump volume is not an emptyDir"


def check_restored_url(drill_pod, scratch, user, database, port):
    cmd = container(drill_pod, "drill")["command"]
    url = urllib.parse.urlsplit(cmd[cmd.index("--restored-database-url") + 1])
    assert (url.hostname, url.port, url.username, url.password, url.path.lstrip("/")) == ("127.0.0.1", port, user, None, database), (
        f"--restored-database-url {url.geturl()} does not name the scratch server ({user}@127.0.0.1:{port}/{database})")
    args = " ".join(scratch.get("args", []))
    assert "127.0.0.1" in args, f"the scratch database must listen on 127.0.0.1 only: {args}"
    assert scratch.get("restartPolicy") == "Always", "the scratch database must be a native sidecar"


def dump_container(manifest, test_url, default_port, engine, file_flag, password_env, flags):
    """The test server's address and credentials, and the database CronJob's `dump` container, checked."""
    url = urllib.parse.urlsplit(test_url)
    pod = cronjob_pod(manifest, "-backup-database")
    dump, backup = container(pod, "dump"), container(pod, "backup")
    dump_file = next(a.split("=", 1)[1] for a in dump["command"] if a.startswith(file_flag))
    check_wiring(pod, dump, backup, dump_file, engine)
    for flag in flags:
        assert flag in dump["command"], f"{dump['command'][0]} lacks {flag}"
    assert [e["name"] for e in dump["env"]] == [password_env], f"the password must come from {password_env} only"
    assert not any("password" in a.lower() for a in dump["command"]), "a password in argv"
    return url.hostname, str(url.port or default_port), url.username, url.password or "", dump


def mysql_test(manifest, work):
    host, port, user, password, dump = dump_container(
        manifest, MYSQL_URL, 3306, "mysql", "--result-file=", "MYSQL_PWD",
        ("--single-transaction", "--routines", "--triggers", "--events", "--hex-blob", "--no-tablespaces"))

    source, target = f"bk_src_{secrets.token_hex(4)}", f"bk_dst_{secrets.token_hex(4)}"
    client = ["mysql", f"--host={host}", f"--port={port}", f"--user={user}"]
    env = {"MYSQL_PWD": password}

    def sql(database, statement):
        return run(client + ["--batch", "--skip-column-names", database, "-e", statement], env).stdout

    try:
        run(client + ["-e", f"CREATE DATABASE {source}; CREATE DATABASE {target}"], env)
        sql(source, """
            CREATE TABLE users (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(64), secret VARBINARY(32));
            CREATE TABLE audit (user_id INT, at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
            CREATE TRIGGER users_audit AFTER INSERT ON users FOR EACH ROW INSERT INTO audit (user_id) VALUES (NEW.id);
            CREATE FUNCTION twice (x INT) RETURNS INT DETERMINISTIC RETURN 2 * x;
            CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM audit WHERE at < NOW() - INTERVAL 30 DAY;
            INSERT INTO users (name, secret) VALUES ('ada', UNHEX('00FF10E2')), ('grace', UNHEX('DEADBEEF00')), ('linus', NULL);
        """)
        replacements = {
            "--host=": host, "--port=": port, "--user=": user,
            "--result-file=": os.path.join(work, "database.sql"),
            dump["command"][-1]: source,
        }
        run(substitute(dump["command"], replacements), env)
        print(f"ok: mysql: the dump container's mysqldump, as rendered, dumped {source}")

        drill_pod = cronjob_pod(manifest, "-restore-drill")
        load, scratch = container(drill_pod, "load-database"), container(drill_pod, "scratch-database")
        assert env_value(scratch, "MYSQL_ALLOW_EMPTY_PASSWORD") == "yes"
        scratch_db = env_value(scratch, "MYSQL_DATABASE")
        check_restored_url(drill_pod, scratch, "root", scratch_db, 3306)
        shell = load["command"]
        assert shell[:2] == ["/bin/sh", "-c"], shell
        words = shlex.split(shell[2])
        assert words[-2:] == ["<", "/work/database.dump"] and words[-3] == scratch_db, words
        loader_words = substitute(words[:-2], {"--host=": host, "--user=": user, scratch_db: target})
        loader_words.insert(loader_words.index("mysql") + 1, f"--port={port}")
        loader = shlex.join(loader_words) + " < " + shlex.quote(os.path.join(work, "database.sql"))
        run(["/bin/sh", "-c", "exec " + loader.removeprefix("exec ")], env)
        for query in ("SELECT id, name, HEX(secret) FROM users ORDER BY id", "SELECT COUNT(*) FROM audit",
                      "SELECT twice(21)",
                      "SELECT TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()", "SELECT EVENT_NAME, STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE()"):
            a, b = sql(source, query), sql(target, query)
            if a != b or not a.strip():
                fail(f"mysql: {query}: the loaded copy differs:\n{a}---\n{b}")
        print(f"ok: mysql: the drill's loader, as rendered, loaded it into {target}: rows (binary too), trigger, routine and event equal")

        with open(os.path.join(work, "database.sql")) as f:
            text = f.read()
        truncated = os.path.join(work, "truncated.sql")
        with open(truncated, "w") as f:
            # Cut inside the users' INSERT: a statement boundary would leave a shorter but valid script.
            f.write(text[: text.index("INSERT INTO `users`") + 30])
        sql(target, "DROP TABLE IF EXISTS users, audit")
        broken = run(["/bin/sh", "-c", "exec " + loader.removeprefix("exec ").replace(os.path.join(work, "database.sql"), truncated)], env, check=False)
        if broken.returncode == 0:
            fail("mysql: the loader succeeded on a truncated dump: a bad backup would pass the drill")
        print("ok: mysql: the loader fails on a truncated dump")
    finally:
        run(client + ["-e", f"DROP DATABASE IF EXISTS {source}; DROP DATABASE IF EXISTS {target}"], env, check=False)


def postgres_test(manifest, work):
    host, port, user, password, dump = dump_container(
        manifest, POSTGRES_URL, 5432, "postgres", "--file=", "PGPASSWORD",
        ("--format=custom", "--no-owner", "--no-privileges"))
    url = urllib.parse.urlsplit(POSTGRES_URL)

    source, target = f"bk_src_{secrets.token_hex(4)}", f"bk_dst_{secrets.token_hex(4)}"
    env = {"PGPASSWORD": password}

    def psql(database, statement):
        return run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-tA", f"--host={host}", f"--port={port}", f"--username={user}",
                    f"--dbname={database}", "-c", statement], env).stdout

    admin = url.path.lstrip("/") or "postgres"
    try:
        psql(admin, f"CREATE DATABASE {source}")
        psql(admin, f"CREATE DATABASE {target}")
        psql(source, """
            CREATE TABLE users (id SERIAL PRIMARY KEY, name TEXT NOT NULL, secret BYTEA);
            CREATE VIEW named AS SELECT name FROM users;
            INSERT INTO users (name, secret) VALUES ('ada', '\\x00ff10e2'), ('grace', '\\xdeadbeef00'), ('linus', NULL);
        """)
        replacements = {"--host=": host, "--port=": port, "--username=": user, "--dbname=": source,
                        "--file=": os.path.join(work, "database.dump")}
        run(substitute(dump["command"], replacements), env)
        print(f"ok: postgres: the dump container's pg_dump, as rendered, dumped {source}")

        drill_pod = cronjob_pod(manifest, "-restore-drill")
        load, scratch = container(drill_pod, "load-database"), container(drill_pod, "scratch-database")
        assert env_value(scratch, "POSTGRES_HOST_AUTH_METHOD") == "trust"
        scratch_db, scratch_user = env_value(scratch, "POSTGRES_DB"), env_value(scratch, "POSTGRES_USER")
        check_restored_url(drill_pod, scratch, scratch_user, scratch_db, 5432)
        cmd = load["command"]
        assert cmd[0] == "pg_restore" and "--exit-on-error" in cmd and cmd[-1] == "/work/database.dump", cmd
        assert f"--username={scratch_user}" in cmd and f"--dbname={scratch_db}" in cmd, cmd
        loader = substitute(cmd, {"--host=": host, "--username=": user, "--dbname=": target,
                                  "/work/database.dump": os.path.join(work, "database.dump")})
        run(loader + [f"--port={port}"], env)
        for query in ("SELECT id, name, encode(secret, 'hex') FROM users ORDER BY id", "SELECT * FROM named ORDER BY 1",
                      "SELECT last_value FROM users_id_seq"):
            a, b = psql(source, query), psql(target, query)
            if a != b or not a.strip():
                fail(f"postgres: {query}: the loaded copy differs:\n{a}---\n{b}")
        print(f"ok: postgres: the drill's loader, as rendered, loaded it into {target}: rows (bytea too), view and sequence equal")

        data = open(os.path.join(work, "database.dump"), "rb").read()
        truncated = os.path.join(work, "truncated.dump")
        with open(truncated, "wb") as f:
            f.write(data[: len(data) // 2])
        psql(admin, f"DROP DATABASE {target}")
        psql(admin, f"CREATE DATABASE {target}")
        broken = run([truncated if a == os.path.join(work, "database.dump") else a for a in loader] + [f"--port={port}"], env, check=False)
        if broken.returncode == 0:
            fail("postgres: pg_restore succeeded on a truncated dump: a bad backup would pass the drill")
        print("ok: postgres: the loader fails on a truncated dump")
    finally:
        psql(admin, f"DROP DATABASE IF EXISTS {source}")
        psql(admin, f"DROP DATABASE IF EXISTS {target}")


def scratch_redis_test(manifest, work):
    pod = cronjob_pod(manifest, "-restore-drill")
    redis = container(pod, "scratch-redis")
    assert redis.get("restartPolicy") == "Always", "the scratch Redis must be a native sidecar"
    cmd = redis["command"]
    port = cmd[cmd.index("--port") + 1]
    assert cmd[cmd.index("--bind") + 1] == "127.0.0.1", "the scratch Redis must listen on 127.0.0.1 only"
    drill = container(pod, "drill")["command"]
    assert drill[drill.index("--scratch-redis") + 1] == f"redis://127.0.0.1:{port}", drill
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    free = str(s.getsockname()[1])
    s.close()
    data = os.path.join(work, "redis")
    os.mkdir(data)
    args = substitute(cmd, {port: free, "/data": data})
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        probe = redis["startupProbe"]["exec"]["command"]
        assert probe[:2] == ["/bin/sh", "-c"], probe
        script = probe[2].replace(f"-p {port}", f"-p {free}")
        assert script != probe[2], f"the probe {probe[2]} does not name port {port}"
        for _ in range(50):
            if subprocess.run(["/bin/sh", "-c", script], stderr=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.1)
        else:
            fail(f"the scratch Redis's startup probe never passed: {script}")
        print("ok: the scratch Redis, as rendered, serves on 127.0.0.1 and its startup probe passes")
        server.terminate()
        server.wait(10)
        if subprocess.run(["/bin/sh", "-c", script], stderr=subprocess.DEVNULL).returncode == 0:
            fail("the scratch Redis's startup probe passes with the server stopped")
        print("ok: the startup probe fails once it is stopped")
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()


def reachable():
    for url, what in ((MYSQL_URL, "MOORING_TEST_MYSQL_URL"), (POSTGRES_URL, "MOORING_TEST_POSTGRES_URL")):
        u = urllib.parse.urlsplit(url)
        try:
            socket.create_connection((u.hostname, u.port), timeout=3).close()
        except OSError as e:
            fail(f"{what} ({u.hostname}:{u.port}) is not reachable ({e}): start the test databases with "
                 "`bash scripts/services.sh` (as root; it installs and starts PostgreSQL and MariaDB)")


def check_drill_reads_live_data_as_the_app(manifest):
    """The drill's live counts: the same ConfigMap, REDIS_* secrets and DATABASE_URL as the app's container."""
    docs = [d for d in yaml.safe_load_all(open(manifest)) if d]
    app = next(c for d in docs if d["kind"] == "Deployment" and d["metadata"]["labels"].get("app.kubernetes.io/component") == "app"
               for c in d["spec"]["template"]["spec"]["containers"] if c["name"] == "inventory")
    drill = container(cronjob_pod(manifest, "-restore-drill"), "drill")
    live = lambda c: sorted((e for e in c.get("env", []) if e["name"].startswith("REDIS_") or e["name"] == "DATABASE_URL"), key=lambda e: e["name"])
    assert live(drill) == live(app), f"the drill's live variables differ from the app's:\n{live(drill)}\n{live(app)}"
    assert drill["envFrom"] == app["envFrom"], "the drill reads another ConfigMap than the app"
    dump = container(cronjob_pod(manifest, "-backup-database"), "dump")
    host = next(a.split("=", 1)[1] for a in dump["command"] if a.startswith("--host="))
    port = int(next(a.split("=", 1)[1] for a in dump["command"] if a.startswith("--port=")))
    services = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == host]
    assert services and any(p["port"] == port for p in services[0]["spec"]["ports"]), f"the dump's --host={host} --port={port} is no rendered Service"
    print("ok: the drill reads the live data as the app does; the dump's host and port are the database's Service")


def main():
    mysql_manifest, postgres_manifest = sys.argv[1:3]
    reachable()
    with tempfile.TemporaryDirectory() as work:
        for manifest in (mysql_manifest, postgres_manifest):
            check_drill_reads_live_data_as_the_app(manifest)
        mysql_test(mysql_manifest, work)
        postgres_test(postgres_manifest, work)
        scratch_redis_test(mysql_manifest, work)


if __name__ == "__main__":
    main()
