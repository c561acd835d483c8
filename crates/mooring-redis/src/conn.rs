//! The connection layer: one multiplexed connection to the master, followed across failovers.
//!
//! # Invariants
//!
//! - **One mechanism for standalone and Sentinel.** A [`Follower`] holds the current master connection in an
//!   `ArcSwap`: requests load it without locking. Standalone "discovery" always names the configured address
//!   (so a restarted server is simply reconnected); Sentinel discovery asks the Sentinels.
//! - **Single flight.** When a request sees a failover-class error it asks for a rediscovery *of the node it
//!   used*. Rediscoveries are serialized; a request whose node was already replaced by someone else's
//!   rediscovery gets the new node at once instead of starting another. Nothing holds a lock while talking to
//!   the data nodes.
//! - **Triggers** (Sentinel): failover-class errors (I/O, timeout, `READONLY`, `NOREPLICAS`, `LOADING`,
//!   `MASTERDOWN`, and `UNBLOCKED`, which a `WAIT` gets when its master is demoted), `+switch-master` events (one subscription per Sentinel), and a poll of the Sentinels every
//!   `poll_interval`. A discovered master is only used after it says `ROLE` = master, so writes never go to a
//!   node that Sentinel still calls master but that has been demoted.
//! - **Retries** happen only for calls the store marks safe to repeat, until the configured deadline, with a
//!   short backoff. Writes are confirmed with `WAIT` in the same round trip when durability asks for it; a
//!   write that fewer replicas confirmed is treated like a failover error: retried or reported, never counted
//!   as saved.
//! - **Cluster** uses redis-rs's cluster client, which follows `MOVED`/`ASK` and refreshes slots itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, ConnectionInfo, Pipeline, RedisError, Value};

use crate::config::{RedisConfig, Topology, split_addr};
use crate::error::{RedisStoreError, Result};
use crate::scripts::Scripts;
use crate::stats::{RedisStats, bump};

/// The server's error code (`READONLY`, `WRONGTYPE`, ...), also from inside a failed pipeline, where redis-rs
/// only reports the codes it knows through `code()`.
pub(crate) fn server_code(err: &RedisError) -> Option<String> {
    if let Some(code) = err.code() {
        return Some(code.to_owned());
    }
    err.clone()
        .into_server_errors()
        .and_then(|items| items.first().map(|(_, e)| e.code().to_owned()))
}

/// Errors after which the master may have changed: rediscover, then (if allowed) retry.
pub(crate) fn is_failover_error(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || matches!(
            server_code(err).as_deref(),
            // UNBLOCKED: Redis's answer to a client blocked in `WAIT` when its master becomes a replica.
            Some(
                "READONLY"
                    | "NOREPLICAS"
                    | "LOADING"
                    | "MASTERDOWN"
                    | "UNBLOCKED"
                    | "TRYAGAIN"
                    | "CLUSTERDOWN"
            )
        )
}

/// The master connection in use.
pub(crate) struct Node {
    /// `host:port`.
    pub(crate) addr: String,
    conn: MultiplexedConnection,
    generation: u64,
}

enum Discovery {
    Fixed {
        addr: String,
        info: Box<ConnectionInfo>,
    },
    Sentinel {
        master: String,
        sentinels: Vec<(String, ConnectionInfo)>,
    },
}

/// Follows the master of a standalone or Sentinel topology. See the module documentation.
pub(crate) struct Follower {
    config: Arc<RedisConfig>,
    discovery: Discovery,
    current: ArcSwapOption<Node>,
    flight: tokio::sync::Mutex<()>,
    generation: AtomicU64,
    stats: Arc<RedisStats>,
    /// How many replicas a write waits for: every replica of the master that was in sync at the last check
    /// (never fewer than the configured minimum). See [`Follower::on_shortfall`].
    wait_target: std::sync::atomic::AtomicU32,
    /// The replicas of the current master (`host:port`) that were in sync at the last check.
    replicas: std::sync::Mutex<Vec<String>>,
}

async fn connect(
    config: &RedisConfig,
    info: ConnectionInfo,
) -> std::result::Result<MultiplexedConnection, RedisError> {
    let client = Client::open(info)?;
    let settings = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.response_timeout));
    client
        .get_multiplexed_async_connection_with_config(&settings)
        .await
}

