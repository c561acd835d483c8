//! Building and running the application: `Application::build(config)` then `run_until_stopped()`.
//!
//! Shutdown (SIGTERM or SIGINT): readiness turns 503 at once; the instance keeps serving for
//! `SHUTDOWN_DELAY_SECONDS` so load balancers stop sending new requests; then it stops accepting connections,
//! lets in-flight requests finish for at most `SHUTDOWN_GRACE_SECONDS`, and exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use mooring::{AttemptStore, MemoryAttemptStore, MemoryStore, SessionManager, SessionStore, Throttle};
use mooring_redis::RedisStore;
use mooring_sql::{SqlAttemptStore, SqlStore};
use tokio::net::TcpListener;

use crate::config::{CacheDriver, Config, ConfigError, SessionDriver};
use crate::db::{Db, DbError};
use crate::hashing::HashPool;
use crate::metrics::Metrics;
use crate::state::{AppState, StoreOutage};
use crate::traced_store::TracedStore;

/// Why the app could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is wrong.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The app's database (users and items) could not be opened or migrated.
    #[error("the app's database {place} cannot be opened: {detail}; {fix}")]
    Database {
        /// Where it is: the SQLite file, or which server (never the URL: it may hold a password).
        place: String,
        /// Why, without the session store's wording.
        detail: String,
        /// What to do about it.
        fix: &'static str,
    },
    /// The directory of a SQLite database could not be created.
    #[error(
        "cannot create {path}, the directory of the SQLite database: {source}; create it, or set DATA_DIR (or DATABASE_URL) to a writable place"
    )]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The session store could not be opened or migrated.
    #[error("session store: {0}")]
    SessionStore(#[from] mooring_sql::SqlStoreError),
    /// The Redis session store could not be reached or set up.
    #[error("Redis session store: {0}")]
    Redis(#[from] mooring_redis::RedisStoreError),
    /// The password hashing threads could not be started.
    #[error("password hashing threads: {0}")]
    Hashing(std::io::Error),
    /// The listen address could not be bound.
    #[error(
        "cannot listen on {addr} ({var}): {source}; if another process (a second instance?) holds it, set {var} to a free port (0 picks one)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The variable that sets its port: PORT or METRICS_PORT.
        var: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// How often expired session rows (and revocation log entries) are deleted.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(60);

/// Exposes the Redis connection layer's counters as metrics.
fn register_redis_counters(metrics: &Metrics, store: &RedisStore) {
    use std::sync::atomic::Ordering::Relaxed;
    let s = store.clone();
    metrics.add_counter(
        "mooring_redis_master_switches_total",
        "Times the Redis session store switched to a new master.",
        move || s.stats().master_switches.load(Relaxed),
    );
    let s = store.clone();
    metrics.add_counter(
        "mooring_redis_rediscoveries_total",
        "Rediscoveries of the Redis master (Sentinel queries or reconnects).",
        move || s.stats().rediscoveries.load(Relaxed),
    );
    let s = store.clone();
    metrics.add_counter(
        "mooring_redis_wait_missed_total",
        "Writes whose WAIT confirmed fewer replicas than required (not counted as saved).",
        move || s.stats().wait_missed.load(Relaxed),
    );
    let s = store.clone();
    metrics.add_counter(
        "mooring_redis_retries_total",
        "Redis calls retried after a failover-class error.",
        move || s.stats().retries.load(Relaxed),
    );
}

/// Exposes the password hashing pool's queue, refusals and durations as metrics.
fn register_hash_metrics(metrics: &Metrics, hasher: &HashPool) {
    use std::sync::atomic::Ordering::Relaxed;
    let s = Arc::clone(hasher.stats());
    metrics.add_gauge(
        "inventory_password_hash_queue_depth",
        "Password hashes waiting for a hashing thread.",
        move || s.queued.load(Relaxed),
    );
    let s = Arc::clone(hasher.stats());
    metrics.add_counter(
        "inventory_password_hash_rejected_queue_full_total",
        "Password hashes refused (503) because the queue was full.",
        move || s.rejected_full.load(Relaxed),
    );
    let s = Arc::clone(hasher.stats());
    metrics.add_counter(
        "inventory_password_hash_rejected_timeout_total",
        "Password hashes refused (503) because they waited longer than PASSWORD_HASH_QUEUE_TIMEOUT_MS.",
        move || s.rejected_timeout.load(Relaxed),
    );
    let s = Arc::clone(hasher.stats());
    metrics.add_counter(
        "inventory_password_hash_refused_params_total",
        "Stored password hashes refused because their parameters need more memory than a hashing thread has.",
        move || s.refused_params.load(Relaxed),
    );
    let s = Arc::clone(hasher.stats());
    metrics.add_histogram(
        "inventory_password_hash_duration_seconds",
        "Time one password hash took on its hashing thread.",
        move || s.duration.snapshot(),
    );
}

/// The router with all middleware, outermost first: request logging, request metrics, security headers, the
/// request timeout and body limit, then (probes excepted) the in-flight limit and sessions. A request shed by
/// the in-flight limit never reaches the session layer, so it costs no store call.
pub fn router(state: AppState) -> Router {
    let limits = &state.http_limits;
    let app = crate::http::shed_load(
        crate::routes::router().layer(state.sessions.layer()),
        limits,
        Arc::clone(&state.http_stats),
    );
    let app = crate::http::limit_requests(app.merge(crate::routes::probes()), limits);
    crate::http::security_headers(app, state.hsts)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state.metrics),
            crate::metrics::track_requests,
        ))
        .layer(axum::middleware::from_fn(crate::telemetry::log_requests))
        .with_state(state)
}

