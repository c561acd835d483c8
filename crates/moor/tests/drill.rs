//! `moor drill`, run as the operator (or the chart's monthly job) runs it, against real processes: a live
//! redis-server with sessions written through the real `RedisStore` and backed up by the real `moor backup`,
//! a scratch redis-server the drill starts itself, and the machine's real PostgreSQL and MariaDB. The drill
//! passes on a good backup (and its JSON has the expected fields), and fails, exiting 1 and saying why, on a
//! truncated backup, on records that do not decode as the store's, on a backup older than `--max-age`, on a
//! scratch Redis that is not empty and on a missing database backup; with a database it restores into a
//! scratch database on both engines, compares, and drops it.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use moor::archive::{self, BackupKeys, Header, Kind};
use moor::backup::{self as sessions_backup, Entry};
use moor::repo::{Repo, S3Settings};
use mooring::{Policy, Record, SessionId, SessionStore, now_ms};
use mooring_conformance::provision::{self, Backend, TestDb};
use mooring_conformance::redis::{Options, RedisServer, standalone};
use mooring_redis::{RedisConfig, RedisStore, Topology};
use sqlx::{Connection, Executor, MySqlConnection, PgConnection};

#[path = "support/cli.rs"]
mod cli;
#[path = "support/s3.rs"]
mod s3;
use s3::S3Server;

/// The key the tests sign backups with.
const BACKUP_KEY: &str = "a backup key for the drill tests, 32 bytes or more";
const PREFIX: &str = "app:";

fn keys() -> BackupKeys {
    BackupKeys::from_secrets(BACKUP_KEY.as_bytes(), &[])
}

/// Runs the `moor` binary with the backup key and none of the caller's Redis or database variables.
fn moor(args: &[&str]) -> Output {
    moor_with(args, None)
}

/// [`moor`], pointed at `s3` when given.
fn moor_with(args: &[&str], s3: Option<&S3Server>) -> Output {
    cli::run(BACKUP_KEY, args, |cmd| {
        if let Some(s3) = s3 {
            s3.apply(cmd);
        }
    })
}

fn ok(args: &[&str]) -> String {
    ok_with(args, None)
}

fn ok_with(args: &[&str], s3: Option<&S3Server>) -> String {
    cli::stdout_of_success(args, moor_with(args, s3))
}

