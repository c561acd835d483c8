//! The `inventory` instances: their environment, starting them detached, and their readiness.
//!
//! An instance is configured only through environment variables, as in a container, and starts with an
//! otherwise empty environment (only `PATH` is kept), so a variable set in the caller's shell never changes
//! the lab. All instances share the lab's `app_key` file (`APP_KEY_FILE`, so the key is not in their
//! environment) and one SQLite file for users and items (for the `sql` driver, for sessions too); each has
//! its own `DATA_DIR`.
//!
//! It runs as `setsid -f sh -c 'echo $$ > PIDFILE; exec inventory'`: a new session, detached from the
//! terminal and from this process (so `moor lab up` can exit), with `exec` keeping the pid the shell wrote.

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::config::{Driver, MASTER_NAME};
use super::process;

/// `SHUTDOWN_DELAY_SECONDS`: after SIGTERM an instance serves on this long with `/readyz` at 503, which is
/// four HAProxy checks (500 ms each, `fall 1`).
pub(crate) const SHUTDOWN_DELAY_SECONDS: u64 = 2;

/// The files of one instance in the lab directory.
#[derive(Clone, Debug)]
pub(crate) struct Files {
    /// `<lab>/apps/app-<i>`: its DATA_DIR, pid file and log.
    pub(crate) dir: PathBuf,
}

impl Files {
    /// The pid file.
    pub(crate) fn pidfile(&self) -> PathBuf {
        self.dir.join("app.pid")
    }

    /// Its stdout and stderr (JSON log lines).
    pub(crate) fn log(&self) -> PathBuf {
        self.dir.join("app.log")
    }
}

/// Where sessions are, as the apps' environment says it.
#[derive(Clone, Debug)]
pub(crate) enum Store {
    /// `REDIS_SENTINELS`.
    Sentinels(Vec<SocketAddrV4>),
    /// `REDIS_HOST` / `REDIS_PORT`.
    Redis(SocketAddrV4),
    /// The shared SQLite file.
    Sql,
}

/// `SESSION_STORE_TIMEOUT_MS` for a lab whose Sentinels wait `down_after_ms`: long enough for a session call
/// to ride out a whole failover (detection, election, promotion) instead of answering 503.
pub(crate) fn store_timeout(driver: Driver, down_after_ms: u64) -> Duration {
    match driver {
        Driver::RedisSentinel => Duration::from_millis((down_after_ms + 5_000).min(60_000)),
        Driver::Redis | Driver::Sql => Duration::from_millis(5_000),
    }
}

/// Everything one instance needs to start.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    /// `app-<i>`: `INSTANCE_NAME`, shown as `served_by`.
    pub(crate) name: String,
    /// `HOST` and `PORT`.
    pub(crate) http: SocketAddrV4,
    /// `METRICS_PORT` (on the same host).
    pub(crate) metrics_port: u16,
    /// Its files.
    pub(crate) files: Files,
    /// The shared key file.
    pub(crate) app_key_file: PathBuf,
    /// The shared SQLite file.
    pub(crate) database: PathBuf,
    /// The session store.
    pub(crate) store: Store,
    /// `SESSION_STORE_TIMEOUT_MS`.
    pub(crate) store_timeout: Duration,
    /// The process name of the binary (`inventory`, unless it was renamed).
    pub(crate) comm: String,
}

impl Spec {
    /// The instance's whole environment (besides `PATH`).
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        let database_url = format!("sqlite://{}", self.database.display());
        let mut env = vec![
            ("HOST", self.http.ip().to_string()),
            ("PORT", self.http.port().to_string()),
            ("METRICS_PORT", self.metrics_port.to_string()),
            ("DATA_DIR", self.files.dir.display().to_string()),
            ("APP_KEY_FILE", self.app_key_file.display().to_string()),
            ("INSTANCE_NAME", self.name.clone()),
            ("DATABASE_URL", database_url.clone()),
            ("TRUST_PROXY_HEADERS", "true".into()),
            // The probe and the chaos scenarios write and read session values.
            ("SESSION_TEST_ENDPOINTS", "true".into()),
            ("LOG_FORMAT", "json".into()),
            ("RUST_LOG", "info".into()),
            ("SHUTDOWN_DELAY_SECONDS", SHUTDOWN_DELAY_SECONDS.to_string()),
            ("SHUTDOWN_GRACE_SECONDS", "10".into()),
            (
                "SESSION_STORE_TIMEOUT_MS",
                self.store_timeout.as_millis().to_string(),
            ),
        ];
        match &self.store {
            Store::Sentinels(sentinels) => {
                let list: Vec<String> = sentinels.iter().map(ToString::to_string).collect();
                env.push(("SESSION_DRIVER", "redis".into()));
                env.push(("REDIS_SENTINELS", list.join(",")));
                env.push(("REDIS_SENTINEL_MASTER", MASTER_NAME.into()));
            }
            Store::Redis(addr) => {
                env.push(("SESSION_DRIVER", "redis".into()));
                env.push(("REDIS_HOST", addr.ip().to_string()));
                env.push(("REDIS_PORT", addr.port().to_string()));
            }
            Store::Sql => {
                env.push(("SESSION_DRIVER", "database".into()));
                env.push(("SESSION_DATABASE_URL", database_url));
            }
        }
        env
    }
}

