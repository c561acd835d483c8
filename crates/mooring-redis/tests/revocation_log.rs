//! `RedisStore::with_revocation_log` against a real redis-server: each way the store ends a record (delete,
//! `delete_user`, the per-user cap's eviction, a sign-out or user switch by delta) writes the session's Redis key
//! to the log first, a sign-in from anonymous writes nothing, and a log that cannot be written (its PostgreSQL
//! database taken offline) fails the call with nothing deleted. Logs: `MemoryRevocationLog`, and
//! `SqlRevocationLog` on SQLite and PostgreSQL.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use mooring::{
    Applied, Delta, MemoryRevocationLog, Policy, Record, RevocationLog, SessionId, SessionStore, StoreKey,
    now_ms,
};
use mooring_conformance::provision;
use mooring_conformance::redis::{Options, RedisServer};
use mooring_redis::{RedisConfig, RedisStore, Topology};
use mooring_sql::SqlRevocationLog;

const RETENTION: Duration = Duration::from_secs(3600);

/// A store on its own redis-server, writing to `log`.
async fn store_with(log: Option<Arc<dyn RevocationLog>>) -> (RedisServer, RedisStore) {
    let server = mooring_conformance::redis::standalone(Options::default()).await;
    let mut config = RedisConfig::new(Topology::Standalone { url: server.url() });
    config.prefix = "rv:".into();
    let store = RedisStore::connect(config).await.expect("connect");
    let store = match log {
        Some(log) => store.with_revocation_log(log),
        None => store,
    };
    (server, store)
}

fn policy(cap: Option<u32>) -> Policy {
    Policy {
        idle: Duration::from_secs(600),
        max_record_bytes: 64 * 1024,
        max_sessions_per_user: cap.and_then(NonZeroU32::new),
    }
}

fn key() -> StoreKey {
    SessionId::generate().store_key()
}

/// A record created `age_ms` ago (its deadline orders it in the user index: older is lower).
fn record(user: Option<&str>, age_ms: u64) -> Record {
    let created = now_ms() - age_ms;
    let mut record = Record {
        created_at: created,
        deadline: created + 3_600_000,
        user: user.map(str::to_owned),
        ..Record::default()
    };
    record.attrs.insert("n".into(), vec![1]);
    record
}

fn user_delta(user: Option<&str>) -> Delta {
    Delta {
        user: Some(user.map(str::to_owned)),
        ..Delta::default()
    }
}

/// Which of the Redis keys of `keys` the log holds.
async fn logged(log: &dyn RevocationLog, store: &RedisStore, keys: &[&StoreKey]) -> HashSet<String> {
    let names: Vec<String> = keys.iter().map(|k| store.session_key(k)).collect();
    log.find(&names).await.expect("find")
}

fn names(store: &RedisStore, keys: &[&StoreKey]) -> HashSet<String> {
    keys.iter().map(|k| store.session_key(k)).collect()
}

async fn exists(server: &RedisServer, store: &RedisStore, key: &StoreKey) -> bool {
    let mut conn = server.connect().await;
    let n: i64 = redis::cmd("EXISTS")
        .arg(store.session_key(key))
        .query_async(&mut conn)
        .await
        .expect("EXISTS");
    n == 1
}

/// `delete` records the Redis key before the hash goes; the key is exactly the one `moor backup` files hold.
async fn delete_records_the_redis_key(log: Arc<dyn RevocationLog>) {
    let (server, store) = store_with(Some(Arc::clone(&log))).await;
    let (signed_in, anonymous, bystander) = (key(), key(), key());
    store
        .create(&signed_in, &record(Some("ada"), 0), &policy(None))
        .await
        .expect("create");
    store
        .create(&anonymous, &record(None, 0), &policy(None))
        .await
        .expect("create");
    store
        .create(&bystander, &record(Some("ada"), 0), &policy(None))
        .await
        .expect("create");
    assert!(store.delete(&signed_in).await.expect("delete"));
    assert!(store.delete(&anonymous).await.expect("delete"));
    assert!(!exists(&server, &store, &signed_in).await);
    let all = [&signed_in, &anonymous, &bystander];
    assert_eq!(
        logged(&*log, &store, &all).await,
        names(&store, &[&signed_in, &anonymous]),
        "both deleted sessions are in the log, the live one is not"
    );
    assert!(
        store.session_key(&signed_in).starts_with("rv:"),
        "the log holds the prefixed Redis key"
    );
}

