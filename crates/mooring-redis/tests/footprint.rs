//! What a session costs in Redis, measured on a real server through the whole engine (axum + SessionLayer):
//! bytes (`MEMORY USAGE` of every key a session uses), round trips and commands per request (`INFO stats`,
//! `INFO commandstats`), and the handling of bad data found in Redis.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode, header};
use mooring::{Error, Keys, Session, SessionConfig, SessionManager};
use mooring_conformance::redis::{Options, RedisServer};
use mooring_redis::{RedisConfig, RedisStore, Topology};
use redis::aio::MultiplexedConnection;
use tower::ServiceExt;

/// The peers' benchmark routes: `/read` reads `n`, `/incr` increments it.
fn app(manager: &SessionManager) -> Router {
    Router::new()
        .route(
            "/read",
            get(
                |s: Session| async move { Ok::<_, Error>(s.get::<u64>("n").await?.unwrap_or(0).to_string()) },
            ),
        )
        .route(
            "/incr",
            get(|s: Session| async move {
                let n: u64 = s.get("n").await?.unwrap_or(0) + 1;
                s.insert("n", &n).await?;
                Ok::<_, Error>(n.to_string())
            }),
        )
        .route(
            "/login",
            get(|s: Session| async move {
                s.set_user(Some("42")).await?;
                Ok::<_, Error>("in")
            }),
        )
        .route(
            "/logout",
            get(|s: Session| async move {
                s.invalidate().await;
                Ok::<_, Error>("out")
            }),
        )
        .route(
            "/count",
            get(|s: Session| async move { Ok::<_, Error>(s.user_session_count().await?.to_string()) }),
        )
        .layer(manager.layer())
}

async fn setup() -> (RedisServer, RedisStore, SessionManager, MultiplexedConnection) {
    setup_with(SessionConfig::default()).await
}

async fn setup_with(
    config: SessionConfig,
) -> (RedisServer, RedisStore, SessionManager, MultiplexedConnection) {
    let server = mooring_conformance::redis::standalone(Options::default()).await;
    let store = RedisStore::connect(RedisConfig::new(Topology::Standalone { url: server.url() }))
        .await
        .expect("connect");
    let keys = Keys::new(b"footprint test secret of 32+ bytes!!", &[]).expect("keys");
    let manager = SessionManager::new(Arc::new(store.clone()), keys, config.with_cookie_name("id"));
    let conn = server.connect().await;
    (server, store, manager, conn)
}

async fn send(app: &Router, uri: &str, cookie: Option<&str>) -> (StatusCode, Option<String>, String) {
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
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .expect("body");
    (status, cookie, String::from_utf8(body.to_vec()).expect("utf-8"))
}

async fn all_keys(conn: &mut MultiplexedConnection) -> Vec<String> {
    redis::cmd("KEYS").arg("*").query_async(conn).await.expect("KEYS")
}

/// Total calls per command since the last `CONFIG RESETSTAT`, without the inspection commands themselves.
async fn commands(conn: &mut MultiplexedConnection) -> Vec<(String, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO");
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "info" | "config|resetstat" | "keys" | "memory|usage"
            )
        })
        .collect()
}

