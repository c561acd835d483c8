//! Configuration, from environment variables only.
//!
//! Names follow the seed deployment (Laravel's) where one exists: `APP_KEY`, `SESSION_DRIVER`,
//! `SESSION_LIFETIME`, `SESSION_COOKIE`, ... Every secret may instead be read from a file named by
//! `<NAME>_FILE` (a Kubernetes secret mount). A bad value stops start-up with an error that names the
//! variable and the fix; secrets never appear in errors or logs.
//!
//! [`VARIABLES`] is the reference table; a test checks that the README documents every entry.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mooring::SameSite;
use secrecy::{ExposeSecret, SecretString};

use crate::forwarded::TrustedProxies;
use crate::http::HttpLimits;

/// One documented variable: name, default, meaning.
pub struct Variable {
    /// The variable's name.
    pub name: &'static str,
    /// Its default, as documented.
    pub default: &'static str,
    /// What it does.
    pub help: &'static str,
}

/// The largest SESSION_MAX_PER_USER: the cap also bounds the sessions page, which must stay small.
const MAX_SESSIONS_PER_USER: u32 = 1000;

/// Every variable the app reads.
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: "APP_KEY",
        default: "generated into DATA_DIR/app_key",
        help: "Secret that signs session cookies (and encrypts values with SESSION_ENCRYPT). 32+ bytes, or `base64:` + 32 bytes in base64. Every replica must share it. `APP_KEY_FILE` reads it from a file.",
    },
    Variable {
        name: "APP_PREVIOUS_KEYS",
        default: "(none)",
        help: "Comma-separated former APP_KEYs, still accepted so a key rotation logs nobody out. `APP_PREVIOUS_KEYS_FILE` too.",
    },
    Variable {
        name: "INSTANCE_NAME",
        default: "the hostname",
        help: "Name of this instance, shown as `served_by` in `/session` and in page footers.",
    },
    Variable {
        name: "HOST",
        default: "127.0.0.1",
        help: "Address to listen on (`0.0.0.0` in a container).",
    },
    Variable {
        name: "PORT",
        default: "8080",
        help: "Port to listen on (0 picks a free one).",
    },
    Variable {
        name: "METRICS_PORT",
        default: "9464",
        help: "Port of the Prometheus `/metrics` listener, on HOST (0 picks a free one). Keep it out of the Service the Ingress uses.",
    },
    Variable {
        name: "DATA_DIR",
        default: "./data",
        help: "Directory for the default SQLite database and the generated APP_KEY.",
    },
    Variable {
        name: "DATABASE_URL",
        default: "sqlite://DATA_DIR/inventory.db",
        help: "Database for users and items: `sqlite://PATH`, `postgres://...` or `mysql://...`. `DATABASE_URL_FILE` too.",
    },
    Variable {
        name: "SESSION_DRIVER",
        default: "database",
        help: "Where sessions live: `database` (SQL, see SESSION_DATABASE_URL), `redis` (see the REDIS_* variables) or `memory` (one process only, lost on restart).",
    },
    Variable {
        name: "SESSION_DATABASE_URL",
        default: "DATABASE_URL",
        help: "Database for sessions with SESSION_DRIVER=database. `SESSION_DATABASE_URL_FILE` too.",
    },
    Variable {
        name: "SESSION_LIFETIME",
        default: "120",
        help: "Idle timeout in minutes: a session unused this long ends.",
    },
    Variable {
        name: "SESSION_ABSOLUTE_LIFETIME",
        default: "720",
        help: "Absolute lifetime in minutes: a session ends this long after sign-in however active it is.",
    },
    Variable {
        name: "SESSION_COOKIE",
        default: "inventory_session (`__Host-inventory_session` with SESSION_SECURE_COOKIE=true)",
        help: "Name of the session cookie. The `__Host-` prefix keeps sibling subdomains from planting or overwriting it; a name given here is kept as is, and a `__Host-` name requires SESSION_SECURE_COOKIE=true, SESSION_PATH=/ and no SESSION_DOMAIN (`__Secure-` requires SESSION_SECURE_COOKIE=true).",
    },
    Variable {
        name: "SESSION_SECURE_COOKIE",
        default: "false",
        help: "Send the cookie only over HTTPS. Set `true` in production behind TLS.",
    },
    Variable {
        name: "SESSION_SAME_SITE",
        default: "lax",
        help: "Cookie SameSite: `lax`, `strict` or `none` (`none` requires SESSION_SECURE_COOKIE=true).",
    },
    Variable {
        name: "SESSION_PATH",
        default: "/",
        help: "Cookie Path.",
    },
    Variable {
        name: "SESSION_DOMAIN",
        default: "(host only)",
        help: "Cookie Domain.",
    },
    Variable {
        name: "SESSION_ENCRYPT",
        default: "false",
        help: "Encrypt session values at rest (XChaCha20-Poly1305, key derived from APP_KEY) and authenticate each record's store key, user, creation and deadline: a record edited in the store is refused (signed out).",
    },
    Variable {
        name: "SESSION_ENCRYPT_MIGRATE",
        default: "false",
        help: "With SESSION_ENCRYPT=true, also accept sessions stored before encryption (plain values, no record MAC) and upgrade them on their next request. Turn it on for the rollout of SESSION_ENCRYPT, then off: while on, anyone who can write to the store can forge such a session.",
    },
    Variable {
        name: "SESSION_STORE_TIMEOUT_MS",
        default: "2000",
        help: "Longest a session store call may take before the request gets 503 with Retry-After.",
    },
    Variable {
        name: "SESSION_MAX_PER_USER",
        default: "20",
        help: "Most sessions one account may have signed in at once (1 to 1000). A sign-in beyond it signs the account's oldest session out; the sessions page lists at most this many. `0` removes the cap (the page then lists the newest 100).",
    },
    Variable {
        name: "SHUTDOWN_DELAY_SECONDS",
        default: "0",
        help: "After SIGTERM, keep serving this long with /readyz at 503 so load balancers stop routing here first.",
    },
    Variable {
        name: "SHUTDOWN_GRACE_SECONDS",
        default: "25",
        help: "Then wait at most this long for in-flight requests before exiting.",
    },
    Variable {
        name: "TRUSTED_PROXIES",
        default: "0",
        help: "Proxies whose `X-Forwarded-For` entries are believed, for the client address (sessions page, login throttling): a number of hops (`1`: the load balancer in front; the client is the entry that many places from the right), or comma-separated networks and addresses (`10.0.0.0/8,fd00::/8`: walking from the right, the first address outside them is the client). The leftmost, client-written entry is never taken. `0`: the TCP peer.",
    },
    Variable {
        name: "TRUST_PROXY_HEADERS",
        default: "false",
        help: "Older name: `true` means TRUSTED_PROXIES=1 (the chart sets it). TRUSTED_PROXIES, when set, wins.",
    },
    Variable {
        name: "SESSION_TEST_ENDPOINTS",
        default: "false",
        help: "Serve `PUT`/`GET /session/values/{name}` (the session-survival probe and chaos lab use them); 404 when off. `GET /session` is always on.",
    },
    Variable {
        name: "HTTP_HEADER_READ_TIMEOUT_MS",
        default: "10000",
        help: "A connection must send a complete request head within this time, else it is closed; also the idle keep-alive timeout. Keep it above a proxy's idle timeout to this app unless the proxy retries on a closed idle connection.",
    },
    Variable {
        name: "HTTP_MAX_HEADER_BYTES",
        default: "16384",
        help: "Largest request head (start line and headers); beyond it, `431`.",
    },
    Variable {
        name: "HTTP_MAX_CONNECTIONS",
        default: "1024",
        help: "Most connections open at once; beyond it the app stops accepting and new connections wait in the listen backlog.",
    },
    Variable {
        name: "HTTP_MAX_IN_FLIGHT",
        default: "256",
        help: "Most requests handled at once (`/healthz` and `/readyz` excepted); beyond it, `503` with `Retry-After: 1` at once.",
    },
    Variable {
        name: "HTTP_REQUEST_TIMEOUT_MS",
        default: "30000",
        help: "Longest a request may take, body upload included; beyond it, `408`.",
    },
    Variable {
        name: "HTTP_MAX_BODY_BYTES",
        default: "65536",
        help: "Largest request body; beyond it, `413`.",
    },
    Variable {
        name: "LOG_FORMAT",
        default: "auto",
        help: "`json`, `text`, or `auto` (text on a terminal, JSON otherwise).",
    },
    Variable {
        name: "RUST_LOG",
        default: "info",
        help: "Log filter, e.g. `info,mooring=debug`.",
    },
    Variable {
        name: "REDIS_URL",
        default: "(from REDIS_HOST and REDIS_PORT)",
        help: "With SESSION_DRIVER=redis and no Sentinels or Cluster: `redis://[user:password@]host:port/db`, or `rediss://` for TLS. Replaces REDIS_HOST/REDIS_PORT. `REDIS_URL_FILE` too.",
    },
    Variable {
        name: "REDIS_HOST",
        default: "127.0.0.1",
        help: "Redis host (standalone).",
    },
    Variable {
        name: "REDIS_PORT",
        default: "6379",
        help: "Redis port (standalone).",
    },
    Variable {
        name: "REDIS_USERNAME",
        default: "(none)",
        help: "Redis ACL user of the data nodes.",
    },
    Variable {
        name: "REDIS_PASSWORD",
        default: "(none)",
        help: "Password of the data nodes. `REDIS_PASSWORD_FILE` too.",
    },
    Variable {
        name: "REDIS_DB",
        default: "0",
        help: "Database number (not with Cluster).",
    },
    Variable {
        name: "REDIS_PREFIX",
        default: "(empty)",
        help: "Prefix of every session key; set one when other data shares the database. Keys of 14 characters or less keep a small session at 88 bytes.",
    },
    Variable {
        name: "REDIS_TLS",
        default: "false",
        help: "Use TLS to the data nodes and Sentinels (a `rediss://` URL implies it).",
    },
    Variable {
        name: "REDIS_SENTINELS",
        default: "(none)",
        help: "Comma-separated Sentinel addresses (`host:port`): the master is discovered through them and followed across failovers.",
    },
    Variable {
        name: "REDIS_SENTINEL_MASTER",
        default: "mymaster",
        help: "Name of the master the Sentinels monitor.",
    },
    Variable {
        name: "REDIS_SENTINEL_USERNAME",
        default: "(none)",
        help: "ACL user for the Sentinels.",
    },
    Variable {
        name: "REDIS_SENTINEL_PASSWORD",
        default: "(none)",
        help: "Password of the Sentinels (often not the data nodes'). `REDIS_SENTINEL_PASSWORD_FILE` too.",
    },
    Variable {
        name: "REDIS_CLUSTER_NODES",
        default: "(none)",
        help: "Comma-separated Redis Cluster seed nodes (`host:port`).",
    },
    Variable {
        name: "REDIS_TIMEOUT_MS",
        default: "500",
        help: "Connect and response timeout of one Redis round trip. A session call retries through a failover until SESSION_STORE_TIMEOUT_MS.",
    },
    Variable {
        name: "SESSION_DURABILITY",
        default: "auto",
        help: "`replicas:N`: a write is saved only when `WAIT N` confirms N replicas have it (same round trip); `async`: when the master has it; `auto`: `replicas:1` when the master has replicas.",
    },
    Variable {
        name: "SESSION_REVOCATION_LOG",
        default: "true",
        help: "With SESSION_DRIVER=redis, write the Redis key of every session that is signed out, revoked or evicted to the `mooring_revocations` table in DATABASE_URL before it is deleted, so a restore of an older Redis backup never brings it back. While that database is down, sign-outs answer 503 and delete nothing. Entries are kept for SESSION_ABSOLUTE_LIFETIME. `false` turns it off.",
    },
    Variable {
        name: "PASSWORD_HASH_WORKERS",
        default: "2",
        help: "Threads that hash passwords (argon2id), each with 19 MiB allocated once at start: hashing takes at most this × 19 MiB of memory, whatever the traffic. 1 to 64.",
    },
    Variable {
        name: "PASSWORD_HASH_QUEUE",
        default: "32",
        help: "Sign-ins and registrations that may wait for a hashing thread; beyond it the request gets 503 with Retry-After (a busy page). 1 to 10000.",
    },
    Variable {
        name: "PASSWORD_HASH_QUEUE_TIMEOUT_MS",
        default: "2000",
        help: "Longest a sign-in waits in that queue before it gets the same 503. 1 to 60000.",
    },
    Variable {
        name: "CACHE_DRIVER",
        default: "`redis` with SESSION_DRIVER=redis, else `database`",
        help: "Where login throttling counts failures, shared by every replica: `redis` (the REDIS_* settings, following Sentinel failovers), `database` (the `mooring_attempts` table in DATABASE_URL) or `memory` (one process only: each replica counts on its own).",
    },
    Variable {
        name: "LOGIN_MAX_ATTEMPTS",
        default: "5",
        help: "Failed sign-ins for one account from one client address per window before that pair is locked out.",
    },
    Variable {
        name: "LOGIN_MAX_ATTEMPTS_PER_ACCOUNT",
        default: "20",
        help: "Failed sign-ins for one account from all addresses together per window before the account is locked out for everyone (a guessing attack spread over many addresses).",
    },
    Variable {
        name: "LOGIN_MAX_ATTEMPTS_PER_IP",
        default: "50",
        help: "Failed sign-ins from one client address, whatever the account, per window before the address is locked out.",
    },
    Variable {
        name: "LOGIN_LOCKOUT_WINDOW_SECONDS",
        default: "900",
        help: "How long failures are counted, from the first one. 1 to 86400.",
    },
    Variable {
        name: "LOGIN_LOCKOUT_SECONDS",
        default: "1",
        help: "The first lockout once a limit is reached; it doubles with every further failure, up to LOGIN_LOCKOUT_WINDOW_SECONDS and never beyond 900 (15 minutes). 1 to 900.",
    },
    Variable {
        name: "OTEL_EXPORTER_OTLP_ENDPOINT",
        default: "(none: no export)",
        help: "Base URL of an OpenTelemetry collector's OTLP/HTTP receiver, e.g. `http://otel-collector:4318`: spans are sent as protobuf to its `/v1/traces`. Plain `http://` only (this build has no TLS for it). Unset, nothing is exported. `OTEL_EXPORTER_OTLP_HEADERS` adds request headers.",
    },
    Variable {
        name: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        default: "(none)",
        help: "Full URL for spans, used as is (e.g. `http://otel-collector:4318/v1/traces`); replaces OTEL_EXPORTER_OTLP_ENDPOINT and also turns export on.",
    },
    Variable {
        name: "OTEL_SERVICE_NAME",
        default: "inventory",
        help: "`service.name` of the exported spans.",
    },
    Variable {
        name: "OTEL_TRACES_SAMPLER_ARG",
        default: "1.0",
        help: "Share of new traces exported, from 0 to 1. A request whose `traceparent` header carries the caller's decision follows that decision instead.",
    },
];