/// `delete_user` records every session of the user but the one kept, beyond one batch of 500.
async fn delete_user_records_every_ended_session(log: Arc<dyn RevocationLog>) {
    let (server, store) = store_with(Some(Arc::clone(&log))).await;
    let sessions: Vec<StoreKey> = (0..520).map(|_| key()).collect();
    for (i, k) in sessions.iter().enumerate() {
        store
            .create(k, &record(Some("grace"), 1000 + i as u64), &policy(None))
            .await
            .expect("create");
    }
    let other = key();
    store
        .create(&other, &record(Some("linus"), 0), &policy(None))
        .await
        .expect("create");
    let keep = &sessions[7];
    assert_eq!(
        store.delete_user("grace", Some(keep)).await.expect("delete_user"),
        519
    );
    let ended: Vec<&StoreKey> = sessions.iter().filter(|k| *k != keep).collect();
    let mut found = HashSet::new();
    for batch in ended.chunks(mooring::revocation::MAX_BATCH) {
        found.extend(logged(&*log, &store, batch).await);
    }
    assert_eq!(found, names(&store, &ended), "all 519 ended sessions are logged");
    assert!(
        logged(&*log, &store, &[keep, &other]).await.is_empty(),
        "the kept session and another user's are not"
    );
    assert!(exists(&server, &store, keep).await);
}

/// The per-user cap's eviction records the evicted sessions, not the one signing in nor those it keeps.
async fn eviction_records_the_evicted_sessions(log: Arc<dyn RevocationLog>) {
    let (_server, store) = store_with(Some(Arc::clone(&log))).await;
    let cap = policy(Some(2));
    let (oldest, older, newer) = (key(), key(), key());
    for (k, age) in [(&oldest, 30_000), (&older, 20_000), (&newer, 10_000)] {
        store
            .create(k, &record(Some("hopper"), age), &policy(None))
            .await
            .expect("create");
    }
    let signing_in = key();
    store
        .create(&signing_in, &record(Some("hopper"), 0), &cap)
        .await
        .expect("create beyond the cap");
    assert_eq!(store.count_user("hopper").await.expect("count"), 2);
    assert_eq!(
        logged(&*log, &store, &[&oldest, &older, &newer, &signing_in]).await,
        names(&store, &[&oldest, &older]),
        "the two oldest were evicted and logged"
    );
}

/// A delta that signs out or switches the user records the key; a sign-in from anonymous and a delta that keeps
/// the user record nothing.
async fn sign_out_and_switch_record_the_key(log: Arc<dyn RevocationLog>) {
    let (server, store) = store_with(Some(Arc::clone(&log))).await;
    let p = policy(None);
    let (signs_in, signs_out, switches, keeps) = (key(), key(), key(), key());
    store
        .create(&signs_in, &record(None, 0), &p)
        .await
        .expect("create");
    for k in [&signs_out, &switches, &keeps] {
        store
            .create(k, &record(Some("ken"), 0), &p)
            .await
            .expect("create");
    }
    let saved = |applied: Applied| assert!(matches!(applied, Applied::Saved { .. }), "{applied:?}");
    saved(
        store
            .apply(&signs_in, &user_delta(Some("ken")), &p)
            .await
            .expect("sign in"),
    );
    saved(
        store
            .apply(&signs_out, &user_delta(None), &p)
            .await
            .expect("sign out"),
    );
    saved(
        store
            .apply(&switches, &user_delta(Some("dmr")), &p)
            .await
            .expect("switch"),
    );
    saved(
        store
            .apply(&keeps, &user_delta(Some("ken")), &p)
            .await
            .expect("same user"),
    );
    assert_eq!(
        logged(&*log, &store, &[&signs_in, &signs_out, &switches, &keeps]).await,
        names(&store, &[&signs_out, &switches]),
        "only the sign-out and the switch ended a signed-in version"
    );
    assert!(
        exists(&server, &store, &signs_out).await,
        "a sign-out by delta keeps the (now anonymous) record"
    );
    saved(
        store
            .apply(&signs_out, &user_delta(None), &p)
            .await
            .expect("sign out again"),
    );
}