/// Creates the directory of a SQLite database file, so a fresh install with `APP_KEY` set starts without a
/// `./data` made beforehand (SQLite creates the file, not its directory).
fn create_sqlite_dir(url: &str) -> Result<(), StartError> {
    let Some(path) = sqlite_path(url) else {
        return Ok(());
    };
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|source| StartError::DataDir {
                path: dir.to_owned(),
                source,
            })
        }
        _ => Ok(()),
    }
}

/// The file of a `sqlite:` URL; `None` for other databases and in-memory SQLite.
fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| path.into())
}

/// Says which database failed and how to fix it. The app's database shares the session store's SQL layer,
/// whose errors speak of the "session database": that wording is left out here.
fn database_error(url: &str, err: DbError) -> StartError {
    use mooring_sql::SqlStoreError;
    let detail = match err {
        DbError::Sql(e) | DbError::Setup(SqlStoreError::Database(e)) => e.to_string(),
        DbError::Setup(SqlStoreError::Migration {
            version,
            description,
            source,
        }) => format!("schema migration {version} ({description}) failed: {source}"),
        DbError::Setup(SqlStoreError::MigrationLockTimeout(secs)) => {
            format!("timed out after {secs} s waiting for another process's migration lock")
        }
        DbError::Setup(other) => other.to_string(),
    };
    match sqlite_path(url) {
        Some(path) => StartError::Database {
            place: format!("(SQLite file {})", path.display()),
            detail,
            fix: "check that its directory is writable, or set DATA_DIR or DATABASE_URL",
        },
        None => StartError::Database {
            place: match mooring_sql::Dialect::from_url(url) {
                Ok(mooring_sql::Dialect::MySql) => "(the MySQL/MariaDB server in DATABASE_URL)".into(),
                _ => "(the PostgreSQL server in DATABASE_URL)".into(),
            },
            detail,
            fix: "check DATABASE_URL and that the server is reachable",
        },
    }
}

/// A built application, bound to its port, not yet serving.
pub struct Application {
    listener: TcpListener,
    metrics_listener: TcpListener,
    state: AppState,
    shutdown_delay: Duration,
    shutdown_grace: Duration,
}

