//! `SqlStore` behaviour beyond the shared conformance suite, against real SQLite, PostgreSQL and MariaDB: the
//! migrator, the expired-row cleanup, SQLite files shared by several pools, failures, and the public
//! `Dialect` helper. Each test gets its own fresh database from `mooring_conformance::provision`.
//!
//! One test binary (rather than one per topic) so the heavy sqlx link happens once.

use std::sync::Arc;
use std::time::Duration;

use mooring::{Applied, Delta, Error, Policy, Record, SessionId, SessionStore, StoreKey, now_ms};
use mooring_conformance::provision::{self, Backend, TestDb};
use mooring_sql::{Dialect, SqlStore};
use sqlx::{AssertSqlSafe, Row};

fn policy() -> Policy {
    Policy {
        idle: Duration::from_secs(600),
        max_record_bytes: 64 * 1024,
        max_sessions_per_user: None,
    }
}

fn key() -> StoreKey {
    SessionId::generate().store_key()
}

fn record(user: Option<&str>) -> Record {
    Record {
        created_at: now_ms(),
        deadline: now_ms() + 3_600_000,
        user: user.map(str::to_owned),
        ..Record::default()
    }
}

/// A record whose deadline has already passed: its row is expired the moment it is written.
fn dead_record() -> Record {
    Record {
        created_at: now_ms() - 10_000,
        deadline: now_ms() - 1,
        ..Record::default()
    }
}

fn set(name: &str, value: &[u8]) -> Delta {
    let mut delta = Delta::default();
    delta.set.insert(name.to_owned(), value.to_vec());
    delta
}

async fn fresh(backend: Backend) -> TestDb {
    match backend {
        Backend::Sqlite => provision::sqlite().await,
        Backend::Postgres => provision::postgres().await,
        Backend::MySql => provision::mysql().await,
    }
}

async fn store_on(db: &TestDb) -> SqlStore {
    match SqlStore::connect(&db.url).await {
        Ok(store) => store,
        Err(e) => panic!("SqlStore::connect on {}: {e}", db.name),
    }
}

async fn count(store: &SqlStore, sql: &str) -> i64 {
    let sql = store.dialect().sql(sql).into_owned();
    match sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql))
        .fetch_one(store.pool())
        .await
    {
        Ok(n) => n,
        Err(e) => panic!("count query failed: {e}"),
    }
}

/// The stored expiry of the only row in the table.
async fn stored_expiry(store: &SqlStore) -> i64 {
    let row = sqlx::query("SELECT expires_at FROM mooring_sessions")
        .fetch_one(store.pool())
        .await;
    row.and_then(|row| row.try_get::<i64, _>(0)).expect("expires_at")
}

/// Runs one async test body once per backend, each in a fresh database.
macro_rules! per_backend {
    ($($name:ident => $body:path;)+) => {
        $(
            mod $name {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $body(Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $body(Backend::Postgres).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn mariadb() {
                    $body(Backend::MySql).await;
                }
            }
        )+
    };
}

per_backend! {
    migrations_are_idempotent => migrations_are_idempotent;
    concurrent_migrations_apply_once => concurrent_migrations_apply_once;
    cleanup_deletes_only_expired_rows => cleanup_deletes_only_expired_rows;
    cleanup_works_through_many_batches => cleanup_works_through_many_batches;
    spawned_cleanup_runs_in_the_background => spawned_cleanup_runs_in_the_background;
    loads_skip_touches_within_the_granularity => loads_skip_touches_within_the_granularity;
    concurrent_creates_of_one_key_have_one_winner => concurrent_creates_of_one_key_have_one_winner;
    create_replaces_an_expired_row => create_replaces_an_expired_row;
    keys_are_case_sensitive => keys_are_case_sensitive;
    dialect_rewrites_application_queries => dialect_rewrites_application_queries;
}

/// Migrating twice applies nothing the second time and leaves the data alone.
async fn migrations_are_idempotent(backend: Backend) {
    let db = fresh(backend).await;
    let pool = mooring_sql::connect(&db.url).await.expect("connect");
    let store = SqlStore::new(pool).expect("store");
    assert_eq!(
        store.migrate().await.expect("first migrate"),
        vec![1, 2, 3],
        "a fresh database gets migrations 1 (sessions), 2 (login attempts) and 3 (revocation log)"
    );
    let k = key();
    store.create(&k, &record(None), &policy()).await.expect("create");
    assert_eq!(
        store.migrate().await.expect("second migrate"),
        Vec::<i64>::new(),
        "nothing left to apply"
    );
    assert!(
        store.load(&k, &policy()).await.expect("load").is_some(),
        "migrating again keeps the data"
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM mooring_schema_migrations").await,
        3
    );
}

/// Many replicas starting at once on an empty database: exactly one applies each migration, none fails.
async fn concurrent_migrations_apply_once(backend: Backend) {
    let db = fresh(backend).await;
    let replicas = 6;
    let mut tasks = Vec::new();
    for _ in 0..replicas {
        let url = db.url.clone();
        tasks.push(tokio::spawn(async move {
            // Each replica has its own pool, as separate processes would.
            let store = SqlStore::new(mooring_sql::connect(&url).await.expect("connect")).expect("store");
            store.migrate().await
        }));
    }
    let mut applied = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(versions) => applied.extend(versions),
            Err(e) => panic!("a concurrent migration failed: {e}"),
        }
    }
    applied.sort_unstable();
    assert_eq!(
        applied,
        vec![1, 2, 3],
        "each migration is applied exactly once across {replicas} replicas"
    );
    let store = store_on(&db).await;
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM mooring_schema_migrations").await,
        3
    );
}