/// Runs a drill that must fail: exit 1, and the failed check (`FAIL  <check>`) says `says`.
fn fails(args: &[&str], check: &str, says: &str) -> String {
    let out = moor(args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "moor {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("FAIL  {check}")))
        .unwrap_or_else(|| panic!("no failed check '{check}' in:\n{text}"));
    assert!(line.contains(says), "'{says}' not in: {line}\n{text}");
    assert!(text.contains("drill failed"), "{text}");
    text
}

fn policy() -> Policy {
    Policy {
        idle: Duration::from_secs(600),
        max_record_bytes: 4096,
        max_sessions_per_user: None,
    }
}

/// A live Redis with 12 sessions under [`PREFIX`] written through the store: 4 signed in as ada, 2 as bob.
async fn live_redis() -> RedisServer {
    let server = standalone(Options::default()).await;
    let mut config = RedisConfig::new(Topology::Standalone { url: server.url() });
    config.prefix = PREFIX.to_owned();
    let store = RedisStore::connect(config).await.expect("connect");
    for i in 0..12u8 {
        let record = Record {
            created_at: now_ms(),
            deadline: now_ms() + 3_600_000,
            user: match i {
                0..4 => Some("ada".to_owned()),
                4..6 => Some("bob".to_owned()),
                _ => None,
            },
            attrs: [("cart".to_owned(), vec![b'0' + i; 3])].into(),
        };
        store
            .create(&SessionId::generate().store_key(), &record, &policy())
            .await
            .expect("create");
    }
    server
}

/// A signed sessions backup of `server` in `dir`, taken `age` ago, by the real `moor backup`; one of the past
/// (which cannot be taken now) has the entry stream `moor backup` wrote sealed again with that age.
async fn take_backup(server: &RedisServer, dir: &Path, age: Duration) {
    let url = server.url();
    let backup = |out: &str| ok(&["backup", "--url", &url, "--prefix", PREFIX, "--out", out]);
    if age.is_zero() {
        backup(&format!("{}/", dir.display()));
        return;
    }
    let raw = dir.join("raw.partial");
    backup(raw.to_str().expect("utf-8"));
    let written = std::fs::read(&raw).expect("raw backup");
    std::fs::remove_file(&raw).expect("remove");
    let body = archive::open(&written, &keys()).expect("moor backup signed it").1;
    let (_, entries) = sessions_backup::decode(&body).expect("moor backup wrote a valid stream");
    seal_into(dir, &body, entries.len() as u64, age).await;
}

async fn seal_into(dir: &Path, body: &[u8], items: u64, age: Duration) {
    let created = now_ms() - age.as_millis() as u64;
    let mut header = Header::new(Kind::Sessions, created, "127.0.0.1");
    header.prefix = Some(PREFIX.to_owned());
    header.items = items;
    let sealed = archive::seal(header, body, &keys(), true).expect("seal");
    let repo = Repo::open(&format!("{}/", dir.display()), &S3Settings::default()).expect("repo");
    repo.put(Kind::Sessions, created, sealed).await.expect("put");
}

fn newest(dir: &Path, kind: &str) -> std::path::PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(kind))
        })
        .collect();
    files.sort();
    files.pop().expect("a backup")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_backup_passes_and_reports_rpo_rto_and_counts() {
    let live = live_redis().await;
    let dir = tempfile::tempdir().expect("tempdir");
    take_backup(&live, dir.path(), Duration::ZERO).await;
    let from = format!("{}/", dir.path().display());
    let json_path = dir.path().join("drill.json");
    let args = [
        "drill",
        "--from",
        &from,
        "--url",
        &live.url(),
        "--prefix",
        PREFIX,
        "--max-age",
        "1h",
        "--json",
        json_path.to_str().expect("utf-8"),
    ];
    let table = ok(&args);
    assert!(table.contains("drill passed"), "{table}");
    assert!(table.contains("RPO"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("json")).expect("valid JSON");
    assert_eq!(json["passed"], true, "{json:#}");
    let s = &json["sessions"];
    assert_eq!(s["entries"], 14, "12 sessions and 2 user indexes: {s:#}");
    assert_eq!(s["restored"], 14);
    for side in ["backup_counts", "live_counts"] {
        assert_eq!(
            (
                &s[side]["sessions"],
                &s[side]["signed_in"],
                &s[side]["users"],
                &s[side]["user_indexes"],
                &s[side]["undecodable"]
            ),
            (&12.into(), &6.into(), &2.into(), &2.into(), &0.into()),
            "{side}: {s:#}"
        );
    }
    assert!(
        s["backup"].as_str().is_some_and(|b| b.ends_with(".moorbak")),
        "{s:#}"
    );
    assert!(s["taken_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{s:#}");
    let rpo = s["rpo_s"].as_f64().expect("rpo_s");
    assert!((0.0..60.0).contains(&rpo), "{rpo}");
    let (fetch, verify, restore, rto) = (
        s["fetch_ms"].as_f64().expect("fetch"),
        s["verify_ms"].as_f64().expect("verify"),
        s["restore_ms"].as_f64().expect("restore"),
        s["rto_ms"].as_f64().expect("rto"),
    );
    assert!(
        restore > 0.0 && (rto - (fetch + verify + restore)).abs() < 0.2,
        "{s:#}"
    );
    let checks = json["checks"].as_array().expect("checks");
    assert!(checks.len() >= 8, "{checks:?}");
    assert!(
        checks
            .iter()
            .all(|c| c["passed"] == true && c["detail"].is_string())
    );
    assert!(json["database"].is_null(), "no --database-url, no database part");

    // The same as JSON on stdout.
    let mut json_args = args.to_vec();
    json_args.extend(["--format", "json"]);
    let printed: serde_json::Value = serde_json::from_str(&ok(&json_args)).expect("stdout is JSON");
    assert_eq!(printed["passed"], true);

    // An empty Redis given as the scratch one (the chart's sidecar) is used as it is.
    let scratch = standalone(Options::default()).await;
    let scratch_url = scratch.url();
    let mut given = args.to_vec();
    given.extend(["--scratch-redis", &scratch_url]);
    assert!(ok(&given).contains("drill passed"));
    let mut scratch_conn = scratch.connect().await;
    let restored: u64 = redis::cmd("DBSIZE")
        .query_async(&mut scratch_conn)
        .await
        .expect("DBSIZE");
    assert_eq!(restored, 14, "the sessions were restored there");

    // The live Redis lost half its sessions: beyond --max-drift 0.5 of live.
    let mut conn = live.connect().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{PREFIX}*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    let sessions: Vec<&String> = keys.iter().filter(|k| k.len() == PREFIX.len() + 14).collect();
    for key in sessions.iter().take(7) {
        let () = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("DEL");
    }
    fails(&args, "sessions match live", "backup 12, live 5");

    // A scratch Redis that holds keys is refused: the drill never writes over data.
    let mut given = args.to_vec();
    let live_url = live.url();
    given.extend(["--scratch-redis", &live_url]);
    fails(&given, "scratch Redis", "holds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_backup_fails() {
    let live = live_redis().await;
    let dir = tempfile::tempdir().expect("tempdir");
    take_backup(&live, dir.path(), Duration::ZERO).await;
    let file = newest(dir.path(), "sessions-");
    let bytes = std::fs::read(&file).expect("read");
    std::fs::write(&file, &bytes[..bytes.len() * 2 / 3]).expect("truncate");
    let from = format!("{}/", dir.path().display());
    let out = fails(
        &["drill", "--from", &from, "--url", &live.url(), "--prefix", PREFIX],
        "sessions backup verified",
        "signature does not match",
    );
    assert!(!out.contains("PASS  sessions restored"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_do_not_decode_fail() {
    let live = live_redis().await;
    // DUMPs of hashes that lack the store's metadata field, under session-shaped keys.
    let mut conn = live.connect().await;
    let mut entries = Vec::new();
    for key in ["app:NoMetadata000A", "app:NoMetadata000B"] {
        let () = redis::cmd("HSET")
            .arg("scratch:hash")
            .arg("cart")
            .arg("3 apples")
            .query_async(&mut conn)
            .await
            .expect("HSET");
        let payload: Vec<u8> = redis::cmd("DUMP")
            .arg("scratch:hash")
            .query_async(&mut conn)
            .await
            .expect("DUMP");
        entries.push(Entry {
            key: key.as_bytes().to_vec(),
            expire_at_ms: Some(now_ms() + 3_600_000),
            payload,
        });
    }
    let body = sessions_backup::encode(
        &sessions_backup::Header {
            created_at_ms: now_ms(),
            source: "127.0.0.1".into(),
            prefix: PREFIX.into(),
            keys: entries.len() as u64,
        },
        &entries,
    )
    .expect("encode");
    let dir = tempfile::tempdir().expect("tempdir");
    seal_into(dir.path(), &body, entries.len() as u64, Duration::ZERO).await;
    let from = format!("{}/", dir.path().display());
    let out = fails(
        &["drill", "--from", &from, "--url", &live.url(), "--prefix", PREFIX],
        "restored sessions decode",
        "2 keys do not decode",
    );
    assert!(
        out.contains("app:NoMetadata000A (session record has an unexpected shape: no metadata field)"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_older_than_max_age_fails() {
    let live = live_redis().await;
    let dir = tempfile::tempdir().expect("tempdir");
    take_backup(&live, dir.path(), Duration::from_secs(2 * 3600)).await;
    let from = format!("{}/", dir.path().display());
    let out = fails(
        &[
            "drill",
            "--from",
            &from,
            "--url",
            &live.url(),
            "--prefix",
            PREFIX,
            "--max-age",
            "90m",
        ],
        "sessions backup age",
        "too old",
    );
    assert!(
        out.contains("PASS  restored sessions decode"),
        "the rest still runs: {out}"
    );
}

/// Two tables with rows (one binary, one unicode) in a fresh live database.
async fn fill(db: &TestDb) {
    let statements: &[&str] = match db.backend {
        Backend::Postgres => &[
            "CREATE TABLE items (id INT PRIMARY KEY, name TEXT NOT NULL, data BYTEA)",
            "CREATE TABLE users (id INT PRIMARY KEY, email TEXT NOT NULL)",
            "INSERT INTO items VALUES (1, 'Äpfel ✓', '\\x00ff'), (2, '日本 🍎', NULL), (3, 'c', '\\x')",
            "INSERT INTO users VALUES (1, 'ada@example.test'), (2, 'bob@example.test')",
        ],
        _ => &[
            "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(100) CHARACTER SET utf8mb4, data BLOB)",
            "CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(100))",
            "INSERT INTO items VALUES (1, 'Äpfel ✓', x'00ff'), (2, '日本 🍎', NULL), (3, 'c', x'')",
            "INSERT INTO users VALUES (1, 'ada@example.test'), (2, 'bob@example.test')",
        ],
    };
    match db.backend {
        Backend::Postgres => {
            let mut conn = PgConnection::connect(&db.url).await.expect("connect");
            for sql in statements {
                conn.execute(*sql).await.expect("fill");
            }
        }
        _ => {
            let mut conn = MySqlConnection::connect(&db.url).await.expect("connect");
            for sql in statements {
                conn.execute(*sql).await.expect("fill");
            }
        }
    }
}

/// The databases named `moor_drill_%` on the server of `admin`.
async fn scratch_left(backend: Backend, admin: &str) -> Vec<String> {
    match backend {
        Backend::Postgres => {
            let mut conn = PgConnection::connect(admin).await.expect("connect");
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'moor_drill_%'")
                .fetch_all(&mut conn)
                .await
                .expect("list")
        }
        _ => {
            let mut conn = MySqlConnection::connect(admin).await.expect("connect");
            sqlx::query_scalar(
                "SELECT CAST(schema_name AS CHAR) FROM information_schema.schemata \
                 WHERE schema_name LIKE 'moor\\_drill\\_%'",
            )
            .fetch_all(&mut conn)
            .await
            .expect("list")
        }
    }
}

async fn with_database(db: TestDb, admin: &str) {
    fill(&db).await;
    let live = live_redis().await;
    let dir = tempfile::tempdir().expect("tempdir");
    take_backup(&live, dir.path(), Duration::ZERO).await;
    let from = format!("{}/", dir.path().display());
    let live_url = live.url();
    let json_path = dir.path().join("drill.json");
    let args = [
        "drill",
        "--from",
        &from,
        "--url",
        &live_url,
        "--prefix",
        PREFIX,
        "--database-url",
        &db.url,
        "--scratch-database-url",
        admin,
        "--json",
        json_path.to_str().expect("utf-8"),
    ];
    // No database backup yet: a failure, saying so.
    fails(&args, "database backup fetched", "no database backup");

    ok(&["backup-db", "--database-url", &db.url, "--out", &from]);
    let table = ok(&args);
    assert!(table.contains("drill passed"), "{table}");
    let items = if db.backend == Backend::Postgres {
        "public.items"
    } else {
        "items"
    };
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&format!("rows of {items}")) && l.ends_with(" 3          3")),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("json")).expect("JSON");
    let d = &json["database"];
    let engine = if db.backend == Backend::Postgres {
        "postgres-custom"
    } else {
        "mysql-sql"
    };
    assert_eq!(d["engine"], engine, "{d:#}");
    assert!(
        d["scratch"].as_str().is_some_and(|s| s.contains("moor_drill_")),
        "{d:#}"
    );
    assert!(
        !d["scratch"].as_str().unwrap_or_default().contains(":mooring@"),
        "no password"
    );
    let tables = d["tables"].as_array().expect("tables");
    assert_eq!(tables.len(), 2, "{d:#}");
    assert!(d["restore_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{d:#}");
    let scratch = d["scratch"].as_str().unwrap_or_default();
    let name = scratch.rsplit('/').next().unwrap_or_default().to_owned();
    assert!(name.starts_with("moor_drill_"), "{scratch}");
    assert!(
        !scratch_left(db.backend, admin).await.contains(&name),
        "the scratch database {name} was dropped"
    );

    // Live grew beyond the drift: the drill says which table.
    let grow = "INSERT INTO users VALUES (3, 'c@example.test'), (4, 'd@example.test'), (5, 'e@example.test'), \
                (6, 'f@example.test'), (7, 'g@example.test')";
    match db.backend {
        Backend::Postgres => {
            let mut conn = PgConnection::connect(&db.url).await.expect("connect");
            conn.execute(grow).await.expect("grow");
        }
        _ => {
            let mut conn = MySqlConnection::connect(&db.url).await.expect("connect");
            conn.execute(grow).await.expect("grow");
        }
    }
    let users = if db.backend == Backend::Postgres {
        "public.users"
    } else {
        "users"
    };
    fails(
        &args,
        "database rows match live",
        &format!("{users}: backup 2, live 7"),
    );

    // Restored by another container (restore-db --out, then the engine's tool): the drill only counts.
    if db.backend == Backend::Postgres {
        let restored = provision::postgres().await;
        let dump = dir.path().join("dump.pgc");
        ok(&[
            "restore-db",
            "--in",
            &from,
            "--out",
            dump.to_str().expect("utf-8"),
        ]);
        let status = Command::new("pg_restore")
            .args(["--no-owner", "--no-privileges", "-d"])
            .arg(restored.url.replace("mooring:mooring@", "mooring@"))
            .arg(&dump)
            .env("PGPASSWORD", "mooring")
            .status()
            .expect("pg_restore");
        assert!(status.success());
        let mut restored_args: Vec<&str> = args[..9].to_vec();
        restored_args.extend(["--restored-database-url", &restored.url, "--max-drift", "3"]);
        let table = ok(&restored_args);
        assert!(table.contains("restored by another process"), "{table}");
        // An app with its sessions in SQL: the database alone.
        restored_args.push("--no-sessions");
        restored_args.retain(|a| !a.starts_with("--url") && !a.starts_with("redis://"));
        let table = ok(&restored_args);
        assert!(
            table.contains("drill passed") && !table.contains("sessions backup"),
            "{table}"
        );
        restored.drop_db().await.expect("drop");
    }
    db.drop_db().await.expect("drop");
}

fn admin_url(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_the_database_is_restored_into_a_scratch_database() {
    let admin = admin_url(provision::POSTGRES_URL_ENV, provision::DEFAULT_POSTGRES_URL);
    with_database(provision::postgres().await, &admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mariadb_the_database_is_restored_into_a_scratch_database() {
    let admin = admin_url(provision::MYSQL_URL_ENV, provision::DEFAULT_MYSQL_URL);
    with_database(provision::mysql().await, &admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_from_s3_restores_both_backups() {
    let s3 = S3Server::start();
    let live = live_redis().await;
    let db = provision::postgres().await;
    fill(&db).await;
    let from = s3.url("drill/");
    let live_url = live.url();
    ok_with(
        &["backup", "--url", &live_url, "--prefix", PREFIX, "--out", &from],
        Some(&s3),
    );
    ok_with(
        &["backup-db", "--database-url", &db.url, "--out", &from],
        Some(&s3),
    );
    let admin = admin_url(provision::POSTGRES_URL_ENV, provision::DEFAULT_POSTGRES_URL);
    let out = ok_with(
        &[
            "drill",
            "--from",
            &from,
            "--url",
            &live_url,
            "--prefix",
            PREFIX,
            "--database-url",
            &db.url,
            "--scratch-database-url",
            &admin,
            "--format",
            "json",
        ],
        Some(&s3),
    );
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json["passed"], true, "{json:#}");
    assert!(
        json["sessions"]["backup"]
            .as_str()
            .is_some_and(|b| b.starts_with("s3://backups/drill/sessions-")),
        "{json:#}"
    );
    assert_eq!(json["sessions"]["backup_counts"]["sessions"], 12);
    assert!(
        json["database"]["backup"]
            .as_str()
            .is_some_and(|b| b.starts_with("s3://backups/drill/database-")),
        "{json:#}"
    );
    db.drop_db().await.expect("drop");
}