/// One test per path for a log; `$log` yields `(guard, Arc<dyn RevocationLog>)` and is evaluated per test.
macro_rules! paths {
    ($log:expr) => {
        paths!(@cases $log; delete_records_the_redis_key, delete_user_records_every_ended_session,
            eviction_records_the_evicted_sessions, sign_out_and_switch_record_the_key);
    };
    (@cases $log:expr; $($case:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (_guard, log) = $log;
                super::$case(log).await;
            }
        )+
    };
}

mod memory {
    use super::*;

    paths!((
        (),
        Arc::new(MemoryRevocationLog::new(RETENTION)) as Arc<dyn RevocationLog>
    ));
}

mod sqlite {
    use super::*;

    /// A log on a fresh SQLite file in a temporary directory, kept alive by the returned guard.
    async fn log() -> (provision::TestDb, Arc<dyn RevocationLog>) {
        let db = provision::sqlite().await;
        let log = SqlRevocationLog::connect(&db.url, RETENTION)
            .await
            .expect("SqlRevocationLog on SQLite");
        (db, Arc::new(log))
    }

    paths!(log().await);
}

/// Without a log the store ends records as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_log_nothing_changes() {
    let (server, store) = store_with(None).await;
    assert!(store.revocation_log().is_none());
    let k = key();
    store
        .create(&k, &record(Some("ada"), 0), &policy(None))
        .await
        .expect("create");
    store
        .apply(&k, &user_delta(None), &policy(None))
        .await
        .expect("sign out");
    assert!(store.delete(&k).await.expect("delete"));
    assert!(!exists(&server, &store, &k).await);
}

/// A log that cannot be written (its PostgreSQL database offline) fails `delete`, `delete_user` and a sign-in
/// beyond the cap with a store error, and the hashes stay in Redis; once the database is back the same calls
/// work and are logged. A sign-out by delta reports the error too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_written_fails_the_call_and_deletes_nothing() {
    let db = provision::postgres().await;
    let log = SqlRevocationLog::connect(&db.url, RETENTION)
        .await
        .expect("SqlRevocationLog on PostgreSQL");
    let log: Arc<dyn RevocationLog> = Arc::new(log);
    let (server, store) = store_with(Some(Arc::clone(&log))).await;
    let p = policy(None);
    let (doomed, sibling, signing_out) = (key(), key(), key());
    for (k, age) in [(&doomed, 20_000), (&sibling, 10_000), (&signing_out, 5_000)] {
        store
            .create(k, &record(Some("barbara"), age), &p)
            .await
            .expect("create");
    }

    provision::stop_postgres_db(&db).await;
    let err = store.delete(&doomed).await.expect_err("delete must fail");
    assert!(matches!(err, mooring::Error::Store(_)), "{err:?}");
    assert!(exists(&server, &store, &doomed).await, "the hash stays in Redis");
    let err = store
        .delete_user("barbara", Some(&signing_out))
        .await
        .expect_err("delete_user must fail");
    assert!(matches!(err, mooring::Error::Store(_)), "{err:?}");
    assert!(exists(&server, &store, &doomed).await);
    assert!(exists(&server, &store, &sibling).await);
    let capped = key();
    let err = store
        .create(&capped, &record(Some("barbara"), 0), &policy(Some(1)))
        .await
        .expect_err("an eviction must fail");
    assert!(matches!(err, mooring::Error::Store(_)), "{err:?}");
    for k in [&doomed, &sibling, &signing_out] {
        assert!(exists(&server, &store, k).await, "nothing was evicted");
    }
    let err = store
        .apply(&signing_out, &user_delta(None), &p)
        .await
        .expect_err("a sign-out by delta reports the log's failure");
    assert!(matches!(err, mooring::Error::Store(_)), "{err:?}");

    provision::resume_postgres_db(&db).await;
    assert!(store.delete(&doomed).await.expect("delete once the log is back"));
    assert!(!exists(&server, &store, &doomed).await);
    assert_eq!(
        logged(&*log, &store, &[&doomed, &sibling]).await,
        names(&store, &[&doomed]),
        "logged once the database is back"
    );
}
