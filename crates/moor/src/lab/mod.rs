//! The local lab: the seeds' production topology as real processes on one machine, and the fault-injection
//! primitives the chaos scenarios use.
//!
//! `moor lab up` ([`Lab::up`]) starts, with the default [`Driver::RedisSentinel`]:
//!
//! - N `inventory` instances (default 3), each on its own loopback alias, configured only through
//!   environment variables, sharing one `APP_KEY` and one SQLite file;
//! - HAProxy round-robin in front of them, health-checking `/readyz` every 500 ms and retrying a request
//!   whose instance died on another one;
//! - a Redis master and 2 replicas (AOF `everysec`, RDB snapshots, `min-replicas-to-write 1`), whose data
//!   directories outlive the processes, as the seeds' PVCs do;
//! - 3 Sentinels, quorum 2, `down-after-milliseconds` from [`LabConfig::down_after_ms`].
//!
//! [`Driver::Redis`] runs one Redis node and no Sentinel; [`Driver::Sql`] runs no Redis (sessions in the
//! shared SQLite file). Every address is a loopback alias and every port derives from
//! [`LabConfig::base_port`]:
//!
//! | member | address | port |
//! |---|---|---|
//! | HAProxy frontend ([`Lab::url`]) | 127.0.0.1 | base |
//! | HAProxy stats page (`/;csv` too) | 127.0.0.1 | base + 1 |
//! | app *i* (1..=9) | 127.0.0.(10 + *i*) | base + 10 + *i* (`/metrics` on base + 20 + *i*) |
//! | Redis node *j* (1..=3) | 127.0.0.(20 + *j*) | base + 30 + *j* |
//! | Sentinel *k* (1..=3) | 127.0.0.(30 + *k*) | base + 40 + *k* |
//!
//! # Processes and state
//!
//! Every process outlives `moor` (Redis and HAProxy daemonize; apps run under `setsid -f`) and has a pid file
//! and a log in the lab directory; `<dir>/state.json` records the configuration, addresses and pids, so
//! `moor lab status` / `down` / `chaos` attach to a running lab with [`Lab::open`]. [`Lab::up`] is
//! idempotent: it starts only what is not running, then waits until everything is healthy.
//!
//! ```text
//! <dir>/state.json            the configuration, every member's address, pid file, log and last pid
//! <dir>/app_key               the shared APP_KEY (APP_KEY_FILE of every app), mode 0600
//! <dir>/inventory.db          users and items (and sessions, with the sql driver), shared by every app
//! <dir>/apps/app-<i>/         DATA_DIR, app.pid, app.log (JSON lines) of app i
//! <dir>/haproxy/              haproxy.cfg, haproxy.pid, haproxy.log (startup output only)
//! <dir>/redis/redis-<j>/      redis.conf (Sentinel rewrites replicaof), redis.pid, redis.log, AOF, RDB
//! <dir>/sentinels/sentinel-<k>/  sentinel.conf (rewritten by Sentinel with its state), .pid, .log
//! ```
//!
//! # Fault injection
//!
//! [`Lab::signal_app`] / [`Lab::signal_redis`] send SIGKILL, SIGTERM, SIGSTOP or SIGCONT;
//! [`Lab::start_app`] / [`Lab::start_redis`] bring a member back on its address and data;
//! [`Lab::sentinel_failover`] asks for a planned failover; [`Lab::partition`] cuts a data node off from the
//! other data nodes and the Sentinels (how: see [`Partition`]). The waits ([`Lab::wait_for_master_change`],
//! [`Lab::wait_replica_of`]) are bounded and fail with what they saw last.
//!
//! # Cleanup
//!
//! [`Lab::down`] stops everything gracefully (SIGTERM, then SIGKILL after a grace period), removes a
//! partition, and with `wipe` deletes the data. [`LabGuard`] calls it when dropped, so a test or scenario that
//! panics leaves no process behind.

mod apps;
mod config;
mod haproxy;
mod network;
mod process;
mod redis;
mod state;
mod status;

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::future::join_all;

pub use config::{
    AppAddrs, Driver, LabConfig, Layout, MASTER_NAME, MAX_APPS, PORT_SPAN, find_free_base_port,
};
pub use network::Partition;
pub use process::Signal;
pub use status::{Member, MemberKind, Role, Status};

pub(crate) use redis::info_field;
use state::{MemberRecord, StoredConfig};

/// How long [`Lab::up`] waits for each stage (Redis settled, apps ready, HAProxy serving).
const UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`Lab::start_app`] waits for `/readyz`.
const APP_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERMed app may take to exit: the shutdown delay, in-flight requests, a margin.
const APP_STOP_GRACE: Duration = Duration::from_secs(apps::SHUTDOWN_DELAY_SECONDS + 15);
/// How long a SIGTERMed Redis node may take to exit (it waits up to 10 s for lagging replicas).
const REDIS_STOP_GRACE: Duration = Duration::from_secs(20);
/// How long a SIGKILLed process may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long [`Lab::sentinel_failover`] retries while Sentinel refuses (failover in progress, no good replica).
const FAILOVER_RETRY: Duration = Duration::from_secs(30);

/// One member's fixed facts.
#[derive(Clone, Debug)]
struct MemberDef {
    /// What it is.
    kind: MemberKind,
    /// `app-1`, `redis-2`, ...
    name: String,
    /// Where it listens.
    addr: SocketAddrV4,
    /// Its pid file.
    pidfile: PathBuf,
    /// Its log.
    log: PathBuf,
    /// Its process name (`/proc/<pid>/comm`).
    comm: String,
}