/// `delete_expired` removes expired rows (idle timeout or deadline) and nothing live.
async fn cleanup_deletes_only_expired_rows(backend: Backend) {
    let db = fresh(backend).await;
    let store = store_on(&db).await;
    let short = Policy {
        idle: Duration::from_millis(300),
        ..policy()
    };
    let live: Vec<StoreKey> = (0..3).map(|_| key()).collect();
    for k in &live {
        store
            .create(k, &record(Some("u")), &policy())
            .await
            .expect("create live");
    }
    for _ in 0..4 {
        store
            .create(&key(), &record(Some("u")), &short)
            .await
            .expect("create idle");
    }
    for _ in 0..2 {
        store
            .create(&key(), &dead_record(), &policy())
            .await
            .expect("create past deadline");
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store.delete_expired().await.expect("cleanup"),
        6,
        "4 idle + 2 past their deadline"
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM mooring_sessions").await, 3);
    for k in &live {
        assert!(
            store.load(k, &policy()).await.expect("load").is_some(),
            "a live session survives cleanup"
        );
    }
    assert_eq!(store.delete_expired().await.expect("cleanup again"), 0);
}

/// More expired rows than one batch holds are all deleted, batch by batch.
async fn cleanup_works_through_many_batches(backend: Backend) {
    let db = fresh(backend).await;
    let store = store_on(&db).await;
    let expired = 1234;
    // Insert in parallel streams to keep the test quick; each row is dead on arrival.
    let mut tasks = Vec::new();
    for stream in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in (stream..expired).step_by(4) {
                store
                    .create(&key(), &dead_record(), &policy())
                    .await
                    .expect("create expired");
            }
        }));
    }
    for task in tasks {
        task.await.expect("insert task");
    }
    let keep = key();
    store
        .create(&keep, &record(None), &policy())
        .await
        .expect("create live");
    assert_eq!(store.delete_expired().await.expect("cleanup"), expired as u64);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM mooring_sessions").await, 1);
}