/// Round trips since the last `CONFIG RESETSTAT`: the reads Redis processed (`total_reads_processed`), less
/// the one that brought this `INFO`. A pipeline arrives in one read, so it counts once, as it should.
async fn round_trips(conn: &mut MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(conn)
        .await
        .expect("INFO");
    let reads: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("total_reads_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("total_reads_processed in INFO stats");
    reads - 1
}

/// What a request cost: its round trips and every command Redis ran for it (those sent and those a script
/// called), sorted by name.
async fn cost(conn: &mut MultiplexedConnection) -> (u64, Vec<(String, u64)>) {
    let trips = round_trips(conn).await;
    let mut commands = commands(conn).await;
    commands.sort();
    (trips, commands)
}

fn calls(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect()
}

async fn reset(conn: &mut MultiplexedConnection) {
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(conn)
        .await
        .expect("RESETSTAT");
}

#[tokio::test]
async fn a_session_holding_one_small_integer_costs_at_most_100_bytes() {
    let (_server, _store, manager, mut conn) = setup().await;
    let app = app(&manager);
    let (_, cookie, _) = send(&app, "/incr", None).await;
    let cookie = cookie.expect("a new session");
    for _ in 0..5 {
        send(&app, "/incr", Some(&cookie)).await;
    }
    let keys = all_keys(&mut conn).await;
    assert_eq!(keys.len(), 1, "an anonymous session uses one key: {keys:?}");
    let mut total = 0u64;
    for key in &keys {
        let bytes: u64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("MEMORY USAGE");
        total += bytes;
    }
    eprintln!(
        "bytes per session (MEMORY USAGE of {} key(s)): {total}",
        keys.len()
    );
    assert!(total <= 100, "{total} bytes per session, the target is 100");
}

#[tokio::test]
async fn a_read_is_one_round_trip_a_write_two_and_a_new_session_one() {
    let (_server, _store, manager, mut conn) = setup().await;
    let app = app(&manager);
    // Scripts are loaded once at connect; start counting after that.
    reset(&mut conn).await;
    let (_, cookie, _) = send(&app, "/incr", None).await;
    let cookie = cookie.expect("cookie");
    assert_eq!(
        cost(&mut conn).await,
        (
            1,
            calls(&[("evalsha", 1), ("exists", 1), ("hset", 1), ("pexpireat", 1)])
        ),
        "creating a session is one round trip: the create script"
    );
    reset(&mut conn).await;
    assert_eq!(send(&app, "/read", Some(&cookie)).await.2, "1");
    assert_eq!(
        cost(&mut conn).await,
        (1, calls(&[("hgetall", 1), ("pexpireat", 1)])),
        "a read, with its TTL slide, is one round trip of two native commands"
    );
    reset(&mut conn).await;
    assert_eq!(send(&app, "/incr", Some(&cookie)).await.2, "2");
    assert_eq!(
        cost(&mut conn).await,
        (
            2,
            // The load's HGETALL and PEXPIREAT, then the apply script's HGETALL, HSET and PEXPIREAT.
            calls(&[("evalsha", 1), ("hgetall", 2), ("hset", 1), ("pexpireat", 2)])
        ),
        "a read-modify-write is two round trips"
    );
    // The TTL was slid by the read: it is close to the idle timeout.
    let key = all_keys(&mut conn).await.pop().expect("key");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("PTTL");
    assert!(
        ttl > 119 * 60 * 1000,
        "TTL {ttl} ms, the idle timeout is 120 minutes"
    );
}

/// Signing in (a delta that sets the user) is three round trips: the load, the apply script (which returns
/// the deadline the index needs) and the index update, whose pipeline also reads the set's size for the
/// per-user cap. Signing out is two: the delete script, which returns the user, then `ZREM` on the index.
/// Counting reads the index and one `@u` field per member, never a session.
#[tokio::test]
async fn signing_in_is_three_round_trips_signing_out_two_and_counting_loads_no_session() {
    let (_server, store, manager, mut conn) = setup().await;
    let app = app(&manager);
    let (_, cookie, _) = send(&app, "/incr", None).await;
    let cookie = cookie.expect("cookie");
    reset(&mut conn).await;
    assert_eq!(send(&app, "/login", Some(&cookie)).await.2, "in");
    assert_eq!(
        cost(&mut conn).await,
        (
            3,
            calls(&[
                ("evalsha", 1),
                ("hgetall", 2),
                ("hset", 1),
                ("pexpireat", 4),
                ("zadd", 1),
                ("zcard", 1),
                ("zremrangebyscore", 1),
            ])
        ),
        "load, apply script, index pipeline"
    );
    reset(&mut conn).await;
    assert_eq!(send(&app, "/count", Some(&cookie)).await.2, "1");
    assert_eq!(
        cost(&mut conn).await,
        (
            3,
            calls(&[
                ("hget", 1),
                ("hgetall", 1),
                ("pexpireat", 1),
                ("zrangebyscore", 1)
            ])
        ),
        "the request's own load, then the index and one HGET @u per member"
    );
    reset(&mut conn).await;
    assert_eq!(send(&app, "/logout", Some(&cookie)).await.2, "out");
    assert_eq!(
        cost(&mut conn).await,
        (
            2,
            calls(&[("del", 1), ("evalsha", 1), ("hget", 1), ("type", 1), ("zrem", 1)])
        ),
        "the delete script, then ZREM on the index"
    );
    assert_eq!(
        all_keys(&mut conn).await,
        Vec::<String>::new(),
        "signing out leaves neither the session nor its index behind: {}",
        store.user_key("42")
    );
}

/// Beyond the cap, a sign-in also reads the index, checks each member's owner, and deletes the oldest
/// session: bounded by the cap, and only on that path.
#[tokio::test]
async fn a_sign_in_beyond_the_cap_deletes_the_oldest_session_in_four_more_round_trips() {
    let (_server, store, manager, mut conn) =
        setup_with(SessionConfig::default().with_max_sessions_per_user(2)).await;
    let app = app(&manager);
    let mut cookies = Vec::new();
    for _ in 0..3 {
        let (_, cookie, _) = send(&app, "/incr", None).await;
        cookies.push(cookie.expect("cookie"));
        // Creation times (and so deadlines) a few milliseconds apart order the sessions.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    send(&app, "/login", Some(&cookies[0])).await;
    send(&app, "/login", Some(&cookies[1])).await;
    reset(&mut conn).await;
    send(&app, "/login", Some(&cookies[2])).await;
    let (trips, commands) = cost(&mut conn).await;
    // The two HGETs are sent at once on the multiplexed connection: Redis reads them in one read or two.
    assert!(
        (7..=8).contains(&trips),
        "{trips} round trips: the usual three, then four steps"
    );
    assert_eq!(
        commands,
        calls(&[
            ("del", 1),
            ("evalsha", 2),
            ("hget", 3),
            ("hgetall", 2),
            ("hset", 1),
            ("pexpireat", 4),
            ("zadd", 1),
            ("zcard", 1),
            ("zrangebyscore", 1),
            ("zrem", 1),
            ("zremrangebyscore", 1),
        ]),
        "the usual three, then ZRANGEBYSCORE, HGET @u per other member, the delete_if_user script, ZREM"
    );
    assert_eq!(
        send(&app, "/read", Some(&cookies[0])).await.2,
        "0",
        "the oldest session is gone"
    );
    assert_eq!(send(&app, "/read", Some(&cookies[1])).await.2, "1");
    assert_eq!(send(&app, "/count", Some(&cookies[2])).await.2, "2");
    let members: u64 = redis::cmd("ZCARD")
        .arg(store.user_key("42"))
        .query_async(&mut conn)
        .await
        .expect("ZCARD");
    assert_eq!(members, 2, "the evicted session left the index");
}

#[tokio::test]
async fn bad_data_in_redis_reads_as_absent_is_counted_and_never_a_500() {
    let (_server, _store, manager, mut conn) = setup().await;
    let app = app(&manager);
    let mut corrupted = 0;
    for damage in ["wrong type", "truncated metadata", "no metadata"] {
        let (_, cookie, _) = send(&app, "/incr", None).await;
        let cookie = cookie.expect("cookie");
        let key = all_keys(&mut conn)
            .await
            .into_iter()
            .find(|k| !k.starts_with("u:"))
            .expect("session key");
        match damage {
            "wrong type" => {
                let () = redis::cmd("DEL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .expect("DEL");
                let () = redis::cmd("SET")
                    .arg(&key)
                    .arg("foreign")
                    .query_async(&mut conn)
                    .await
                    .expect("SET");
            }
            "truncated metadata" => {
                let () = redis::cmd("HSET")
                    .arg(&key)
                    .arg("")
                    .arg("\x00\x00\x01")
                    .query_async(&mut conn)
                    .await
                    .expect("HSET");
            }
            _ => {
                let () = redis::cmd("HDEL")
                    .arg(&key)
                    .arg("")
                    .query_async(&mut conn)
                    .await
                    .expect("HDEL");
            }
        }
        corrupted += 1;
        let (status, set_cookie, body) = send(&app, "/read", Some(&cookie)).await;
        assert_eq!(status, StatusCode::OK, "{damage}");
        assert_eq!(body, "0", "{damage}: the session reads as absent");
        assert_eq!(set_cookie, None, "{damage}: a read does not replace the cookie");
        assert_eq!(
            manager.stats().loads_corrupt.load(Ordering::Relaxed),
            corrupted,
            "{damage} is counted"
        );
        let (status, _, body) = send(&app, "/incr", Some(&cookie)).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "1"),
            "{damage}: a write starts afresh"
        );
        let () = redis::cmd("FLUSHALL")
            .query_async(&mut conn)
            .await
            .expect("FLUSHALL");
    }
    // A value the engine cannot decode (here: a truncated attribute) reads as absent too.
    let (_, cookie, _) = send(&app, "/incr", None).await;
    let key = all_keys(&mut conn).await.pop().expect("key");
    let () = redis::cmd("HSET")
        .arg(&key)
        .arg("n")
        .arg("\x01")
        .query_async(&mut conn)
        .await
        .expect("HSET");
    assert_eq!(send(&app, "/read", Some(&cookie.expect("cookie"))).await.2, "0");
    assert!(manager.stats().values_undecodable.load(Ordering::Relaxed) >= 1);
}

async fn pttl(conn: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(conn).await.expect("PTTL")
}

/// A load slides the TTL natively to `now + idle`; in the session's last idle window it caps the TTL at the
/// absolute deadline, and a key found past its deadline is removed.
#[tokio::test]
async fn a_load_never_leaves_the_ttl_past_the_deadline() {
    use mooring::{Policy, Record, SessionId, SessionStore, now_ms};
    use std::time::Duration;

    let (_server, store, _manager, mut conn) = setup().await;
    let policy = Policy {
        idle: Duration::from_secs(600),
        max_record_bytes: 4096,
        max_sessions_per_user: None,
    };
    let key = SessionId::generate().store_key();
    let skey = store.session_key(&key);
    let created = now_ms();
    let record = Record {
        created_at: created,
        deadline: created + 3_000,
        user: None,
        attrs: [("n".to_owned(), vec![1, 5])].into(),
    };
    store.create(&key, &record, &policy).await.expect("create");
    assert!(pttl(&mut conn, &skey).await <= 3_000, "create caps the TTL");
    let loaded = store.load(&key, &policy).await.expect("load").expect("live");
    assert_eq!(
        loaded.expires_at, record.deadline,
        "the load reports the capped expiry"
    );
    let ttl = pttl(&mut conn, &skey).await;
    assert!(
        (0..=3_000).contains(&ttl),
        "a load in the last idle window leaves the TTL at the deadline, not at now + idle: {ttl} ms"
    );

    // A key outliving its deadline (as after a lost cap) is refused and removed by the next load.
    let () = redis::cmd("PERSIST")
        .arg(&skey)
        .query_async(&mut conn)
        .await
        .map(|_: i64| ())
        .expect("PERSIST");
    tokio::time::sleep(
        Duration::from_millis(3_100).saturating_sub(Duration::from_millis(now_ms() - created)),
    )
    .await;
    assert_eq!(store.load(&key, &policy).await.expect("load"), None);
    assert_eq!(pttl(&mut conn, &skey).await, -2, "the expired key is gone");

    // A session far from its deadline gets the full idle timeout.
    let key = SessionId::generate().store_key();
    let record = Record {
        deadline: now_ms() + 3_600_000,
        ..record
    };
    store.create(&key, &record, &policy).await.expect("create");
    store.load(&key, &policy).await.expect("load").expect("live");
    let ttl = pttl(&mut conn, &store.session_key(&key)).await;
    assert!(
        ttl > 595_000 && ttl <= 600_000,
        "TTL {ttl} ms after a load, the idle timeout is 600 s"
    );
}
