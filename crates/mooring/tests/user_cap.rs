//! The per-user session cap and the bounded user index through the engine (axum router, memory store): a
//! sign-in beyond the cap signs the oldest session out, an id rotation of a signed-in session evicts nobody,
//! 0 removes the cap, and counting and listing stay within it.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use http::{Request, StatusCode, header};
use mooring::{Error, Keys, MemoryStore, Session, SessionConfig, SessionManager};
use tower::ServiceExt;

const SECRET: &[u8] = b"user cap test secret, at least 32 bytes";

fn app(config: SessionConfig) -> Router {
    let keys = Keys::new(SECRET, &[]).expect("keys");
    let manager = SessionManager::new(Arc::new(MemoryStore::new()), keys, config.with_cookie_name("sid"));
    Router::new()
        .route(
            "/login/{user}",
            get(|s: Session, Path(user): Path<String>| async move {
                s.set_user(Some(&user)).await?;
                s.regenerate().await?;
                Ok::<_, Error>("in")
            }),
        )
        .route(
            "/rotate",
            get(|s: Session| async move {
                s.regenerate().await?;
                Ok::<_, Error>("rotated")
            }),
        )
        .route(
            "/whoami",
            get(|s: Session| async move { Ok::<_, Error>(s.user().await?.unwrap_or_default()) }),
        )
        .route(
            "/count",
            get(|s: Session| async move { Ok::<_, Error>(s.user_session_count().await?.to_string()) }),
        )
        .route(
            "/listed",
            get(|s: Session| async move { Ok::<_, Error>(s.user_sessions().await?.len().to_string()) }),
        )
        .layer(manager.layer())
}

/// Sends a GET; returns the body and the new cookie pair, if one was set.
async fn get_with(app: &Router, uri: &str, cookie: Option<&str>) -> (String, Option<String>) {
    let mut req = Request::get(uri);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    assert_eq!(res.status(), StatusCode::OK, "{uri}");
    let cookie = res
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .expect("body");
    (String::from_utf8(body.to_vec()).expect("utf-8"), cookie)
}

/// Signs `user` in from a new client; returns its cookie. Sign-ins are a few milliseconds apart, so their
/// creation times (and deadlines) order them.
async fn sign_in(app: &Router, user: &str) -> String {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (_, cookie) = get_with(app, &format!("/login/{user}"), None).await;
    cookie.expect("a signed-in session gets a cookie")
}

async fn whoami(app: &Router, cookie: &str) -> String {
    get_with(app, "/whoami", Some(cookie)).await.0
}

#[tokio::test]
async fn a_sign_in_beyond_the_cap_signs_the_oldest_session_out() {
    let app = app(SessionConfig::default().with_max_sessions_per_user(3));
    let mut cookies = Vec::new();
    for _ in 0..4 {
        cookies.push(sign_in(&app, "ada").await);
    }
    let other = sign_in(&app, "grace").await;
    assert_eq!(
        whoami(&app, &cookies[0]).await,
        "",
        "the oldest session was signed out"
    );
    for cookie in &cookies[1..] {
        assert_eq!(
            whoami(&app, cookie).await,
            "ada",
            "the three newest stay signed in"
        );
    }
    assert_eq!(get_with(&app, "/count", Some(&cookies[3])).await.0, "3");
    assert_eq!(get_with(&app, "/listed", Some(&cookies[3])).await.0, "3");
    assert_eq!(whoami(&app, &other).await, "grace", "another user is untouched");
    assert_eq!(get_with(&app, "/count", Some(&other)).await.0, "1");
}

#[tokio::test]
async fn rotating_a_signed_in_session_at_the_cap_evicts_nobody() {
    let app = app(SessionConfig::default().with_max_sessions_per_user(2));
    let first = sign_in(&app, "ada").await;
    let second = sign_in(&app, "ada").await;
    let (_, rotated) = get_with(&app, "/rotate", Some(&second)).await;
    let rotated = rotated.expect("rotation sets a new cookie");
    assert_eq!(whoami(&app, &second).await, "", "the old id is retired");
    assert_eq!(whoami(&app, &rotated).await, "ada");
    assert_eq!(
        whoami(&app, &first).await,
        "ada",
        "the rotated session replaces its old record: no other session is evicted"
    );
    assert_eq!(get_with(&app, "/count", Some(&rotated)).await.0, "2");
}

#[tokio::test]
async fn zero_removes_the_cap() {
    let app = app(SessionConfig::default().with_max_sessions_per_user(0));
    let mut cookies = Vec::new();
    for _ in 0..25 {
        cookies.push(sign_in(&app, "ada").await);
    }
    assert_eq!(whoami(&app, &cookies[0]).await, "ada");
    assert_eq!(get_with(&app, "/count", Some(&cookies[24])).await.0, "25");
    assert_eq!(get_with(&app, "/listed", Some(&cookies[24])).await.0, "25");
}

#[tokio::test]
async fn the_default_cap_is_twenty_and_signed_out_visitors_count_nothing() {
    assert_eq!(
        SessionConfig::default().max_sessions_per_user().map(|n| n.get()),
        Some(20)
    );
    let app = app(SessionConfig::default());
    let mut cookies = Vec::new();
    for _ in 0..21 {
        cookies.push(sign_in(&app, "ada").await);
    }
    assert_eq!(whoami(&app, &cookies[0]).await, "");
    assert_eq!(whoami(&app, &cookies[1]).await, "ada");
    assert_eq!(get_with(&app, "/count", Some(&cookies[20])).await.0, "20");
    assert_eq!(get_with(&app, "/count", None).await.0, "0");
    assert_eq!(get_with(&app, "/listed", None).await.0, "0");
}