/// `spawn_cleanup` deletes expired rows on its own and stops when aborted.
async fn spawned_cleanup_runs_in_the_background(backend: Backend) {
    let db = fresh(backend).await;
    let store = store_on(&db).await;
    let cleanup = store.spawn_cleanup(Duration::from_millis(50));
    for _ in 0..5 {
        store
            .create(&key(), &dead_record(), &policy())
            .await
            .expect("create expired");
    }
    let live = key();
    store
        .create(&live, &record(None), &policy())
        .await
        .expect("create live");
    let mut remaining = i64::MAX;
    for _ in 0..100 {
        remaining = count(&store, "SELECT COUNT(*) FROM mooring_sessions").await;
        if remaining == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(remaining, 1, "the background cleanup removes the expired rows");
    cleanup.abort();
    assert!(
        cleanup.await.is_err_and(|e| e.is_cancelled()),
        "the task stops when aborted"
    );
    assert!(store.load(&live, &policy()).await.expect("load").is_some());
}

/// A load within the touch granularity does not write: the stored expiry stays where it was.
async fn loads_skip_touches_within_the_granularity(backend: Backend) {
    let db = fresh(backend).await;
    let store = store_on(&db).await;
    let k = key();
    store.create(&k, &record(None), &policy()).await.expect("create");
    let before = stored_expiry(&store).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let loaded = store.load(&k, &policy()).await.expect("load").expect("live");
    assert_eq!(
        loaded.expires_at as i64, before,
        "the load reports the stored expiry it did not refresh"
    );
    assert_eq!(
        stored_expiry(&store).await,
        before,
        "no write within the granularity (60 s here)"
    );
    // Doubling the idle timeout moves the fresh expiry ten minutes past the stored one: that load writes.
    let longer = Policy {
        idle: Duration::from_secs(1200),
        ..policy()
    };
    let slid = store.load(&k, &longer).await.expect("load").expect("live");
    assert!(
        slid.expires_at as i64 > before,
        "an expiry older than the granularity is refreshed"
    );
    assert_eq!(stored_expiry(&store).await, slid.expires_at as i64);
    // Never backwards: a shorter idle timeout does not shorten a fresher stored expiry.
    let brisk = Policy {
        idle: Duration::from_secs(1),
        ..policy()
    };
    let after = store.load(&k, &brisk).await.expect("load").expect("live");
    assert_eq!(after.expires_at, slid.expires_at);
}

/// Many replicas creating the same key at once: exactly one wins, the others see a conflict.
async fn concurrent_creates_of_one_key_have_one_winner(backend: Backend) {
    let db = fresh(backend).await;
    let store = store_on(&db).await;
    let k = key();
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let (store, k) = (store.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            let mut r = record(None);
            r.attrs.insert("writer".into(), vec![i]);
            store.create(&k, &r, &policy()).await
        }));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => wins += 1,
            Err(Error::Conflict) => {}
            Err(e) => panic!("a losing create must be a conflict, got {e:?}"),
        }
    }
    assert_eq!(wins, 1);
}

/// A key whose row has expired (but not been cleaned up yet) can be created afresh, at version 1.
async fn create_replaces_an_expired_row(backend: Backend) {
    let db = fresh(backend).await;
    let store = store_on(&db).await;
    let k = key();
    store
        .create(&k, &dead_record(), &policy())
        .await
        .expect("create expired");
    assert_eq!(
        store.apply(&k, &set("a", b"1"), &policy()).await.expect("apply"),
        Applied::Missing
    );
    store
        .create(&k, &record(None), &policy())
        .await
        .expect("create over the expired row");
    let loaded = store.load(&k, &policy()).await.expect("load").expect("live");
    assert_eq!(loaded.version, 1);
    assert!(loaded.record.attrs.is_empty());
}

/// Keys differing only in case are different sessions (MySQL's default collation would fold them).
async fn keys_are_case_sensitive(backend: Backend) {
    let db = fresh(backend).await;
    let store = store_on(&db).await;
    let lower = StoreKey::from_stored("abcdefghijklmnopqrstuv");
    let upper = StoreKey::from_stored("ABCDEFGHIJKLMNOPQRSTUV");
    store
        .create(&lower, &record(Some("alice")), &policy())
        .await
        .expect("create lower");
    store
        .create(&upper, &record(Some("Alice")), &policy())
        .await
        .expect("create upper: a different key");
    assert_eq!(
        store.list_user("alice", 100).await.expect("list").len(),
        1,
        "user ids are compared exactly"
    );
    assert!(store.delete(&upper).await.expect("delete"));
    assert!(store.load(&lower, &policy()).await.expect("load").is_some());
}

/// `Dialect::sql` lets an application write one query with `?` for every backend, on the store's pool.
async fn dialect_rewrites_application_queries(backend: Backend) {
    let db = fresh(backend).await;
    let store = store_on(&db).await;
    let k = key();
    store
        .create(&k, &record(Some("bob")), &policy())
        .await
        .expect("create");
    let sql = store
        .dialect()
        .sql("SELECT COUNT(*) FROM mooring_sessions WHERE user_id = ? AND version = ?");
    let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql.into_owned()))
        .bind("bob")
        .bind(1i64)
        .fetch_one(store.pool())
        .await
        .expect("query");
    assert_eq!(n, 1);
    let expected = match backend {
        Backend::Sqlite => Dialect::Sqlite,
        Backend::Postgres => Dialect::Postgres,
        Backend::MySql => Dialect::MySql,
    };
    assert_eq!(store.dialect(), expected);
}

