//! Two `inventory` processes (the real binary) on different ports sharing one store: a session started on one continues on the
//! other, and hundreds of interleaved requests of one session through both, each setting its own attribute,
//! lose nothing. Run against a shared SQLite file and against PostgreSQL and MariaDB.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use mooring_conformance::provision;
use reqwest::StatusCode;
use support::{APP_KEY, Client, Process};

/// The test is about lost updates, not latency: 16 writers of one session row through two processes retry
/// their compare-and-set on a loaded two-core CI machine for longer than the 2 s default.
const STORE_TIMEOUT_MS: &str = "15000";
/// Sixteen writers of one session retry their compare-and-set against each other; on a loaded machine one
/// `/session` has taken 29 s to win. The test is about losing nothing, so the request timeout (30 s by
/// default) is set out of its way.
const REQUEST_TIMEOUT_MS: &str = "300000";

/// Two processes on one database URL, each with its own DATA_DIR and the same APP_KEY, as replicas run.
async fn pair(database_url: &str) -> (Process, Process, [tempfile::TempDir; 2]) {
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let [a_dir, b_dir] = [&dirs[0], &dirs[1]].map(|d| d.path().to_str().expect("utf-8 path"));
    let a_vars = [
        ("DATABASE_URL", database_url),
        ("DATA_DIR", a_dir),
        ("APP_KEY", APP_KEY),
        ("INSTANCE_NAME", "inventory-a"),
        ("SESSION_STORE_TIMEOUT_MS", STORE_TIMEOUT_MS),
        ("HTTP_REQUEST_TIMEOUT_MS", REQUEST_TIMEOUT_MS),
    ];
    let b_vars = [
        ("DATABASE_URL", database_url),
        ("DATA_DIR", b_dir),
        ("APP_KEY", APP_KEY),
        ("INSTANCE_NAME", "inventory-b"),
        ("SESSION_STORE_TIMEOUT_MS", STORE_TIMEOUT_MS),
        ("HTTP_REQUEST_TIMEOUT_MS", REQUEST_TIMEOUT_MS),
    ];
    let (a, b) = tokio::join!(Process::spawn(&a_vars), Process::spawn(&b_vars));
    (a, b, dirs)
}

/// `/session` alternating between the instances: `hits` keeps counting, `served_by` alternates, and the
/// session fingerprint never changes.
async fn a_session_moves_between_instances(a: &Process, b: &Process) {
    let mut c = Client::new(&a.url);
    let mut fingerprint = None;
    for hit in 1..=10u64 {
        c.base = if hit % 2 == 1 {
            a.url.clone()
        } else {
            b.url.clone()
        };
        let page = c.get("/session").await;
        assert_eq!(page.status, StatusCode::OK);
        let json = page.json();
        assert_eq!(json["hits"], hit, "hit {hit}: {json}");
        assert_eq!(
            json["served_by"],
            if hit % 2 == 1 {
                "inventory-a"
            } else {
                "inventory-b"
            }
        );
        let fp = json["session"].as_str().expect("fingerprint").to_owned();
        assert_eq!(
            fingerprint.get_or_insert(fp.clone()),
            &fp,
            "one session throughout"
        );
    }
}

/// 400 requests of one session, 16 at a time, alternating instances: half set their own attribute, half count
/// a hit. Every attribute and every hit must be there afterwards.
async fn interleaved_writers_lose_nothing(a: &Process, b: &Process) {
    let mut c = Client::new(&a.url);
    assert_eq!(c.get("/session").await.json()["hits"], 1);
    let cookie = c.cookie.clone().expect("cookie");
    let semaphore = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    for i in 0..400u32 {
        let mut client = Client::new(if i % 2 == 0 { &a.url } else { &b.url });
        client.cookie = Some(cookie.clone());
        let permit = Arc::clone(&semaphore);
        tasks.push(tokio::spawn(async move {
            let _permit = permit.acquire_owned().await.expect("semaphore");
            let page = if i % 4 < 2 {
                client
                    .put(&format!("/session/values/w{i}"), &format!("value-{i}"))
                    .await
            } else {
                client.get("/session").await
            };
            assert_eq!(page.status, StatusCode::OK, "request {i}: {}", page.body);
            assert!(
                page.set_cookie("inventory_session").is_none(),
                "request {i} must keep the cookie"
            );
        }));
    }
    for task in tasks {
        task.await.expect("request task");
    }
    let mut missing = BTreeSet::new();
    for i in (0..400u32).filter(|i| i % 4 < 2) {
        let reader = if i % 3 == 0 { &b.url } else { &a.url };
        let mut r = Client::new(reader);
        r.cookie = Some(cookie.clone());
        let json = r.get(&format!("/session/values/w{i}")).await.json();
        if json["value"] != format!("value-{i}") {
            missing.insert(i);
        }
    }
    assert!(missing.is_empty(), "attributes lost: {missing:?}");
    let mut r = Client::new(&b.url);
    r.cookie = Some(cookie);
    assert_eq!(
        r.get("/session").await.json()["hits"],
        1 + 200 + 1,
        "every hit counted exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_shared_by_two_instances() {
    let db = provision::sqlite().await;
    let (a, b, _dirs) = pair(&db.url).await;
    a_session_moves_between_instances(&a, &b).await;
    interleaved_writers_lose_nothing(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_shared_by_two_instances() {
    let db = provision::postgres().await;
    let (a, b, _dirs) = pair(&db.url).await;
    a_session_moves_between_instances(&a, &b).await;
    interleaved_writers_lose_nothing(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_shared_by_two_instances() {
    let db = provision::mysql().await;
    let (a, b, _dirs) = pair(&db.url).await;
    a_session_moves_between_instances(&a, &b).await;
    interleaved_writers_lose_nothing(&a, &b).await;
}
