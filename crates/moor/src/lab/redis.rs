//! The Redis data nodes and Sentinels: their config files, starting them, and asking them questions.
//!
//! A config file is written once, when the node is first created. After that it belongs to the node: Sentinel
//! rewrites a data node's `replicaof` (with `CONFIG REWRITE`) when it reconfigures it, and rewrites its own
//! file with what it learnt (the current master, the epochs, the other Sentinels). A restart on the same
//! directory therefore comes back as the node it was, as a pod on its PVC does.
//!
//! Every node binds its own loopback alias and also uses it as the source of its outgoing connections
//! (`bind-source-addr`): otherwise the kernel would pick 127.0.0.1, the master would see every replica and
//! Sentinel as 127.0.0.1, and a partition could not tell them apart. `protected-mode` is off because Redis
//! only counts 127.0.0.1 itself as "loopback".

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue};

use super::config::{Driver, MASTER_NAME};
use super::process;

/// The process name of both data nodes and Sentinels.
pub(crate) const COMM: &str = "redis-server";
/// Timeout of one admin connection and of one admin command.
const ADMIN_TIMEOUT: Duration = Duration::from_millis(1500);
/// `client-output-buffer-limit` of normal clients: hard limit, soft limit, soft seconds (the chart's too).
pub(crate) const CLIENT_OUTPUT_BUFFER_LIMIT: &str = "normal 64mb 16mb 60";
/// `sentinel failover-timeout`.
const FAILOVER_TIMEOUT_MS: u64 = 10_000;

/// The files of one Redis process (data node or Sentinel) in the lab directory.
#[derive(Clone, Debug)]
pub(crate) struct NodeFiles {
    /// Its directory: config, pid file, log, AOF and RDB.
    pub(crate) dir: PathBuf,
    /// Whether it is a Sentinel.
    pub(crate) sentinel: bool,
}

impl NodeFiles {
    /// The config file.
    pub(crate) fn conf(&self) -> PathBuf {
        self.dir.join(if self.sentinel {
            "sentinel.conf"
        } else {
            "redis.conf"
        })
    }

    /// The pid file (Redis writes it after daemonizing and removes it on a clean exit).
    pub(crate) fn pidfile(&self) -> PathBuf {
        self.dir.join(if self.sentinel {
            "sentinel.pid"
        } else {
            "redis.pid"
        })
    }

    /// The log file.
    pub(crate) fn log(&self) -> PathBuf {
        self.dir.join(if self.sentinel {
            "sentinel.log"
        } else {
            "redis.log"
        })
    }
}