/// A configuration error: names the variable and says how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    /// The variable at fault.
    pub var: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn bad(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        message: message.into(),
    }
}

/// Where sessions are stored.
#[derive(Clone, Debug)]
pub enum SessionDriver {
    /// SQL, on this URL.
    Database(String),
    /// Redis (standalone, Sentinel or Cluster).
    Redis(Box<mooring_redis::RedisConfig>),
    /// Process memory.
    Memory,
}

/// Where login throttling keeps its counts.
#[derive(Clone, Debug)]
pub enum CacheDriver {
    /// The app's SQL database (DATABASE_URL).
    Database(String),
    /// Redis (the REDIS_* settings; the session store's own connection with SESSION_DRIVER=redis).
    Redis(Box<mooring_redis::RedisConfig>),
    /// Process memory (one process only).
    Memory,
}

/// The longest login lockout, whatever the settings: a lockout anyone can trigger for someone else's account
/// must stay short (see `docs/architecture.md`, "Login throttling").
pub const MAX_LOCKOUT: Duration = Duration::from_secs(900);

/// Failed sign-ins allowed per window, per counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginLimits {
    /// One account from one address.
    pub per_account_address: u32,
    /// One account from all addresses.
    pub per_account: u32,
    /// One address, all accounts.
    pub per_ip: u32,
}