/// A handle on a lab, whose state lives in `<dir>/state.json`. Cheap: it holds no process, and several
/// handles (in several processes) may act on one lab.
#[derive(Debug)]
pub struct Lab {
    /// The lab directory (absolute).
    dir: PathBuf,
    /// The configuration it was created with.
    config: StoredConfig,
    /// Every member's address.
    layout: Layout,
    /// For health checks (short timeouts, no proxy).
    http: reqwest::Client,
}

/// The base port of the lab already in `dir`, if there is one (its state file is readable). `--base-port 0`
/// reuses it, so a second command against the same directory finds the lab it started.
pub fn existing_base_port(dir: &Path) -> Option<u16> {
    let dir = std::path::absolute(dir).ok()?;
    state::load(&dir).ok().flatten().map(|s| s.config.base_port)
}

impl Lab {
    /// Brings the lab in `cfg.dir` up: creates it if needed, starts every member that is not running, and
    /// waits until HAProxy answers, every app's `/readyz` is 200, the replicas are in sync and the Sentinels
    /// agree on the master. Idempotent. An existing lab must have been created with the same apps, driver,
    /// base port and down-after (the error says what differs).
    pub async fn up(cfg: LabConfig) -> anyhow::Result<Lab> {
        cfg.validate()?;
        let dir =
            std::path::absolute(&cfg.dir).with_context(|| format!("resolving {}", cfg.dir.display()))?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let existing = state::load(&dir)?;
        if let Some(existing) = &existing {
            let conflicts = existing.config.conflicts(&cfg);
            if !conflicts.is_empty() {
                anyhow::bail!(
                    "the lab in {} was created with other settings ({}): run `moor lab down --wipe` first, or use another --dir",
                    dir.display(),
                    conflicts.join(", ")
                );
            }
        }
        let inventory_bin = match (&cfg.inventory_bin, &existing) {
            (None, Some(existing))
                if process::inventory_binary(Some(&existing.config.inventory_bin)).is_ok() =>
            {
                existing.config.inventory_bin.clone()
            }
            (configured, _) => process::inventory_binary(configured.as_deref())?,
        };
        process::system_binary("setsid")?;
        let haproxy_bin = process::system_binary("haproxy")?;
        let redis_bin = match cfg.driver {
            Driver::Sql => None,
            Driver::Redis | Driver::RedisSentinel => Some(process::system_binary("redis-server")?),
        };

        let config = StoredConfig {
            apps: cfg.apps,
            driver: cfg.driver,
            base_port: cfg.base_port,
            down_after_ms: cfg.down_after_ms,
            inventory_bin,
        };
        let lab = Lab::new(dir, config)?;
        let mut record = existing.unwrap_or_else(|| state::new(lab.config.clone(), lab.url()));
        record.config = lab.config.clone();
        state::save(&lab.dir, &record)?;
        lab.write_app_key()?;

        if let Some(redis_bin) = &redis_bin {
            lab.up_redis(redis_bin).await?;
        }
        lab.up_apps().await?;
        lab.up_haproxy(&haproxy_bin).await?;
        lab.record()?;
        Ok(lab)
    }

    /// Attaches to the lab in `dir` (running or stopped) from its `state.json`.
    pub fn open(dir: &Path) -> anyhow::Result<Lab> {
        let dir = std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?;
        let state = state::load(&dir)?.with_context(|| {
            format!(
                "there is no lab in {} (no {}): run `moor lab up` first",
                dir.display(),
                state::FILE
            )
        })?;
        Lab::new(dir, state.config)
    }