/// Two pools on one SQLite file (as two processes would have) writing the same session concurrently, each
/// to its own attributes: every write lands, none fails with "database is locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_share_one_sqlite_file() {
    let db = provision::sqlite().await;
    let (a, b) = (store_on(&db).await, store_on(&db).await);
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(a.pool())
        .await
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    let k = key();
    a.create(&k, &record(None), &policy()).await.expect("create");
    let rounds = 30u32;
    let mut tasks = Vec::new();
    for (w, store) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            for round in 1..=rounds {
                match store
                    .apply(&k, &set(&format!("w{w}"), &round.to_be_bytes()), &policy())
                    .await
                {
                    Ok(Applied::Saved { .. }) => {}
                    other => panic!("writer {w} round {round}: {other:?}"),
                }
                store.load(&k, &policy()).await.expect("load");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let loaded = b.load(&k, &policy()).await.expect("load").expect("live");
    for w in 0..4 {
        assert_eq!(
            loaded.record.attrs[&format!("w{w}")],
            rounds.to_be_bytes().to_vec(),
            "writer {w}"
        );
    }
    assert_eq!(loaded.version, 1 + 4 * u64::from(rounds));
}

/// Environment variables that turn [`sqlite_child_writer`] into a writer process for
/// [`several_processes_share_one_sqlite_file`]: the file URL, the session key, and the writer's name.
const CHILD_URL: &str = "MOORING_SQLITE_CHILD_URL";
const CHILD_KEY: &str = "MOORING_SQLITE_CHILD_KEY";
const CHILD_NAME: &str = "MOORING_SQLITE_CHILD_NAME";
const CHILD_ROUNDS: u32 = 30;

/// Real processes on one SQLite file: this test binary runs itself twice more as writers (see
/// [`sqlite_child_writer`]) while this process writes too, all to the same session, each to its own attribute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_share_one_sqlite_file() {
    let db = provision::sqlite().await;
    let store = store_on(&db).await;
    let k = key();
    store.create(&k, &record(None), &policy()).await.expect("create");
    let exe = std::env::current_exe().expect("test binary path");
    let children: Vec<_> = ["c1", "c2"]
        .into_iter()
        .map(|name| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "sqlite_child_writer",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env(CHILD_URL, &db.url)
                .env(CHILD_KEY, k.as_str())
                .env(CHILD_NAME, name)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn writer process")
        })
        .collect();
    for round in 1..=CHILD_ROUNDS {
        let saved = store
            .apply(&k, &set("parent", &round.to_be_bytes()), &policy())
            .await;
        assert!(
            matches!(saved, Ok(Applied::Saved { .. })),
            "parent round {round}: {saved:?}"
        );
    }
    for child in children {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .expect("join")
            .expect("writer process");
        assert!(
            out.status.success(),
            "writer process failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let loaded = store.load(&k, &policy()).await.expect("load").expect("live");
    for name in ["parent", "c1", "c2"] {
        assert_eq!(
            loaded.record.attrs.get(name),
            Some(&CHILD_ROUNDS.to_be_bytes().to_vec()),
            "{name}"
        );
    }
    assert_eq!(loaded.version, 1 + 3 * u64::from(CHILD_ROUNDS));
}

/// The writer half of [`several_processes_share_one_sqlite_file`]; does nothing when run on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_child_writer() {
    let (Ok(url), Ok(k), Ok(name)) = (
        std::env::var(CHILD_URL),
        std::env::var(CHILD_KEY),
        std::env::var(CHILD_NAME),
    ) else {
        return;
    };
    let store = SqlStore::connect(&url).await.expect("child connect");
    let k = StoreKey::from_stored(k);
    for round in 1..=CHILD_ROUNDS {
        let saved = store
            .apply(&k, &set(&name, &round.to_be_bytes()), &policy())
            .await;
        assert!(
            matches!(saved, Ok(Applied::Saved { .. })),
            "{name} round {round}: {saved:?}"
        );
        store.load(&k, &policy()).await.expect("child load");
    }
}