/// Output format of logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON lines.
    Json,
    /// Human-readable text.
    Text,
    /// Text on a terminal, JSON otherwise.
    Auto,
}

/// Trace export over OTLP/HTTP (protobuf bodies). `None` in [`Config::trace_export`] when no endpoint is set.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceExport {
    /// The URL spans are POSTed to: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is, or
    /// OTEL_EXPORTER_OTLP_ENDPOINT + `/v1/traces`.
    pub endpoint: String,
    /// `service.name` of every exported span.
    pub service_name: String,
    /// Share of new (root) traces that are sampled, 0 to 1.
    pub sample_ratio: f64,
}

/// Where the application secret came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// APP_KEY or APP_KEY_FILE.
    Configured,
    /// Not configured: read from, or generated into, this file.
    Generated(PathBuf),
}

/// The whole configuration of one app instance.
#[derive(Debug)]
pub struct Config {
    /// The application secret.
    pub app_key: SecretString,
    /// Where `app_key` came from.
    pub key_source: KeySource,
    /// Former secrets still accepted.
    pub previous_keys: Vec<SecretString>,
    /// Shown as `served_by`.
    pub instance_name: String,
    /// Listen address.
    pub host: IpAddr,
    /// Listen port.
    pub port: u16,
    /// Port of the `/metrics` listener.
    pub metrics_port: u16,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Users and items database.
    pub database_url: SecretString,
    /// Session storage.
    pub session_driver: SessionDriver,
    /// Idle timeout.
    pub session_idle: Duration,
    /// Absolute lifetime.
    pub session_absolute: Duration,
    /// Cookie name.
    pub cookie_name: String,
    /// Cookie `Secure`.
    pub cookie_secure: bool,
    /// Cookie `SameSite`.
    pub cookie_same_site: SameSite,
    /// Cookie `Path`.
    pub cookie_path: String,
    /// Cookie `Domain`.
    pub cookie_domain: Option<String>,
    /// Encrypt values at rest.
    pub session_encrypt: bool,
    /// Accept (and upgrade) records stored without encryption while it is on.
    pub session_encrypt_migrate: bool,
    /// Session store call timeout.
    pub store_timeout: Duration,
    /// The most sessions one user may have (0: no cap).
    pub session_max_per_user: u32,
    /// With the Redis driver, log ended sessions in the app's database (SESSION_REVOCATION_LOG).
    pub session_revocation_log: bool,
    /// Serve on after SIGTERM with readiness off.
    pub shutdown_delay: Duration,
    /// Wait for in-flight requests at most this long.
    pub shutdown_grace: Duration,
    /// Whose X-Forwarded-For entries are believed.
    pub trusted_proxies: TrustedProxies,
    /// Serve `/session/values/*`.
    pub test_endpoints: bool,
    /// The HTTP server's limits.
    pub http: HttpLimits,
    /// Log format.
    pub log_format: LogFormat,
    /// OTLP trace export; off (`None`) unless an endpoint is configured.
    pub trace_export: Option<TraceExport>,
    /// The password hashing pool.
    pub hash_pool: crate::hashing::HashPoolConfig,
    /// Where login throttling keeps its counts.
    pub cache_driver: CacheDriver,
    /// Failed sign-ins allowed per window.
    pub login_limits: LoginLimits,
    /// Window and lockouts of login throttling.
    pub login_backoff: mooring::Backoff,
}

