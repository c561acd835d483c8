//! Real Redis topologies for tests, started as `redis-server` processes on free ports, each in its own
//! temporary directory.
//!
//! - [`standalone`]: one server.
//! - [`sentinel_topology`]: one master, two replicas and three Sentinels (quorum 2), the shape a Sentinel
//!   deployment has in production; [`SentinelTopology`] kills, restarts and fails over nodes.
//! - [`cluster`]: a Redis Cluster of `masters` masters (at least 3) with `replicas_per_master` replicas each.
//!
//! Invariants:
//!
//! - **No leaked processes.** A [`RedisServer`] kills its process (SIGKILL) when dropped, which includes a
//!   test that panics. Where util-linux `setpriv` is installed the process is also started with a parent-death
//!   signal, so it dies with the thread that started it even when the test binary itself is killed. That
//!   thread is the test's (or a runtime worker of the test's runtime), so do not keep a server in a `static`
//!   shared between tests: tests must not share servers anyway.
//! - **Isolation.** Every process gets its own port and directory. Ports are drawn below the kernel's
//!   ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`) rather than from `bind(:0)`, because an
//!   ephemeral port freed by a `kill -9` can be taken by some client's outgoing connection before
//!   [`RedisServer::restart`] binds it again; ports below the range are only ever taken by listeners. A port
//!   (and `port + 10000`, the cluster bus) must bind on 127.0.0.1 and is reserved in this process until the
//!   server is dropped; a start that still loses a race ("Address already in use") retries on another port.
//! - **Bounded.** Every wait has a timeout and panics with a message that names what it waited for and the
//!   tails of the relevant logs. A failing test also keeps its servers' directories (the path is printed).
//! - **Durable config.** Servers write AOF (`appendonly yes`, `appendfsync everysec`) and RDB snapshots into
//!   their directory, so [`RedisServer::restart`] comes back with the data, as a real node does. The config
//!   file lives in the directory too; Sentinel and `CONFIG REWRITE` may change it, and a restart uses the
//!   changed file, again as a real node does.
//!
//! Missing binaries fail with "install redis-server (scripts/services.sh does it)": a test that silently
//! skips proves nothing.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, FromRedisValue, IntoConnectionInfo,
    RedisConnectionInfo,
};
use tempfile::TempDir;
use tokio::process::{Child, Command};

/// The message every failure to find the Redis binaries carries.
const INSTALL_HINT: &str = "install redis-server (scripts/services.sh does it)";
/// How long one process may take to answer PING after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a graceful SHUTDOWN may take (Redis waits up to 10 s for lagging replicas).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a whole topology may take to settle after its processes answer PING.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `redis-cli --cluster create` may run.
const CLUSTER_CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of one admin connection attempt and of one admin command.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause between two polls of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How many log lines a panic message carries per process.
const LOG_TAIL_LINES: usize = 25;
/// How many ports a new server tries before giving up ("Address already in use" races).
const START_ATTEMPTS: usize = 5;
/// The cluster bus listens on the data port plus this offset.
const CLUSTER_BUS_OFFSET: u16 = 10_000;
/// The lowest port handed out: above the well-known services (Redis 6379, PostgreSQL 5432, MariaDB 3306).
const LOWEST_PORT: u16 = 11_000;
/// The name of the log file in a server's directory.
const LOG_FILE: &str = "redis.log";
/// The name of the file that gets the process's stdout and stderr (errors before the log file is open).
const STDOUT_FILE: &str = "stdout.log";

/// Configuration shared by every server a function here starts.
///
/// ```text
/// let server = standalone(Options::default().with_password("secret")).await;
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    /// Sets `requirepass` and `masterauth` (so replicas authenticate to their master) on every server, and
    /// `sentinel auth-pass` on Sentinels. Sentinels themselves take no password.
    pub password: Option<String>,
    /// `min-replicas-to-write`: a master refuses writes (NOREPLICAS) unless this many replicas lag at most
    /// [`Options::min_replicas_max_lag`] seconds. `None` leaves it off (Redis' default).
    pub min_replicas_to_write: Option<u32>,
    /// `min-replicas-max-lag` in seconds; only written when [`Options::min_replicas_to_write`] is set.
    pub min_replicas_max_lag: u32,
    /// More `directive value` lines for every server's config file (not for Sentinels), written last so they
    /// override the harness's defaults.
    pub extra: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            password: None,
            min_replicas_to_write: None,
            min_replicas_max_lag: 10,
            extra: Vec::new(),
        }
    }
}

impl Options {
    /// Requires `password` on every server (see [`Options::password`]).
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Sets `min-replicas-to-write` and `min-replicas-max-lag` (seconds).
    pub fn with_min_replicas(mut self, to_write: u32, max_lag: u32) -> Self {
        self.min_replicas_to_write = Some(to_write);
        self.min_replicas_max_lag = max_lag;
        self
    }

    /// Appends one `directive value` line to every server's config file.
    pub fn with_config(mut self, directive: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((directive.into(), value.into()));
        self
    }
}

