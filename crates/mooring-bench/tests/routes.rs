//! The bench app answers its three routes against a real redis-server started on a free port.

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use mooring_bench::{BenchConfig, COOKIE};
use mooring_conformance::redis::Options;
use mooring_redis::Durability;
use tower::ServiceExt as _;

/// GETs `path` (with `cookie`, "name=value"), returning status, body and the session cookie it set.
async fn get(app: &Router, path: &str, cookie: Option<&str>) -> (StatusCode, String, Option<String>) {
    let mut request = Request::get(path);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let set_cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let body = to_bytes(response.into_body(), 1 << 16).await.expect("body");
    (status, String::from_utf8_lossy(&body).into_owned(), set_cookie)
}

#[tokio::test]
async fn routes_answer_like_the_peers() {
    let server = mooring_conformance::redis::standalone(Options::default()).await;
    let app = mooring_bench::app(&BenchConfig {
        redis_url: server.url(),
        durability: Durability::Async,
        app_key: mooring_bench::BENCH_APP_KEY.into(),
    })
    .await
    .expect("app");
    let mut conn = server.connect().await;

    assert_eq!(
        get(&app, "/plain", None).await,
        (StatusCode::OK, "ok".into(), None)
    );
    assert_eq!(get(&app, "/read", None).await, (StatusCode::OK, "0".into(), None));
    let keys: usize = redis::cmd("DBSIZE").query_async(&mut conn).await.expect("DBSIZE");
    assert_eq!(
        keys, 0,
        "neither /plain nor a /read without a session stores anything"
    );

    let (status, body, cookie) = get(&app, "/incr", None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "1"));
    let cookie = cookie.expect("a new session sets its cookie");
    assert!(cookie.starts_with(&format!("{COOKIE}=")), "{cookie}");

    assert_eq!(
        get(&app, "/incr", Some(&cookie)).await,
        (StatusCode::OK, "2".into(), None)
    );
    assert_eq!(
        get(&app, "/read", Some(&cookie)).await,
        (StatusCode::OK, "2".into(), None)
    );
    assert_eq!(
        get(&app, "/plain", Some(&cookie)).await,
        (StatusCode::OK, "ok".into(), None)
    );

    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert_eq!(keys.len(), 1, "one session, one key: {keys:?}");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .expect("TTL");
    assert!(ttl > 0, "the session key expires (TTL {ttl})");
}