/// Reads variables through `lookup`, so tests need not touch the process environment.
struct Env<F: Fn(&str) -> Option<String>>(F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// A secret from `NAME` or the file named by `NAME_FILE` (not both).
    fn secret(&self, var: &'static str, file_var: &'static str) -> Result<Option<SecretString>, ConfigError> {
        match (self.get(var), self.get(file_var)) {
            (Some(_), Some(_)) => Err(bad(var, format!("both {var} and {file_var} are set; keep one"))),
            (Some(value), None) => Ok(Some(SecretString::from(value))),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    bad(
                        file_var,
                        format!("cannot read '{path}': {e}; point it at a readable file"),
                    )
                })?;
                Ok(Some(SecretString::from(text.trim().to_owned())))
            }
            (None, None) => Ok(None),
        }
    }

    fn parse<T: std::str::FromStr>(
        &self,
        var: &'static str,
        default: T,
        expect: &str,
    ) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| bad(var, format!("'{text}' is not {expect}"))),
        }
    }

    fn flag(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(var).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "true" | "1" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "false" | "0" | "no" | "off") => Ok(false),
            Some(v) => Err(bad(var, format!("'{v}' is not a boolean; use true or false"))),
        }
    }

    /// A whole number within `range`.
    fn bounded(
        &self,
        var: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        let value: u64 = self.parse(var, default, "a whole number")?;
        if !range.contains(&value) {
            return Err(bad(
                var,
                format!("{value} is outside {} to {}", range.start(), range.end()),
            ));
        }
        Ok(value)
    }

    fn minutes(&self, var: &'static str, default: u64) -> Result<Duration, ConfigError> {
        let minutes: u64 = self.parse(var, default, "a whole number of minutes")?;
        if minutes == 0 {
            return Err(bad(var, "must be at least 1 minute"));
        }
        Ok(Duration::from_secs(minutes * 60))
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (name → value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(lookup);
        let data_dir = PathBuf::from(env.get("DATA_DIR").unwrap_or_else(|| "./data".into()));
        let default_db = format!("sqlite://{}", data_dir.join("inventory.db").display());

        let (app_key, key_source) = match env.secret("APP_KEY", "APP_KEY_FILE")? {
            Some(key) => (key, KeySource::Configured),
            None => {
                let path = data_dir.join("app_key");
                (load_or_generate_key(&path)?, KeySource::Generated(path))
            }
        };
        let previous_keys = env
            .secret("APP_PREVIOUS_KEYS", "APP_PREVIOUS_KEYS_FILE")?
            .map(|all| {
                all.expose_secret()
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(|k| SecretString::from(k.to_owned()))
                    .collect()
            })
            .unwrap_or_default();

        let database_url = env
            .secret("DATABASE_URL", "DATABASE_URL_FILE")?
            .unwrap_or_else(|| default_db.into());
        check_db_url("DATABASE_URL", database_url.expose_secret())?;
        let session_driver = match env
            .get("SESSION_DRIVER")
            .map(|d| d.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("database") => {
                let url = env
                    .secret("SESSION_DATABASE_URL", "SESSION_DATABASE_URL_FILE")?
                    .unwrap_or_else(|| database_url.clone());
                check_db_url("SESSION_DATABASE_URL", url.expose_secret())?;
                SessionDriver::Database(url.expose_secret().to_owned())
            }
            Some("redis") => SessionDriver::Redis(Box::new(redis_config(&env)?)),
            Some("memory") | Some("array") => SessionDriver::Memory,
            Some(other) => {
                return Err(bad(
                    "SESSION_DRIVER",
                    format!("'{other}' is not a session driver; use database (SQL), redis or memory"),
                ));
            }
        };

        let cookie_secure = env.flag("SESSION_SECURE_COOKIE", false)?;
        let cookie_same_site: SameSite = match env.get("SESSION_SAME_SITE") {
            None => SameSite::Lax,
            Some(text) => text.parse().map_err(|e: String| bad("SESSION_SAME_SITE", e))?,
        };
        if cookie_same_site == SameSite::None && !cookie_secure {
            return Err(bad(
                "SESSION_SAME_SITE",
                "'none' requires SESSION_SECURE_COOKIE=true (browsers drop SameSite=None cookies without Secure)",
            ));
        }
        // Behind TLS the default name carries `__Host-`, so a sibling subdomain cannot toss a cookie of its
        // own at us; a name given explicitly is the operator's choice.
        let cookie_name = env.get("SESSION_COOKIE").unwrap_or_else(|| {
            if cookie_secure {
                format!("{}inventory_session", mooring::config::HOST_PREFIX)
            } else {
                "inventory_session".into()
            }
        });
        if !cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(bad(
                "SESSION_COOKIE",
                format!("'{cookie_name}' must use only letters, digits, '-', '_' and '.'"),
            ));
        }
        let cookie_path = env.get("SESSION_PATH").unwrap_or_else(|| "/".into());
        let cookie_domain = env.get("SESSION_DOMAIN");
        // Browsers silently drop a prefixed cookie that breaks the prefix's rules: refuse to start instead.
        mooring::SessionConfig::default()
            .with_cookie_name(cookie_name.clone())
            .with_secure(cookie_secure)
            .with_path(cookie_path.clone())
            .with_domain(cookie_domain.clone())
            .validate()
            .map_err(|e| match e {
                mooring::CookieRuleError::NotSecure(_) => bad(
                    "SESSION_COOKIE",
                    format!("{e}: set SESSION_SECURE_COOKIE=true or choose another name"),
                ),
                mooring::CookieRuleError::HostWithDomain(_) => bad(
                    "SESSION_DOMAIN",
                    format!("{e}: unset SESSION_DOMAIN, or set SESSION_COOKIE to a name without the prefix"),
                ),
                mooring::CookieRuleError::HostWithPath(..) => bad(
                    "SESSION_PATH",
                    format!("{e}: set SESSION_PATH=/, or set SESSION_COOKIE to a name without the prefix"),
                ),
            })?;
        let session_idle = env.minutes("SESSION_LIFETIME", 120)?;
        let session_absolute = env.minutes("SESSION_ABSOLUTE_LIFETIME", 720)?;
        if session_absolute < session_idle {
            return Err(bad(
                "SESSION_ABSOLUTE_LIFETIME",
                "must not be shorter than SESSION_LIFETIME",
            ));
        }
        let timeout_ms: u64 = env.parse("SESSION_STORE_TIMEOUT_MS", 2000, "a number of milliseconds")?;
        if !(10..=60_000).contains(&timeout_ms) {
            return Err(bad("SESSION_STORE_TIMEOUT_MS", "must be between 10 and 60000"));
        }
        let session_max_per_user: u32 =
            env.parse("SESSION_MAX_PER_USER", 20, "a number of sessions (0 for no cap)")?;
        if session_max_per_user > MAX_SESSIONS_PER_USER {
            return Err(bad(
                "SESSION_MAX_PER_USER",
                format!(
                    "must be at most {MAX_SESSIONS_PER_USER} (the sessions page lists that many), or 0 for no cap"
                ),
            ));
        }
        let log_format = match env.get("LOG_FORMAT").map(|f| f.to_ascii_lowercase()).as_deref() {
            None | Some("auto") => LogFormat::Auto,
            Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => return Err(bad("LOG_FORMAT", format!("'{other}' is not json, text or auto"))),
        };

        let trace_export = trace_export(&env)?;
        let hash_pool = crate::hashing::HashPoolConfig {
            workers: env.bounded("PASSWORD_HASH_WORKERS", 2, 1..=64)? as usize,
            queue: env.bounded("PASSWORD_HASH_QUEUE", 32, 1..=10_000)? as usize,
            queue_timeout: Duration::from_millis(env.bounded(
                "PASSWORD_HASH_QUEUE_TIMEOUT_MS",
                2000,
                1..=60_000,
            )?),
        };
        let cache_driver = match env.get("CACHE_DRIVER").map(|d| d.to_ascii_lowercase()).as_deref() {
            None => match &session_driver {
                SessionDriver::Redis(redis) => CacheDriver::Redis(redis.clone()),
                _ => CacheDriver::Database(database_url.expose_secret().to_owned()),
            },
            Some("database") => CacheDriver::Database(database_url.expose_secret().to_owned()),
            Some("redis") => CacheDriver::Redis(Box::new(redis_config(&env)?)),
            Some("memory") | Some("array") => CacheDriver::Memory,
            Some(other) => {
                return Err(bad(
                    "CACHE_DRIVER",
                    format!("'{other}' is not a cache driver; use redis, database (SQL) or memory"),
                ));
            }
        };
        let login_limits = LoginLimits {
            per_account_address: env.bounded("LOGIN_MAX_ATTEMPTS", 5, 1..=1000)? as u32,
            per_account: env.bounded("LOGIN_MAX_ATTEMPTS_PER_ACCOUNT", 20, 1..=10_000)? as u32,
            per_ip: env.bounded("LOGIN_MAX_ATTEMPTS_PER_IP", 50, 1..=100_000)? as u32,
        };
        let window = Duration::from_secs(env.bounded("LOGIN_LOCKOUT_WINDOW_SECONDS", 900, 1..=86_400)?);
        let first_lock = Duration::from_secs(env.bounded("LOGIN_LOCKOUT_SECONDS", 1, 1..=900)?);
        let login_backoff = mooring::Backoff {
            window,
            first_lock,
            max_lock: window.min(MAX_LOCKOUT).max(first_lock),
        };

        let port = env.parse("PORT", 8080, "a port number (0-65535)")?;
        let metrics_port = env.parse("METRICS_PORT", 9464, "a port number (0-65535)")?;
        if port != 0 && metrics_port == port {
            return Err(bad(
                "METRICS_PORT",
                format!("{port} is also PORT; give /metrics a port of its own"),
            ));
        }

        // The older boolean stays an alias of one hop, so deployments that set it keep their behaviour.
        let legacy_trust = env.flag("TRUST_PROXY_HEADERS", false)?;
        let trusted_proxies = match env.get("TRUSTED_PROXIES") {
            Some(text) => text.parse().map_err(|e: String| bad("TRUSTED_PROXIES", e))?,
            None if legacy_trust => TrustedProxies::Hops(1),
            None => TrustedProxies::None,
        };

        Ok(Self {
            app_key,
            key_source,
            previous_keys,
            instance_name: env.get("INSTANCE_NAME").unwrap_or_else(default_instance_name),
            host: env.parse(
                "HOST",
                IpAddr::from([127, 0, 0, 1]),
                "an IP address such as 0.0.0.0 or 127.0.0.1",
            )?,
            port,
            metrics_port,
            data_dir,
            database_url,
            session_driver,
            session_idle,
            session_absolute,
            cookie_name,
            cookie_secure,
            cookie_same_site,
            cookie_path,
            cookie_domain,
            session_encrypt: env.flag("SESSION_ENCRYPT", false)?,
            session_encrypt_migrate: env.flag("SESSION_ENCRYPT_MIGRATE", false)?,
            store_timeout: Duration::from_millis(timeout_ms),
            session_max_per_user,
            session_revocation_log: env.flag("SESSION_REVOCATION_LOG", true)?,
            shutdown_delay: Duration::from_secs(env.parse(
                "SHUTDOWN_DELAY_SECONDS",
                0,
                "a number of seconds",
            )?),
            shutdown_grace: Duration::from_secs(env.parse(
                "SHUTDOWN_GRACE_SECONDS",
                25,
                "a number of seconds",
            )?),
            trusted_proxies,
            test_endpoints: env.flag("SESSION_TEST_ENDPOINTS", false)?,
            http: http_limits(&env)?,
            log_format,
            trace_export,
            hash_pool,
            cache_driver,
            login_limits,
            login_backoff,
        })
    }

    /// The session engine's settings.
    pub fn session_config(&self) -> mooring::SessionConfig {
        mooring::SessionConfig::default()
            .with_cookie_name(self.cookie_name.clone())
            .with_secure(self.cookie_secure)
            .with_same_site(self.cookie_same_site)
            .with_path(self.cookie_path.clone())
            .with_domain(self.cookie_domain.clone())
            .with_idle_timeout(self.session_idle)
            .with_absolute_lifetime(self.session_absolute)
            .with_encryption(self.session_encrypt)
            .with_plaintext_migration(self.session_encrypt_migrate)
            .with_store_timeout(self.store_timeout)
            .with_max_sessions_per_user(self.session_max_per_user)
    }

    /// The key ring, from APP_KEY and APP_PREVIOUS_KEYS.
    pub fn keys(&self) -> Result<mooring::Keys, ConfigError> {
        let current = mooring::keys::parse_secret(self.app_key.expose_secret()).map_err(|e| {
            bad(
                if self.key_source == KeySource::Configured {
                    "APP_KEY"
                } else {
                    "DATA_DIR"
                },
                e.to_string(),
            )
        })?;
        let previous = self
            .previous_keys
            .iter()
            .map(|k| mooring::keys::parse_secret(k.expose_secret()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("APP_PREVIOUS_KEYS", e.to_string()))?;
        mooring::Keys::new(&current, &previous).map_err(|e| bad("APP_KEY", e.to_string()))
    }
}