/// Configuration of a [`sentinel_topology`].
#[derive(Clone, Debug)]
pub struct SentinelOptions {
    /// The servers' options. The default sets `min-replicas-to-write 1` and `min-replicas-max-lag 2`: without
    /// them a master demoted by `SENTINEL FAILOVER` keeps accepting (and later losing) writes for ~10 s
    /// (see "Redis failover facts" in shared/TOOLS.md).
    pub server: Options,
    /// The name the Sentinels monitor the master under.
    pub master_name: String,
    /// `sentinel down-after-milliseconds`: how long a master must not answer before it is subjectively down
    /// (default 2 s: with 1 s, a loaded two-core CI machine saw Sentinels fail over a second time, spuriously).
    pub down_after: Duration,
    /// `sentinel failover-timeout`.
    pub failover_timeout: Duration,
}

impl Default for SentinelOptions {
    fn default() -> Self {
        Self {
            server: Options::default().with_min_replicas(1, 2),
            master_name: "mymaster".to_owned(),
            down_after: Duration::from_millis(2000),
            failover_timeout: Duration::from_secs(10),
        }
    }
}

impl SentinelOptions {
    /// Requires `password` on every server (and gives it to the Sentinels as `auth-pass`).
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.server.password = Some(password.into());
        self
    }

    /// Sets the name the Sentinels monitor the master under.
    pub fn with_master_name(mut self, name: impl Into<String>) -> Self {
        self.master_name = name.into();
        self
    }

    /// Sets `sentinel down-after-milliseconds`.
    pub fn with_down_after(mut self, down_after: Duration) -> Self {
        self.down_after = down_after;
        self
    }
}

/// What a [`RedisServer`] process runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A data node (standalone, master, replica or cluster node).
    Server,
    /// A Sentinel (`redis-server <conf> --sentinel`).
    Sentinel,
}

impl Kind {
    /// The config file's name in the process's directory.
    fn conf_file(self) -> &'static str {
        match self {
            Kind::Server => "redis.conf",
            Kind::Sentinel => "sentinel.conf",
        }
    }
}

/// One `redis-server` process (a data node or a Sentinel) on its own port and directory. Dropping it kills the
/// process; the directory is removed too, unless the thread is panicking (then it is kept and its path
/// printed, for the logs).
#[derive(Debug)]
pub struct RedisServer {
    /// Data node or Sentinel.
    kind: Kind,
    /// The port it listens on, for its whole life (restarts included).
    port: u16,
    /// `requirepass`, used by the admin connections and [`RedisServer::url`].
    password: Option<String>,
    /// The data directory: config, log, AOF, RDB, `nodes.conf`.
    dir: PathBuf,
    /// Owns `dir`; `None` once kept for diagnostics.
    temp: Option<TempDir>,
    /// The running process; `None` after a kill or stop.
    child: Option<Child>,
}

impl RedisServer {
    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, the form Sentinel and Cluster report addresses in.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:<port>`, with the password (`redis://:<password>@127.0.0.1:<port>`) when one is set.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{}@127.0.0.1:{}", percent_encode(password), self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The password set with [`Options::password`] (Sentinels have none).
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Connection details for the redis crate, password included.
    pub fn connection_info(&self) -> ConnectionInfo {
        connection_info(&self.addr(), self.password.as_deref())
    }

    /// A fresh multiplexed connection (bounded connect and response timeouts). Panics if it cannot connect.
    pub async fn connect(&self) -> MultiplexedConnection {
        match admin_connection(self.connection_info()).await {
            Ok(connection) => connection,
            Err(e) => panic!(
                "cannot connect to {}: {e}\n{}",
                self.describe(),
                self.log_tail(LOG_TAIL_LINES)
            ),
        }
    }

    /// The directory holding its config, log, AOF and RDB files.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// The path of its log file (in [`RedisServer::data_dir`]).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// The process id, or `None` while it is not running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether the process has been started and not yet killed or stopped by this harness.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether this process is a Sentinel.
    pub fn is_sentinel(&self) -> bool {
        self.kind == Kind::Sentinel
    }