/// `value` as a double-quoted Redis config string.
fn quote(path: &Path) -> String {
    let text = path.to_string_lossy();
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The config of a data node at `addr`; `replica_of` for the initial replicas.
pub(crate) fn data_node_conf(
    files: &NodeFiles,
    addr: SocketAddrV4,
    driver: Driver,
    replica_of: Option<SocketAddrV4>,
) -> String {
    let mut conf = String::from("# Written by `moor lab up` once; Sentinel may rewrite it since.\n");
    let mut line = |text: String| writeln!(conf, "{text}").expect("String");
    line(format!("port {}", addr.port()));
    line(format!("bind {}", addr.ip()));
    line(format!("bind-source-addr {}", addr.ip()));
    line(format!("replica-announce-ip {}", addr.ip()));
    line("protected-mode no".into());
    line("daemonize yes".into());
    line(format!("pidfile {}", quote(&files.pidfile())));
    line(format!("logfile {}", quote(&files.log())));
    line(format!("dir {}", quote(&files.dir)));
    line("loglevel notice".into());
    // Every acknowledged write survives a kill -9 up to the last second; RDB snapshots on top.
    line("appendonly yes".into());
    line("appendfsync everysec".into());
    line("save 60 1000".into());
    // A full Redis must fail visibly rather than evict sessions (users would be logged out).
    line("maxmemory-policy noeviction".into());
    // Redis 7 waits 5 s before a diskless full sync to batch replicas: every resync would be 5 s slower.
    line("repl-diskless-sync-delay 0".into());
    // One client's pending replies are bounded (normal clients have no limit by default): a client that
    // reads nothing while asking for large replies is disconnected past 64 MiB, or past 16 MiB for 60 s,
    // instead of growing Redis's memory. A session reply is a few KiB at most, so no app connection nears it.
    line(format!("client-output-buffer-limit {CLIENT_OUTPUT_BUFFER_LIMIT}"));
    // RESTORE (`moor restore`) and replication payloads are checked in full before they are loaded, so a
    // corrupt or crafted DUMP payload is refused instead of crashing the server.
    line("sanitize-dump-payload yes".into());
    if driver == Driver::RedisSentinel {
        // A master cut off from its replicas refuses writes (NOREPLICAS) after 2 s instead of acknowledging
        // writes the promoted replica never sees.
        line("min-replicas-to-write 1".into());
        line("min-replicas-max-lag 2".into());
    }
    if let Some(master) = replica_of {
        line(format!("replicaof {} {}", master.ip(), master.port()));
    }
    conf
}

/// The config of a Sentinel at `addr` monitoring `master` with quorum 2.
pub(crate) fn sentinel_conf(
    files: &NodeFiles,
    addr: SocketAddrV4,
    master: SocketAddrV4,
    down_after_ms: u64,
) -> String {
    let mut conf = String::from("# Written by `moor lab up` once; Sentinel rewrites it with its state.\n");
    let mut line = |text: String| writeln!(conf, "{text}").expect("String");
    line(format!("port {}", addr.port()));
    line(format!("bind {}", addr.ip()));
    line(format!("bind-source-addr {}", addr.ip()));
    line(format!("sentinel announce-ip {}", addr.ip()));
    line("protected-mode no".into());
    line("daemonize yes".into());
    line(format!("pidfile {}", quote(&files.pidfile())));
    line(format!("logfile {}", quote(&files.log())));
    line(format!("dir {}", quote(&files.dir)));
    line("sentinel resolve-hostnames no".into());
    line(format!(
        "sentinel monitor {MASTER_NAME} {} {} 2",
        master.ip(),
        master.port()
    ));
    line(format!(
        "sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}"
    ));
    line(format!(
        "sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}"
    ));
    line(format!("sentinel parallel-syncs {MASTER_NAME} 1"));
    conf
}

/// Starts the process whose config is in `files` (written beforehand) and waits until it answers PING (a
/// data node has then loaded its AOF). `addr` is where it listens.
pub(crate) async fn start(
    redis_server: &Path,
    files: &NodeFiles,
    addr: &str,
    what: &str,
) -> anyhow::Result<u32> {
    if std::net::TcpListener::bind(addr).is_err() {
        anyhow::bail!("{what}: {addr} is taken by another process; stop it or pick another --base-port");
    }
    let mut command = tokio::process::Command::new(redis_server);
    command.arg(files.conf());
    if files.sentinel {
        command.arg("--sentinel");
    }
    // Startup errors before the log file is open go to stderr: keep them next to the log.
    let early = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(files.dir.join("stderr.log"))
        .context("opening stderr.log")?;
    let status = command
        .current_dir(&files.dir)
        .stdin(std::process::Stdio::null())
        .stdout(early.try_clone()?)
        .stderr(early)
        .status()
        .await
        .with_context(|| format!("running {}", redis_server.display()))?;
    if !status.success() {
        anyhow::bail!(
            "{what}: redis-server exited with {status}\n{}\n{}",
            process::log_tail(&files.dir.join("stderr.log"), 10),
            process::log_tail(&files.log(), 10)
        );
    }
    let pid = process::wait_pidfile(
        &files.pidfile(),
        COMM,
        Duration::from_secs(10),
        what,
        &files.log(),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match query::<String>(addr, &redis::cmd("PING")).await {
            Ok(pong) if pong == "PONG" => return Ok(pid),
            result => {
                if !process::alive(pid, COMM) || Instant::now() >= deadline {
                    anyhow::bail!(
                        "{what} does not answer PING ({}): {}\n{}",
                        if process::alive(pid, COMM) {
                            "still running"
                        } else {
                            "it exited"
                        },
                        result.err().map_or("unexpected reply".into(), |e| e.to_string()),
                        process::log_tail(&files.log(), 20)
                    );
                }
            }
        }
        tokio::time::sleep(process::POLL * 2).await;
    }
}

/// A connection to `addr` with bounded connect and response timeouts.
async fn connect(addr: &str) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(ADMIN_TIMEOUT))
        .set_response_timeout(Some(ADMIN_TIMEOUT));
    redis::Client::open(format!("redis://{addr}/"))?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Runs one command on a fresh connection to `addr`.
pub(crate) async fn query<T: FromRedisValue>(addr: &str, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    let mut connection = connect(addr).await?;
    cmd.query_async(&mut connection).await
}

/// The value of `key` in an `INFO`-style `key:value` text.
pub(crate) fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.trim_end().strip_prefix(key)?.strip_prefix(':'))
}

/// What a data node says about its replication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Replication {
    /// `master` or `replica`.
    pub(crate) role: String,
    /// A replica's master (`host:port`).
    pub(crate) master: Option<String>,
    /// A replica's link to its master is up.
    pub(crate) link_up: bool,
    /// A master's connected replicas.
    pub(crate) replicas: usize,
    /// A master's replicas within `min-replicas-max-lag` (`None` when `min-replicas-to-write` is off): below
    /// `min-replicas-to-write`, the master refuses writes.
    pub(crate) good_replicas: Option<usize>,
}

