//! Bad input and failing stores get clean answers and lose nothing: garbled and forged cookies, a 100 KB
//! cookie header, a corrupt stored record, and the PostgreSQL session database stopped under running
//! requests. Never a 500, never a panic, never a replaced cookie, never an acknowledged write lost.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use mooring_conformance::provision;
use reqwest::StatusCode;
use sqlx::AssertSqlSafe;
use support::{Client, TestApp, email};

const PASSWORD: &str = "correct horse battery";

/// A signed-in client, its valid cookie, and its email.
async fn signed_in(app: &TestApp) -> (Client, String, String) {
    let mut c = app.client();
    let who = email("bad");
    c.register(&who, PASSWORD).await;
    let cookie = c.cookie.clone().expect("cookie");
    (c, cookie, who)
}

#[tokio::test]
async fn garbled_and_forged_cookies_get_clean_answers() {
    let app = TestApp::spawn(&[]).await;
    let (_, good, _) = signed_in(&app).await;
    let value = good.trim_start_matches("inventory_session=");
    let (id, mac) = value.split_once('.').expect("id.mac");
    let mut flipped_mac = mac.to_owned().into_bytes();
    flipped_mac[0] = if flipped_mac[0] == b'A' { b'B' } else { b'A' };
    let forged = [
        format!(
            "inventory_session={id}.{}",
            String::from_utf8(flipped_mac).expect("ascii")
        ),
        format!("inventory_session={id}"),
        format!("inventory_session=.{mac}"),
        "inventory_session=%00%ff%fe".to_owned(),
        "inventory_session===;;;===".to_owned(),
        format!("inventory_session={}", "Z".repeat(4000)),
        "inventory_session=\"quoted\"; other=1".to_owned(),
    ];
    let client = app.client();
    for cookie in &forged {
        for path in [
            "/",
            "/dashboard",
            "/items",
            "/sessions",
            "/session/values/x",
            "/readyz",
        ] {
            let page = client.get_with(path, &[("cookie", cookie)]).await;
            assert!(
                page.status.as_u16() < 500,
                "{path} with {cookie}: {}",
                page.status
            );
            assert!(
                page.set_cookie("inventory_session").is_none(),
                "{path} must not replace the cookie {cookie}"
            );
            if path == "/dashboard" {
                assert_eq!(
                    page.location(),
                    Some("/login"),
                    "a forged cookie is not signed in"
                );
            }
        }
    }
    assert!(
        app.state
            .sessions
            .stats()
            .cookies_rejected
            .load(Ordering::Relaxed)
            >= forged.len() as u64
    );
    // The real user was never disturbed.
    let page = client.get_with("/dashboard", &[("cookie", &good)]).await;
    assert_eq!(page.status, StatusCode::OK);
}

#[tokio::test]
async fn a_100_kb_cookie_header_gets_a_clean_4xx() {
    let app = TestApp::spawn(&[]).await;
    let (_, good, _) = signed_in(&app).await;
    let huge = format!("{good}; junk={}", "x".repeat(100 * 1024));
    let page = app.client().get_with("/dashboard", &[("cookie", &huge)]).await;
    assert_eq!(page.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(page.set_cookie("inventory_session").is_none());
    let page = app.client().get_with("/dashboard", &[("cookie", &good)]).await;
    assert_eq!(page.status, StatusCode::OK, "the session is intact");
}

#[tokio::test]
async fn a_corrupt_stored_record_reads_as_signed_out_and_is_counted() {
    let db = provision::sqlite().await;
    let app = TestApp::spawn(&[("DATABASE_URL", &db.url)]).await;
    let (mut c, _, who) = signed_in(&app).await;
    let pool = mooring_sql::connect(&db.url).await.expect("pool");
    let done = sqlx::query(AssertSqlSafe("UPDATE mooring_sessions SET data = X'DEADBEEF00'"))
        .execute(&pool)
        .await
        .expect("corrupt");
    assert!(done.rows_affected() >= 1);
    for path in ["/dashboard", "/session/values/x", "/"] {
        let page = c.get(path).await;
        assert!(page.status.as_u16() < 500, "{path}: {}", page.status);
    }
    assert_eq!(c.get("/dashboard").await.location(), Some("/login"));
    assert!(app.state.sessions.stats().loads_corrupt.load(Ordering::Relaxed) >= 1);
    // The user signs in again and carries on.
    assert_eq!(c.login(&who, PASSWORD).await.location(), Some("/dashboard"));
    assert_eq!(c.get("/dashboard").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_database_stopped_under_running_requests() {
    let sessions = provision::postgres().await;
    let app = TestApp::spawn(&[
        ("SESSION_DATABASE_URL", &sessions.url),
        ("SESSION_STORE_TIMEOUT_MS", "1000"),
    ])
    .await;
    let (mut c, cookie, _) = signed_in(&app).await;
    assert_eq!(
        c.put("/session/values/before", "kept").await.status,
        StatusCode::OK
    );

    // Writers run continuously while the database goes away and comes back.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let mut client = Client::new(&app.url);
            client.cookie = Some(cookie.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..60 {
                    let name = format!("w{w}-{i}");
                    let page = client.put(&format!("/session/values/{name}"), &name).await;
                    match page.status {
                        StatusCode::OK => acked.push(name.clone()),
                        StatusCode::SERVICE_UNAVAILABLE => {
                            assert_eq!(
                                page.headers.get("retry-after").map(|v| v.as_bytes()),
                                Some(&b"1"[..])
                            );
                            assert!(
                                !page.body.to_lowercase().contains("postgres"),
                                "no internal text: {}",
                                page.body
                            );
                        }
                        other => panic!("{name}: unexpected {other}: {}", page.body),
                    }
                    assert!(
                        page.set_cookie("inventory_session").is_none(),
                        "{name}: the cookie must not be replaced"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    provision::stop_postgres_db(&sessions).await;

    let mut probe = Client::new(&app.url);
    probe.cookie = Some(cookie.clone());
    let page = probe.get("/dashboard").await;
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a signed-in page waits for the store: {}",
        page.body
    );
    assert!(page.set_cookie("inventory_session").is_none());
    support::assert_readiness_drops_after(&Client::new(&app.url), Duration::from_millis(1000)).await;
    assert_eq!(
        probe.get("/healthz").await.status,
        StatusCode::OK,
        "liveness ignores the store"
    );

    provision::resume_postgres_db(&sessions).await;
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    assert!(!acked.is_empty());
    // Back up: still signed in, and every acknowledged write is there.
    let ready = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if probe.get("/readyz").await.status == StatusCode::OK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    ready.await.expect("ready again by itself");
    assert_eq!(
        c.get("/dashboard").await.status,
        StatusCode::OK,
        "nobody was logged out"
    );
    let lost: Vec<&String> = {
        let mut lost = Vec::new();
        for name in &acked {
            if c.get(&format!("/session/values/{name}")).await.json()["value"] != name.as_str() {
                lost.push(name);
            }
        }
        lost
    };
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert_eq!(c.get("/session/values/before").await.json()["value"], "kept");
    let errors = app.state.sessions.stats();
    assert!(errors.store_errors.load(Ordering::Relaxed) + errors.store_timeouts.load(Ordering::Relaxed) > 0);
}