    /// A handle on the lab in `dir` configured as `config`.
    fn new(dir: PathBuf, config: StoredConfig) -> anyhow::Result<Lab> {
        let layout = Layout::new(config.base_port, config.apps, config.driver);
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(3))
            .build()
            .context("building the HTTP client")?;
        Ok(Lab {
            dir,
            config,
            layout,
            http,
        })
    }

    /// Stops everything: removes a partition, then SIGTERM to HAProxy and the apps, then the Sentinels,
    /// then the data nodes (which write their RDB snapshot and fsync their AOF), each SIGKILLed if it is
    /// still there after its grace period. With `wipe`, then deletes the lab's files (data, logs, key,
    /// state); without, the data stays for the next `up`.
    pub async fn down(&self, wipe: bool) -> anyhow::Result<()> {
        let base_port = self.config.base_port;
        let healed = tokio::task::spawn_blocking(move || network::heal(base_port))
            .await
            .context("the heal task panicked")?;
        let mut errors: Vec<String> = healed.err().map(|e| format!("{e:#}")).into_iter().collect();
        if errors.is_empty() {
            let _ = state::set_partition(&self.dir, None);
        }
        let members = self.members();
        let stages = [
            (vec![MemberKind::Lb, MemberKind::App], APP_STOP_GRACE),
            (vec![MemberKind::Sentinel], REDIS_STOP_GRACE),
            (vec![MemberKind::Redis], REDIS_STOP_GRACE),
        ];
        for (kinds, grace) in stages {
            let stops = members
                .iter()
                .filter(|m| kinds.contains(&m.kind))
                .map(|m| async move {
                    process::stop(&m.pidfile, &m.comm, grace)
                        .await
                        .with_context(|| format!("stopping {}", m.name))
                });
            for result in join_all(stops).await {
                if let Err(e) = result {
                    errors.push(format!("{e:#}"));
                }
            }
        }
        if !errors.is_empty() {
            anyhow::bail!("lab down: {}", errors.join("; "));
        }
        if wipe { self.wipe() } else { self.record() }
    }

    /// Every member's process, health and role, and the current master.
    pub async fn status(&self) -> anyhow::Result<Status> {
        let partition = state::load(&self.dir)?.and_then(|s| s.partition);
        let members = join_all(
            self.members()
                .into_iter()
                .map(|m| self.member_status(m, partition.as_deref())),
        )
        .await;
        let master = match self.config.driver {
            Driver::Sql => None,
            _ => self.redis_master().await.ok(),
        };
        Ok(Status {
            url: self.url(),
            driver: self.config.driver,
            master,
            partition,
            members,
        })
    }

    /// The HAProxy frontend, where users go: `http://127.0.0.1:<base_port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.layout.lb)
    }

    /// Each app instance's own URL, `app-1` first (index `i` of the other app methods).
    pub fn app_urls(&self) -> Vec<String> {
        self.layout
            .apps
            .iter()
            .map(|a| format!("http://{}", a.http))
            .collect()
    }

    /// The lab directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The session driver.
    pub fn driver(&self) -> Driver {
        self.config.driver
    }

    /// Every member's address.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Sentinel `down-after-milliseconds`.
    pub fn down_after(&self) -> Duration {
        Duration::from_millis(self.config.down_after_ms)
    }

    /// The name of app `i` (0-based): `app-<i+1>`, its `INSTANCE_NAME` and so the `served_by` of its answers.
    pub fn app_name(&self, i: usize) -> String {
        format!("app-{}", i + 1)
    }

    /// The pid of each app instance that is running (`app-1` first; `None` for one that is not): what
    /// `hostile` samples the resident memory of.
    pub fn app_pids(&self) -> Vec<Option<u32>> {
        (0..self.config.apps)
            .map(|i| {
                let member = self.app_member(i).ok()?;
                process::running_pid(&member.pidfile, &member.comm)
            })
            .collect()
    }

    /// The log file of app `i` (0-based): JSON lines, appended across restarts.
    pub fn app_log(&self, i: usize) -> PathBuf {
        self.app_spec(i).files.log()
    }

    /// Sends `signal` to app `i` (0-based, as in [`Lab::app_urls`]). For SIGKILL and SIGTERM, returns once the
    /// process is gone (after SIGTERM that takes the shutdown delay, during which `/readyz` is 503 and HAProxy
    /// stops routing to it). Fails if it is not running.
    pub async fn signal_app(&self, i: usize, signal: Signal) -> anyhow::Result<()> {
        let member = self.app_member(i)?;
        self.signal_member(&member, signal, APP_STOP_GRACE).await
    }

    /// Starts app `i` (0-based) if it is not running, and waits until its `/readyz` is 200 (then HAProxy puts
    /// it back in rotation at its next check, within 500 ms).
    pub async fn start_app(&self, i: usize) -> anyhow::Result<()> {
        let member = self.app_member(i)?;
        let spec = self.app_spec(i);
        let pid = match process::running_pid(&member.pidfile, &member.comm) {
            Some(pid) => pid,
            None => apps::start(&self.config.inventory_bin, &spec).await?,
        };
        apps::wait_ready(&self.http, &spec, pid, APP_READY_TIMEOUT).await?;
        self.record()
    }

    /// Waits until app `i` (0-based) has no live process (returns at once if it is not running).
    pub async fn wait_app_exit(&self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let member = self.app_member(i)?;
        if let Some(pid) = process::running_pid(&member.pidfile, &member.comm)
            && !process::wait_exit(pid, &member.comm, timeout).await
        {
            anyhow::bail!("{} (pid {pid}) is still running after {timeout:?}", member.name);
        }
        self.record()
    }

    /// Waits until every member is healthy again, as [`Lab::up`] leaves it: one master with every replica's
    /// link up, every Sentinel agreeing on it with all replicas and Sentinels known, every app ready, and
    /// HAProxy serving with every app server up. Starts nothing: after a fault, start the members first.
    pub async fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        if self.config.driver != Driver::Sql {
            self.wait_replication_settled(left()).await?;
            self.wait_sentinels_settled(left()).await?;
        }
        for i in 0..self.config.apps {
            let member = self.app_member(i)?;
            let pid = process::running_pid(&member.pidfile, &member.comm)
                .with_context(|| format!("{} is not running", member.name))?;
            apps::wait_ready(&self.http, &self.app_spec(i), pid, left()).await?;
        }
        self.wait_lb_serving(left()).await
    }

    /// The Redis data nodes (`host:port`), `redis-1` first; empty with the `sql` driver.
    pub async fn redis_nodes(&self) -> Vec<String> {
        self.layout.redis.iter().map(ToString::to_string).collect()
    }

    /// The Sentinels (`host:port`); empty unless the driver is `redis-sentinel`.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.layout.sentinels.iter().map(ToString::to_string).collect()
    }

    /// The master as the Sentinels see it (the answer most of the answering Sentinels give), or the single
    /// node with the `redis` driver. Fails with the `sql` driver or when no Sentinel answers.
    pub async fn redis_master(&self) -> anyhow::Result<String> {
        match self.config.driver {
            Driver::Sql => anyhow::bail!("the sql driver runs no Redis"),
            Driver::Redis => Ok(self.layout.redis[0].to_string()),
            Driver::RedisSentinel => {
                let reports = self.sentinel_reports().await;
                let mut counts: HashMap<&str, usize> = HashMap::new();
                for master in reports.iter().flatten() {
                    *counts.entry(master).or_default() += 1;
                }
                counts
                    .into_iter()
                    .max_by_key(|(addr, n)| (*n, std::cmp::Reverse(*addr)))
                    .map(|(addr, _)| addr.to_owned())
                    .with_context(|| {
                        format!(
                            "no Sentinel reports a master for {MASTER_NAME} (asked {})",
                            self.sentinel_addrs().join(", ")
                        )
                    })
            }
        }
    }

    /// The role the data node at `addr` reports: `master` or `replica`.
    pub async fn redis_role(&self, addr: &str) -> anyhow::Result<String> {
        self.redis_member(addr)?;
        Ok(redis::replication(addr).await?.role)
    }

    /// Sends `signal` to the Redis process (data node or Sentinel) at `addr`. For SIGKILL and SIGTERM,
    /// returns once the process is gone (after SIGTERM a data node writes its RDB snapshot first). Fails if
    /// it is not running.
    pub async fn signal_redis(&self, addr: &str, signal: Signal) -> anyhow::Result<()> {
        let member = self.redis_member(addr)?;
        self.signal_member(&member, signal, REDIS_STOP_GRACE).await
    }

    /// Starts the Redis process (data node or Sentinel) at `addr` if it is not running: same port, same
    /// directory and config file (as Sentinel may have rewritten it), so a data node replays its AOF. Returns
    /// once it answers PING. A former master comes back as a master until the Sentinels convert it to a
    /// replica (about 10 s later): follow with [`Lab::wait_replica_of`].
    pub async fn start_redis(&self, addr: &str) -> anyhow::Result<()> {
        let member = self.redis_member(addr)?;
        if process::running_pid(&member.pidfile, &member.comm).is_none() {
            let redis_bin = process::system_binary("redis-server")?;
            let files = self.ensure_redis_conf(&member)?;
            redis::start(&redis_bin, &files, addr, &member.name).await?;
        }
        self.record()
    }

    /// Asks the Sentinels for a planned failover (`SENTINEL FAILOVER`, what a Redis rolling update does) and
    /// returns the master at the time of the request. Retries for up to 30 s while Sentinel refuses (a failover
    /// already in progress, no replica it considers good yet). Follow with [`Lab::wait_for_master_change`].
    pub async fn sentinel_failover(&self) -> anyhow::Result<String> {
        if self.config.driver != Driver::RedisSentinel {
            anyhow::bail!(
                "a Sentinel failover needs the redis-sentinel driver (this lab runs {})",
                self.config.driver
            );
        }
        let deadline = Instant::now() + FAILOVER_RETRY;
        let mut last_error = String::new();
        loop {
            let master = self.redis_master().await?;
            for sentinel in self.sentinel_addrs() {
                let mut cmd = ::redis::cmd("SENTINEL");
                cmd.arg("FAILOVER").arg(MASTER_NAME);
                match redis::query::<String>(&sentinel, &cmd).await {
                    Ok(_) => return Ok(master),
                    Err(e) => last_error = format!("{sentinel}: {e}"),
                }
            }
            if Instant::now() >= deadline {
                anyhow::bail!("SENTINEL FAILOVER refused for {FAILOVER_RETRY:?}; last: {last_error}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the answering Sentinels (at least a quorum, 2) all report the same master, other than
    /// `old`, and that node says it is a master. Returns it.
    pub async fn wait_for_master_change(&self, old: &str, timeout: Duration) -> anyhow::Result<String> {
        if self.config.driver != Driver::RedisSentinel {
            anyhow::bail!(
                "only the redis-sentinel driver changes masters (this lab runs {})",
                self.config.driver
            );
        }
        let deadline = Instant::now() + timeout;
        loop {
            let reports: Vec<String> = self.sentinel_reports().await.into_iter().flatten().collect();
            if reports.len() >= 2
                && reports.iter().all(|r| r == &reports[0])
                && reports[0] != old
                && redis::replication(&reports[0])
                    .await
                    .is_ok_and(|r| r.role == "master")
            {
                return Ok(reports[0].clone());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "no new master (other than {old}) within {timeout:?}; the Sentinels last reported {reports:?}\n{}",
                    self.sentinel_log_tails()
                );
            }
            tokio::time::sleep(process::POLL * 2).await;
        }
    }

    /// Waits until the data node at `addr` is a replica, with its replication link up, of the master the
    /// Sentinels agree on (at least a quorum, 2, all reporting the same node). Returns that master.
    ///
    /// The master is not fixed in advance: on a loaded machine the Sentinels may fail over again while
    /// `addr` rejoins (a busy master that misses `down-after-milliseconds` of pings is, to them, down), and
    /// the node then follows the newer master. Callers compare the result with the master they expected.
    pub async fn wait_rejoined(&self, addr: &str, timeout: Duration) -> anyhow::Result<String> {
        self.redis_member(addr)?;
        let deadline = Instant::now() + timeout;
        loop {
            let reports: Vec<String> = self.sentinel_reports().await.into_iter().flatten().collect();
            let agreed = (reports.len() >= 2 && reports.iter().all(|r| r == &reports[0]))
                .then(|| reports[0].clone())
                .filter(|master| master != addr);
            let last = match (redis::replication(addr).await, agreed) {
                (Ok(r), Some(master))
                    if r.role == "replica" && r.link_up && r.master.as_deref() == Some(master.as_str()) =>
                {
                    return Ok(master);
                }
                (Ok(r), _) => format!("{r:?}; the Sentinels report {reports:?}"),
                (Err(e), _) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "{addr} did not become a replica of the Sentinels' master with its link up within {timeout:?}; last: {last}\n{}",
                    self.sentinel_log_tails()
                );
            }
            tokio::time::sleep(process::POLL * 2).await;
        }
    }

    /// Cuts the data node `isolate` off from the other data nodes and from the Sentinels, in both directions,
    /// but not from the apps (nor from this process). See [`Partition`] for how, and heal it with
    /// [`Partition::heal`]. Needs root and the redis-sentinel driver; one partition per lab at a time.
    pub async fn partition(&self, isolate: &str) -> anyhow::Result<Partition> {
        if self.config.driver != Driver::RedisSentinel {
            anyhow::bail!(
                "a partition needs the redis-sentinel driver (this lab runs {})",
                self.config.driver
            );
        }
        let isolated: SocketAddrV4 = self
            .layout
            .redis
            .iter()
            .find(|a| a.to_string() == isolate)
            .copied()
            .with_context(|| {
                format!(
                    "{isolate} is not a data node of this lab ({})",
                    self.layout
                        .redis
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        if let Some(current) = state::load(&self.dir)?.and_then(|s| s.partition) {
            anyhow::bail!(
                "a partition is already in place (isolating {current}): heal it first, or `moor lab down`"
            );
        }
        let peers: Vec<SocketAddrV4> = self
            .layout
            .redis
            .iter()
            .chain(&self.layout.sentinels)
            .filter(|a| **a != isolated)
            .copied()
            .collect();
        let base_port = self.config.base_port;
        tokio::task::spawn_blocking(move || network::cut(base_port, isolated, &peers))
            .await
            .context("the partition task panicked")??;
        let partition = Partition {
            base_port,
            isolated: isolate.to_owned(),
            dir: self.dir.clone(),
            healed: false,
        };
        state::set_partition(&self.dir, Some(isolate.to_owned()))?;
        Ok(partition)
    }

    // ---- building blocks -------------------------------------------------------------------------------

    /// Every member, in start order within its kind: HAProxy, the apps, the data nodes, the Sentinels.
    fn members(&self) -> Vec<MemberDef> {
        let haproxy = self.haproxy_files();
        let mut members = vec![MemberDef {
            kind: MemberKind::Lb,
            name: "haproxy".into(),
            addr: self.layout.lb,
            pidfile: haproxy.pidfile(),
            log: haproxy.log(),
            comm: haproxy::COMM.into(),
        }];
        for i in 0..self.layout.apps.len() {
            let spec = self.app_spec(i);
            members.push(MemberDef {
                kind: MemberKind::App,
                name: spec.name.clone(),
                addr: spec.http,
                pidfile: spec.files.pidfile(),
                log: spec.files.log(),
                comm: spec.comm.clone(),
            });
        }
        for (j, addr) in self.layout.redis.iter().enumerate() {
            let files = self.redis_files(MemberKind::Redis, j);
            members.push(MemberDef {
                kind: MemberKind::Redis,
                name: format!("redis-{}", j + 1),
                addr: *addr,
                pidfile: files.pidfile(),
                log: files.log(),
                comm: redis::COMM.into(),
            });
        }
        for (k, addr) in self.layout.sentinels.iter().enumerate() {
            let files = self.redis_files(MemberKind::Sentinel, k);
            members.push(MemberDef {
                kind: MemberKind::Sentinel,
                name: format!("sentinel-{}", k + 1),
                addr: *addr,
                pidfile: files.pidfile(),
                log: files.log(),
                comm: redis::COMM.into(),
            });
        }
        members
    }

    /// App `i`'s member, or an error naming the valid range.
    fn app_member(&self, i: usize) -> anyhow::Result<MemberDef> {
        self.members()
            .into_iter()
            .filter(|m| m.kind == MemberKind::App)
            .nth(i)
            .with_context(|| {
                format!(
                    "there is no app {i}: this lab runs apps 0 to {}",
                    self.config.apps - 1
                )
            })
    }

    /// The data node or Sentinel at `addr`, or an error listing them.
    fn redis_member(&self, addr: &str) -> anyhow::Result<MemberDef> {
        let members = self.members();
        let redis: Vec<&MemberDef> = members
            .iter()
            .filter(|m| matches!(m.kind, MemberKind::Redis | MemberKind::Sentinel))
            .collect();
        redis
            .iter()
            .find(|m| m.addr.to_string() == addr)
            .map(|m| (*m).clone())
            .with_context(|| {
                format!(
                    "{addr} is not a Redis node or Sentinel of this lab ({})",
                    redis
                        .iter()
                        .map(|m| m.addr.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }

    /// Sends `signal` to `member` and, for SIGKILL/SIGTERM, waits until it is gone (SIGTERM: within `grace`).
    async fn signal_member(&self, member: &MemberDef, signal: Signal, grace: Duration) -> anyhow::Result<()> {
        let pid = process::running_pid(&member.pidfile, &member.comm)
            .with_context(|| format!("{} ({}) is not running", member.name, member.addr))?;
        process::send(pid, signal)
            .await
            .with_context(|| format!("signalling {}", member.name))?;
        if signal.ends_process() {
            let wait = if signal == Signal::Kill { KILL_WAIT } else { grace };
            if !process::wait_exit(pid, &member.comm, wait).await {
                anyhow::bail!(
                    "{} (pid {pid}) is still running {wait:?} after SIG{}",
                    member.name,
                    signal.name()
                );
            }
        }
        self.record()
    }

    /// HAProxy's files.
    fn haproxy_files(&self) -> haproxy::Files {
        haproxy::Files {
            dir: self.dir.join("haproxy"),
        }
    }

    /// The files of data node (`kind` Redis) or Sentinel `index` (0-based).
    fn redis_files(&self, kind: MemberKind, index: usize) -> redis::NodeFiles {
        match kind {
            MemberKind::Sentinel => redis::NodeFiles {
                dir: self.dir.join("sentinels").join(format!("sentinel-{}", index + 1)),
                sentinel: true,
            },
            _ => redis::NodeFiles {
                dir: self.dir.join("redis").join(format!("redis-{}", index + 1)),
                sentinel: false,
            },
        }
    }

    /// Everything app `i` (0-based) needs to start.
    fn app_spec(&self, i: usize) -> apps::Spec {
        let addrs = self.layout.apps[i];
        let store = match self.config.driver {
            Driver::RedisSentinel => apps::Store::Sentinels(self.layout.sentinels.clone()),
            Driver::Redis => apps::Store::Redis(self.layout.redis[0]),
            Driver::Sql => apps::Store::Sql,
        };
        apps::Spec {
            name: self.app_name(i),
            http: addrs.http,
            metrics_port: addrs.metrics.port(),
            files: apps::Files {
                dir: self.dir.join("apps").join(self.app_name(i)),
            },
            app_key_file: self.dir.join("app_key"),
            database: self.dir.join("inventory.db"),
            store,
            store_timeout: apps::store_timeout(self.config.driver, self.config.down_after_ms),
            comm: process::comm_of(&self.config.inventory_bin),
        }
    }

    /// Writes the shared APP_KEY (64 hex digits from the OS random source) unless it exists.
    fn write_app_key(&self) -> anyhow::Result<()> {
        use std::io::Read as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.dir.join("app_key");
        if path.exists() {
            return Ok(());
        }
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .context("reading /dev/urandom")?;
        let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let temp = self.dir.join(".app_key.tmp");
        {
            use std::io::Write as _;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&temp)
                .with_context(|| format!("writing {}", temp.display()))?;
            file.write_all(key.as_bytes())?;
        }
        std::fs::rename(&temp, &path).with_context(|| format!("writing {}", path.display()))
    }

    /// Writes the config of the data node or Sentinel `member` unless it has one, and returns its files.
    fn ensure_redis_conf(&self, member: &MemberDef) -> anyhow::Result<redis::NodeFiles> {
        let index = self
            .members()
            .iter()
            .filter(|m| m.kind == member.kind)
            .position(|m| m.addr == member.addr)
            .expect("a member of this lab");
        let files = self.redis_files(member.kind, index);
        std::fs::create_dir_all(&files.dir).with_context(|| format!("creating {}", files.dir.display()))?;
        if !files.conf().exists() {
            let first_master = self.layout.redis[0];
            let conf = if files.sentinel {
                redis::sentinel_conf(&files, member.addr, first_master, self.config.down_after_ms)
            } else {
                let replica_of = (member.addr != first_master).then_some(first_master);
                redis::data_node_conf(&files, member.addr, self.config.driver, replica_of)
            };
            std::fs::write(files.conf(), conf)
                .with_context(|| format!("writing {}", files.conf().display()))?;
        }
        Ok(files)
    }

    /// Starts the data nodes and Sentinels that are not running and waits until they settle.
    async fn up_redis(&self, redis_bin: &Path) -> anyhow::Result<()> {
        for kind in [MemberKind::Redis, MemberKind::Sentinel] {
            let members: Vec<MemberDef> = self.members().into_iter().filter(|m| m.kind == kind).collect();
            let mut starts = Vec::new();
            for member in &members {
                if process::running_pid(&member.pidfile, &member.comm).is_none() {
                    let files = self.ensure_redis_conf(member)?;
                    starts.push(async move {
                        redis::start(redis_bin, &files, &member.addr.to_string(), &member.name).await
                    });
                }
            }
            for result in join_all(starts).await {
                result?;
            }
            if kind == MemberKind::Redis {
                self.wait_replication_settled(UP_TIMEOUT).await?;
            }
        }
        self.wait_sentinels_settled(UP_TIMEOUT).await
    }

    /// Waits until exactly one data node is master and every other one replicates it with its link up.
    async fn wait_replication_settled(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let nodes: Vec<String> = self.redis_nodes().await;
            let views = join_all(nodes.iter().map(|n| redis::replication(n))).await;
            let masters: Vec<&String> = nodes
                .iter()
                .zip(&views)
                .filter(|(_, v)| v.as_ref().is_ok_and(|v| v.role == "master"))
                .map(|(n, _)| n)
                .collect();
            if let [master] = masters.as_slice()
                && views.iter().all(|v| {
                    v.as_ref().is_ok_and(|v| {
                        v.role == "master" || (v.link_up && v.master.as_deref() == Some(master.as_str()))
                    })
                })
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let seen: Vec<String> = nodes
                    .iter()
                    .zip(&views)
                    .map(|(n, v)| match v {
                        Ok(v) => format!("{n}: {v:?}"),
                        Err(e) => format!("{n}: {e:#}"),
                    })
                    .collect();
                anyhow::bail!(
                    "the Redis nodes did not settle (one master, every replica's link up) within {timeout:?}; last:\n{}",
                    seen.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every Sentinel sees the same master up, with all its replicas healthy and every other
    /// Sentinel (no-op for drivers without Sentinels).
    async fn wait_sentinels_settled(&self, timeout: Duration) -> anyhow::Result<()> {
        let sentinels = self.sentinel_addrs();
        if sentinels.is_empty() {
            return Ok(());
        }
        let (replicas, others) = (self.layout.redis.len() - 1, sentinels.len() - 1);
        let deadline = Instant::now() + timeout;
        loop {
            let views = join_all(sentinels.iter().map(|s| redis::sentinel_view(s))).await;
            let first_master = views
                .first()
                .and_then(|v| v.as_ref().ok())
                .map(|v| v.master.clone());
            let settled = views.iter().all(|v| {
                v.as_ref().is_ok_and(|v| {
                    Some(&v.master) == first_master.as_ref()
                        && v.flags == "master"
                        && v.healthy_replicas == replicas
                        && v.other_sentinels == others
                })
            });
            if settled {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let seen: Vec<String> = sentinels
                    .iter()
                    .zip(&views)
                    .map(|(s, v)| match v {
                        Ok(v) => format!("{s}: {v:?}"),
                        Err(e) => format!("{s}: {e:#}"),
                    })
                    .collect();
                anyhow::bail!(
                    "the Sentinels did not agree (same master up, {replicas} healthy replicas, {others} other Sentinels) within {timeout:?}; last:\n{}\n{}",
                    seen.join("\n"),
                    self.sentinel_log_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts the apps that are not running and waits until every app is ready.
    async fn up_apps(&self) -> anyhow::Result<()> {
        let waits = (0..self.config.apps).map(|i| async move {
            let member = self.app_member(i)?;
            let spec = self.app_spec(i);
            let pid = match process::running_pid(&member.pidfile, &member.comm) {
                Some(pid) => pid,
                None => apps::start(&self.config.inventory_bin, &spec).await?,
            };
            apps::wait_ready(&self.http, &spec, pid, UP_TIMEOUT).await
        });
        for result in join_all(waits).await {
            result?;
        }
        Ok(())
    }

    /// Starts HAProxy if it is not running and waits until it serves with every app server up.
    async fn up_haproxy(&self, haproxy_bin: &Path) -> anyhow::Result<()> {
        let files = self.haproxy_files();
        if process::running_pid(&files.pidfile(), haproxy::COMM).is_none() {
            std::fs::create_dir_all(&files.dir)
                .with_context(|| format!("creating {}", files.dir.display()))?;
            let servers: Vec<(String, SocketAddrV4)> = (0..self.config.apps)
                .map(|i| (self.app_name(i), self.layout.apps[i].http))
                .collect();
            let server_timeout =
                apps::store_timeout(self.config.driver, self.config.down_after_ms) + Duration::from_secs(5);
            let cfg = haproxy::config(self.layout.lb, self.layout.stats, &servers, server_timeout);
            std::fs::write(files.cfg(), cfg).with_context(|| format!("writing {}", files.cfg().display()))?;
            haproxy::start(haproxy_bin, &files, self.layout.lb).await?;
        }
        self.wait_lb_serving(UP_TIMEOUT).await
    }

    /// Waits until HAProxy serves the frontend with every app server up.
    async fn wait_lb_serving(&self, timeout: Duration) -> anyhow::Result<()> {
        let files = self.haproxy_files();
        let deadline = Instant::now() + timeout;
        loop {
            let states = haproxy::server_states(&self.http, self.layout.stats).await;
            let all_up = states.as_ref().is_ok_and(|s| {
                s.len() == self.config.apps && s.iter().all(|(_, state)| state.starts_with("UP"))
            });
            let serves = all_up
                && self
                    .http
                    .get(format!("{}/healthz", self.url()))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
            if serves {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "HAProxy does not serve {} with every app up within {timeout:?}; servers: {states:?}\n{}",
                    self.url(),
                    process::log_tail(&files.log(), 10)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What each Sentinel reports as the master (`None` for one that does not answer or knows none).
    async fn sentinel_reports(&self) -> Vec<Option<String>> {
        join_all(
            self.sentinel_addrs()
                .iter()
                .map(|s| async move { redis::reported_master(s).await.ok().flatten() }),
        )
        .await
    }

    /// The last lines of every Sentinel's log, for failure messages.
    fn sentinel_log_tails(&self) -> String {
        self.log_tails(&[MemberKind::Sentinel], 8)
    }

    /// The last `lines` lines of the log of every member of the given kinds, each under a header naming the
    /// file: what a report shows when Redis did something unexpected.
    pub fn log_tails(&self, kinds: &[MemberKind], lines: usize) -> String {
        self.members()
            .iter()
            .filter(|m| kinds.contains(&m.kind))
            .map(|m| process::log_tail(&m.log, lines))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// One member's status.
    async fn member_status(&self, m: MemberDef, partition: Option<&str>) -> Member {
        let pid = process::running_pid(&m.pidfile, &m.comm);
        let running = pid.is_some();
        let addr = m.addr.to_string();
        let (healthy, role, mut detail) = match m.kind {
            MemberKind::Lb => {
                let (healthy, detail) = if running {
                    match haproxy::server_states(&self.http, self.layout.stats).await {
                        Ok(states) => {
                            let up = states.iter().filter(|(_, s)| s.starts_with("UP")).count();
                            (up == states.len(), format!("{up}/{} servers up", states.len()))
                        }
                        Err(e) => (false, format!("{e:#}")),
                    }
                } else {
                    (false, String::new())
                };
                (healthy, Role::Lb, detail)
            }
            MemberKind::App => {
                let ready = running && apps::ready(&self.http, m.addr).await;
                let detail = match (running, ready) {
                    (false, _) => String::new(),
                    (true, true) => "ready".into(),
                    (true, false) => "/readyz is not 200".into(),
                };
                (ready, Role::App, detail)
            }
            MemberKind::Redis => match (running, redis::replication(&addr).await) {
                (true, Ok(r)) if r.role == "master" => match r.good_replicas {
                    // With min-replicas-to-write 1, a master without a replica in sync refuses writes.
                    Some(good) => (
                        good >= 1,
                        Role::Master,
                        format!("replicas: {} connected, {good} in sync", r.replicas),
                    ),
                    None => (true, Role::Master, format!("replicas: {} connected", r.replicas)),
                },
                (true, Ok(r)) if r.role == "replica" => (
                    r.link_up,
                    Role::Replica,
                    format!(
                        "replica of {}, link {}",
                        r.master.unwrap_or_default(),
                        if r.link_up { "up" } else { "down" }
                    ),
                ),
                (true, Ok(r)) => (false, Role::Unknown, format!("role {}", r.role)),
                (true, Err(e)) => (false, Role::Unknown, format!("{e:#}")),
                (false, _) => (false, Role::Unknown, String::new()),
            },
            MemberKind::Sentinel => match (running, redis::sentinel_view(&addr).await) {
                (true, Ok(v)) => (
                    v.flags == "master",
                    Role::Sentinel,
                    format!(
                        "sees {} ({}), {} replicas ok, {} other Sentinels",
                        v.master, v.flags, v.healthy_replicas, v.other_sentinels
                    ),
                ),
                (true, Err(e)) => (false, Role::Sentinel, format!("{e:#}")),
                (false, _) => (false, Role::Sentinel, String::new()),
            },
        };
        if partition == Some(addr.as_str()) {
            detail = if detail.is_empty() {
                "cut off by a partition".into()
            } else {
                format!("{detail}; cut off by a partition")
            };
        }
        Member {
            kind: m.kind,
            name: m.name,
            addr,
            pid,
            running,
            healthy,
            role,
            detail,
        }
    }

    /// Writes `state.json` with every member's current pid.
    fn record(&self) -> anyhow::Result<()> {
        let mut state =
            state::load(&self.dir)?.unwrap_or_else(|| state::new(self.config.clone(), self.url()));
        state.members = self
            .members()
            .into_iter()
            .map(|m| MemberRecord {
                pid: process::running_pid(&m.pidfile, &m.comm),
                kind: m.kind.as_str().to_owned(),
                addr: m.addr.to_string(),
                name: m.name,
                pidfile: m.pidfile,
                log: m.log,
            })
            .collect();
        state::save(&self.dir, &state)
    }

    /// Deletes the lab's files (only the ones a lab creates), then the directory if it is left empty.
    fn wipe(&self) -> anyhow::Result<()> {
        for dir in ["apps", "haproxy", "redis", "sentinels"] {
            let path = self.dir.join(dir);
            if path.exists() {
                std::fs::remove_dir_all(&path).with_context(|| format!("deleting {}", path.display()))?;
            }
        }
        for file in [
            "app_key",
            "inventory.db",
            "inventory.db-wal",
            "inventory.db-shm",
            "inventory.db-journal",
            state::FILE,
        ] {
            let path = self.dir.join(file);
            if path.exists() {
                std::fs::remove_file(&path).with_context(|| format!("deleting {}", path.display()))?;
            }
        }
        // Only if empty: the directory may hold the user's own files.
        let _ = std::fs::remove_dir(&self.dir);
        Ok(())
    }
}

/// Takes a lab down when dropped, even when the test or scenario holding it panics: create it (with the
/// lab's directory) before [`Lab::up`], so a lab that fails half-way up is stopped too. The drop blocks
/// while `down` runs (on a thread of its own, so it works inside and outside a Tokio runtime).
#[derive(Debug)]
pub struct LabGuard {
    /// The lab directory; `None` once disarmed.
    dir: Option<PathBuf>,
    /// Whether `down` deletes the data too.
    wipe: bool,
}

impl LabGuard {
    /// A guard that runs `down(wipe)` on the lab in `dir` (if one is there) when dropped.
    pub fn new(dir: impl Into<PathBuf>, wipe: bool) -> Self {
        Self {
            dir: Some(dir.into()),
            wipe,
        }
    }

    /// Leaves the lab running when the guard is dropped.
    pub fn disarm(&mut self) {
        self.dir = None;
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else {
            return;
        };
        if !dir.join(state::FILE).exists() {
            return;
        }
        let wipe = self.wipe;
        let result = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building a runtime")?;
            runtime.block_on(async { Lab::open(&dir)?.down(wipe).await })
        })
        .join();
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("moor lab: taking the lab down failed: {e:#}"),
            Err(_) => eprintln!("moor lab: taking the lab down panicked"),
        }
    }
}