    /// The last `lines` lines of its log file, then of its stdout/stderr if there are any, for failure
    /// messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = format!(
            "--- {} ({}) log tail ---\n",
            self.describe(),
            self.log_path().display()
        );
        out.push_str(&tail(&self.log_path(), lines));
        let stdout = tail(&self.dir.join(STDOUT_FILE), lines);
        if !stdout.trim().is_empty() {
            out.push_str("--- stdout/stderr ---\n");
            out.push_str(&stdout);
        }
        out
    }

    /// Kills the process with SIGKILL (no AOF flush, no goodbye to replicas or Sentinels) and waits for it to
    /// exit. Does nothing if it is not running.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `kill` sends SIGKILL and reaps the process.
            if let Err(e) = child.kill().await {
                panic!("cannot kill {}: {e}", self.describe());
            }
        }
    }

    /// Stops the process gracefully with `SHUTDOWN` (a data node writes its RDB snapshot and fsyncs its AOF)
    /// and waits for it to exit. Does nothing if it is not running.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The reply never comes: the server closes the connection as it exits.
        let _ = admin_query::<()>(self.connection_info(), redis::cmd("SHUTDOWN")).await;
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("waiting for {} to stop: {e}", self.describe()),
            Err(_) => {
                let _ = child.kill().await;
                panic!(
                    "{} did not stop within {STOP_TIMEOUT:?} of SHUTDOWN (killed it)\n{}",
                    self.describe(),
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
        }
    }

    /// Starts the process again on the same port, directory and config file (as possibly rewritten by
    /// Sentinel or `CONFIG REWRITE`), and waits until it answers PING (so a data node has loaded its AOF). A
    /// running process is stopped gracefully first. Panics if the port has been taken meanwhile.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.rotate_logs();
        if let Err(failure) = self.spawn_and_wait().await {
            panic!(
                "restarting {}: {failure}\n{}",
                self.describe(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
    }

    /// A short name for messages: "redis-server 127.0.0.1:port" or "sentinel 127.0.0.1:port".
    fn describe(&self) -> String {
        match self.kind {
            Kind::Server => format!("redis-server {}", self.addr()),
            Kind::Sentinel => format!("sentinel {}", self.addr()),
        }
    }

    /// Starts a new process of `kind`, whose config file is `config(port, dir)`, on a free port in a new
    /// temporary directory, retrying on another port when the chosen one turns out to be taken.
    async fn start(
        kind: Kind,
        password: Option<String>,
        config: impl Fn(u16, &Path) -> String,
    ) -> RedisServer {
        binaries();
        let temp = tempfile::Builder::new()
            .prefix(match kind {
                Kind::Server => "mooring-redis-",
                Kind::Sentinel => "mooring-sentinel-",
            })
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory for redis-server: {e}"));
        let dir = temp.path().to_path_buf();
        let mut server = RedisServer {
            kind,
            port: reserve_port(),
            password,
            dir,
            temp: Some(temp),
            child: None,
        };
        for attempt in 1..=START_ATTEMPTS {
            let conf = server.dir.join(kind.conf_file());
            fs::write(&conf, config(server.port, &server.dir))
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", conf.display()));
            match server.spawn_and_wait().await {
                Ok(()) => return server,
                Err(StartFailure::PortTaken) if attempt < START_ATTEMPTS => {
                    let taken = server.port;
                    server.port = reserve_port();
                    release_port(taken);
                    server.rotate_logs();
                }
                Err(failure) => {
                    panic!(
                        "starting {}: {failure}\n{}",
                        server.describe(),
                        server.log_tail(LOG_TAIL_LINES)
                    )
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Marks where the logs of the next start begin, so "Address already in use" from an earlier start is
    /// not mistaken for a new failure.
    fn rotate_logs(&self) {
        for file in [LOG_FILE, STDOUT_FILE] {
            let path = self.dir.join(file);
            if path.exists() {
                let old = self.dir.join(format!("{file}.previous"));
                let mut previous = fs::read_to_string(&old).unwrap_or_default();
                previous.push_str(&fs::read_to_string(&path).unwrap_or_default());
                let _ = fs::write(&old, previous);
                let _ = fs::write(&path, "");
            }
        }
    }

    /// Spawns the process from its config file and waits until it answers PING.
    async fn spawn_and_wait(&mut self) -> Result<(), StartFailure> {
        let stdout = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(STDOUT_FILE))
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.dir.join(STDOUT_FILE).display()));
        let stderr = stdout
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone a file handle: {e}"));
        let binaries = binaries();
        let mut command = match &binaries.setpriv {
            // The parent-death signal kills redis-server even if this test process is killed outright.
            Some(setpriv) => {
                let mut command = Command::new(setpriv);
                command.args(["--pdeathsig", "KILL", "--"]).arg(&binaries.server);
                command
            }
            None => Command::new(&binaries.server),
        };
        command.arg(self.dir.join(self.kind.conf_file()));
        if self.kind == Kind::Sentinel {
            command.arg("--sentinel");
        }
        command
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true);
        let child = command.spawn().map_err(|e| StartFailure::Spawn(e.to_string()))?;
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Ok(None)) | None => None,
                Some(Err(e)) => Some(e.to_string()),
            };
            if let Some(status) = exited {
                self.child = None;
                let log = fs::read_to_string(self.log_path()).unwrap_or_default()
                    + &fs::read_to_string(self.dir.join(STDOUT_FILE)).unwrap_or_default();
                return Err(if log.contains("Address already in use") {
                    StartFailure::PortTaken
                } else {
                    StartFailure::Exited(status)
                });
            }
            match admin_query::<String>(self.connection_info(), redis::cmd("PING")).await {
                Ok(pong) if pong == "PONG" => return Ok(()),
                _ if Instant::now() >= deadline => {
                    if let Some(mut child) = self.child.take() {
                        let _ = child.kill().await;
                    }
                    return Err(StartFailure::Timeout);
                }
                // Refused (not listening yet), LOADING (replaying the AOF), ...: try again.
                _ => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            // Wait (briefly, we cannot await here) so the directory is not removed under a live process and the
            // port is free when we hand it out again.
            let deadline = Instant::now() + Duration::from_secs(2);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        release_port(self.port);
        if std::thread::panicking()
            && let Some(temp) = self.temp.take()
        {
            eprintln!(
                "kept the directory of {} for diagnostics: {}",
                self.describe(),
                temp.keep().display()
            );
        }
    }
}