/// `INFO replication` of the node at `addr`.
pub(crate) async fn replication(addr: &str) -> anyhow::Result<Replication> {
    let mut cmd = redis::cmd("INFO");
    cmd.arg("replication");
    let info: String = query(addr, &cmd)
        .await
        .with_context(|| format!("INFO replication on {addr}"))?;
    let role = info_field(&info, "role").unwrap_or("unknown");
    Ok(if role == "slave" {
        Replication {
            role: "replica".into(),
            master: Some(format!(
                "{}:{}",
                info_field(&info, "master_host").unwrap_or_default(),
                info_field(&info, "master_port").unwrap_or_default()
            )),
            link_up: info_field(&info, "master_link_status") == Some("up"),
            replicas: 0,
            good_replicas: None,
        }
    } else {
        Replication {
            role: role.into(),
            master: None,
            link_up: false,
            replicas: info_field(&info, "connected_slaves")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            good_replicas: info_field(&info, "min_slaves_good_slaves").and_then(|n| n.parse().ok()),
        }
    })
}

/// The master `sentinel` reports (`SENTINEL get-master-addr-by-name`), `None` if it knows none.
pub(crate) async fn reported_master(sentinel: &str) -> anyhow::Result<Option<String>> {
    let mut cmd = redis::cmd("SENTINEL");
    cmd.arg("get-master-addr-by-name").arg(MASTER_NAME);
    let reply: Option<(String, String)> = query(sentinel, &cmd)
        .await
        .with_context(|| format!("SENTINEL get-master-addr-by-name on {sentinel}"))?;
    Ok(reply.map(|(host, port)| format!("{host}:{port}")))
}

/// What one Sentinel knows about the master it monitors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SentinelView {
    /// The master's address.
    pub(crate) master: String,
    /// The master's flags (`master`, or `master,s_down,...`).
    pub(crate) flags: String,
    /// How many replicas it sees healthy (flags exactly `slave`).
    pub(crate) healthy_replicas: usize,
    /// How many other Sentinels it knows.
    pub(crate) other_sentinels: usize,
}

/// `SENTINEL MASTER / REPLICAS / SENTINELS` on `sentinel`.
pub(crate) async fn sentinel_view(sentinel: &str) -> anyhow::Result<SentinelView> {
    let run = |sub: &'static str| {
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg(sub).arg(MASTER_NAME);
        cmd
    };
    let mut connection = connect(sentinel)
        .await
        .with_context(|| format!("connecting to Sentinel {sentinel}"))?;
    let master: HashMap<String, String> = run("MASTER").query_async(&mut connection).await?;
    let replicas: Vec<HashMap<String, String>> = run("REPLICAS").query_async(&mut connection).await?;
    let others: Vec<HashMap<String, String>> = run("SENTINELS").query_async(&mut connection).await?;
    let field = |key: &str| master.get(key).cloned().unwrap_or_default();
    Ok(SentinelView {
        master: format!("{}:{}", field("ip"), field("port")),
        flags: field("flags"),
        healthy_replicas: replicas
            .iter()
            .filter(|r| r.get("flags").is_some_and(|f| f == "slave"))
            .count(),
        other_sentinels: others.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_carry_the_settings_the_store_relies_on() {
        let files = NodeFiles {
            dir: PathBuf::from("/lab/redis/redis-2"),
            sentinel: false,
        };
        let addr: SocketAddrV4 = "127.0.0.22:7132".parse().unwrap();
        let master: SocketAddrV4 = "127.0.0.21:7131".parse().unwrap();
        let conf = data_node_conf(&files, addr, Driver::RedisSentinel, Some(master));
        for line in [
            "bind 127.0.0.22",
            "bind-source-addr 127.0.0.22",
            "appendonly yes",
            "appendfsync everysec",
            "save 60 1000",
            "min-replicas-to-write 1",
            "min-replicas-max-lag 2",
            "repl-diskless-sync-delay 0",
            "client-output-buffer-limit normal 64mb 16mb 60",
            "sanitize-dump-payload yes",
            "replicaof 127.0.0.21 7131",
            "dir \"/lab/redis/redis-2\"",
        ] {
            assert!(conf.lines().any(|l| l == line), "missing {line:?} in\n{conf}");
        }
        let single = data_node_conf(&files, addr, Driver::Redis, None);
        assert!(
            !single.contains("min-replicas"),
            "a lone node would refuse every write"
        );
        assert!(!single.contains("replicaof"));

        let files = NodeFiles {
            dir: PathBuf::from("/lab/sentinels/sentinel-1"),
            sentinel: true,
        };
        let conf = sentinel_conf(&files, "127.0.0.31:7141".parse().unwrap(), master, 1500);
        for line in [
            "sentinel monitor mymaster 127.0.0.21 7131 2",
            "sentinel down-after-milliseconds mymaster 1500",
            "sentinel failover-timeout mymaster 10000",
            "bind-source-addr 127.0.0.31",
        ] {
            assert!(conf.lines().any(|l| l == line), "missing {line:?} in\n{conf}");
        }
        assert!(files.conf().ends_with("sentinel.conf"));
    }

    #[test]
    fn info_fields_are_read() {
        let info = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.21\r\nmaster_link_status:up\r\n";
        assert_eq!(info_field(info, "role"), Some("slave"));
        assert_eq!(info_field(info, "master_link_status"), Some("up"));
        assert_eq!(info_field(info, "master"), None);
    }
}
