//! With encryption on, a session record edited directly in a real Redis is refused: whoever can write to
//! Redis cannot sign a session in as another user (`@u`), extend its deadline (the metadata field), or move a
//! value over from another session. Plain values are refused too, unless the migration setting allows them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, header};
use mooring::{Error, Keys, Session, SessionConfig, SessionManager};
use mooring_conformance::redis::{Options, RedisServer};
use mooring_redis::{RedisConfig, RedisStore, Topology};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use tower::ServiceExt;

const SECRET: &[u8] = b"authenticated encryption test secret, 32+ bytes";

fn app(manager: &SessionManager) -> Router {
    Router::new()
        .route(
            "/login/{user}",
            get(
                |s: Session, axum::extract::Path(user): axum::extract::Path<String>| async move {
                    s.set_user(Some(&user)).await?;
                    s.regenerate().await?;
                    s.insert("secret", &format!("secret of {user}")).await?;
                    Ok::<_, Error>("in")
                },
            ),
        )
        .route(
            "/whoami",
            get(|s: Session| async move {
                let user = s.user().await?.unwrap_or_default();
                let secret: String = s.get("secret").await?.unwrap_or_default();
                Ok::<_, Error>(format!("{user}|{secret}"))
            }),
        )
        .layer(manager.layer())
}

async fn send(app: &Router, uri: &str, cookie: Option<&str>) -> (Option<String>, String) {
    let mut req = Request::get(uri);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let cookie = res.headers().get(header::SET_COOKIE).map(|v| {
        v.to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("pair")
            .to_owned()
    });
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .expect("body");
    (cookie, String::from_utf8(body.to_vec()).expect("utf-8"))
}

async fn manager(server: &RedisServer, config: SessionConfig) -> SessionManager {
    let store = RedisStore::connect(RedisConfig::new(Topology::Standalone { url: server.url() }))
        .await
        .expect("connect");
    SessionManager::new(Arc::new(store), Keys::new(SECRET, &[]).expect("keys"), config)
}

/// The session hashes in Redis (user indexes are sorted sets).
async fn session_hashes(conn: &mut MultiplexedConnection) -> Vec<String> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(conn).await.expect("KEYS");
    let mut hashes = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(conn)
            .await
            .expect("TYPE");
        if kind == "hash" {
            hashes.push(key);
        }
    }
    hashes
}

async fn hash(conn: &mut MultiplexedConnection, key: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    conn.hgetall(key).await.expect("HGETALL")
}

async fn restore(conn: &mut MultiplexedConnection, key: &str, fields: &[(Vec<u8>, Vec<u8>)]) {
    let _: () = conn.del(key).await.expect("DEL");
    let _: () = conn.hset_multiple(key, fields).await.expect("HSET");
    let _: () = conn.expire(key, 3600).await.expect("EXPIRE");
}

fn encrypted() -> SessionConfig {
    SessionConfig::default()
        .with_cookie_name("id")
        .with_encryption(true)
}

#[tokio::test]
async fn an_edited_encrypted_record_is_refused_by_redis() {
    let server = mooring_conformance::redis::standalone(Options::default()).await;
    let manager = manager(&server, encrypted()).await;
    let app = app(&manager);
    let mut conn = server.connect().await;

    let (attacker, _) = send(&app, "/login/mallory", None).await;
    let attacker = attacker.expect("cookie");
    let attacker_key = session_hashes(&mut conn).await.pop().expect("one session");
    let (victim, _) = send(&app, "/login/alice", None).await;
    let victim = victim.expect("cookie");
    let victim_key = session_hashes(&mut conn)
        .await
        .into_iter()
        .find(|k| *k != attacker_key)
        .expect("the victim's session");
    assert_eq!(
        send(&app, "/whoami", Some(&attacker)).await.1,
        "mallory|secret of mallory"
    );
    let genuine = hash(&mut conn, &attacker_key).await;
    let victim_fields = hash(&mut conn, &victim_key).await;
    let field = |fields: &[(Vec<u8>, Vec<u8>)], name: &[u8]| {
        fields
            .iter()
            .find(|(f, _)| f == name)
            .map(|(_, v)| v.clone())
            .expect("field")
    };
    assert!(
        genuine.iter().any(|(f, _)| f == b"_mooring.auth"),
        "the identity MAC is stored"
    );

    // The metadata field: version (4 bytes), created (6), then the deadline as an offset (4) or in full (6).
    let mut extended = field(&genuine, b"");
    let last = extended.len() - 1;
    extended[last - 3] = extended[last - 3].wrapping_add(1);
    let edits: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        ("signed in as alice", b"@u".to_vec(), b"alice".to_vec()),
        ("deadline extended", Vec::new(), extended),
        (
            "alice's secret moved in",
            b"secret".to_vec(),
            field(&victim_fields, b"secret"),
        ),
        (
            "a plain value planted",
            b"secret".to_vec(),
            [&[0x01u8, 0xa3][..], b"sly"].concat(),
        ),
    ];
    for (what, name, value) in edits {
        let _: () = conn.hset(&attacker_key, &name, &value).await.expect("HSET");
        let refused = manager.stats().records_refused.load(Ordering::Relaxed);
        let (_, body) = send(&app, "/whoami", Some(&attacker)).await;
        assert_eq!(body, "|", "{what}: the edited record must be refused");
        assert_eq!(
            manager.stats().records_refused.load(Ordering::Relaxed),
            refused + 1,
            "{what}"
        );
        restore(&mut conn, &attacker_key, &genuine).await;
        assert_eq!(
            send(&app, "/whoami", Some(&attacker)).await.1,
            "mallory|secret of mallory",
            "{what}"
        );
    }
    assert_eq!(
        send(&app, "/whoami", Some(&victim)).await.1,
        "alice|secret of alice"
    );
}

#[tokio::test]
async fn plaintext_records_in_redis_are_refused_unless_migrating() {
    let server = mooring_conformance::redis::standalone(Options::default()).await;
    let plain = manager(&server, SessionConfig::default().with_cookie_name("id")).await;
    let (cookie, _) = send(&app(&plain), "/login/ada", None).await;
    let cookie = cookie.expect("cookie");
    let mut conn = server.connect().await;
    let key = session_hashes(&mut conn).await.pop().expect("one session");
    let stored = hash(&mut conn, &key).await;

    let strict = manager(&server, encrypted()).await;
    assert_eq!(send(&app(&strict), "/whoami", Some(&cookie)).await.1, "|");
    assert_eq!(strict.stats().records_refused.load(Ordering::Relaxed), 1);

    restore(&mut conn, &key, &stored).await;
    let migrating = manager(&server, encrypted().with_plaintext_migration(true)).await;
    assert_eq!(
        send(&app(&migrating), "/whoami", Some(&cookie)).await.1,
        "ada|secret of ada"
    );
    let upgraded = hash(&mut conn, &key).await;
    assert!(
        upgraded.iter().any(|(f, _)| f == b"_mooring.auth"),
        "the migration added the MAC"
    );
    assert!(
        !upgraded.iter().any(|(_, v)| v.windows(6).any(|w| w == b"secret")),
        "and sealed the value"
    );
    let strict = manager(&server, encrypted()).await;
    assert_eq!(
        send(&app(&strict), "/whoami", Some(&cookie)).await.1,
        "ada|secret of ada"
    );
    assert_eq!(strict.stats().records_refused.load(Ordering::Relaxed), 0);
}