impl RedisConfig {
    /// The node this configuration names right now, as `host:port` and connection info (auth, db, TLS as the
    /// store uses them): the standalone URL, or the master the Sentinels name, asked once through the store's
    /// own discovery. For tools that talk to Redis directly (`moor backup`); the store itself follows
    /// failovers. Not for Cluster, which has no single master.
    pub async fn current_node(&self) -> Result<(String, ConnectionInfo)> {
        Follower::new(Arc::new(self.clone()), Arc::default())?
            .discover()
            .await
    }
}

/// How far (bytes of replication stream) a replica may be behind its master's offset and still count as in
/// sync for [`RedisConfig::in_sync_replica`]. A byte offset, rather than `master_last_io_seconds_ago`, because
/// it measures what is missing, not how long ago something arrived: a replica idle for 5 s on a quiet master
/// is fully in sync, one that answered a second ago may still be megabytes behind after a burst. 1 MiB is a
/// few thousand session writes, well under a second of replication on a working link.
pub(crate) const MAX_REPLICA_LAG_BYTES: u64 = 1024 * 1024;

/// One replica as `SENTINEL REPLICAS` describes it.
#[derive(Debug, PartialEq, Eq)]
struct SentinelReplica {
    host: String,
    port: u16,
}

/// The replicas of a `SENTINEL REPLICAS` answer (an array of flat field/value arrays, or maps on RESP3)
/// whose flags show none of `s_down`, `o_down`, `disconnected` and whose `master-link-status` is `ok`.
fn healthy_sentinel_replicas(answer: &Value) -> Vec<SentinelReplica> {
    let Value::Array(items) = answer else {
        return Vec::new();
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    items
        .iter()
        .filter_map(|item| {
            let pairs: Vec<(String, String)> = match item {
                Value::Array(flat) => flat
                    .chunks(2)
                    .filter_map(|kv| Some((text(kv.first()?)?, text(kv.get(1)?)?)))
                    .collect(),
                Value::Map(map) => map
                    .iter()
                    .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
                    .collect(),
                _ => return None,
            };
            let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
            let flags = get("flags")?;
            let down = flags
                .split(',')
                .any(|f| matches!(f, "s_down" | "o_down" | "disconnected"));
            if down || get("master-link-status")? != "ok" {
                return None;
            }
            Some(SentinelReplica {
                host: get("ip")?.to_owned(),
                port: get("port")?.parse().ok()?,
            })
        })
        .collect()
}

/// A field of an `INFO` answer.
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// The replica's `slave_repl_offset` when its own `INFO replication` says it is in sync with the master at
/// `master_offset`: `role:slave`, `master_link_status:up`, `master_sync_in_progress:0`, and at most
/// [`MAX_REPLICA_LAG_BYTES`] behind.
fn in_sync_offset(info: &str, master_offset: u64) -> Option<u64> {
    let ok = info_field(info, "role") == Some("slave")
        && info_field(info, "master_link_status") == Some("up")
        && info_field(info, "master_sync_in_progress") == Some("0");
    let offset: u64 = info_field(info, "slave_repl_offset")?.parse().ok()?;
    (ok && master_offset.saturating_sub(offset) <= MAX_REPLICA_LAG_BYTES).then_some(offset)
}

impl RedisConfig {
    /// The replica a reader that can do with a slightly older copy (`moor backup`) should use, so the master
    /// does no extra work: on Sentinel, the replicas `SENTINEL REPLICAS <master>` names without `s_down`,
    /// `o_down` or `disconnected` flags and with `master-link-status` ok, each confirmed on the replica
    /// itself (`INFO replication`: link up, no sync in progress, at most 1 MiB of replication stream behind
    /// the master's `master_repl_offset`); the one furthest along, with connection info carrying the store's
    /// auth, db and TLS. `None` when no replica qualifies, and for standalone and Cluster configurations
    /// (a standalone URL is read as given; a Cluster's masters are read).
    pub async fn in_sync_replica(&self) -> Result<Option<(String, ConnectionInfo)>> {
        if !matches!(self.topology, Topology::Sentinel { .. }) {
            return Ok(None);
        }
        let follower = Follower::new(Arc::new(self.clone()), Arc::default())?;
        let Discovery::Sentinel { master, sentinels } = &follower.discovery else {
            return Ok(None);
        };
        let (master_addr, master_info) = follower.ask_sentinels().await?;
        let mut conn = connect(self, master_info).await?;
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await?;
        let Some(master_offset) = info_field(&info, "master_repl_offset").and_then(|v| v.parse::<u64>().ok())
        else {
            return Err(RedisStoreError::Shape(format!(
                "{master_addr} reports no master_repl_offset"
            )));
        };
        let mut candidates = Vec::new();
        let mut last = None;
        for (addr, info) in sentinels {
            let asked = async {
                let mut conn = connect(self, info.clone()).await?;
                redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(master)
                    .query_async::<Value>(&mut conn)
                    .await
            };
            match asked.await {
                Ok(answer) => {
                    candidates = healthy_sentinel_replicas(&answer);
                    break;
                }
                Err(e) => last = Some(format!("Sentinel {addr}: {e}")),
            }
        }
        if let Some(last) = last.filter(|_| candidates.is_empty()) {
            tracing::warn!(master = %master, last = %last, "no Sentinel listed the replicas");
        }
        let mut best: Option<(u64, String, ConnectionInfo)> = None;
        for replica in candidates {
            let addr = format!("{}:{}", replica.host, replica.port);
            let info = self.node_info(&replica.host, replica.port);
            let checked = async {
                let mut conn = connect(self, info.clone()).await?;
                redis::cmd("INFO")
                    .arg("replication")
                    .query_async::<String>(&mut conn)
                    .await
            };
            match checked.await {
                Ok(text) => match in_sync_offset(&text, master_offset) {
                    Some(offset) if best.as_ref().is_none_or(|(b, _, _)| offset > *b) => {
                        best = Some((offset, addr, info));
                    }
                    Some(_) => {}
                    None => tracing::info!(replica = %addr, master_offset, "replica not in sync; not used"),
                },
                Err(e) => tracing::info!(replica = %addr, error = %e, "replica did not answer; not used"),
            }
        }
        Ok(best.map(|(_, addr, info)| (addr, info)))
    }
}

impl RedisConfig {
    /// A connection to the Cluster this configuration names, as the store opens it: it routes every command
    /// by its key's slot and follows `MOVED`/`ASK`. An error for other topologies.
    pub async fn cluster_connection(&self) -> Result<ClusterConnection> {
        let Topology::Cluster { nodes } = &self.topology else {
            return Err(RedisStoreError::Config(
                "not a Redis Cluster configuration".into(),
            ));
        };
        let infos = nodes
            .iter()
            .map(|a| {
                let (host, port) = split_addr(a)?;
                Ok(self.node_info(&host, port))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut builder = redis::cluster::ClusterClient::builder(infos)
            .connection_timeout(self.connect_timeout)
            .response_timeout(self.response_timeout);
        if let Some(user) = &self.username {
            builder = builder.username(user);
        }
        if let Some(password) = &self.password {
            builder = builder.password(password);
        }
        Ok(builder.build()?.get_async_connection().await?)
    }

    /// The masters of a Cluster that hold slots, as `host:port` and connection info (auth and TLS of this
    /// configuration), from `CLUSTER NODES` of the first listed node that answers. For tools that visit every
    /// node (`moor backup`); the store itself routes through [`RedisConfig::cluster_connection`].
    pub async fn cluster_masters(&self) -> Result<Vec<(String, ConnectionInfo)>> {
        let Topology::Cluster { nodes } = &self.topology else {
            return Err(RedisStoreError::Config(
                "not a Redis Cluster configuration".into(),
            ));
        };
        let mut last_error = None;
        for seed in nodes {
            let (host, port) = split_addr(seed)?;
            let answer = async {
                let mut conn = connect(self, self.node_info(&host, port)).await?;
                redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query_async::<String>(&mut conn)
                    .await
            };
            match answer.await {
                Ok(text) => {
                    let masters = slot_masters(&text)
                        .into_iter()
                        .map(|(host, port)| (format!("{host}:{port}"), self.node_info(&host, port)))
                        .collect::<Vec<_>>();
                    if masters.is_empty() {
                        return Err(RedisStoreError::Config(format!(
                            "{seed} knows no master holding slots; is the Cluster created?"
                        )));
                    }
                    return Ok(masters);
                }
                Err(e) => last_error = Some(format!("{seed}: {e}")),
            }
        }
        Err(RedisStoreError::Config(format!(
            "no Cluster node answered CLUSTER NODES; last: {}",
            last_error.unwrap_or_else(|| "no nodes listed".into())
        )))
    }
}

/// The healthy masters holding slots in a `CLUSTER NODES` answer: lines of `<id> <ip:port@bus[,host]> <flags>
/// <master> <ping> <pong> <epoch> <link> <slot>...`.
fn slot_masters(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags: Vec<&str> = fields.get(2)?.split(',').collect();
            let healthy = flags.contains(&"master")
                && !flags
                    .iter()
                    .any(|f| matches!(*f, "fail" | "fail?" | "noaddr" | "handshake"));
            if !healthy || fields.len() <= 8 {
                return None;
            }
            let addr = fields[1].split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            let port = port.parse().ok().filter(|p| *p != 0)?;
            (!host.is_empty()).then(|| (host.to_owned(), port))
        })
        .collect()
}

impl Follower {
    fn new(config: Arc<RedisConfig>, stats: Arc<RedisStats>) -> Result<Self> {
        let discovery = match &config.topology {
            Topology::Standalone { url } => {
                let info = config.standalone_info(url)?;
                Discovery::Fixed {
                    addr: info.addr().to_string(),
                    info: Box::new(info),
                }
            }
            Topology::Sentinel {
                sentinels, master, ..
            } => {
                if sentinels.is_empty() {
                    return Err(RedisStoreError::Config("no Sentinel addresses".into()));
                }
                let sentinels = sentinels
                    .iter()
                    .map(|a| Ok((a.clone(), config.sentinel_info(a)?)))
                    .collect::<Result<_>>()?;
                Discovery::Sentinel {
                    master: master.clone(),
                    sentinels,
                }
            }
            Topology::Cluster { .. } => {
                return Err(RedisStoreError::Config("a cluster has no single master".into()));
            }
        };
        Ok(Self {
            config,
            discovery,
            current: ArcSwapOption::empty(),
            flight: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            stats,
            wait_target: std::sync::atomic::AtomicU32::new(0),
            replicas: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Asks the Sentinels (in order) who the master is.
    async fn ask_sentinels(&self) -> Result<(String, ConnectionInfo)> {
        let Discovery::Sentinel { master, sentinels } = &self.discovery else {
            return Err(RedisStoreError::Config("not a Sentinel topology".into()));
        };
        let mut last = None;
        for (addr, info) in sentinels {
            let asked = async {
                let mut conn = connect(&self.config, info.clone()).await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(master)
                    .query_async::<Option<(String, u16)>>(&mut conn)
                    .await
            };
            match asked.await {
                Ok(Some((host, port))) => {
                    return Ok((format!("{host}:{port}"), self.config.node_info(&host, port)));
                }
                Ok(None) => last = Some(format!("Sentinel {addr} does not know '{master}'")),
                Err(e) => last = Some(format!("Sentinel {addr}: {e}")),
            }
        }
        tracing::warn!(master = %master, last = ?last, "no Sentinel named a master");
        Err(RedisStoreError::NoMaster(master.clone()))
    }

    async fn discover(&self) -> Result<(String, ConnectionInfo)> {
        match &self.discovery {
            Discovery::Fixed { addr, info } => Ok((addr.clone(), (**info).clone())),
            Discovery::Sentinel { .. } => self.ask_sentinels().await,
        }
    }

    /// Replaces the node of generation `failed` (0: none yet) with a fresh connection to the current master,
    /// unless someone already did.
    async fn rediscover(&self, failed: u64) -> Result<Arc<Node>> {
        let _flight = self.flight.lock().await;
        if let Some(node) = self.current.load_full()
            && node.generation != failed
        {
            return Ok(node);
        }
        bump(&self.stats.rediscoveries);
        let (addr, info) = self.discover().await?;
        let mut conn = connect(&self.config, info).await?;
        if matches!(self.discovery, Discovery::Sentinel { .. }) {
            let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut conn).await?;
            let is_master = matches!(role.first(), Some(Value::BulkString(r)) if r == b"master");
            if !is_master {
                return Err(RedisStoreError::NoMaster(format!("{addr} is not (yet) a master")));
            }
        }
        let online = online_replicas(&mut conn).await.unwrap_or_default();
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let node = Arc::new(Node {
            addr: addr.clone(),
            conn,
            generation,
        });
        let old = self.current.swap(Some(Arc::clone(&node)));
        let same_master = old.as_ref().is_some_and(|o| o.addr == addr);
        self.note_replicas(&addr, online, !same_master);
        match old {
            Some(old) if old.addr != addr => {
                bump(&self.stats.master_switches);
                tracing::warn!(from = %old.addr, to = %addr, "Redis master switched");
            }
            Some(_) => tracing::info!(addr = %addr, "reconnected to the Redis master"),
            None => tracing::info!(addr = %addr, "connected to the Redis master"),
        }
        Ok(node)
    }

    /// Records the replicas in sync with the master. With `reset` (a new master) the list and the write target
    /// are replaced; otherwise they only grow: a replica that vanished is dropped only by
    /// [`Follower::on_shortfall`], after checking it was not promoted.
    fn note_replicas(&self, master: &str, online: Vec<String>, reset: bool) {
        let mut known = self
            .replicas
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        known.retain(|r| r != master);
        if reset {
            *known = online;
        } else {
            for replica in online {
                if !known.contains(&replica) {
                    known.push(replica);
                }
            }
        }
        self.wait_target.store(known.len() as u32, Ordering::SeqCst);
    }

    /// How many replicas a write must reach: every replica in sync at the last check, at least `min`.
    fn wait_count(&self, min: u32) -> u32 {
        self.wait_target.load(Ordering::SeqCst).max(min)
    }

    /// A write reached fewer replicas than the target. Either a replica died (wait for the ones still in sync
    /// from now on) or one of them has been promoted: a failover is under way, and everything the old master
    /// accepts from now on will be discarded, so keep the target and let writes fail until the switch. This is
    /// what makes a planned failover (`SENTINEL FAILOVER`) lose no acknowledged write: the old master keeps
    /// accepting writes for seconds, and its other replica keeps acknowledging them.
    async fn on_shortfall(&self, node: &Node) {
        let Ok(online) = online_replicas(&mut node.conn.clone()).await else {
            return;
        };
        let known = self
            .replicas
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        // The master itself may be in the list (it was a replica before a failover): it is not a replica that
        // went missing, and its saying "master" is no news.
        for gone in known.iter().filter(|r| !online.contains(r) && **r != node.addr) {
            if self.says_master(gone).await {
                tracing::warn!(replica = %gone, master = %node.addr, "a replica was promoted: failover under way, holding writes");
                return;
            }
        }
        tracing::info!(master = %node.addr, replicas = ?online, "replicas in sync changed; writes now wait for them");
        *self
            .replicas
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = online.clone();
        self.wait_target.store(online.len() as u32, Ordering::SeqCst);
    }

    /// Whether the node at `addr` answers `ROLE` with master.
    async fn says_master(&self, addr: &str) -> bool {
        let Ok((host, port)) = split_addr(addr) else {
            return false;
        };
        let asked = async {
            let mut conn = connect(&self.config, self.config.node_info(&host, port)).await?;
            redis::cmd("ROLE").query_async::<Vec<Value>>(&mut conn).await
        };
        matches!(asked.await.as_deref(), Ok([Value::BulkString(role), ..]) if role == b"master")
    }

    async fn node(&self) -> Result<Arc<Node>> {
        match self.current.load_full() {
            Some(node) => Ok(node),
            None => self.rediscover(0).await,
        }
    }

    /// If the Sentinels name another master than the one in use, switch to it.
    async fn check_master(&self) {
        let Ok((addr, _)) = self.ask_sentinels().await else {
            return;
        };
        let current = self.current.load_full();
        if let Some(node) = current.as_ref().filter(|n| n.addr == addr) {
            if let Ok(online) = online_replicas(&mut node.conn.clone()).await {
                self.note_replicas(&node.addr, online, false);
            }
            return;
        }
        let failed = current.map_or(0, |n| n.generation);
        if let Err(err) = self.rediscover(failed).await {
            tracing::warn!(error = %err, new_master = %addr, "could not switch to the new master yet");
        }
    }

    /// Starts the `+switch-master` listeners and the poll; they stop when the follower is dropped.
    fn watch(self: &Arc<Self>) {
        let Discovery::Sentinel { sentinels, master } = &self.discovery else {
            return;
        };
        let weak = Arc::downgrade(self);
        let interval = self.config.poll_interval;
        tokio::spawn(poll(weak.clone(), interval));
        for (addr, info) in sentinels {
            tokio::spawn(listen(weak.clone(), addr.clone(), info.clone(), master.clone()));
        }
    }
}

async fn poll(follower: Weak<Follower>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(follower) = follower.upgrade() else {
            return;
        };
        follower.check_master().await;
    }
}

/// Subscribes to `+switch-master` on one Sentinel, reconnecting as needed.
async fn listen(follower: Weak<Follower>, addr: String, info: ConnectionInfo, master: String) {
    loop {
        let Some(timeout) = follower.upgrade().map(|f| f.config.connect_timeout) else {
            return;
        };
        let subscribed = async {
            let mut pubsub = tokio::time::timeout(timeout, Client::open(info.clone())?.get_async_pubsub())
                .await
                .map_err(|_| RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
            pubsub.subscribe("+switch-master").await?;
            Ok::<_, RedisError>(pubsub)
        };
        match subscribed.await {
            Ok(pubsub) => {
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    let Some(f) = follower.upgrade() else { return };
                    let payload: String = message.get_payload().unwrap_or_default();
                    // "<master-name> <old-ip> <old-port> <new-ip> <new-port>"
                    if payload.split(' ').next() == Some(master.as_str()) {
                        tracing::info!(sentinel = %addr, event = %payload, "+switch-master");
                        let failed = f.current.load_full().map_or(0, |n| n.generation);
                        if let Err(err) = f.rediscover(failed).await {
                            tracing::warn!(error = %err, "rediscovery after +switch-master failed");
                        }
                    }
                }
            }
            Err(err) => tracing::debug!(sentinel = %addr, error = %err, "Sentinel subscription failed"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The replicas in sync with the master whose connection this is, from `INFO replication`.
async fn online_replicas(conn: &mut MultiplexedConnection) -> std::result::Result<Vec<String>, RedisError> {
    let info: String = redis::cmd("INFO").arg("replication").query_async(conn).await?;
    Ok(info
        .lines()
        .filter(|l| l.starts_with("slave") && l.contains("state=online"))
        .filter_map(|l| {
            let fields = l.split_once(':')?.1;
            let get = |k: &str| fields.split(',').find_map(|kv| kv.strip_prefix(k));
            Some(format!("{}:{}", get("ip=")?, get("port=")?))
        })
        .collect())
}

/// Whether a call may be repeated after a failure whose outcome is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Repeating it has the same effect as running it once: retry until the deadline.
    Safe,
    /// Repeating it could do harm (a compare-and-set): report the failure.
    Never,
}

/// How a write is confirmed: `WAIT` for at least `min` replicas (every replica in sync, on Sentinel), for at
/// most `timeout`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wait {
    /// The fewest replicas that must confirm.
    pub(crate) min: u32,
    /// How long `WAIT` may block.
    pub(crate) timeout: Duration,
}

/// The connection to whatever topology is configured.
pub(crate) enum Backend {
    /// Standalone or Sentinel.
    Follower(Arc<Follower>),
    /// Redis Cluster.
    Cluster(ClusterConnection),
}

impl Backend {
    /// Connects (and, for Sentinel, starts watching for failovers).
    pub(crate) async fn connect(config: Arc<RedisConfig>, stats: Arc<RedisStats>) -> Result<Self> {
        match &config.topology {
            Topology::Cluster { .. } => Ok(Self::Cluster(config.cluster_connection().await?)),
            _ => {
                let follower = Arc::new(Follower::new(config, stats)?);
                follower.rediscover(0).await?;
                follower.watch();
                Ok(Self::Follower(follower))
            }
        }
    }

    /// The master in use (`host:port`), for logs and tests; `None` for Cluster.
    pub(crate) fn master_addr(&self) -> Option<String> {
        match self {
            Self::Follower(f) => f.current.load_full().map(|n| n.addr.clone()),
            Self::Cluster(_) => None,
        }
    }

    async fn attempt(&self, pipe: &Pipeline) -> (std::result::Result<Vec<Value>, RedisError>, u64) {
        match self {
            Self::Cluster(conn) => (pipe.query_async(&mut conn.clone()).await, 0),
            Self::Follower(f) => match f.node().await {
                Ok(node) => (pipe.query_async(&mut node.conn.clone()).await, node.generation),
                Err(RedisStoreError::Redis(e)) => (Err(e), 0),
                Err(other) => (Err(RedisError::from(std::io::Error::other(other.to_string()))), 0),
            },
        }
    }

    /// Runs `pipe` on the master: rediscovers on failover-class errors and, for [`Retry::Safe`] calls,
    /// retries until the deadline. With `wait = Some(n)` the pipeline's last command is a `WAIT` whose answer
    /// must be at least `n`, or the write does not count.
    pub(crate) async fn run(
        &self,
        pipe: &Pipeline,
        wait: Option<Wait>,
        retry: Retry,
        scripts: &Scripts,
        stats: &RedisStats,
        deadline: Duration,
    ) -> Result<Vec<Value>> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(10);
        // The connection generation the scripts were last reloaded on: once per master, not once per call (a
        // call that outlives two failovers meets two servers without them).
        let mut reloaded_on = None;
        loop {
            let (attempt, wanted) = match wait {
                None => (std::borrow::Cow::Borrowed(pipe), None),
                Some(w) => {
                    let wanted = match self {
                        Self::Follower(f) => f.wait_count(w.min),
                        Self::Cluster(_) => w.min,
                    };
                    let mut with_wait = pipe.clone();
                    with_wait
                        .cmd("WAIT")
                        .arg(wanted)
                        .arg(w.timeout.as_millis() as u64);
                    (std::borrow::Cow::Owned(with_wait), Some(wanted))
                }
            };
            let (result, generation) = self.attempt(&attempt).await;
            let failure: RedisStoreError = match result {
                Ok(values) => match wanted {
                    None => return Ok(values),
                    Some(wanted) => {
                        let got = match values.last() {
                            Some(Value::Int(n)) => u32::try_from(*n).unwrap_or(0),
                            _ => 0,
                        };
                        if got >= wanted {
                            return Ok(values);
                        }
                        bump(&stats.wait_missed);
                        if let Self::Follower(f) = self
                            && let Ok(node) = f.node().await
                            && node.generation == generation
                        {
                            f.on_shortfall(&node).await;
                        }
                        RedisStoreError::NotReplicated { wanted, got }
                    }
                },
                Err(err)
                    if server_code(&err).as_deref() == Some("NOSCRIPT")
                        && reloaded_on != Some(generation) =>
                {
                    // A promoted replica or a restarted server does not have our scripts yet. Loading them can
                    // meet the same failover as any command: then rediscover and retry, as below.
                    reloaded_on = Some(generation);
                    match self.load_scripts(scripts).await {
                        Ok(()) => continue,
                        Err(RedisStoreError::Redis(e)) if is_failover_error(&e) => e.into(),
                        Err(other) => return Err(other),
                    }
                }
                Err(err) if is_failover_error(&err) => err.into(),
                Err(err) => return Err(err.into()),
            };
            if let Self::Follower(f) = self
                && let Err(err) = f.rediscover(generation).await
            {
                tracing::debug!(error = %err, "rediscovery failed; will retry");
            }
            if retry == Retry::Never || started.elapsed() + backoff >= deadline {
                return Err(match retry {
                    Retry::Never => failure,
                    Retry::Safe => RedisStoreError::Deadline(deadline, Box::new(failure)),
                });
            }
            bump(&stats.retries);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }

    /// Loads the store's scripts on the master (every master on Cluster).
    pub(crate) async fn load_scripts(&self, scripts: &Scripts) -> Result<()> {
        match self {
            Self::Cluster(conn) => scripts.load(&mut conn.clone()).await,
            Self::Follower(f) => {
                let node = f.node().await?;
                scripts.load(&mut node.conn.clone()).await
            }
        }
    }

    /// Runs one command on the master without retries (start-up checks).
    pub(crate) async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        Ok(match self {
            Self::Cluster(conn) => cmd.query_async(&mut conn.clone()).await?,
            Self::Follower(f) => {
                let node = f.node().await?;
                cmd.query_async(&mut node.conn.clone()).await?
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{
        MAX_REPLICA_LAG_BYTES, SentinelReplica, Value, healthy_sentinel_replicas, in_sync_offset,
        slot_masters,
    };

    #[test]
    fn only_healthy_linked_replicas_are_candidates() {
        let replica = |ip: &str, flags: &str, link: &str| {
            Value::Array(
                [
                    ("name", format!("{ip}:6380")),
                    ("ip", ip.to_owned()),
                    ("port", "6380".to_owned()),
                    ("flags", flags.to_owned()),
                    ("master-link-status", link.to_owned()),
                ]
                .into_iter()
                .flat_map(|(k, v)| [Value::BulkString(k.into()), Value::BulkString(v.into_bytes())])
                .collect(),
            )
        };
        let answer = Value::Array(vec![
            replica("10.0.0.1", "slave", "ok"),
            replica("10.0.0.2", "s_down,slave", "ok"),
            replica("10.0.0.3", "slave,disconnected", "ok"),
            replica("10.0.0.4", "slave", "err"),
            replica("10.0.0.5", "o_down,slave", "ok"),
        ]);
        assert_eq!(
            healthy_sentinel_replicas(&answer),
            [SentinelReplica {
                host: "10.0.0.1".into(),
                port: 6380
            }]
        );
        assert!(healthy_sentinel_replicas(&Value::Nil).is_empty());
    }

    #[test]
    fn a_replica_is_in_sync_when_its_link_is_up_and_its_offset_close() {
        let info = |link: &str, sync: &str, offset: u64| {
            format!(
                "# Replication\r\nrole:slave\r\nmaster_host:10.0.0.9\r\nmaster_link_status:{link}\r\n\
                 master_last_io_seconds_ago:1\r\nmaster_sync_in_progress:{sync}\r\nslave_repl_offset:{offset}\r\n"
            )
        };
        let master = 10 * MAX_REPLICA_LAG_BYTES;
        assert_eq!(in_sync_offset(&info("up", "0", master), master), Some(master));
        let behind = master - MAX_REPLICA_LAG_BYTES;
        assert_eq!(in_sync_offset(&info("up", "0", behind), master), Some(behind));
        assert_eq!(
            in_sync_offset(&info("up", "0", behind - 1), master),
            None,
            "too far behind"
        );
        assert_eq!(
            in_sync_offset(&info("down", "0", master), master),
            None,
            "link down"
        );
        assert_eq!(in_sync_offset(&info("up", "1", master), master), None, "syncing");
        assert_eq!(
            in_sync_offset("role:master\r\nmaster_repl_offset:5\r\n", 5),
            None,
            "a master is no replica"
        );
    }

    #[test]
    fn slot_masters_are_the_healthy_masters_holding_slots() {
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
a2 127.0.0.1:7001@17001,redis-1.example master - 0 0 2 connected 5461-10922
a3 127.0.0.1:7002@17002 master,fail - 0 0 3 disconnected 10923-16383
a4 127.0.0.1:7005@17005 master - 0 0 7 connected 10923-16383
a5 127.0.0.1:7003@17003 slave a1 0 0 1 connected
a6 127.0.0.1:7004@17004 master - 0 0 0 connected
a7 :0@0 master,noaddr - 0 0 0 connected 1-2
";
        assert_eq!(
            slot_masters(nodes),
            [
                ("127.0.0.1".to_owned(), 7000),
                ("127.0.0.1".to_owned(), 7001),
                ("127.0.0.1".to_owned(), 7005)
            ]
        );
    }
}
