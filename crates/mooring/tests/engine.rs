//! The engine end to end through an axum router, over the memory store wrapped in a switch that can take it
//! "down" (fault injection for the engine's own semantics; real stores are tested by the conformance suite
//! and the inventory tests, which stop a real PostgreSQL database).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use http::{Request, Response, StatusCode, header};
use mooring::{
    Applied, Delta, Error, Keys, Loaded, MemoryStore, Policy, Record, Session, SessionConfig, SessionManager,
    SessionStore, StoreKey,
};
use tokio::sync::Notify;
use tower::ServiceExt;

/// The memory store behind a switch, counting calls.
#[derive(Default)]
struct Switch {
    inner: MemoryStore,
    down: AtomicBool,
    calls: AtomicU64,
}

impl Switch {
    fn check(&self) -> mooring::Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::store(std::io::Error::other(
                "connection refused (store down)",
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl SessionStore for Switch {
    async fn load(&self, key: &StoreKey, policy: &Policy) -> mooring::Result<Option<Loaded>> {
        self.check()?;
        self.inner.load(key, policy).await
    }
    async fn create(&self, key: &StoreKey, record: &Record, policy: &Policy) -> mooring::Result<()> {
        self.check()?;
        self.inner.create(key, record, policy).await
    }
    async fn apply(&self, key: &StoreKey, delta: &Delta, policy: &Policy) -> mooring::Result<Applied> {
        self.check()?;
        self.inner.apply(key, delta, policy).await
    }
    async fn delete(&self, key: &StoreKey) -> mooring::Result<bool> {
        self.check()?;
        self.inner.delete(key).await
    }
    async fn list_user(&self, user: &str, limit: usize) -> mooring::Result<Vec<(StoreKey, Loaded)>> {
        self.check()?;
        self.inner.list_user(user, limit).await
    }
    async fn count_user(&self, user: &str) -> mooring::Result<u64> {
        self.check()?;
        self.inner.count_user(user).await
    }
    async fn delete_user(&self, user: &str, keep: Option<&StoreKey>) -> mooring::Result<u64> {
        self.check()?;
        self.inner.delete_user(user, keep).await
    }
    async fn ping(&self) -> mooring::Result<()> {
        self.check()
    }
}

const SECRET: &[u8] = b"test secret that is at least 32 bytes long";

struct Fixture {
    store: Arc<Switch>,
    manager: SessionManager,
    app: Router,
    pause: Arc<Pause>,
}

/// Lets a test stop a handler between its load and its write.
#[derive(Default)]
struct Pause {
    reached: Notify,
    resume: Notify,
}

fn fixture_with(keys: Keys, config: SessionConfig) -> Fixture {
    let store = Arc::new(Switch::default());
    let manager = SessionManager::new(store.clone(), keys, config);
    let pause = Arc::new(Pause::default());
    let app = Router::new()
        .route("/plain", get(|| async { "plain" }))
        .route(
            "/incr",
            get(|s: Session| async move {
                let n: u64 = s.get("n").await?.unwrap_or(0) + 1;
                s.insert("n", &n).await?;
                Ok::<_, Error>(n.to_string())
            }),
        )
        .route(
            "/read",
            get(|s: Session| async move { Ok::<_, Error>(s.get::<u64>("n").await?.unwrap_or(0).to_string()) }),
        )
        .route(
            "/set/{name}/{value}",
            get(|s: Session, axum::extract::Path((name, value)): axum::extract::Path<(String, String)>| async move {
                s.insert(&name, &value).await?;
                Ok::<_, Error>("ok")
            }),
        )
        .route(
            "/get/{name}",
            get(|s: Session, axum::extract::Path(name): axum::extract::Path<String>| async move {
                Ok::<_, Error>(s.get::<String>(&name).await?.unwrap_or_default())
            }),
        )
        .route(
            "/hits",
            get(|s: Session| async move {
                loop {
                    let n: u64 = s.get("hits").await?.unwrap_or(0) + 1;
                    s.insert("hits", &n).await?;
                    match s.save_if_unchanged().await {
                        Ok(()) => return Ok::<_, Error>(n.to_string()),
                        Err(Error::Conflict) => s.reload().await,
                        Err(e) => return Err(e),
                    }
                }
            }),
        )
        .route(
            "/paused-write",
            get(|State(pause): State<Arc<Pause>>, s: Session| async move {
                let n: u64 = s.get("n").await?.unwrap_or(0);
                pause.reached.notify_one();
                pause.resume.notified().await;
                s.insert("n", &(n + 100)).await?;
                Ok::<_, Error>("written")
            }),
        )
        .route(
            "/login",
            get(|s: Session| async move {
                s.set_user(Some("ada")).await?;
                s.regenerate().await?;
                Ok::<_, Error>("in")
            }),
        )
        .route(
            "/logout",
            get(|s: Session| async move {
                s.invalidate().await;
                s.flash("signed out").await?;
                Ok::<_, Error>("out")
            }),
        )
        .route(
            "/flash",
            get(|s: Session| async move {
                s.flash("hello").await?;
                Ok::<_, Error>("set")
            }),
        )
        .route("/flashes", get(|s: Session| async move { Ok::<_, Error>(s.take_flashes().await?.join(",")) }))
        .route(
            // What a page with a form does: a token to embed, and the messages to show.
            "/form",
            get(|s: Session| async move {
                let token = s.csrf_token().await?;
                let flashes = s.take_flashes().await?.join(",");
                Ok::<_, Error>(format!("{token}|{flashes}"))
            }),
        )
        .route(
            // A form that fails (a wrong password): checks the token, then says so in a flash message.
            "/submit",
            axum::routing::post(|s: Session, token: String| async move {
                if !s.verify_csrf(&token).await? {
                    return Ok::<_, Error>((StatusCode::FORBIDDEN, "bad token"));
                }
                s.flash("wrong password").await?;
                Ok((StatusCode::SEE_OTHER, "again"))
            }),
        )
        .with_state(pause.clone())
        .layer(manager.layer());
    Fixture {
        store,
        manager,
        app,
        pause,
    }
}

fn fixture() -> Fixture {
    fixture_with(
        Keys::new(SECRET, &[]).expect("keys"),
        SessionConfig::default().with_cookie_name("sid"),
    )
}

async fn post(app: &Router, uri: &str, cookie: Option<&str>, body: &str) -> Response<Body> {
    let mut req = Request::post(uri);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    app.clone()
        .oneshot(req.body(Body::from(body.to_owned())).expect("request"))
        .await
        .expect("infallible")
}

async fn send(app: &Router, uri: &str, cookie: Option<&str>) -> Response<Body> {
    let mut req = Request::get(uri);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    app.clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("infallible")
}

fn set_cookie(res: &Response<Body>) -> Option<String> {
    res.headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().expect("ascii").to_owned())
}

/// The `name=value` pair of a Set-Cookie header.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().expect("pair").to_owned()
}

async fn body(res: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("body");
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

#[tokio::test]
async fn untouched_sessions_cost_no_store_call() {
    let f = fixture();
    let res = send(&f.app, "/plain", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(set_cookie(&res), None);
    // A read of a session that does not exist creates nothing either.
    let res = send(&f.app, "/read", None).await;
    assert_eq!(body(res).await, "0");
    assert_eq!(
        f.store.calls.load(Ordering::SeqCst),
        0,
        "no cookie, nothing to load, nothing to save"
    );
    // With a cookie but a route that never touches the session: still no call.
    let cookie = pair(&set_cookie(&send(&f.app, "/incr", None).await).expect("cookie"));
    let before = f.store.calls.load(Ordering::SeqCst);
    send(&f.app, "/plain", Some(&cookie)).await;
    assert_eq!(f.store.calls.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn a_session_round_trips_with_one_call_per_read() {
    let f = fixture();
    let res = send(&f.app, "/incr", None).await;
    let cookie = set_cookie(&res).expect("new session sets a cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Secure"));
    assert!(cookie.contains("Path=/") && cookie.contains("Max-Age="));
    let cookie = pair(&cookie);
    assert_eq!(body(res).await, "1");
    let res = send(&f.app, "/incr", Some(&cookie)).await;
    assert_eq!(set_cookie(&res), None, "an existing session keeps its cookie");
    assert_eq!(body(res).await, "2");
    let before = f.store.calls.load(Ordering::SeqCst);
    assert_eq!(body(send(&f.app, "/read", Some(&cookie)).await).await, "2");
    assert_eq!(
        f.store.calls.load(Ordering::SeqCst) - before,
        1,
        "a read is one store call"
    );
    let before = f.store.calls.load(Ordering::SeqCst);
    send(&f.app, "/incr", Some(&cookie)).await;
    assert_eq!(
        f.store.calls.load(Ordering::SeqCst) - before,
        2,
        "a read-modify-write is two"
    );
}

#[tokio::test]
async fn forged_and_garbled_cookies_never_reach_the_store() {
    let f = fixture();
    let good = pair(&set_cookie(&send(&f.app, "/incr", None).await).expect("cookie"));
    let id = good
        .trim_start_matches("sid=")
        .split('.')
        .next()
        .expect("id")
        .to_owned();
    let before = f.store.calls.load(Ordering::SeqCst);
    for bad in [
        format!("sid={id}.AAAAAAAAAAAAAAAAAAAAAA"),
        format!("sid={id}"),
        "sid=garbage".to_owned(),
        "sid=".to_owned(),
        "sid=%%%;;;==".to_owned(),
        format!("sid={}", "A".repeat(3000)),
    ] {
        let res = send(&f.app, "/read", Some(&bad)).await;
        assert_eq!(res.status(), StatusCode::OK, "{bad}");
        assert_eq!(
            set_cookie(&res),
            None,
            "a read must not replace the client's cookie: {bad}"
        );
        assert_eq!(body(res).await, "0");
    }
    assert_eq!(
        f.store.calls.load(Ordering::SeqCst),
        before,
        "no lookup for a cookie whose MAC fails"
    );
    assert_eq!(f.manager.stats().cookies_rejected.load(Ordering::Relaxed), 6);
    // Another cookie beside ours does not disturb it.
    assert_eq!(
        body(send(&f.app, "/read", Some(&format!("other=1; {good}; x=y"))).await).await,
        "1"
    );
}

#[tokio::test]
async fn an_oversized_cookie_header_gets_431() {
    let f = fixture();
    let huge = format!("junk={}", "x".repeat(100 * 1024));
    let res = send(&f.app, "/read", Some(&huge)).await;
    assert_eq!(res.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(set_cookie(&res), None);
    assert_eq!(f.store.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_store_down_at_load_gives_503_and_keeps_the_cookie() {
    let f = fixture();
    let cookie = pair(&set_cookie(&send(&f.app, "/incr", None).await).expect("cookie"));
    f.store.down.store(true, Ordering::SeqCst);
    for uri in ["/read", "/incr"] {
        let res = send(&f.app, uri, Some(&cookie)).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert_eq!(
            res.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        assert_eq!(
            set_cookie(&res),
            None,
            "never a new session while the store is down"
        );
        let text = body(res).await;
        assert!(
            !text.contains("refused"),
            "no internal detail in the response: {text}"
        );
    }
    f.store.down.store(false, Ordering::SeqCst);
    assert_eq!(
        body(send(&f.app, "/incr", Some(&cookie)).await).await,
        "2",
        "the session survived the outage"
    );
}

#[tokio::test]
async fn a_store_that_fails_mid_request_gives_503_and_loses_nothing() {
    let f = fixture();
    let cookie = pair(&set_cookie(&send(&f.app, "/incr", None).await).expect("cookie"));
    let app = f.app.clone();
    let c = cookie.clone();
    let request = tokio::spawn(async move { send(&app, "/paused-write", Some(&c)).await });
    f.pause.reached.notified().await;
    f.store.down.store(true, Ordering::SeqCst);
    f.pause.resume.notify_one();
    let res = request.await.expect("request task");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(set_cookie(&res), None);
    f.store.down.store(false, Ordering::SeqCst);
    assert_eq!(
        body(send(&f.app, "/read", Some(&cookie)).await).await,
        "1",
        "the unsaved write was not reported"
    );
}

#[tokio::test]
async fn a_slow_store_times_out_into_503() {
    struct Slow;
    #[async_trait]
    impl SessionStore for Slow {
        async fn load(&self, _: &StoreKey, _: &Policy) -> mooring::Result<Option<Loaded>> {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(None)
        }
        async fn create(&self, _: &StoreKey, _: &Record, _: &Policy) -> mooring::Result<()> {
            Ok(())
        }
        async fn apply(&self, _: &StoreKey, _: &Delta, _: &Policy) -> mooring::Result<Applied> {
            Ok(Applied::Missing)
        }
        async fn delete(&self, _: &StoreKey) -> mooring::Result<bool> {
            Ok(false)
        }
        async fn list_user(&self, _: &str, _: usize) -> mooring::Result<Vec<(StoreKey, Loaded)>> {
            Ok(Vec::new())
        }
        async fn count_user(&self, _: &str) -> mooring::Result<u64> {
            Ok(0)
        }
        async fn delete_user(&self, _: &str, _: Option<&StoreKey>) -> mooring::Result<u64> {
            Ok(0)
        }
        async fn ping(&self) -> mooring::Result<()> {
            Ok(())
        }
    }
    let keys = Keys::new(SECRET, &[]).expect("keys");
    let config = SessionConfig::default()
        .with_cookie_name("sid")
        .with_store_timeout(Duration::from_millis(200));
    let manager = SessionManager::new(Arc::new(Slow), keys.clone(), config.clone());
    let app = Router::new()
        .route(
            "/read",
            get(
                |s: Session| async move { Ok::<_, Error>(s.get::<u64>("n").await?.unwrap_or(0).to_string()) },
            ),
        )
        .layer(manager.layer());
    // A cookie signed with the same keys by another manager.
    let other = fixture_with(keys, config);
    let cookie = pair(&set_cookie(&send(&other.app, "/incr", None).await).expect("cookie"));
    let started = std::time::Instant::now();
    let res = send(&app, "/read", Some(&cookie)).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(manager.stats().store_timeouts.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn login_rotates_the_id_and_the_old_one_is_dead() {
    let f = fixture();
    let before = pair(&set_cookie(&send(&f.app, "/incr", None).await).expect("cookie"));
    let res = send(&f.app, "/login", Some(&before)).await;
    let after = pair(&set_cookie(&res).expect("rotation sets a new cookie"));
    assert_ne!(before, after);
    assert_eq!(
        body(send(&f.app, "/read", Some(&after)).await).await,
        "1",
        "data moves to the new id"
    );
    let res = send(&f.app, "/read", Some(&before)).await;
    assert_eq!(body(res).await, "0", "the old id is dead");
}

#[tokio::test]
async fn logout_deletes_the_session_and_clears_the_cookie() {
    let f = fixture();
    let cookie = pair(&set_cookie(&send(&f.app, "/incr", None).await).expect("cookie"));
    let res = send(&f.app, "/logout", Some(&cookie)).await;
    let fresh = set_cookie(&res).expect("a fresh session carries the flash");
    assert_ne!(pair(&fresh), cookie);
    assert_eq!(
        body(send(&f.app, "/read", Some(&cookie)).await).await,
        "0",
        "the old session is gone"
    );
    assert_eq!(
        body(send(&f.app, "/flashes", Some(&pair(&fresh))).await).await,
        "signed out"
    );
}

#[tokio::test]
async fn flash_messages_are_read_once() {
    let f = fixture();
    let cookie = pair(&set_cookie(&send(&f.app, "/flash", None).await).expect("cookie"));
    let res = send(&f.app, "/flashes", Some(&cookie)).await;
    // Without a record the messages travel in the cookie: reading them re-issues it without them.
    let emptied = pair(&set_cookie(&res).expect("the cookie is re-issued without the message"));
    assert_eq!(body(res).await, "hello");
    assert_eq!(body(send(&f.app, "/flashes", Some(&emptied)).await).await, "");
    // With a record, they are stored and read once whatever the client sends back.
    let stored = pair(&set_cookie(&send(&f.app, "/incr", None).await).expect("cookie"));
    send(&f.app, "/flash", Some(&stored)).await;
    assert_eq!(body(send(&f.app, "/flashes", Some(&stored)).await).await, "hello");
    assert_eq!(body(send(&f.app, "/flashes", Some(&stored)).await).await, "");
}

#[tokio::test]
async fn a_corrupt_record_reads_as_absent_and_is_counted() {
    let f = fixture();
    let cookie = pair(&set_cookie(&send(&f.app, "/incr", None).await).expect("cookie"));
    let loaded_keys = corrupt_all(&f.store).await;
    assert_eq!(loaded_keys, 1);
    let res = send(&f.app, "/read", Some(&cookie)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await, "0");
    assert_eq!(f.manager.stats().loads_corrupt.load(Ordering::Relaxed), 1);
    let res = send(&f.app, "/incr", Some(&cookie)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        set_cookie(&res).is_some(),
        "a write after a corrupt record starts a new session"
    );
}

/// Overwrites every record the memory store holds with undecodable bytes; returns how many there were.
async fn corrupt_all(store: &Switch) -> usize {
    let keys = store.inner.keys();
    for key in &keys {
        assert!(store.inner.overwrite_raw(key, vec![0xde, 0xad]));
    }
    keys.len()
}

#[tokio::test]
async fn values_are_sealed_at_rest_when_encryption_is_on() {
    let f = fixture_with(
        Keys::new(SECRET, &[]).expect("keys"),
        SessionConfig::default()
            .with_cookie_name("sid")
            .with_encryption(true),
    );
    let cookie =
        pair(&set_cookie(&send(&f.app, "/set/secret/plaintext-marker", None).await).expect("cookie"));
    let key = f.store.inner.keys().pop().expect("one record");
    let raw = f
        .store
        .inner
        .load(
            &key,
            &Policy {
                idle: Duration::from_secs(60),
                max_record_bytes: 1 << 16,
                max_sessions_per_user: None,
            },
        )
        .await;
    let raw = raw.expect("load").expect("record");
    let stored = &raw.record.attrs["secret"];
    assert!(
        !stored.windows(16).any(|w| w == b"plaintext-marker"),
        "value must not be stored in clear"
    );
    assert_eq!(
        body(send(&f.app, "/get/secret", Some(&cookie)).await).await,
        "plaintext-marker"
    );
}

#[tokio::test]
async fn a_rotated_app_key_keeps_sessions_and_re_signs_the_cookie() {
    let old_keys = Keys::new(SECRET, &[]).expect("keys");
    let f = fixture_with(old_keys, SessionConfig::default().with_cookie_name("sid"));
    let old_cookie = pair(&set_cookie(&send(&f.app, "/incr", None).await).expect("cookie"));
    let rotated =
        Keys::new(b"the brand new secret, also 32 bytes or more", &[SECRET.to_vec()]).expect("keys");
    let manager = SessionManager::new(
        f.store.clone(),
        rotated,
        SessionConfig::default().with_cookie_name("sid"),
    );
    let app = Router::new()
        .route(
            "/read",
            get(
                |s: Session| async move { Ok::<_, Error>(s.get::<u64>("n").await?.unwrap_or(0).to_string()) },
            ),
        )
        .layer(manager.layer());
    let res = send(&app, "/read", Some(&old_cookie)).await;
    let resigned = pair(&set_cookie(&res).expect("re-signed with the current key"));
    assert_eq!(body(res).await, "1", "nobody is logged out by a key rotation");
    assert_eq!(
        resigned.split('.').next(),
        old_cookie.split('.').next(),
        "same id, new signature"
    );
    assert_ne!(resigned, old_cookie);
    let res = send(&app, "/read", Some(&resigned)).await;
    assert_eq!(set_cookie(&res), None);
    assert_eq!(body(res).await, "1");
}

#[tokio::test]
async fn concurrent_requests_keep_every_attribute_and_every_hit() {
    let f = fixture();
    let cookie = pair(&set_cookie(&send(&f.app, "/hits", None).await).expect("cookie"));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (app, cookie) = (f.app.clone(), cookie.clone());
        tasks.push(tokio::spawn(async move {
            let uri = if i % 2 == 0 {
                format!("/set/a{i}/v{i}")
            } else {
                "/hits".to_owned()
            };
            send(&app, &uri, Some(&cookie)).await.status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), StatusCode::OK);
    }
    for i in (0..200).step_by(2) {
        assert_eq!(
            body(send(&f.app, &format!("/get/a{i}"), Some(&cookie)).await).await,
            format!("v{i}")
        );
    }
    assert_eq!(
        body(send(&f.app, "/hits", Some(&cookie)).await).await,
        "102",
        "1 + 100 + 1 hits, none lost"
    );
}

fn no_store(res: &Response<Body>) -> bool {
    res.headers().get(header::CACHE_CONTROL).map(|v| v.as_bytes()) == Some(&b"no-store"[..])
}

/// Splits a `/form` body into its token and its flash messages.
async fn form(res: Response<Body>) -> (String, String) {
    let text = body(res).await;
    let (token, flashes) = text.split_once('|').expect("token|flashes");
    (token.to_owned(), flashes.to_owned())
}

#[tokio::test]
async fn an_anonymous_visitor_with_a_form_and_a_flash_costs_no_store_call() {
    let f = fixture();
    // A cookieless read sets no cookie, but the response was made from a session: not cacheable.
    let res = send(&f.app, "/read", None).await;
    assert_eq!(set_cookie(&res), None);
    assert!(no_store(&res));
    // A route that never touches the session keeps its cacheability.
    assert!(!no_store(&send(&f.app, "/plain", None).await));

    let res = send(&f.app, "/form", None).await;
    assert!(no_store(&res));
    let cookie = set_cookie(&res).expect("a page with a form gives a pre-session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("Secure") && cookie.contains("Max-Age=7200"));
    let cookie = pair(&cookie);
    assert!(cookie.starts_with("sid=p."), "{cookie}");
    let (token, _) = form(res).await;

    // The same page again with that cookie: the same token, and no new cookie.
    let res = send(&f.app, "/form", Some(&cookie)).await;
    assert_eq!(
        set_cookie(&res),
        None,
        "a fresh pre-session cookie is not re-sent"
    );
    assert_eq!(form(res).await.0, token);

    // A failing form: the token is accepted, the flash message rides in the cookie.
    let res = post(&f.app, "/submit", Some(&cookie), &token).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cookie = pair(&set_cookie(&res).expect("the flash message travels in the cookie"));
    let res = send(&f.app, "/form", Some(&cookie)).await;
    let cookie = pair(&set_cookie(&res).expect("read messages are removed from the cookie"));
    let (again, flashes) = form(res).await;
    assert_eq!(
        (again.as_str(), flashes.as_str()),
        (token.as_str(), "wrong password")
    );
    assert_eq!(
        form(send(&f.app, "/form", Some(&cookie)).await).await.1,
        "",
        "read once"
    );

    // Forged tokens and cookie-less posts fail.
    for (cookie, token) in [
        (Some(cookie.as_str()), "x"),
        (Some(cookie.as_str()), ""),
        (None, token.as_str()),
    ] {
        assert_eq!(
            post(&f.app, "/submit", cookie, token).await.status(),
            StatusCode::FORBIDDEN
        );
    }
    let other = pair(&set_cookie(&send(&f.app, "/form", None).await).expect("cookie"));
    assert_eq!(
        post(&f.app, "/submit", Some(&other), &token).await.status(),
        StatusCode::FORBIDDEN,
        "a token belongs to one session"
    );

    assert_eq!(f.store.calls.load(Ordering::SeqCst), 0, "not one store call");
    assert!(f.store.inner.keys().is_empty(), "not one record");
    let stats = f.manager.stats();
    assert_eq!(stats.op(mooring::StoreOp::Load).duration.snapshot().count, 0);
    assert_eq!(stats.created.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_flash_after_sign_out_rides_in_a_cookie_not_a_record() {
    let f = fixture();
    let cookie = pair(&set_cookie(&send(&f.app, "/incr", None).await).expect("cookie"));
    assert_eq!(f.store.inner.keys().len(), 1);
    let res = send(&f.app, "/logout", Some(&cookie)).await;
    let fresh = pair(&set_cookie(&res).expect("a pre-session cookie carries the flash"));
    assert!(fresh.starts_with("sid=p."), "{fresh}");
    assert!(
        f.store.inner.keys().is_empty(),
        "the record is deleted and none is created"
    );
    let before = f.store.calls.load(Ordering::SeqCst);
    assert_eq!(
        body(send(&f.app, "/flashes", Some(&fresh)).await).await,
        "signed out"
    );
    assert_eq!(f.store.calls.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn a_pre_session_promoted_to_a_record_keeps_its_token_and_its_flashes() {
    let f = fixture();
    let res = send(&f.app, "/form", None).await;
    let pre = pair(&set_cookie(&res).expect("cookie"));
    let (token, _) = form(res).await;
    let pre = pair(&set_cookie(&post(&f.app, "/submit", Some(&pre), &token).await).expect("flash"));
    // An app attribute must persist: the record is created under the same id.
    let res = send(&f.app, "/set/cart/apples", Some(&pre)).await;
    let stored = pair(&set_cookie(&res).expect("a stored-session cookie"));
    assert!(!stored.starts_with("sid=p."), "{stored}");
    assert_eq!(
        stored.trim_start_matches("sid=").split('.').next(),
        pre.trim_start_matches("sid=p.").split('.').next(),
        "same id"
    );
    assert_eq!(f.store.inner.keys().len(), 1);
    let res = send(&f.app, "/form", Some(&stored)).await;
    assert_eq!(set_cookie(&res), None);
    assert_eq!(
        form(res).await,
        (token.clone(), "wrong password".to_owned()),
        "token kept, flash moved"
    );
    assert_eq!(
        post(&f.app, "/submit", Some(&stored), &token).await.status(),
        StatusCode::SEE_OTHER
    );
    // Sign-in changes the id, and so the token.
    let signed_in = pair(&set_cookie(&send(&f.app, "/login", Some(&stored)).await).expect("rotation"));
    assert_eq!(
        post(&f.app, "/submit", Some(&signed_in), &token).await.status(),
        StatusCode::FORBIDDEN
    );
    let (new_token, _) = form(send(&f.app, "/form", Some(&signed_in)).await).await;
    assert_ne!(new_token, token);
    assert_eq!(
        post(&f.app, "/submit", Some(&signed_in), &new_token)
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn flash_messages_without_a_record_are_bounded() {
    let f = fixture();
    let mut cookie = pair(&set_cookie(&send(&f.app, "/flash", None).await).expect("cookie"));
    let app = Router::new()
        .route(
            "/big",
            get(|s: Session| async move {
                for i in 0..40 {
                    s.flash(format!("{i:02} {}", "x".repeat(60))).await?;
                }
                s.flash("é".repeat(2000)).await?;
                s.flash("last").await?;
                Ok::<_, Error>("ok")
            }),
        )
        .layer(f.manager.layer());
    let res = send(&app, "/big", Some(&cookie)).await;
    let header = set_cookie(&res).expect("cookie");
    assert!(header.len() < 2048, "{} bytes", header.len());
    cookie = pair(&header);
    let shown = body(send(&f.app, "/flashes", Some(&cookie)).await).await;
    assert!(shown.ends_with("last"), "the newest message is kept: {shown}");
    assert!(!shown.contains("hello"), "the oldest went first");
    assert!(f.manager.stats().flashes_dropped.load(Ordering::Relaxed) > 30);
}

#[tokio::test]
async fn several_session_cookies_in_one_request_mean_no_session() {
    let f = fixture();
    let mine = pair(&set_cookie(&send(&f.app, "/incr", None).await).expect("cookie"));
    // The attacker's cookie is valid: a real session of theirs, planted by a sibling subdomain.
    let theirs = pair(&set_cookie(&send(&f.app, "/set/n/9", None).await).expect("cookie"));
    let before = f.store.calls.load(Ordering::SeqCst);
    for header in [format!("{theirs}; {mine}"), format!("{mine}; {theirs}")] {
        let res = send(&f.app, "/read", Some(&header)).await;
        assert_eq!(set_cookie(&res), None, "nothing is cleared");
        assert_eq!(body(res).await, "0", "neither session is used: {header}");
    }
    assert_eq!(
        f.store.calls.load(Ordering::SeqCst),
        before,
        "ambiguity costs no store call"
    );
    assert_eq!(f.manager.stats().cookies_duplicate.load(Ordering::Relaxed), 2);
    // A pre-session cookie beside a stored one is just as ambiguous.
    let pre = pair(&set_cookie(&send(&f.app, "/form", None).await).expect("cookie"));
    assert_eq!(
        body(send(&f.app, "/read", Some(&format!("{pre}; {mine}"))).await).await,
        "0"
    );
    assert_eq!(f.manager.stats().cookies_duplicate.load(Ordering::Relaxed), 3);
    // The same cookie twice, or beside forged ones, is not ambiguous.
    let forged = "sid=AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA";
    for header in [
        format!("{mine}; {mine}"),
        format!("{forged}; {mine}"),
        format!("{mine}; {forged}"),
    ] {
        assert_eq!(
            body(send(&f.app, "/read", Some(&header)).await).await,
            "1",
            "{header}"
        );
    }
    assert_eq!(f.manager.stats().cookies_duplicate.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn a_non_ascii_byte_in_the_cookie_header_drops_only_its_own_pair() {
    let f = fixture();
    let mine = pair(&set_cookie(&send(&f.app, "/incr", None).await).expect("cookie"));
    for bytes in [
        [b"pref=caf\xe9; ".as_slice(), mine.as_bytes()].concat(),
        [mine.as_bytes(), b"; x=\xff\xfe".as_slice()].concat(),
        [b"\xc3\x28=1;".as_slice(), mine.as_bytes(), b";z=\x80".as_slice()].concat(),
    ] {
        let req = Request::get("/read")
            .header(
                header::COOKIE,
                http::HeaderValue::from_bytes(&bytes).expect("obs-text is allowed"),
            )
            .body(Body::empty())
            .expect("request");
        let res = f.app.clone().oneshot(req).await.expect("infallible");
        assert_eq!(body(res).await, "1", "{}", String::from_utf8_lossy(&bytes));
    }
    // Our own cookie with a non-UTF-8 value is rejected, and counted, without a panic.
    let req = Request::get("/read")
        .header(
            header::COOKIE,
            http::HeaderValue::from_bytes(b"sid=\xff\xff").expect("bytes"),
        )
        .body(Body::empty())
        .expect("request");
    let res = f.app.clone().oneshot(req).await.expect("infallible");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(f.manager.stats().cookies_rejected.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn host_prefixed_cookies_follow_the_browser_rules() {
    let secure = SessionConfig::default()
        .with_cookie_name("app")
        .with_host_prefix(true);
    assert_eq!(secure.effective_cookie_name(), "__Host-app");
    assert_eq!(secure.validate(), Ok(()));
    let plain_http = secure.clone().with_secure(false);
    assert_eq!(
        plain_http.effective_cookie_name(),
        "app",
        "no prefix without Secure"
    );
    assert_eq!(plain_http.validate(), Ok(()));
    assert!(matches!(
        secure.clone().with_domain(Some("example.com".into())).validate(),
        Err(mooring::CookieRuleError::HostWithDomain(_))
    ));
    assert!(matches!(
        secure.clone().with_path("/app").validate(),
        Err(mooring::CookieRuleError::HostWithPath(..))
    ));
    let explicit = SessionConfig::default()
        .with_cookie_name("__Host-x")
        .with_secure(false);
    assert!(matches!(
        explicit.validate(),
        Err(mooring::CookieRuleError::NotSecure(_))
    ));
    let secure_prefix = SessionConfig::default().with_cookie_name("__Secure-x");
    assert_eq!(
        secure_prefix
            .clone()
            .with_domain(Some("example.com".into()))
            .validate(),
        Ok(())
    );
    assert!(matches!(
        secure_prefix.with_secure(false).validate(),
        Err(mooring::CookieRuleError::NotSecure(_))
    ));

    let f = fixture_with(Keys::new(SECRET, &[]).expect("keys"), secure);
    let res = send(&f.app, "/incr", None).await;
    let cookie = set_cookie(&res).expect("cookie");
    assert!(cookie.starts_with("__Host-app=") && cookie.contains("Path=/") && !cookie.contains("Domain"));
    assert_eq!(body(send(&f.app, "/read", Some(&pair(&cookie))).await).await, "1");
    // The unprefixed name is not ours any more.
    let unprefixed = pair(&cookie).replacen("__Host-app", "app", 1);
    assert_eq!(body(send(&f.app, "/read", Some(&unprefixed)).await).await, "0");
}

/// A change an attacker makes to a stored record.
type Edit = Box<dyn Fn(&mut Record)>;

fn encrypted(migrate: bool) -> SessionConfig {
    SessionConfig::default()
        .with_cookie_name("sid")
        .with_encryption(true)
        .with_plaintext_migration(migrate)
}

fn policy() -> Policy {
    Policy {
        idle: Duration::from_secs(600),
        max_record_bytes: 1 << 16,
        ..Policy::default()
    }
}

/// Loads the raw record behind a cookie (as the store holds it, values sealed).
async fn raw(store: &Switch, key: &StoreKey) -> Record {
    store
        .inner
        .load(key, &policy())
        .await
        .expect("load")
        .expect("record")
        .record
}

/// The store key of the only record created by the request that set `cookie`.
fn only_key(store: &Switch) -> StoreKey {
    let mut keys = store.inner.keys();
    assert_eq!(keys.len(), 1);
    keys.pop().expect("one")
}

#[tokio::test]
async fn an_edited_encrypted_record_is_refused() {
    let f = fixture_with(Keys::new(SECRET, &[]).expect("keys"), encrypted(false));
    // The victim: a signed-in session with a value.
    let res = send(&f.app, "/login", None).await;
    let victim = pair(&set_cookie(&res).expect("cookie"));
    send(&f.app, "/set/secret/victim-value", Some(&victim)).await;
    let victim_key = only_key(&f.store);
    assert_eq!(
        body(send(&f.app, "/get/secret", Some(&victim)).await).await,
        "victim-value"
    );
    let original = raw(&f.store, &victim_key).await;
    assert!(original.attrs.contains_key("_mooring.auth"));
    // Another session, whose value an attacker copies over.
    let other = pair(&set_cookie(&send(&f.app, "/set/secret/other-value", None).await).expect("cookie"));
    let other_key = f
        .store
        .inner
        .keys()
        .into_iter()
        .find(|k| *k != victim_key)
        .expect("two");
    let other_record = raw(&f.store, &other_key).await;

    let edits: Vec<(&str, Edit)> = vec![
        (
            "user changed",
            Box::new(|r: &mut Record| r.user = Some("admin".into())),
        ),
        ("signed out", Box::new(|r: &mut Record| r.user = None)),
        (
            "deadline extended",
            Box::new(|r: &mut Record| r.deadline += 86_400_000),
        ),
        ("created moved", Box::new(|r: &mut Record| r.created_at -= 1)),
        (
            "identity MAC removed",
            Box::new(|r: &mut Record| {
                r.attrs.remove("_mooring.auth");
            }),
        ),
        ("value swapped from another session", {
            let swapped = other_record.attrs["secret"].clone();
            Box::new(move |r: &mut Record| {
                r.attrs.insert("secret".into(), swapped.clone());
            })
        }),
        (
            "plain value planted",
            Box::new(|r: &mut Record| {
                let mut v = vec![0x01];
                v.extend(rmp_serde_like_string("planted"));
                r.attrs.insert("secret".into(), v);
            }),
        ),
    ];
    for (what, edit) in edits {
        let mut edited = original.clone();
        edit(&mut edited);
        put_raw(&f.store, &victim_key, &edited).await;
        let refused = f.manager.stats().records_refused.load(Ordering::Relaxed);
        let res = send(&f.app, "/get/secret", Some(&victim)).await;
        assert_eq!(res.status(), StatusCode::OK, "{what}");
        assert_eq!(body(res).await, "", "{what}: the record must be refused");
        assert_eq!(
            f.manager.stats().records_refused.load(Ordering::Relaxed),
            refused + 1,
            "{what}"
        );
    }
    // The untouched original still reads (each refusal deleted the record: put it back).
    put_raw(&f.store, &victim_key, &original).await;
    assert_eq!(
        body(send(&f.app, "/get/secret", Some(&victim)).await).await,
        "victim-value"
    );
    assert_eq!(
        body(send(&f.app, "/get/secret", Some(&other)).await).await,
        "other-value"
    );
}

/// Writes a record as is under `key`, as someone with write access to the store could.
async fn put_raw(store: &Switch, key: &StoreKey, record: &Record) {
    store.inner.delete(key).await.expect("delete");
    store.inner.create(key, record, &policy()).await.expect("create");
}

/// MessagePack of a short string (fixstr), as the engine stores a `String`.
fn rmp_serde_like_string(text: &str) -> Vec<u8> {
    assert!(text.len() < 32);
    let mut out = vec![0xa0 | text.len() as u8];
    out.extend_from_slice(text.as_bytes());
    out
}

#[tokio::test]
async fn plaintext_records_are_refused_with_encryption_unless_migrating() {
    let keys = Keys::new(SECRET, &[]).expect("keys");
    let f = fixture_with(keys.clone(), SessionConfig::default().with_cookie_name("sid"));
    let cookie = pair(&set_cookie(&send(&f.app, "/set/secret/plain-value", None).await).expect("cookie"));
    let key = only_key(&f.store);
    let plain = raw(&f.store, &key).await;

    let app_with = |config: SessionConfig| {
        let manager = SessionManager::new(f.store.clone(), keys.clone(), config);
        let app = Router::new()
            .route(
                "/get/{name}",
                get(
                    |s: Session, axum::extract::Path(name): axum::extract::Path<String>| async move {
                        Ok::<_, Error>(s.get::<String>(&name).await?.unwrap_or_default())
                    },
                ),
            )
            .layer(manager.layer());
        (manager, app)
    };
    let (strict, strict_app) = app_with(encrypted(false));
    assert_eq!(
        body(send(&strict_app, "/get/secret", Some(&cookie)).await).await,
        ""
    );
    assert_eq!(strict.stats().records_refused.load(Ordering::Relaxed), 1);

    put_raw(&f.store, &key, &plain).await;
    let (migrating, migrating_app) = app_with(encrypted(true));
    assert_eq!(
        body(send(&migrating_app, "/get/secret", Some(&cookie)).await).await,
        "plain-value"
    );
    assert_eq!(migrating.stats().records_refused.load(Ordering::Relaxed), 0);
    // The load upgraded the record: sealed, with its identity MAC, so it reads without the migration too.
    let upgraded = raw(&f.store, &key).await;
    assert!(upgraded.attrs.contains_key("_mooring.auth"));
    assert!(!upgraded.attrs["secret"].windows(11).any(|w| w == b"plain-value"));
    let (strict, strict_app) = app_with(encrypted(false));
    assert_eq!(
        body(send(&strict_app, "/get/secret", Some(&cookie)).await).await,
        "plain-value"
    );
    assert_eq!(strict.stats().records_refused.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_token_stored_by_an_older_version_still_verifies() {
    let f = fixture();
    let cookie = pair(&set_cookie(&send(&f.app, "/incr", None).await).expect("cookie"));
    let key = only_key(&f.store);
    // What a session created before derived tokens holds: `_csrf`, a plain MessagePack string.
    let legacy = "legacytokenlegacytoken";
    let mut record = raw(&f.store, &key).await;
    let mut value = vec![0x01, 0xa0 | legacy.len() as u8];
    value.extend_from_slice(legacy.as_bytes());
    record.attrs.insert("_csrf".into(), value);
    put_raw(&f.store, &key, &record).await;
    assert_eq!(
        post(&f.app, "/submit", Some(&cookie), legacy).await.status(),
        StatusCode::SEE_OTHER
    );
    // The derived token works as well, and is what pages get from now on.
    let (token, _) = form(send(&f.app, "/form", Some(&cookie)).await).await;
    assert_ne!(token, legacy);
    assert_eq!(
        post(&f.app, "/submit", Some(&cookie), &token).await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        post(&f.app, "/submit", Some(&cookie), "legacytokenlegacytokeX")
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn a_pre_session_lives_as_long_as_the_idle_timeout() {
    let f = fixture_with(
        Keys::new(SECRET, &[]).expect("keys"),
        SessionConfig::default()
            .with_cookie_name("sid")
            .with_idle_timeout(Duration::from_millis(1200)),
    );
    let res = send(&f.app, "/form", None).await;
    let cookie = pair(&set_cookie(&res).expect("cookie"));
    let (token, _) = form(res).await;
    // Past half its lifetime, a page with a form re-issues it: same id, same token, a new expiry.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let res = send(&f.app, "/form", Some(&cookie)).await;
    let refreshed = pair(&set_cookie(&res).expect("refreshed"));
    assert_ne!(refreshed, cookie);
    assert_eq!(form(res).await.0, token);
    // Past its expiry (MAC'd inside the cookie, whatever the client does with Max-Age), it is ignored.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let res = send(&f.app, "/form", Some(&refreshed)).await;
    assert!(set_cookie(&res).is_some(), "a new pre-session");
    assert_ne!(form(res).await.0, token, "a new id, so a new token");
    assert_eq!(
        post(&f.app, "/submit", Some(&refreshed), &token).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(f.store.calls.load(Ordering::SeqCst), 0);
}
