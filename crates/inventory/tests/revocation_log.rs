//! The revocation log through the real app on `SESSION_DRIVER=redis` (a real redis-server): a sign-out through
//! the HTTP routes writes the Redis key of the ended session to `mooring_revocations` in the app's own
//! database; `SESSION_REVOCATION_LOG=false` records nothing; and while that database is down a sign-out
//! answers 503 and the session stays in Redis.

mod support;

use std::collections::HashSet;

use mooring_conformance::provision;
use mooring_conformance::redis::{Options, RedisServer};
use reqwest::StatusCode;
use sqlx::AnyPool;
use support::{Client, TestApp, email};

const PASSWORD: &str = "correct horse battery";

/// The Redis keys holding a session (hashes; the user indexes are sorted sets).
async fn session_keys(server: &RedisServer) -> HashSet<String> {
    let mut conn = server.connect().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    let mut sessions = HashSet::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("TYPE");
        if kind == "hash" {
            sessions.insert(key);
        }
    }
    sessions
}

/// The keys in the app database's `mooring_revocations`; empty when the table does not even exist.
async fn revoked(pool: &AnyPool, dialect: mooring_sql::Dialect) -> HashSet<String> {
    let exists = match dialect {
        mooring_sql::Dialect::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'mooring_revocations'"
        }
        _ => "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'mooring_revocations'",
    };
    let tables: i64 = sqlx::query_scalar(exists)
        .fetch_one(pool)
        .await
        .expect("table lookup");
    if tables == 0 {
        return HashSet::new();
    }
    let keys: Vec<String> = sqlx::query_scalar(r#"SELECT "key" FROM mooring_revocations"#)
        .fetch_all(pool)
        .await
        .expect("read mooring_revocations");
    keys.into_iter().collect()
}

/// Signs out through the form in the page's header.
async fn sign_out(user: &mut Client) -> StatusCode {
    let csrf = user.get("/dashboard").await.csrf();
    user.post("/logout", &[("_csrf", &csrf)]).await.status
}

async fn spawn_app(server: &RedisServer, db: &provision::TestDb, log: &str) -> TestApp {
    TestApp::spawn(&[
        ("SESSION_DRIVER", "redis"),
        ("REDIS_URL", &server.url()),
        ("DATABASE_URL", &db.url),
        ("SESSION_REVOCATION_LOG", log),
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_out_records_the_redis_key_in_the_app_database() {
    let server = mooring_conformance::redis::standalone(Options::default()).await;
    let db = provision::sqlite().await;
    let app = spawn_app(&server, &db, "true").await;
    let mut user = app.client();
    user.register(&email("revoked"), PASSWORD).await;
    let old_cookie = user.cookie.clone();
    let signed_in = session_keys(&server).await;
    assert!(!signed_in.is_empty(), "the signed-in session lives in Redis");

    assert_eq!(sign_out(&mut user).await, StatusCode::SEE_OTHER);
    let ended: HashSet<String> = signed_in
        .difference(&session_keys(&server).await)
        .cloned()
        .collect();
    assert_eq!(ended.len(), 1, "the sign-out ended one session: {ended:?}");
    let pool = mooring_sql::connect(&db.url).await.expect("app database");
    let logged = revoked(&pool, mooring_sql::Dialect::Sqlite).await;
    assert!(
        ended.is_subset(&logged),
        "the ended session's Redis key {ended:?} is in mooring_revocations: {logged:?}"
    );
    let mut replay = app.client();
    replay.cookie = old_cookie;
    assert_eq!(
        replay.get("/dashboard").await.location(),
        Some("/login"),
        "the old cookie is signed out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_log_off_nothing_is_recorded() {
    let server = mooring_conformance::redis::standalone(Options::default()).await;
    let db = provision::sqlite().await;
    let app = spawn_app(&server, &db, "false").await;
    let mut user = app.client();
    user.register(&email("unlogged"), PASSWORD).await;
    let signed_in = session_keys(&server).await;
    assert_eq!(sign_out(&mut user).await, StatusCode::SEE_OTHER);
    assert!(
        !signed_in.is_subset(&session_keys(&server).await),
        "the sign-out did end the session"
    );
    let pool = mooring_sql::connect(&db.url).await.expect("app database");
    assert_eq!(
        revoked(&pool, mooring_sql::Dialect::Sqlite).await,
        HashSet::new(),
        "nothing is recorded with SESSION_REVOCATION_LOG=false"
    );
}

/// The app's database (PostgreSQL) goes offline: the sign-out cannot be logged, so it answers 503 and deletes
/// nothing; once the database is back the same sign-out works and is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_out_while_the_database_is_down_answers_503_and_deletes_nothing() {
    let server = mooring_conformance::redis::standalone(Options::default()).await;
    let db = provision::postgres().await;
    let app = spawn_app(&server, &db, "true").await;
    let mut user = app.client();
    user.register(&email("offline"), PASSWORD).await;
    let csrf = user.get("/dashboard").await.csrf();

    // The same setup without the log, to show the 503 comes from the log and nothing else.
    let unlogged = spawn_app(&server, &db, "false").await;
    let mut other = unlogged.client();
    other.register(&email("offline-unlogged"), PASSWORD).await;
    let other_csrf = other.get("/dashboard").await.csrf();

    provision::stop_postgres_db(&db).await;
    assert_eq!(
        other.post("/logout", &[("_csrf", &other_csrf)]).await.status,
        StatusCode::SEE_OTHER,
        "without the log a sign-out does not need the database"
    );
    let signed_in = session_keys(&server).await;
    let page = user.post("/logout", &[("_csrf", &csrf)]).await;
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a sign-out that cannot be logged is refused: {}",
        page.body
    );
    assert!(page.headers.contains_key("retry-after"), "with Retry-After");
    assert!(
        signed_in.is_subset(&session_keys(&server).await),
        "nothing was deleted from Redis"
    );

    provision::resume_postgres_db(&db).await;
    assert_eq!(
        user.post("/logout", &[("_csrf", &csrf)]).await.status,
        StatusCode::SEE_OTHER
    );
    let ended: HashSet<String> = signed_in
        .difference(&session_keys(&server).await)
        .cloned()
        .collect();
    assert_eq!(ended.len(), 1, "{ended:?}");
    let pool = mooring_sql::connect(&db.url).await.expect("app database");
    assert!(ended.is_subset(&revoked(&pool, mooring_sql::Dialect::Postgres).await));
}