/// The HTTP server's limits (`HTTP_*`), each within a range that keeps the server usable.
fn http_limits<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<HttpLimits, ConfigError> {
    let defaults = HttpLimits::default();
    let number = |var: &'static str, default: u64, range: std::ops::RangeInclusive<u64>, unit: &str| {
        let value: u64 = env.parse(var, default, &format!("a number of {unit}"))?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(bad(
                var,
                format!("{value} is outside {}-{} {unit}", range.start(), range.end()),
            ))
        }
    };
    let ms = |var, default: Duration, range| {
        number(var, default.as_millis() as u64, range, "milliseconds").map(Duration::from_millis)
    };
    let count =
        |var, default: usize, range, unit| number(var, default as u64, range, unit).map(|n| n as usize);
    let bytes = |var, default: usize, range| number(var, default as u64, range, "bytes").map(|n| n as usize);
    Ok(HttpLimits {
        header_read_timeout: ms(
            "HTTP_HEADER_READ_TIMEOUT_MS",
            defaults.header_read_timeout,
            100..=600_000,
        )?,
        // hyper needs room for at least a small head; 1 MiB is already far beyond any browser's.
        max_header_bytes: bytes(
            "HTTP_MAX_HEADER_BYTES",
            defaults.max_header_bytes,
            1024..=1024 * 1024,
        )?,
        max_connections: count(
            "HTTP_MAX_CONNECTIONS",
            defaults.max_connections,
            1..=1_000_000,
            "connections",
        )?,
        max_in_flight: count(
            "HTTP_MAX_IN_FLIGHT",
            defaults.max_in_flight,
            1..=1_000_000,
            "requests",
        )?,
        request_timeout: ms(
            "HTTP_REQUEST_TIMEOUT_MS",
            defaults.request_timeout,
            100..=3_600_000,
        )?,
        max_body_bytes: bytes(
            "HTTP_MAX_BODY_BYTES",
            defaults.max_body_bytes,
            1024..=1024 * 1024 * 1024,
        )?,
    })
}

/// Comma-separated `host:port` addresses.
fn addresses<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    var: &'static str,
) -> Result<Vec<String>, ConfigError> {
    let Some(list) = env.get(var) else {
        return Ok(Vec::new());
    };
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            mooring_redis::config::split_addr(a)
                .map(|_| a.to_owned())
                .map_err(|_| {
                    bad(
                        var,
                        format!("'{a}' is not host:port; list addresses as host:port,host:port"),
                    )
                })
        })
        .collect()
}

/// The Redis store's configuration, for SESSION_DRIVER=redis.
/// The app's Redis settings alone (`REDIS_*`, `SESSION_DURABILITY`), read through `lookup` with the app's own
/// rules. Tools that must reach Redis exactly as the app does (`moor backup`) use this, not a parser of their
/// own.
pub fn redis_config_from(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<mooring_redis::RedisConfig, ConfigError> {
    redis_config(&Env(lookup))
}

fn redis_config<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> Result<mooring_redis::RedisConfig, ConfigError> {
    use mooring_redis::{RedisConfig, Topology};
    let sentinels = addresses(env, "REDIS_SENTINELS")?;
    let cluster = addresses(env, "REDIS_CLUSTER_NODES")?;
    let url = env.secret("REDIS_URL", "REDIS_URL_FILE")?;
    if !sentinels.is_empty() && !cluster.is_empty() {
        return Err(bad(
            "REDIS_CLUSTER_NODES",
            "is set together with REDIS_SENTINELS; choose Sentinel or Cluster",
        ));
    }
    if sentinels.is_empty() && env.get("REDIS_SENTINEL_MASTER").is_some() {
        return Err(bad(
            "REDIS_SENTINEL_MASTER",
            "is set but REDIS_SENTINELS is empty; list the Sentinels (host:port,...)",
        ));
    }
    if url.is_some() && !(sentinels.is_empty() && cluster.is_empty()) {
        return Err(bad(
            "REDIS_URL",
            "names one server, but REDIS_SENTINELS or REDIS_CLUSTER_NODES is set too; keep one",
        ));
    }
    let topology = if !sentinels.is_empty() {
        Topology::Sentinel {
            sentinels,
            master: env
                .get("REDIS_SENTINEL_MASTER")
                .unwrap_or_else(|| "mymaster".into()),
            sentinel_username: env.get("REDIS_SENTINEL_USERNAME"),
            sentinel_password: env
                .secret("REDIS_SENTINEL_PASSWORD", "REDIS_SENTINEL_PASSWORD_FILE")?
                .map(|p| p.expose_secret().to_owned()),
        }
    } else if !cluster.is_empty() {
        Topology::Cluster { nodes: cluster }
    } else {
        let url = match url {
            Some(url) => {
                let text = url.expose_secret().to_owned();
                if !(text.starts_with("redis://") || text.starts_with("rediss://")) {
                    return Err(bad("REDIS_URL", "must start with redis:// or rediss://"));
                }
                text
            }
            None => {
                let host = env.get("REDIS_HOST").unwrap_or_else(|| "127.0.0.1".into());
                let port: u16 = env.parse("REDIS_PORT", 6379, "a port number (0-65535)")?;
                format!("redis://{host}:{port}")
            }
        };
        Topology::Standalone { url }
    };
    let mut config = RedisConfig::new(topology);
    config.username = env.get("REDIS_USERNAME");
    config.password = env
        .secret("REDIS_PASSWORD", "REDIS_PASSWORD_FILE")?
        .map(|p| p.expose_secret().to_owned());
    config.db = env.parse("REDIS_DB", 0, "a database number (0-15 by default)")?;
    if config.db != 0 && matches!(config.topology, Topology::Cluster { .. }) {
        return Err(bad("REDIS_DB", "Redis Cluster has only database 0"));
    }
    config.prefix = env.get("REDIS_PREFIX").unwrap_or_default();
    config.tls = env.flag("REDIS_TLS", false)?;
    if let Some(durability) = env.get("SESSION_DURABILITY") {
        config.durability = durability
            .parse()
            .map_err(|e: String| bad("SESSION_DURABILITY", e))?;
    }
    let timeout_ms: u64 = env.parse("REDIS_TIMEOUT_MS", 500, "a number of milliseconds")?;
    if !(10..=30_000).contains(&timeout_ms) {
        return Err(bad("REDIS_TIMEOUT_MS", "must be between 10 and 30000"));
    }
    config.connect_timeout = Duration::from_millis(timeout_ms);
    config.response_timeout = Duration::from_millis(timeout_ms);
    Ok(config)
}

/// The OTLP trace export settings. Every OTEL_* value is checked even when no endpoint is set, so a typo shows
/// at the first start rather than on the day export is turned on.
fn trace_export<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Option<TraceExport>, ConfigError> {
    let endpoint = match (
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
    ) {
        // The OpenTelemetry specification: the per-signal URL is used as is, the base URL gets the path.
        (Some(url), _) => Some(otlp_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)?),
        (None, Some(base)) => {
            let base = otlp_url("OTEL_EXPORTER_OTLP_ENDPOINT", base)?;
            Some(format!("{}/v1/traces", base.trim_end_matches('/')))
        }
        (None, None) => None,
    };
    let service_name = env.get("OTEL_SERVICE_NAME").unwrap_or_else(|| "inventory".into());
    let sample_ratio: f64 = env.parse(
        "OTEL_TRACES_SAMPLER_ARG",
        1.0,
        "a number from 0 to 1 (1 exports every trace, 0.1 one in ten)",
    )?;
    if !(0.0..=1.0).contains(&sample_ratio) {
        return Err(bad(
            "OTEL_TRACES_SAMPLER_ARG",
            format!("{sample_ratio} is outside 0 to 1; use 1 to export every trace, 0.1 for one in ten"),
        ));
    }
    Ok(endpoint.map(|endpoint| TraceExport {
        endpoint,
        service_name,
        sample_ratio,
    }))
}