/// Why a process did not come up.
#[derive(Debug)]
enum StartFailure {
    /// The port was taken between choosing it and binding it.
    PortTaken,
    /// The process could not be spawned.
    Spawn(String),
    /// The process exited (bad config, ...), with this status.
    Exited(String),
    /// It did not answer PING within [`START_TIMEOUT`].
    Timeout,
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartFailure::PortTaken => {
                write!(f, "its port is taken by another process (Address already in use)")
            }
            StartFailure::Spawn(e) => write!(f, "cannot spawn redis-server ({e}); {INSTALL_HINT}"),
            StartFailure::Exited(status) => write!(f, "it exited during startup ({status})"),
            StartFailure::Timeout => write!(f, "it did not answer PING within {START_TIMEOUT:?} (killed it)"),
        }
    }
}

/// Starts one standalone server.
pub async fn standalone(opts: Options) -> RedisServer {
    start_server(&opts, &[]).await
}

/// Starts a data node with `opts` plus `lines` (directive, value), written before `opts.extra`.
async fn start_server(opts: &Options, lines: &[(&str, String)]) -> RedisServer {
    let opts = opts.clone();
    let lines: Vec<(String, String)> = lines.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    RedisServer::start(Kind::Server, opts.password.clone(), move |port, dir| {
        let mut conf = String::new();
        let mut line = |directive: &str, value: &str| writeln!(conf, "{directive} {value}").expect("String");
        line("port", &port.to_string());
        line("bind", "127.0.0.1");
        line("protected-mode", "no");
        line("daemonize", "no");
        line("dir", &quote(&dir.to_string_lossy()));
        line("logfile", &quote(&dir.join(LOG_FILE).to_string_lossy()));
        line("loglevel", "notice");
        // RDB snapshots keep Redis' default save points; the AOF makes every acknowledged write (up to the
        // last second) survive a kill -9.
        line("appendonly", "yes");
        line("appendfsync", "everysec");
        // Redis 7 waits 5 s by default before a diskless full sync, to batch replicas: that would make every
        // topology start (and every resync after a failover) 5 s slower.
        line("repl-diskless-sync-delay", "0");
        if let Some(password) = &opts.password {
            line("requirepass", &quote(password));
            line("masterauth", &quote(password));
        }
        if let Some(to_write) = opts.min_replicas_to_write {
            line("min-replicas-to-write", &to_write.to_string());
            line("min-replicas-max-lag", &opts.min_replicas_max_lag.to_string());
        }
        for (directive, value) in lines.iter().chain(&opts.extra) {
            line(directive, value);
        }
        conf
    })
    .await
}

/// One master, two replicas and three Sentinels (quorum 2), from [`sentinel_topology`]. Dropping it kills all
/// six processes.
#[derive(Debug)]
pub struct SentinelTopology {
    /// The data nodes: the initial master first, then the two replicas. Roles change with failovers.
    servers: Vec<RedisServer>,
    /// The three Sentinels.
    sentinels: Vec<RedisServer>,
    /// The name the Sentinels monitor the master under.
    master_name: String,
    /// The servers' password (also the Sentinels' `auth-pass`).
    password: Option<String>,
}

/// Starts a master, two replicas (`replicaof` the master) and three Sentinels monitoring it with quorum 2, and
/// waits until both replicas' links are up and every Sentinel sees the master, both replicas and the two other
/// Sentinels.
pub async fn sentinel_topology(opts: SentinelOptions) -> SentinelTopology {
    let master = start_server(&opts.server, &[]).await;
    let replica_of = [("replicaof", format!("127.0.0.1 {}", master.port()))];
    let mut servers = vec![master];
    for _ in 0..2 {
        servers.push(start_server(&opts.server, &replica_of).await);
    }
    let password = opts.server.password.clone();
    for replica in &servers[1..] {
        wait_replica_link(replica, &servers[0].addr(), SETTLE_TIMEOUT, &servers).await;
    }

    let mut sentinels = Vec::with_capacity(3);
    for _ in 0..3 {
        let (name, master_port) = (opts.master_name.clone(), servers[0].port());
        let (down_after, failover_timeout) = (opts.down_after.as_millis(), opts.failover_timeout.as_millis());
        let password = password.clone();
        let sentinel = RedisServer::start(Kind::Sentinel, None, move |port, dir| {
            let mut conf = String::new();
            let mut line = |text: String| writeln!(conf, "{text}").expect("String");
            line(format!("port {port}"));
            line("bind 127.0.0.1".to_owned());
            line("protected-mode no".to_owned());
            line("daemonize no".to_owned());
            line(format!("dir {}", quote(&dir.to_string_lossy())));
            line(format!(
                "logfile {}",
                quote(&dir.join(LOG_FILE).to_string_lossy())
            ));
            line("sentinel resolve-hostnames no".to_owned());
            line(format!("sentinel monitor {name} 127.0.0.1 {master_port} 2"));
            line(format!("sentinel down-after-milliseconds {name} {down_after}"));
            line(format!("sentinel failover-timeout {name} {failover_timeout}"));
            line(format!("sentinel parallel-syncs {name} 1"));
            if let Some(password) = &password {
                line(format!("sentinel auth-pass {name} {}", quote(password)));
            }
            conf
        })
        .await;
        sentinels.push(sentinel);
    }

    let topology = SentinelTopology {
        servers,
        sentinels,
        master_name: opts.master_name,
        password,
    };
    let master = topology.servers[0].addr();
    for sentinel in &topology.sentinels {
        topology.wait_sentinel_settled(sentinel, &master).await;
    }
    topology
}