impl Application {
    /// Opens the database and session store (migrating both), and binds the listener.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let keys = config.keys()?;
        let db_url = secrecy::ExposeSecret::expose_secret(&config.database_url);
        create_sqlite_dir(db_url)?;
        if let SessionDriver::Database(url) = &config.session_driver {
            create_sqlite_dir(url)?;
        }
        let db = Db::connect(db_url).await.map_err(|e| database_error(db_url, e))?;
        // Created before the store so a store can register its own counters (`metrics.add_counter(...)`).
        let metrics = Arc::new(Metrics::new());
        let mut redis_store: Option<RedisStore> = None;
        let (store, driver): (Arc<dyn SessionStore>, &'static str) = match &config.session_driver {
            SessionDriver::Database(url) => {
                let store = SqlStore::connect(url).await?;
                store.migrate().await?;
                // The task ends with the runtime; deleting expired rows never blocks requests.
                drop(store.spawn_cleanup(CLEANUP_INTERVAL));
                (Arc::new(store), "database")
            }
            SessionDriver::Redis(redis) => {
                let mut redis = (**redis).clone();
                // A call retries through a failover for most of the engine's timeout, never past it.
                redis.deadline = config.store_timeout.mul_f64(0.9);
                let mut store = RedisStore::connect(redis).await?;
                if config.session_revocation_log {
                    // Ended sessions are logged in the app's own database, which a loss of Redis does not reach,
                    // for as long as any backup can hold a live version of them.
                    let log = db
                        .revocation_log(config.session_absolute)
                        .await
                        .map_err(|e| database_error(db_url, e))?;
                    drop(log.spawn_cleanup(CLEANUP_INTERVAL));
                    store = store.with_revocation_log(Arc::new(log));
                }
                register_redis_counters(&metrics, &store);
                redis_store = Some(store.clone());
                (Arc::new(store), "redis")
            }
            SessionDriver::Memory => (Arc::new(MemoryStore::new()), "memory"),
        };
        // Only exported spans need the store's own spans; without export the store is used as it is.
        let store: Arc<dyn SessionStore> = if config.trace_export.is_some() {
            let system = match &config.session_driver {
                SessionDriver::Database(url) => match mooring_sql::Dialect::from_url(url) {
                    Ok(mooring_sql::Dialect::Postgres) => "postgresql",
                    Ok(mooring_sql::Dialect::MySql) => "mysql",
                    _ => "sqlite",
                },
                SessionDriver::Redis(_) => "redis",
                SessionDriver::Memory => "memory",
            };
            Arc::new(TracedStore::new(store, system))
        } else {
            store
        };
        let attempts: Arc<dyn AttemptStore> = match (&config.cache_driver, &redis_store) {
            // The session store's own connection: it follows Sentinel failovers already.
            (CacheDriver::Redis(_), Some(store)) => Arc::new(store.throttle()),
            (CacheDriver::Redis(redis), None) => {
                let mut redis = (**redis).clone();
                redis.deadline = config.store_timeout.mul_f64(0.9);
                Arc::new(RedisStore::connect(redis).await?.throttle())
            }
            (CacheDriver::Database(url), _) => {
                let attempts = SqlAttemptStore::connect(url).await?;
                drop(attempts.spawn_cleanup(CLEANUP_INTERVAL));
                Arc::new(attempts)
            }
            (CacheDriver::Memory, _) => Arc::new(MemoryAttemptStore::new()),
        };
        let throttle = Throttle::new(attempts, config.login_backoff, config.store_timeout);
        let hasher = HashPool::start(config.hash_pool).map_err(StartError::Hashing)?;
        register_hash_metrics(&metrics, &hasher);
        let sessions = SessionManager::new(store, keys, config.session_config());
        let addr = SocketAddr::new(config.host, config.port);
        let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind {
            addr,
            var: "PORT",
            source,
        })?;
        let metrics_addr = SocketAddr::new(config.host, config.metrics_port);
        let metrics_listener = TcpListener::bind(metrics_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: metrics_addr,
                var: "METRICS_PORT",
                source,
            })?;
        let http_stats = Arc::new(crate::http::HttpStats::default());
        crate::http::register_counters(&metrics, &http_stats);
        let state = AppState {
            db,
            sessions,
            instance: config.instance_name.clone().into(),
            driver,
            accepting: Arc::new(AtomicBool::new(true)),
            trusted_proxies: Arc::new(config.trusted_proxies.clone()),
            test_endpoints: config.test_endpoints,
            http_limits: config.http.clone(),
            http_stats,
            hsts: config.cookie_secure,
            metrics,
            store_outage: Arc::new(StoreOutage::new(config.store_timeout)),
            hasher,
            throttle,
            login_limits: config.login_limits,
        };
        Ok(Self {
            listener,
            metrics_listener,
            state,
            shutdown_delay: config.shutdown_delay,
            shutdown_grace: config.shutdown_grace,
        })
    }

    /// The bound port (useful with `PORT=0`).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The bound port of the `/metrics` listener (useful with `METRICS_PORT=0`).
    pub fn metrics_port(&self) -> u16 {
        self.metrics_listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The shared state, for tests.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `stop` completes, then shuts down gracefully (see the module documentation).
    pub async fn run_until(self, stop: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let Self {
            listener,
            metrics_listener,
            state,
            shutdown_delay,
            shutdown_grace,
        } = self;
        if let Ok(addr) = metrics_listener.local_addr() {
            tracing::info!(url = %format!("http://{addr}/metrics"), "metrics are served");
        }
        // Metrics stay up through the shutdown delay and drain, and end with the process.
        let metrics_app = crate::metrics::router(Arc::clone(&state.metrics), state.sessions.clone());
        let metrics_server = tokio::spawn(async move { axum::serve(metrics_listener, metrics_app).await });
        let _stop_metrics = AbortOnDrop(metrics_server);
        let accepting = Arc::clone(&state.accepting);
        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        let limits = state.http_limits.clone();
        let stats = Arc::clone(&state.http_stats);
        let app = router(state);
        let server = tokio::spawn(async move {
            crate::http::serve(listener, app, &limits, stats, async move {
                let _ = drain_rx.await;
            })
            .await;
            Ok::<(), std::io::Error>(())
        });
        stop.await;
        accepting.store(false, Ordering::SeqCst);
        tracing::info!(delay = ?shutdown_delay, grace = ?shutdown_grace, "shutdown requested: readiness is now 503");
        tokio::time::sleep(shutdown_delay).await;
        let _ = drain_tx.send(());
        let mut server = server;
        match tokio::time::timeout(shutdown_grace, &mut server).await {
            Ok(Ok(result)) => {
                tracing::info!("all requests finished; exiting");
                result
            }
            Ok(Err(join)) => Err(std::io::Error::other(join)),
            Err(_) => {
                tracing::warn!(grace = ?shutdown_grace, "grace period over with requests still in flight; exiting");
                server.abort();
                Ok(())
            }
        }
    }
}

/// Aborts a task when dropped, however the function holding it returns.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