/// Checks an OTLP/HTTP URL: `http://HOST[:PORT][/PATH]`. The URL is not echoed: it could carry credentials.
fn otlp_url(var: &'static str, url: String) -> Result<String, ConfigError> {
    let parsed: Option<axum::http::Uri> = url.parse().ok();
    let userinfo = parsed
        .as_ref()
        .and_then(|u| u.authority())
        .is_some_and(|a| a.as_str().contains('@'));
    match parsed.as_ref().and_then(|u| Some((u.scheme_str()?, u.host()?))) {
        // Credentials in the URL would be logged with it: they belong in OTEL_EXPORTER_OTLP_HEADERS.
        _ if userinfo => Err(bad(
            var,
            "must not carry credentials (user:password@); put an auth header in OTEL_EXPORTER_OTLP_HEADERS",
        )),
        Some(("http", host)) if !host.is_empty() => Ok(url),
        Some(("https", _)) => Err(bad(
            var,
            "https:// is not supported (this build has no TLS for trace export); send spans over http:// to a \
             collector in the cluster or on the node, e.g. http://otel-collector:4318",
        )),
        _ => Err(bad(
            var,
            "must be an http:// URL with a host: the collector's OTLP/HTTP address, e.g. http://otel-collector:4318",
        )),
    }
}

fn default_instance_name() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "inventory".into())
}

fn check_db_url(var: &'static str, url: &str) -> Result<(), ConfigError> {
    mooring_sql::Dialect::from_url(url).map(|_| ()).map_err(|_| {
        bad(
            var,
            "unsupported database URL; use sqlite://PATH, postgres://USER@HOST/DB or mysql://USER@HOST/DB",
        )
    })
}