impl SentinelTopology {
    /// The name the Sentinels monitor the master under.
    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// The data nodes: the initial master first, then the two replicas (roles change with failovers; see
    /// [`SentinelTopology::roles`]).
    pub fn servers(&self) -> &[RedisServer] {
        &self.servers
    }

    /// The three Sentinels.
    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }

    /// The three Sentinels, to kill or restart one.
    pub fn sentinels_mut(&mut self) -> &mut [RedisServer] {
        &mut self.sentinels
    }

    /// The Sentinels' addresses (`127.0.0.1:<port>`), what a Sentinel client is configured with.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisServer::addr).collect()
    }

    /// The servers' password, if any (Sentinels take none).
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The master's address as the first Sentinel that answers reports it (`SENTINEL
    /// get-master-addr-by-name`). During a failover Sentinels may disagree; see
    /// [`SentinelTopology::wait_for_new_master`].
    pub async fn current_master(&self) -> String {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
                if let Ok(Some(addr)) = self.reported_master(sentinel).await {
                    return addr;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "no Sentinel reported a master within {SETTLE_TIMEOUT:?}\n{}",
                    self.sentinel_logs()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The data node listening on `addr`. Panics if there is none.
    pub fn node_by_addr(&mut self, addr: &str) -> &mut RedisServer {
        let known: Vec<String> = self.servers.iter().map(RedisServer::addr).collect();
        self.servers
            .iter_mut()
            .find(|s| s.addr() == addr)
            .unwrap_or_else(|| panic!("no data node at {addr}; the topology has {known:?}"))
    }

    /// Kills the current master (as reported by the Sentinels) with SIGKILL and returns its address.
    pub async fn kill_master(&mut self) -> String {
        let master = self.current_master().await;
        self.node_by_addr(&master).kill9().await;
        master
    }

    /// Asks one Sentinel for a manual failover (`SENTINEL FAILOVER <name>`, what a rolling update does) and
    /// returns the master's address at the time of the request. Retries while Sentinel refuses (a failover
    /// already in progress, no replica it considers good yet).
    pub async fn failover(&self) -> String {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut last_error = String::new();
        loop {
            let master = self.current_master().await;
            for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
                let mut cmd = redis::cmd("SENTINEL");
                cmd.arg("FAILOVER").arg(&self.master_name);
                match admin_query::<String>(sentinel.connection_info(), cmd).await {
                    Ok(_) => return master,
                    Err(e) => last_error = format!("{}: {e}", sentinel.addr()),
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "SENTINEL FAILOVER {} refused for {SETTLE_TIMEOUT:?}, last: {last_error}\n{}",
                    self.master_name,
                    self.sentinel_logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every running Sentinel (at least a quorum of them answering) reports the same master, other
    /// than `old`, and that node says it is a master (`INFO replication`). Returns its address.
    pub async fn wait_for_new_master(&self, old: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let mut reports = Vec::new();
            for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
                match self.reported_master(sentinel).await {
                    Ok(Some(addr)) => reports.push(addr),
                    Ok(None) => reports.push("(none)".to_owned()),
                    Err(_) => {}
                }
            }
            if reports.len() >= 2
                && reports.iter().all(|r| r == &reports[0])
                && reports[0] != old
                && reports[0] != "(none)"
                && self.role_of(&reports[0]).await.as_deref() == Some("master")
            {
                return reports.swap_remove(0);
            }
            let last_seen = reports;
            if Instant::now() >= deadline {
                panic!(
                    "no new master (other than {old}) within {timeout:?}; Sentinels last reported {last_seen:?}, \
                     roles {:?}\n{}\n{}",
                    self.roles().await,
                    self.sentinel_logs(),
                    self.server_logs()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Restarts the (killed or stopped) data node at `addr` on its directory and config. A former master comes
    /// back as a master until Sentinel converts it (which Sentinel does ~8 s after seeing it): follow with
    /// [`SentinelTopology::wait_replica_of`].
    pub async fn restart_node(&mut self, addr: &str) {
        self.node_by_addr(addr).restart().await;
    }

    /// Waits until the data node at `addr` is a replica of `master` with its replication link up.
    pub async fn wait_replica_of(&self, addr: &str, master: &str, timeout: Duration) {
        let node = self
            .servers
            .iter()
            .find(|s| s.addr() == addr)
            .unwrap_or_else(|| panic!("no data node at {addr} in this topology"));
        let mut logs: Vec<&RedisServer> = self.sentinels.iter().collect();
        logs.extend(&self.servers);
        wait_replica_link(node, master, timeout, logs).await;
    }

    /// Every data node's address and role as it reports it (`master`, `slave`), or `down` when it is not
    /// running or does not answer.
    pub async fn roles(&self) -> Vec<(String, String)> {
        roles(&self.servers).await
    }

    /// What `sentinel` reports as the master's address, `None` if it knows no master.
    async fn reported_master(&self, sentinel: &RedisServer) -> redis::RedisResult<Option<String>> {
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("get-master-addr-by-name").arg(&self.master_name);
        let reply: Option<(String, String)> = admin_query(sentinel.connection_info(), cmd).await?;
        Ok(reply.map(|(host, port)| format!("{host}:{port}")))
    }

    /// The role the data node at `addr` reports, if it answers.
    async fn role_of(&self, addr: &str) -> Option<String> {
        role(connection_info(addr, self.password.as_deref())).await
    }

    /// Waits until `sentinel` monitors `master` as up, with two healthy replicas and two other Sentinels.
    async fn wait_sentinel_settled(&self, sentinel: &RedisServer, master: &str) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let last = match self.sentinel_view(sentinel).await {
                Ok((addr, flags, replicas, others)) => {
                    let healthy = replicas.iter().filter(|flags| flags.as_str() == "slave").count();
                    if addr == master && flags == "master" && healthy == 2 && others == 2 {
                        return;
                    }
                    format!("master {addr} ({flags}), replica flags {replicas:?}, {others} other Sentinels")
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                panic!(
                    "{} did not settle within {SETTLE_TIMEOUT:?} (want master {master} up, 2 replicas, 2 other \
                     Sentinels; last saw {last})\n{}\n{}",
                    sentinel.describe(),
                    self.sentinel_logs(),
                    self.server_logs()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// What `sentinel` knows: master address, master flags, each replica's flags, number of other Sentinels.
    async fn sentinel_view(
        &self,
        sentinel: &RedisServer,
    ) -> redis::RedisResult<(String, String, Vec<String>, usize)> {
        let info = sentinel.connection_info();
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("MASTER").arg(&self.master_name);
        let master: HashMap<String, String> = admin_query(info.clone(), cmd).await?;
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("REPLICAS").arg(&self.master_name);
        let replicas: Vec<HashMap<String, String>> = admin_query(info.clone(), cmd).await?;
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("SENTINELS").arg(&self.master_name);
        let others: Vec<HashMap<String, String>> = admin_query(info, cmd).await?;
        let field = |map: &HashMap<String, String>, key: &str| map.get(key).cloned().unwrap_or_default();
        Ok((
            format!("{}:{}", field(&master, "ip"), field(&master, "port")),
            field(&master, "flags"),
            replicas.iter().map(|r| field(r, "flags")).collect(),
            others.len(),
        ))
    }

    /// The log tails of every Sentinel.
    fn sentinel_logs(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| s.log_tail(LOG_TAIL_LINES))
            .collect()
    }

    /// The log tails of every data node.
    fn server_logs(&self) -> String {
        self.servers.iter().map(|s| s.log_tail(LOG_TAIL_LINES)).collect()
    }
}

/// A Redis Cluster from [`cluster`]. Dropping it kills every node.
#[derive(Debug)]
pub struct Cluster {
    /// Every node, in the order given to `redis-cli --cluster create` (masters first: the first `masters`
    /// nodes start as masters, the rest as their replicas).
    nodes: Vec<RedisServer>,
    /// The nodes' password, if any.
    password: Option<String>,
}

/// Starts a Redis Cluster of `masters` masters (at least 3, as `redis-cli --cluster create` requires) with
/// `replicas_per_master` replicas each, and waits until every node reports `cluster_state:ok` with all 16384
/// slots assigned and every replica's link is up.
pub async fn cluster(masters: usize, replicas_per_master: usize) -> Cluster {
    cluster_with_options(Options::default(), masters, replicas_per_master).await
}

/// [`cluster`] with [`Options`] (a password, extra config) for every node.
pub async fn cluster_with_options(opts: Options, masters: usize, replicas_per_master: usize) -> Cluster {
    assert!(
        masters >= 3,
        "a Redis Cluster needs at least 3 masters, asked for {masters}"
    );
    let cluster_lines = [
        ("cluster-enabled", "yes".to_owned()),
        ("cluster-config-file", "nodes.conf".to_owned()),
        ("cluster-node-timeout", "2000".to_owned()),
    ];
    let mut nodes = Vec::new();
    for _ in 0..masters * (1 + replicas_per_master) {
        nodes.push(start_server(&opts, &cluster_lines).await);
    }
    let cluster = Cluster {
        nodes,
        password: opts.password.clone(),
    };

    let mut command = Command::new(&binaries().cli);
    command.arg("--cluster").arg("create").args(cluster.seed_addrs());
    command.args([
        "--cluster-replicas",
        &replicas_per_master.to_string(),
        "--cluster-yes",
    ]);
    if let Some(password) = &opts.password {
        command.args(["-a", password, "--no-auth-warning"]);
    }
    command.stdin(Stdio::null()).kill_on_drop(true);
    let output = match tokio::time::timeout(CLUSTER_CREATE_TIMEOUT, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("cannot run redis-cli ({e}); {INSTALL_HINT}"),
        Err(_) => panic!(
            "redis-cli --cluster create did not finish within {CLUSTER_CREATE_TIMEOUT:?}\n{}",
            cluster.logs()
        ),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() || !text.contains("[OK] All 16384 slots covered") {
        panic!(
            "redis-cli --cluster create failed ({}):\n{text}\n{}",
            output.status,
            cluster.logs()
        );
    }

    cluster.wait_state_ok(SETTLE_TIMEOUT).await;
    for replica in &cluster.nodes[masters..] {
        wait_replica_link(replica, "", SETTLE_TIMEOUT, &cluster.nodes).await;
    }
    cluster
}

impl Cluster {
    /// Every node's address (`127.0.0.1:<port>`), what a cluster client is seeded with.
    pub fn seed_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::addr).collect()
    }

    /// Every node, in creation order (the first `masters` started as masters; roles change with failovers).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Every node, to kill or restart one.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// The node listening on `addr`. Panics if there is none.
    pub fn node_by_addr(&mut self, addr: &str) -> &mut RedisServer {
        let known = self.seed_addrs();
        self.nodes
            .iter_mut()
            .find(|s| s.addr() == addr)
            .unwrap_or_else(|| panic!("no cluster node at {addr}; the cluster has {known:?}"))
    }

    /// The nodes' password, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Every node's address and role as it reports it (`master`, `slave`), or `down`.
    pub async fn roles(&self) -> Vec<(String, String)> {
        roles(&self.nodes).await
    }

    /// Waits until every running node reports `cluster_state:ok` and all 16384 slots assigned (after a
    /// failover: once a replica has been promoted for the killed master's slots).
    pub async fn wait_state_ok(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            loop {
                let mut cmd = redis::cmd("CLUSTER");
                cmd.arg("INFO");
                let last = match admin_query::<String>(node.connection_info(), cmd).await {
                    Ok(info) => {
                        if info_field(&info, "cluster_state") == Some("ok")
                            && info_field(&info, "cluster_slots_assigned") == Some("16384")
                        {
                            break;
                        }
                        info
                    }
                    Err(e) => e.to_string(),
                };
                if Instant::now() >= deadline {
                    panic!(
                        "{} did not reach cluster_state:ok with 16384 slots within {timeout:?}; last CLUSTER \
                         INFO:\n{last}\n{}",
                        node.describe(),
                        self.logs()
                    );
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
    }

    /// The log tails of every node.
    fn logs(&self) -> String {
        self.nodes.iter().map(|n| n.log_tail(LOG_TAIL_LINES)).collect()
    }
}

/// Every node's address and reported role, `down` for one not running or not answering.
async fn roles(servers: &[RedisServer]) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(servers.len());
    for server in servers {
        let role = if server.is_running() {
            role(server.connection_info()).await
        } else {
            None
        };
        out.push((server.addr(), role.unwrap_or_else(|| "down".to_owned())));
    }
    out
}

/// The `role` field of `INFO replication`, if the node answers.
async fn role(info: ConnectionInfo) -> Option<String> {
    let mut cmd = redis::cmd("INFO");
    cmd.arg("replication");
    let text: String = admin_query(info, cmd).await.ok()?;
    info_field(&text, "role").map(str::to_owned)
}

/// Waits until `replica` is a replica of `master` (any master if empty) with `master_link_status:up`; on
/// timeout panics with the logs of `logs`.
async fn wait_replica_link<'a>(
    replica: &RedisServer,
    master: &str,
    timeout: Duration,
    logs: impl IntoIterator<Item = &'a RedisServer>,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let mut cmd = redis::cmd("INFO");
        cmd.arg("replication");
        let last = match admin_query::<String>(replica.connection_info(), cmd).await {
            Ok(info) => {
                let of = format!(
                    "{}:{}",
                    info_field(&info, "master_host").unwrap_or_default(),
                    info_field(&info, "master_port").unwrap_or_default()
                );
                if info_field(&info, "role") == Some("slave")
                    && info_field(&info, "master_link_status") == Some("up")
                    && (master.is_empty() || of == master)
                {
                    return;
                }
                info
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            let logs: String = logs.into_iter().map(|s| s.log_tail(LOG_TAIL_LINES)).collect();
            let want = if master.is_empty() {
                "its master".to_owned()
            } else {
                master.to_owned()
            };
            panic!(
                "{} did not become a replica of {want} with its link up within {timeout:?}; last INFO \
                 replication:\n{last}\n{logs}",
                replica.describe()
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The value of `key` in an `INFO`-style `key:value` text.
fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.trim_end().strip_prefix(key)?.strip_prefix(':'))
}

/// Connection details for `addr` (`host:port`), with `password`.
fn connection_info(addr: &str, password: Option<&str>) -> ConnectionInfo {
    let (host, port) = addr
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("not a host:port address: {addr}"));
    let port = port
        .parse()
        .unwrap_or_else(|_| panic!("not a host:port address: {addr}"));
    let mut redis = RedisConnectionInfo::default();
    if let Some(password) = password {
        redis = redis.set_password(password);
    }
    ConnectionAddr::Tcp(host.to_owned(), port)
        .into_connection_info()
        .expect("a TCP address is a valid connection info")
        .set_redis_settings(redis)
}

/// A connection with bounded connect and response timeouts, for admin commands.
async fn admin_connection(info: ConnectionInfo) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(ADMIN_TIMEOUT))
        .set_response_timeout(Some(ADMIN_TIMEOUT));
    Client::open(info)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Runs one admin command on a fresh connection.
async fn admin_query<T: FromRedisValue>(info: ConnectionInfo, cmd: redis::Cmd) -> redis::RedisResult<T> {
    let mut connection = admin_connection(info).await?;
    cmd.query_async(&mut connection).await
}

/// The last `lines` lines of the file at `path` (empty if it cannot be read).
fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let mut out = all[all.len().saturating_sub(lines)..].join("\n");
    out.push('\n');
    out
}

/// `value` as a double-quoted Redis config string.
fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Percent-encodes everything but unreserved URL characters.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The binaries the harness runs.
#[derive(Debug)]
struct Binaries {
    /// `redis-server`.
    server: PathBuf,
    /// `redis-cli`.
    cli: PathBuf,
    /// util-linux `setpriv`, if installed (for the parent-death signal).
    setpriv: Option<PathBuf>,
}

/// Finds the binaries on `PATH` once; panics with [`INSTALL_HINT`] if Redis is missing.
fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Option<Binaries>> = OnceLock::new();
    BINARIES
        .get_or_init(|| {
            Some(Binaries {
                server: find_on_path("redis-server")?,
                cli: find_on_path("redis-cli")?,
                setpriv: find_on_path("setpriv"),
            })
        })
        .as_ref()
        .unwrap_or_else(|| panic!("redis-server or redis-cli is not on PATH: {INSTALL_HINT}"))
}

/// The first executable file called `name` in a `PATH` directory.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            File::open(candidate).is_ok() && candidate.metadata().map(|m| m.is_file()).unwrap_or(false)
        })
}

/// Ports handed out by this process and not yet released: parallel tests never get the same port.
static RESERVED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Picks a port below the ephemeral range whose cluster bus port (`+10000`) is below it too, that nobody in
/// this process holds and that (with its bus port) binds on 127.0.0.1 right now, and reserves it.
fn reserve_port() -> u16 {
    let highest = ephemeral_low().saturating_sub(CLUSTER_BUS_OFFSET + 1);
    assert!(
        highest > LOWEST_PORT + 1000,
        "the ephemeral port range starts too low to leave ports for test servers below it"
    );
    let span = u32::from(highest - LOWEST_PORT);
    for _ in 0..1000 {
        let random = getrandom::u32().expect("the OS random generator works");
        let port = LOWEST_PORT + u16::try_from(random % span).expect("span fits in u16");
        let mut reserved = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
        let reserved = reserved.get_or_insert_with(HashSet::new);
        if reserved.contains(&port) {
            continue;
        }
        let bindable = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
        if bindable(port) && bindable(port + CLUSTER_BUS_OFFSET) {
            reserved.insert(port);
            return port;
        }
    }
    panic!("found no free port pair (port, port + 10000) between {LOWEST_PORT} and {highest} in 1000 tries");
}

/// Returns `port` to the pool.
fn release_port(port: u16) {
    if let Some(reserved) = RESERVED.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        reserved.remove(&port);
    }
}

/// The first port of the kernel's ephemeral range (32768 if it cannot be read).
fn ephemeral_low() -> u16 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_field_reads_key_value_lines() {
        let info = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_link_status:up\r\n";
        assert_eq!(info_field(info, "role"), Some("slave"));
        assert_eq!(info_field(info, "master_link_status"), Some("up"));
        assert_eq!(info_field(info, "master"), None);
    }

    #[test]
    fn config_values_are_quoted_and_urls_encoded() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(percent_encode("p@ss:w/rd"), "p%40ss%3Aw%2Frd");
    }

    #[test]
    fn reserved_ports_are_distinct_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..20).map(|_| reserve_port()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        assert!(ports.iter().all(|p| p + CLUSTER_BUS_OFFSET < ephemeral_low()));
        ports.into_iter().for_each(release_port);
    }
}
