//! The benchmark app: `mooring` + `mooring-redis` behind the same three routes as the peers in
//! `../shared/peers/` (axum + tower-sessions, actix-session, express-session), so that `scripts/bench.sh` can
//! run it beside them in one interleaved run.
//!
//! | route | what it does |
//! |---|---|
//! | `GET /plain` | returns `ok`; outside the session layer (the framework's ceiling) |
//! | `GET /read` | reads integer `n` from the session and returns it (0 if absent); the load slides the TTL |
//! | `GET /incr` | reads `n`, stores `n + 1`, returns it; creates a session when there is no cookie |
//!
//! Configuration (environment, like the peers): `PORT` (default 3005), `REDIS_URL` (default
//! `redis://127.0.0.1:6390`), `SESSION_DURABILITY` (`async` by default: the bench Redis has no replicas;
//! `auto` or `replicas:N` otherwise), `APP_KEY` (a fixed bench key by default). The cookie is `id`, like the
//! Rust peers', without `Secure` (plain HTTP).

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use mooring::{Keys, Session, SessionConfig, SessionManager};
use mooring_redis::{Durability, RedisConfig, RedisStore, Topology};

/// The cookie name, as the Rust peers use.
pub const COOKIE: &str = "id";

/// The APP_KEY used when none is set: a benchmark needs no secret, only a stable one.
pub const BENCH_APP_KEY: &str = "mooring-bench: a fixed key, for benchmarks only!";

/// What the app needs to start.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// The standalone Redis URL.
    pub redis_url: String,
    /// When a write counts as saved.
    pub durability: Durability,
    /// The secret that signs cookies (raw text or `base64:...`).
    pub app_key: String,
}

impl BenchConfig {
    /// Reads `REDIS_URL`, `SESSION_DURABILITY` and `APP_KEY`, with the bench defaults.
    pub fn from_env() -> Result<Self, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let durability = match var("SESSION_DURABILITY") {
            Some(text) => text.parse().map_err(|e| format!("SESSION_DURABILITY: {e}"))?,
            None => Durability::Async,
        };
        Ok(Self {
            redis_url: var("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6390".into()),
            durability,
            app_key: var("APP_KEY").unwrap_or_else(|| BENCH_APP_KEY.into()),
        })
    }
}

async fn plain() -> &'static str {
    "ok"
}

async fn read(session: Session) -> mooring::Result<String> {
    let n: i64 = session.get("n").await?.unwrap_or(0);
    Ok(n.to_string())
}

async fn incr(session: Session) -> mooring::Result<String> {
    let n: i64 = session.get("n").await?.unwrap_or(0) + 1;
    session.insert("n", &n).await?;
    Ok(n.to_string())
}

/// The routes over an already connected store: `/read` and `/incr` behind the session layer, `/plain` not.
pub fn router(store: RedisStore, app_key: &str) -> Result<Router, String> {
    let secret = mooring::keys::parse_secret(app_key).map_err(|e| format!("APP_KEY: {e}"))?;
    let keys = Keys::new(&secret, &[]).map_err(|e| format!("APP_KEY: {e}"))?;
    let config = SessionConfig::default()
        .with_secure(false)
        .with_cookie_name(COOKIE);
    let manager = SessionManager::new(Arc::new(store), keys, config);
    Ok(Router::new()
        .route("/read", get(read))
        .route("/incr", get(incr))
        .layer(manager.layer())
        // Added after .layer(): /plain never sees the session middleware.
        .route("/plain", get(plain)))
}

/// Connects to Redis (one multiplexed connection) and builds the app.
pub async fn app(config: &BenchConfig) -> Result<Router, String> {
    let mut redis = RedisConfig::new(Topology::Standalone {
        url: config.redis_url.clone(),
    });
    redis.durability = config.durability;
    let store = RedisStore::connect(redis)
        .await
        .map_err(|e| format!("Redis at REDIS_URL: {e}"))?;
    router(store, &config.app_key)
}
