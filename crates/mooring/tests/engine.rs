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
    assert_eq!(body(send(&f.app, "/flashes", Some(&cookie)).await).await, "hello");
    assert_eq!(body(send(&f.app, "/flashes", Some(&cookie)).await).await, "");
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