/// Starts the instance detached and returns its pid once the process runs (not yet ready: see
/// [`wait_ready`]).
pub(crate) async fn start(inventory: &Path, spec: &Spec) -> anyhow::Result<u32> {
    for addr in [spec.http, SocketAddrV4::new(*spec.http.ip(), spec.metrics_port)] {
        if std::net::TcpListener::bind(addr).is_err() {
            anyhow::bail!(
                "{}: {addr} is taken by another process; stop it or pick another --base-port",
                spec.name
            );
        }
    }
    std::fs::create_dir_all(&spec.files.dir)
        .with_context(|| format!("creating {}", spec.files.dir.display()))?;
    let pidfile = spec.files.pidfile();
    let _ = std::fs::remove_file(&pidfile);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(spec.files.log())
        .context("opening the app log")?;
    let status = tokio::process::Command::new(process::system_binary("setsid")?)
        .arg("-f")
        .args(["sh", "-c", r#"echo $$ > "$0" && exec "$@""#])
        .arg(&pidfile)
        .arg(inventory)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(spec.env())
        .current_dir(&spec.files.dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .await
        .context("running setsid")?;
    if !status.success() {
        anyhow::bail!("{}: setsid exited with {status}", spec.name);
    }
    process::wait_pidfile(
        &pidfile,
        &spec.comm,
        Duration::from_secs(10),
        &spec.name,
        &spec.files.log(),
    )
    .await
}

/// Whether `GET http://<http>/readyz` answers 200.
pub(crate) async fn ready(http_client: &reqwest::Client, http: SocketAddrV4) -> bool {
    http_client
        .get(format!("http://{http}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
}

/// Waits until the instance answers `/readyz` with 200; fails early when its process exits, with its log.
pub(crate) async fn wait_ready(
    http_client: &reqwest::Client,
    spec: &Spec,
    pid: u32,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready(http_client, spec.http).await {
            return Ok(());
        }
        if !process::alive(pid, &spec.comm) {
            anyhow::bail!(
                "{} exited during startup\n{}",
                spec.name,
                process::log_tail(&spec.files.log(), 20)
            );
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "{} is not ready (GET http://{}/readyz is not 200) after {timeout:?}\n{}",
                spec.name,
                spec.http,
                process::log_tail(&spec.files.log(), 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(store: Store) -> Spec {
        Spec {
            name: "app-2".into(),
            http: "127.0.0.12:7112".parse().unwrap(),
            metrics_port: 7122,
            files: Files {
                dir: "/lab/apps/app-2".into(),
            },
            app_key_file: "/lab/app_key".into(),
            database: "/lab/inventory.db".into(),
            store,
            store_timeout: Duration::from_millis(6000),
            comm: "inventory".into(),
        }
    }

    fn get(env: &[(&'static str, String)], name: &str) -> Option<String> {
        env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_environment_follows_the_driver() {
        let env = spec(Store::Sentinels(vec![
            "127.0.0.31:7141".parse().unwrap(),
            "127.0.0.32:7142".parse().unwrap(),
        ]))
        .env();
        assert_eq!(get(&env, "HOST").as_deref(), Some("127.0.0.12"));
        assert_eq!(get(&env, "PORT").as_deref(), Some("7112"));
        assert_eq!(get(&env, "METRICS_PORT").as_deref(), Some("7122"));
        assert_eq!(get(&env, "INSTANCE_NAME").as_deref(), Some("app-2"));
        assert_eq!(
            get(&env, "DATABASE_URL").as_deref(),
            Some("sqlite:///lab/inventory.db")
        );
        assert_eq!(get(&env, "SESSION_DRIVER").as_deref(), Some("redis"));
        assert_eq!(
            get(&env, "REDIS_SENTINELS").as_deref(),
            Some("127.0.0.31:7141,127.0.0.32:7142")
        );
        assert_eq!(get(&env, "REDIS_SENTINEL_MASTER").as_deref(), Some("mymaster"));
        assert_eq!(get(&env, "TRUST_PROXY_HEADERS").as_deref(), Some("true"));
        assert_eq!(get(&env, "LOG_FORMAT").as_deref(), Some("json"));
        assert_eq!(get(&env, "SESSION_STORE_TIMEOUT_MS").as_deref(), Some("6000"));
        assert!(get(&env, "APP_KEY").is_none(), "the key is read from a file");

        let env = spec(Store::Redis("127.0.0.21:7131".parse().unwrap())).env();
        assert_eq!(get(&env, "REDIS_HOST").as_deref(), Some("127.0.0.21"));
        assert_eq!(get(&env, "REDIS_PORT").as_deref(), Some("7131"));
        assert!(get(&env, "REDIS_SENTINELS").is_none());

        let env = spec(Store::Sql).env();
        assert_eq!(get(&env, "SESSION_DRIVER").as_deref(), Some("database"));
        assert_eq!(get(&env, "SESSION_DATABASE_URL"), get(&env, "DATABASE_URL"));
    }

    #[test]
    fn every_variable_set_is_one_the_app_reads() {
        // A misspelt name would be silently ignored by the app: check each against its reference table.
        let table = include_str!("../../../inventory/src/config.rs");
        for store in [
            Store::Sentinels(vec!["127.0.0.31:7141".parse().unwrap()]),
            Store::Redis("127.0.0.21:7131".parse().unwrap()),
            Store::Sql,
        ] {
            for (name, _) in spec(store).env() {
                let base = name.strip_suffix("_FILE").unwrap_or(name);
                assert!(
                    table.contains(&format!("name: \"{base}\"")),
                    "{name} is not in inventory's VARIABLES"
                );
            }
        }
        assert!(store_timeout(Driver::RedisSentinel, 1000) > Duration::from_millis(1000));
    }
}