/// The SQLite file is created (with its directory's file) on first connect.
#[tokio::test]
async fn sqlite_file_is_created_if_missing() {
    let db = provision::sqlite().await;
    let path = db.path().expect("sqlite path");
    assert!(!path.exists());
    let store = store_on(&db).await;
    assert!(path.exists(), "connect creates {}", path.display());
    store.ping().await.expect("ping");
}

/// A PostgreSQL database taken away under a live store: every call fails with `Error::Store` (never a missing
/// session), within the pool's acquire timeout, and the store recovers when the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_an_honest_store_error() {
    let db = provision::postgres().await;
    let store = store_on(&db).await;
    let k = key();
    store
        .create(&k, &record(Some("carol")), &policy())
        .await
        .expect("create");
    provision::stop_postgres_db(&db).await;
    let started = std::time::Instant::now();
    match store.load(&k, &policy()).await {
        Err(e) if e.is_unavailable() => {}
        other => panic!("a load from a stopped database must be a store error, got {other:?}"),
    }
    match store.apply(&k, &set("a", b"1"), &policy()).await {
        Err(e) if e.is_unavailable() => {}
        other => panic!("an apply to a stopped database must be a store error, got {other:?}"),
    }
    assert!(store.ping().await.is_err(), "ping reports the outage");
    assert!(store.list_user("carol", 100).await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "failures are prompt: {:?}",
        started.elapsed()
    );
    provision::resume_postgres_db(&db).await;
    let mut recovered = None;
    for _ in 0..50 {
        if let Ok(Some(loaded)) = store.load(&k, &policy()).await {
            recovered = Some(loaded);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        recovered.map(|l| l.record.user),
        Some(Some("carol".to_owned())),
        "the store recovers"
    );
}

/// Stopping one test database leaves the others (and their stores) untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_one_postgres_db_leaves_others_alone() {
    let (stopped, other) = (provision::postgres().await, provision::postgres().await);
    let (a, b) = (store_on(&stopped).await, store_on(&other).await);
    provision::stop_postgres_db(&stopped).await;
    assert!(a.ping().await.is_err());
    b.ping().await.expect("the other database still answers");
    provision::resume_postgres_db(&stopped).await;
}

/// An unreachable server fails `connect` with a store error that converts into `Error::Store`.
#[tokio::test]
async fn unreachable_server_is_a_store_error() {
    // Port 1 on localhost: nothing listens there, so the connection is refused at once.
    let err = SqlStore::connect("postgres://nobody:secret@127.0.0.1:1/none")
        .await
        .expect_err("must fail");
    let err: Error = err.into();
    assert!(err.is_unavailable());
    assert!(
        !format!("{err}").contains("secret"),
        "no password in the error: {err}"
    );
}

/// A URL with an unknown scheme names the supported ones.
#[tokio::test]
async fn unsupported_scheme_is_explained() {
    let err = SqlStore::connect("redis://127.0.0.1:6380")
        .await
        .expect_err("must fail")
        .to_string();
    assert!(
        err.contains("sqlite://") && err.contains("postgres://") && err.contains("mysql://"),
        "{err}"
    );
}

/// The store is usable as a trait object, the way the engine holds it.
#[tokio::test]
async fn store_is_a_session_store_trait_object() {
    let db = provision::sqlite().await;
    let store: Arc<dyn SessionStore> = Arc::new(store_on(&db).await);
    store.ping().await.expect("ping");
}

/// An in-memory SQLite database keeps its data across calls (one connection, never recycled).
#[tokio::test]
async fn in_memory_sqlite_keeps_its_data() {
    let store = SqlStore::connect("sqlite::memory:").await.expect("connect");
    let k = key();
    store
        .create(&k, &record(Some("dora")), &policy())
        .await
        .expect("create");
    assert_eq!(
        store.apply(&k, &set("a", b"1"), &policy()).await.expect("apply"),
        Applied::Saved { version: 2 }
    );
    assert_eq!(store.list_user("dora", 100).await.expect("list").len(), 1);
    assert!(store.load(&k, &policy()).await.expect("load").is_some());
}