/// Reads the development key from `path`, or generates and stores one (mode 0600) when there is none.
///
/// Several processes may start at once on one DATA_DIR: the key is written to a private temporary file and
/// then hard-linked into place, which fails if another process got there first. A reader therefore never sees
/// a half-written key, and every process ends up with the same one.
fn load_or_generate_key(path: &Path) -> Result<SecretString, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => return Ok(SecretString::from(text.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(bad(
                "APP_KEY",
                format!("not set, and {} cannot be read: {e}", path.display()),
            ));
        }
    }
    let key = mooring::keys::generate_secret();
    // Unique per call, not just per process: two threads of one process must not share (and delete) one file.
    let mut nonce = [0u8; 8];
    let _ = getrandom::fill(&mut nonce);
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let temp = path.with_extension(format!("tmp.{}.{nonce}", std::process::id()));
    let publish = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        std::io::Write::write_all(&mut options.open(&temp)?, key.as_bytes())?;
        std::fs::hard_link(&temp, path)
    };
    let published = publish();
    let _ = std::fs::remove_file(&temp);
    match published {
        Ok(()) => Ok(SecretString::from(key)),
        // Another process published its key first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_generate_key(path),
        Err(e) => Err(bad(
            "APP_KEY",
            format!(
                "not set, and no key could be generated in {}: {e}; set APP_KEY",
                path.display()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        Config::from_lookup(move |name| map.get(name).cloned())
    }

    const KEY: (&str, &str) = ("APP_KEY", "base64:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");

    #[test]
    fn the_revocation_log_is_on_unless_turned_off() {
        assert!(config(&[KEY]).expect("config").session_revocation_log);
        assert!(
            !config(&[KEY, ("SESSION_REVOCATION_LOG", "false")])
                .expect("config")
                .session_revocation_log
        );
        let err = config(&[KEY, ("SESSION_REVOCATION_LOG", "sometimes")]).expect_err("not a boolean");
        assert_eq!(err.var, "SESSION_REVOCATION_LOG");
    }

    #[test]
    fn defaults_need_no_configuration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf-8");
        let c = config(&[("DATA_DIR", data)]).expect("defaults");
        assert_eq!(c.port, 8080);
        assert_eq!(c.metrics_port, 9464);
        assert_eq!(c.cookie_name, "inventory_session");
        assert_eq!(c.session_idle, Duration::from_secs(7200));
        assert!(matches!(c.session_driver, SessionDriver::Database(ref url) if url.starts_with("sqlite://")));
        assert!(matches!(c.key_source, KeySource::Generated(_)));
        c.keys().expect("generated key is valid");
        let again = config(&[("DATA_DIR", data)]).expect("defaults");
        assert_eq!(
            again.app_key.expose_secret(),
            c.app_key.expose_secret(),
            "the generated key persists"
        );
    }

    /// Throttling follows the session driver unless CACHE_DRIVER says otherwise; the lockout never exceeds
    /// 15 minutes.
    #[test]
    fn login_throttling_defaults_follow_the_session_driver() {
        let c = config(&[KEY]).expect("defaults");
        assert!(matches!(c.cache_driver, CacheDriver::Database(ref url) if url.starts_with("sqlite://")));
        assert_eq!(
            c.login_limits,
            LoginLimits {
                per_account_address: 5,
                per_account: 20,
                per_ip: 50
            }
        );
        assert_eq!(c.login_backoff.window, Duration::from_secs(900));
        assert_eq!(c.login_backoff.first_lock, Duration::from_secs(1));
        assert_eq!(c.login_backoff.max_lock, MAX_LOCKOUT);
        assert_eq!(c.hash_pool.workers, 2);
        assert_eq!(c.hash_pool.memory_budget(), 2 * 19 * 1024 * 1024);
        let redis = config(&[KEY, ("SESSION_DRIVER", "redis")]).expect("redis");
        assert!(matches!(redis.cache_driver, CacheDriver::Redis(_)));
        let memory = config(&[KEY, ("SESSION_DRIVER", "redis"), ("CACHE_DRIVER", "memory")]).expect("memory");
        assert!(matches!(memory.cache_driver, CacheDriver::Memory));
        let long = config(&[KEY, ("LOGIN_LOCKOUT_WINDOW_SECONDS", "86400")]).expect("long window");
        assert_eq!(
            long.login_backoff.max_lock, MAX_LOCKOUT,
            "a long window does not lengthen the lockout"
        );
        let short = config(&[KEY, ("LOGIN_LOCKOUT_WINDOW_SECONDS", "60")]).expect("short window");
        assert_eq!(short.login_backoff.max_lock, Duration::from_secs(60));
    }

    #[test]
    fn the_session_cap_defaults_to_twenty_and_zero_removes_it() {
        let cap = |value: Option<&str>| {
            let mut vars = vec![KEY];
            if let Some(v) = value {
                vars.push(("SESSION_MAX_PER_USER", v));
            }
            config(&vars).map(|c| c.session_config().max_sessions_per_user().map(|n| n.get()))
        };
        assert_eq!(cap(None).expect("default"), Some(20));
        assert_eq!(cap(Some("3")).expect("three"), Some(3));
        assert_eq!(cap(Some("1000")).expect("the largest"), Some(1000));
        assert_eq!(cap(Some("0")).expect("no cap"), None);
        for bad in ["-1", "lots", "1001", "4294967296"] {
            let err = cap(Some(bad)).expect_err(bad).to_string();
            assert!(err.contains("SESSION_MAX_PER_USER"), "{bad}: {err}");
        }
    }

    /// Replicas starting together on one DATA_DIR must end up with one key, never a half-written one.
    #[test]
    fn concurrent_starts_share_one_generated_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("app_key");
        let keys: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        load_or_generate_key(&path)
                            .expect("key")
                            .expose_secret()
                            .to_owned()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        assert!(keys.iter().all(|k| k == &keys[0]), "one key for everyone");
        assert!(mooring::keys::parse_secret(&keys[0]).is_ok());
        let leftovers = std::fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .count();
        assert_eq!(leftovers, 1, "no temporary files remain");
    }

    #[test]
    fn redis_topologies_are_read_from_the_seed_variables() {
        use mooring_redis::Topology;
        let driver = |vars: &[(&str, &str)]| {
            let mut all = vec![KEY, ("SESSION_DRIVER", "redis")];
            all.extend_from_slice(vars);
            match config(&all).expect("config").session_driver {
                SessionDriver::Redis(redis) => redis,
                other => panic!("not redis: {other:?}"),
            }
        };
        let standalone = driver(&[("REDIS_HOST", "redis-master"), ("REDIS_PASSWORD", "redis123")]);
        assert!(
            matches!(&standalone.topology, Topology::Standalone { url } if url == "redis://redis-master:6379")
        );
        assert_eq!(standalone.password.as_deref(), Some("redis123"));
        assert!(
            !format!("{standalone:?}").contains("redis123"),
            "the password is not printed"
        );
        let sentinel = driver(&[
            ("REDIS_SENTINELS", "s-0:26379, s-1:26379"),
            ("SESSION_DURABILITY", "replicas:2"),
        ]);
        assert!(
            matches!(&sentinel.topology, Topology::Sentinel { sentinels, master, .. }
            if sentinels == &["s-0:26379", "s-1:26379"] && master == "mymaster")
        );
        assert_eq!(sentinel.durability, mooring_redis::Durability::Replicas(2));
        let cluster = driver(&[("REDIS_CLUSTER_NODES", "c-0:6379,c-1:6379")]);
        assert!(matches!(&cluster.topology, Topology::Cluster { nodes } if nodes.len() == 2));
    }

    #[test]
    fn the_default_cookie_name_is_host_prefixed_behind_tls() {
        let name = |vars: &[(&str, &str)]| {
            let mut all = vec![KEY];
            all.extend_from_slice(vars);
            config(&all)
                .expect("config")
                .session_config()
                .effective_cookie_name()
                .into_owned()
        };
        assert_eq!(name(&[]), "inventory_session");
        assert_eq!(
            name(&[("SESSION_SECURE_COOKIE", "true")]),
            "__Host-inventory_session"
        );
        assert_eq!(
            name(&[("SESSION_SECURE_COOKIE", "true"), ("SESSION_COOKIE", "sid")]),
            "sid",
            "an explicit name is kept"
        );
        // A Domain is allowed for an unprefixed name (the operator's choice), not for the default one.
        assert_eq!(
            name(&[
                ("SESSION_SECURE_COOKIE", "true"),
                ("SESSION_COOKIE", "sid"),
                ("SESSION_DOMAIN", "example.com")
            ]),
            "sid"
        );
        assert!(!config(&[KEY]).expect("config").session_encrypt_migrate);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (vars, var) in [
            (vec![KEY, ("PORT", "eighty")], "PORT"),
            (vec![KEY, ("SESSION_LIFETIME", "-5")], "SESSION_LIFETIME"),
            (vec![KEY, ("SESSION_LIFETIME", "0")], "SESSION_LIFETIME"),
            (vec![KEY, ("SESSION_SAME_SITE", "sometimes")], "SESSION_SAME_SITE"),
            (vec![KEY, ("SESSION_SAME_SITE", "none")], "SESSION_SAME_SITE"),
            (
                vec![KEY, ("SESSION_SECURE_COOKIE", "maybe")],
                "SESSION_SECURE_COOKIE",
            ),
            (vec![KEY, ("SESSION_DRIVER", "file")], "SESSION_DRIVER"),
            (
                vec![
                    KEY,
                    ("SESSION_SECURE_COOKIE", "true"),
                    ("SESSION_DOMAIN", "example.com"),
                ],
                "SESSION_DOMAIN",
            ),
            (
                vec![KEY, ("SESSION_SECURE_COOKIE", "true"), ("SESSION_PATH", "/app")],
                "SESSION_PATH",
            ),
            (vec![KEY, ("SESSION_COOKIE", "__Host-sid")], "SESSION_COOKIE"),
            (vec![KEY, ("SESSION_COOKIE", "__Secure-sid")], "SESSION_COOKIE"),
            (
                vec![KEY, ("SESSION_ENCRYPT_MIGRATE", "perhaps")],
                "SESSION_ENCRYPT_MIGRATE",
            ),
            (
                vec![KEY, ("SESSION_DRIVER", "redis"), ("REDIS_SENTINEL_MASTER", "m")],
                "REDIS_SENTINEL_MASTER",
            ),
            (
                vec![
                    KEY,
                    ("SESSION_DRIVER", "redis"),
                    ("REDIS_SENTINELS", "a:1"),
                    ("REDIS_CLUSTER_NODES", "b:2"),
                ],
                "REDIS_CLUSTER_NODES",
            ),
            (
                vec![
                    KEY,
                    ("SESSION_DRIVER", "redis"),
                    ("REDIS_SENTINELS", "nohostport"),
                ],
                "REDIS_SENTINELS",
            ),
            (
                vec![KEY, ("SESSION_DRIVER", "redis"), ("REDIS_URL", "http://x")],
                "REDIS_URL",
            ),
            (
                vec![KEY, ("SESSION_DRIVER", "redis"), ("SESSION_DURABILITY", "always")],
                "SESSION_DURABILITY",
            ),
            (
                vec![KEY, ("SESSION_DRIVER", "redis"), ("REDIS_PORT", "x")],
                "REDIS_PORT",
            ),
            (vec![KEY, ("DATABASE_URL", "oracle://x")], "DATABASE_URL"),
            (vec![KEY, ("APP_KEY_FILE", "/nonexistent/key")], "APP_KEY"),
            (vec![KEY, ("SESSION_COOKIE", "a b")], "SESSION_COOKIE"),
            (vec![KEY, ("HOST", "localhost:80")], "HOST"),
            (vec![KEY, ("METRICS_PORT", "http")], "METRICS_PORT"),
            (
                vec![KEY, ("PORT", "9000"), ("METRICS_PORT", "9000")],
                "METRICS_PORT",
            ),
            (
                vec![KEY, ("OTEL_EXPORTER_OTLP_ENDPOINT", "otel-collector:4318")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                vec![KEY, ("OTEL_EXPORTER_OTLP_ENDPOINT", "grpc://otel-collector:4317")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                vec![
                    KEY,
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel-collector:4318"),
                ],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                vec![KEY, ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://")],
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
            (
                vec![KEY, ("OTEL_TRACES_SAMPLER_ARG", "half")],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            (
                vec![KEY, ("OTEL_TRACES_SAMPLER_ARG", "1.5")],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            (
                vec![KEY, ("OTEL_TRACES_SAMPLER_ARG", "NaN")],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            (vec![KEY, ("PASSWORD_HASH_WORKERS", "0")], "PASSWORD_HASH_WORKERS"),
            (
                vec![KEY, ("PASSWORD_HASH_WORKERS", "many")],
                "PASSWORD_HASH_WORKERS",
            ),
            (vec![KEY, ("PASSWORD_HASH_QUEUE", "0")], "PASSWORD_HASH_QUEUE"),
            (
                vec![KEY, ("PASSWORD_HASH_QUEUE_TIMEOUT_MS", "600000")],
                "PASSWORD_HASH_QUEUE_TIMEOUT_MS",
            ),
            (vec![KEY, ("CACHE_DRIVER", "file")], "CACHE_DRIVER"),
            (vec![KEY, ("LOGIN_MAX_ATTEMPTS", "0")], "LOGIN_MAX_ATTEMPTS"),
            (
                vec![KEY, ("LOGIN_MAX_ATTEMPTS_PER_IP", "-1")],
                "LOGIN_MAX_ATTEMPTS_PER_IP",
            ),
            (
                vec![KEY, ("LOGIN_LOCKOUT_SECONDS", "3600")],
                "LOGIN_LOCKOUT_SECONDS",
            ),
            (
                vec![KEY, ("LOGIN_LOCKOUT_WINDOW_SECONDS", "0")],
                "LOGIN_LOCKOUT_WINDOW_SECONDS",
            ),
        ] {
            let err = config(&vars).expect_err("must fail");
            assert_eq!(err.var, var, "{err}");
        }
        let err = config(&[("APP_KEY", "too short")])
            .expect("parsed")
            .keys()
            .expect_err("short key");
        assert_eq!(err.var, "APP_KEY");
        assert!(
            !err.to_string().contains("too short"),
            "the secret is not echoed: {err}"
        );
    }

    /// The server's limits have safe defaults, take values in range, and refuse the rest naming the variable.
    #[test]
    fn http_limits_default_and_validate() {
        let c = config(&[KEY]).expect("defaults");
        assert_eq!(c.http, HttpLimits::default());
        assert_eq!(c.http.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.http.max_body_bytes, 65536);
        assert!(!c.test_endpoints, "test endpoints are off by default");
        let c = config(&[
            KEY,
            ("HTTP_HEADER_READ_TIMEOUT_MS", "2000"),
            ("HTTP_MAX_HEADER_BYTES", "8192"),
            ("HTTP_MAX_CONNECTIONS", "10"),
            ("HTTP_MAX_IN_FLIGHT", "5"),
            ("HTTP_REQUEST_TIMEOUT_MS", "1500"),
            ("HTTP_MAX_BODY_BYTES", "4096"),
            ("SESSION_TEST_ENDPOINTS", "true"),
        ])
        .expect("config");
        assert_eq!(
            c.http,
            HttpLimits {
                header_read_timeout: Duration::from_millis(2000),
                max_header_bytes: 8192,
                max_connections: 10,
                max_in_flight: 5,
                request_timeout: Duration::from_millis(1500),
                max_body_bytes: 4096,
            }
        );
        assert!(c.test_endpoints);
        for (var, value) in [
            ("HTTP_HEADER_READ_TIMEOUT_MS", "0"),
            ("HTTP_HEADER_READ_TIMEOUT_MS", "soon"),
            ("HTTP_MAX_HEADER_BYTES", "10"),
            ("HTTP_MAX_CONNECTIONS", "0"),
            ("HTTP_MAX_IN_FLIGHT", "-1"),
            ("HTTP_REQUEST_TIMEOUT_MS", "99999999999"),
            ("HTTP_MAX_BODY_BYTES", "1k"),
            ("SESSION_TEST_ENDPOINTS", "sometimes"),
            ("TRUSTED_PROXIES", "the load balancer"),
            ("TRUSTED_PROXIES", "99"),
        ] {
            let err = config(&[KEY, (var, value)]).expect_err(value);
            assert_eq!(err.var, var, "{err}");
        }
    }

    /// TRUST_PROXY_HEADERS=true (the chart's setting) still means one trusted hop; TRUSTED_PROXIES wins.
    #[test]
    fn trusted_proxies_keep_the_old_boolean_as_an_alias() {
        let trusted = |vars: &[(&str, &str)]| {
            let mut all = vec![KEY];
            all.extend_from_slice(vars);
            config(&all).expect("config").trusted_proxies
        };
        assert_eq!(trusted(&[]), TrustedProxies::None);
        assert_eq!(
            trusted(&[("TRUST_PROXY_HEADERS", "true")]),
            TrustedProxies::Hops(1)
        );
        assert_eq!(trusted(&[("TRUST_PROXY_HEADERS", "false")]), TrustedProxies::None);
        assert_eq!(
            trusted(&[("TRUST_PROXY_HEADERS", "true"), ("TRUSTED_PROXIES", "2")]),
            TrustedProxies::Hops(2)
        );
        assert_eq!(
            trusted(&[("TRUST_PROXY_HEADERS", "true"), ("TRUSTED_PROXIES", "0")]),
            TrustedProxies::None
        );
        assert!(matches!(
            trusted(&[("TRUSTED_PROXIES", "10.0.0.0/8")]),
            TrustedProxies::Networks(n) if n.len() == 1
        ));
    }

    /// Export is off unless an endpoint is set; the base URL gets `/v1/traces`, the per-signal URL is kept.
    #[test]
    fn trace_export_follows_the_opentelemetry_variables() {
        let export = |vars: &[(&str, &str)]| {
            let mut all = vec![KEY];
            all.extend_from_slice(vars);
            config(&all).expect("config").trace_export
        };
        assert_eq!(
            export(&[("OTEL_SERVICE_NAME", "shop"), ("OTEL_TRACES_SAMPLER_ARG", "0.5")]),
            None,
            "no endpoint, no export"
        );
        assert_eq!(
            export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]),
            None,
            "blank is unset"
        );
        assert_eq!(
            export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector:4318")]),
            Some(TraceExport {
                endpoint: "http://otel-collector:4318/v1/traces".into(),
                service_name: "inventory".into(),
                sample_ratio: 1.0,
            })
        );
        let with_path = export(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://gateway.example:80/otlp/"),
            ("OTEL_SERVICE_NAME", "shop"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ])
        .expect("on");
        assert_eq!(with_path.endpoint, "http://gateway.example:80/otlp/v1/traces");
        assert_eq!(with_path.service_name, "shop");
        assert_eq!(with_path.sample_ratio, 0.25);
        let per_signal = export(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://10.0.0.7:4318/custom",
            ),
        ])
        .expect("on");
        assert_eq!(per_signal.endpoint, "http://10.0.0.7:4318/custom", "used as is");
        let err = config(&[
            KEY,
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http//user:s3cret@collector:4318"),
        ])
        .expect_err("not a URL");
        assert!(
            !err.to_string().contains("s3cret"),
            "the URL is not echoed: {err}"
        );
        let err = config(&[
            KEY,
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://user:s3cret@collector:4318"),
        ])
        .expect_err("credentials in the URL");
        assert_eq!(err.var, "OTEL_EXPORTER_OTLP_ENDPOINT");
        assert!(!err.to_string().contains("s3cret"), "not echoed: {err}");
    }

    #[test]
    fn secrets_come_from_files_and_are_not_printed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("key");
        std::fs::write(&file, "a file secret that is long enough, 32+\n").expect("write");
        let c = config(&[("APP_KEY_FILE", file.to_str().expect("utf-8"))]).expect("config");
        assert_eq!(
            c.app_key.expose_secret(),
            "a file secret that is long enough, 32+"
        );
        assert!(
            !format!("{c:?}").contains("a file secret"),
            "Debug must redact secrets"
        );
    }

    /// The README's configuration table is this table: a variable added here without documentation fails.
    #[test]
    fn the_readme_table_matches_the_variables() {
        let readme = include_str!("../../../README.md");
        for var in VARIABLES {
            let names: Vec<String> = var.name.split(", ").map(|n| format!("`{n}`")).collect();
            let row = format!("| {} | {} | {} |", names.join(", "), var.default, var.help);
            assert!(readme.contains(&row), "README.md lacks the row:\n{row}");
        }
    }
}
