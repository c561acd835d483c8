//! Failover, measured: a Sentinel topology (1 master, 2 replicas, 3 Sentinels, quorum 2, `down-after` 2 s,
//! `min-replicas-to-write 1`) under continuous session writes from many tasks, with every acknowledged write
//! checked afterwards.
//!
//! (a) `kill -9` of the master; (b) `SENTINEL FAILOVER`; (c) the old master restarted on its data dir while
//! demoted; (d) Redis down for longer than the deadline. Each test starts its own servers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mooring::{Applied, Delta, Policy, Record, SessionId, SessionStore, StoreKey, now_ms};
use mooring_conformance::redis::{SentinelOptions, SentinelTopology};
use mooring_redis::{RedisConfig, RedisStore, Topology};
use tokio::sync::Mutex;

const WRITERS: usize = 16;

/// The topology of every test. `down-after` is 2 s rather than 1 s: on a loaded two-core CI machine a 1 s
/// window made Sentinels fail over a second time, spuriously.
fn topology_options() -> SentinelOptions {
    SentinelOptions::default().with_down_after(Duration::from_secs(2))
}

fn policy() -> Policy {
    Policy {
        idle: Duration::from_secs(600),
        max_record_bytes: 64 * 1024,
        max_sessions_per_user: None,
    }
}

/// A store configuration that finds the master through the topology's Sentinels, with `deadline` per call.
fn sentinel_config(topology: &SentinelTopology, deadline: Duration) -> RedisConfig {
    let mut config = RedisConfig::new(Topology::Sentinel {
        sentinels: topology.sentinel_addrs(),
        master: topology.master_name().to_owned(),
        sentinel_username: None,
        sentinel_password: None,
    });
    config.deadline = deadline;
    config
}

async fn sentinel_store(topology: &SentinelTopology, deadline: Duration) -> RedisStore {
    let store = RedisStore::connect(sentinel_config(topology, deadline))
        .await
        .expect("connect through the Sentinels");
    assert_eq!(
        store.wait_replicas(),
        Some(1),
        "writes are confirmed by a replica"
    );
    store
}

/// Creates a session that lives for an hour; returns its key and record.
async fn live_session(store: &RedisStore) -> (StoreKey, Record) {
    let key = SessionId::generate().store_key();
    let record = Record {
        created_at: now_ms(),
        deadline: now_ms() + 3_600_000,
        ..Record::default()
    };
    store
        .create(&key, &record, &policy())
        .await
        .expect("create a session");
    (key, record)
}

/// What the writers saw.
#[derive(Default)]
struct Outcome {
    /// Every acknowledged write: session, attribute, and when it was acknowledged.
    acked: Vec<(StoreKey, String, Instant)>,
    /// Every failed write: when, and the error.
    failed: Vec<(Instant, String)>,
}

/// `WRITERS` tasks, each with its own session, each writing a new attribute every few milliseconds until
/// told to stop.
struct Writers {
    stop: Arc<AtomicBool>,
    outcome: Arc<Mutex<Outcome>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    async fn start(store: &RedisStore) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let outcome = Arc::new(Mutex::new(Outcome::default()));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let (key, _) = live_session(store).await;
            let (store, stop, outcome) = (store.clone(), Arc::clone(&stop), Arc::clone(&outcome));
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let name = format!("w{w}-{i}");
                    let mut delta = Delta::default();
                    delta.set.insert(name.clone(), i.to_be_bytes().to_vec());
                    let result = store.apply(&key, &delta, &policy()).await;
                    let at = Instant::now();
                    match result {
                        Ok(Applied::Saved { .. }) => outcome.lock().await.acked.push((key.clone(), name, at)),
                        Ok(other) => panic!("writer {w}: {other:?} for a live session"),
                        Err(err) => outcome.lock().await.failed.push((at, format!("{err:#}"))),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
        Self { stop, outcome, tasks }
    }

    async fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("writer task");
        }
        Arc::try_unwrap(self.outcome)
            .ok()
            .expect("writers done")
            .into_inner()
    }
}

/// Reads every acknowledged write back through a fresh connection; returns the ones missing.
async fn lost_writes(topology: &SentinelTopology, acked: &[(StoreKey, String, Instant)]) -> Vec<String> {
    let store = sentinel_store(topology, Duration::from_secs(5)).await;
    let mut lost = Vec::new();
    let mut sessions = std::collections::HashMap::new();
    for (key, name, _) in acked {
        if !sessions.contains_key(key) {
            let loaded = store.load(key, &policy()).await.expect("load after recovery");
            sessions.insert(key.clone(), loaded.map(|l| l.record.attrs).unwrap_or_default());
        }
        if !sessions[key].contains_key(name) {
            lost.push(name.clone());
        }
    }
    lost
}

/// Resolves when one Sentinel announces `+switch-master`; returns when it did.
async fn watch_switch(topology: &SentinelTopology) -> tokio::task::JoinHandle<Instant> {
    let addr = topology.sentinel_addrs()[0].clone();
    let client = redis::Client::open(format!("redis://{addr}")).expect("sentinel client");
    let mut pubsub = client.get_async_pubsub().await.expect("subscribe");
    pubsub.subscribe("+switch-master").await.expect("subscribe");
    tokio::spawn(async move {
        let mut messages = pubsub.into_on_message();
        messages.next().await.expect("+switch-master");
        Instant::now()
    })
}

fn summary(outcome: &Outcome) -> String {
    format!(
        "{} acknowledged, {} failed: {:?}",
        outcome.acked.len(),
        outcome.failed.len(),
        outcome.failed.first()
    )
}

/// (a) `kill -9` of the master, then (c) the old master restarted on its data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_master_loses_no_acknowledged_write_and_the_old_master_gets_none() {
    let mut topology = mooring_conformance::redis::sentinel_topology(topology_options()).await;
    // Longer than a failover here (down-after 2 s + election), so no call needs to fail at all.
    let store = sentinel_store(&topology, Duration::from_secs(10)).await;
    let switched = watch_switch(&topology).await;
    let writers = Writers::start(&store).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let killed_at = Instant::now();
    let old = topology.kill_master().await;
    let new = topology.wait_for_new_master(&old, Duration::from_secs(20)).await;
    let switch_at = tokio::time::timeout(Duration::from_secs(20), switched)
        .await
        .expect("switch seen")
        .expect("task");

    // (c) The old master comes back on its data dir. For a while it believes it is a master (with old data):
    // not one command of ours may reach it.
    topology.restart_node(&old).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    topology
        .wait_replica_of(&old, &new, Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let outcome = writers.finish().await;

    let first_after_switch = outcome
        .acked
        .iter()
        .map(|(_, _, at)| *at)
        .filter(|at| *at > switch_at)
        .min();
    let resumed = first_after_switch
        .expect("writes resumed")
        .duration_since(switch_at);
    let last_before_kill = outcome
        .acked
        .iter()
        .map(|(_, _, at)| *at)
        .filter(|at| *at < killed_at)
        .count();
    eprintln!(
        "kill -9: {}; {last_before_kill} before the kill; failover took {:?}; writes resumed {resumed:?} after +switch-master",
        summary(&outcome),
        switch_at.duration_since(killed_at),
    );
    assert!(
        outcome.failed.is_empty(),
        "no write may fail within its deadline: {}",
        summary(&outcome)
    );
    assert!(
        resumed <= Duration::from_millis(500),
        "writes resumed {resumed:?} after +switch-master"
    );
    let lost = lost_writes(&topology, &outcome.acked).await;
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        outcome.acked.len(),
        &lost[..lost.len().min(10)]
    );

    let stats = topology.node_by_addr(&old).connect().await;
    let mut stats = stats;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut stats)
        .await
        .expect("INFO");
    assert!(
        !info.contains("cmdstat_evalsha"),
        "the restarted old master ran our scripts while demoted:\n{info}"
    );
    assert_eq!(
        store.master_addr().as_deref(),
        Some(new.as_str()),
        "the store follows the new master"
    );
    assert!(store.stats().master_switches.load(Ordering::Relaxed) >= 1);
}

/// (b) A planned failover (`SENTINEL FAILOVER`, what a Redis rollout does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_failover_loses_no_acknowledged_write() {
    let topology = mooring_conformance::redis::sentinel_topology(topology_options()).await;
    let store = sentinel_store(&topology, Duration::from_secs(10)).await;
    let writers = Writers::start(&store).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let old = topology.failover().await;
    let new = topology.wait_for_new_master(&old, Duration::from_secs(20)).await;
    // Writes keep going while the old master is still being reconfigured into a replica.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let outcome = writers.finish().await;
    eprintln!("SENTINEL FAILOVER {old} -> {new}: {}", summary(&outcome));
    assert!(
        outcome.failed.is_empty(),
        "no write may fail within its deadline: {}",
        summary(&outcome)
    );
    let lost = lost_writes(&topology, &outcome.acked).await;
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        outcome.acked.len(),
        &lost[..lost.len().min(10)]
    );
    assert_eq!(store.master_addr().as_deref(), Some(new.as_str()));
}

/// (d) Every data node down for longer than the deadline: calls fail cleanly at their deadline, never with
/// an empty session, and the store recovers by itself when Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_longer_than_the_deadline_fails_cleanly_and_recovers() {
    let mut topology = mooring_conformance::redis::sentinel_topology(topology_options()).await;
    let store = sentinel_store(&topology, Duration::from_millis(800)).await;
    let (key, record) = live_session(&store).await;
    let addrs: Vec<String> = topology.servers().iter().map(|s| s.addr()).collect();
    for addr in &addrs {
        topology.node_by_addr(addr).stop().await;
    }
    let started = Instant::now();
    match store.load(&key, &policy()).await {
        Err(err) => assert!(err.is_unavailable(), "an unavailable store, not {err:?}"),
        Ok(found) => panic!("a load with every node down returned {found:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_secs(3),
        "gave up after {waited:?}"
    );
    let mut delta = Delta::default();
    delta.set.insert("during".into(), b"outage".to_vec());
    assert!(
        store.apply(&key, &delta, &policy()).await.is_err(),
        "no write is acknowledged while down"
    );

    for addr in &addrs {
        topology.node_by_addr(addr).restart().await;
    }
    let recovered = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(Some(loaded)) = store.load(&key, &policy()).await {
                return loaded;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the store recovers by itself");
    assert_eq!(
        recovered.record.created_at, record.created_at,
        "the session survived (AOF)"
    );
    assert!(
        !recovered.record.attrs.contains_key("during"),
        "the failed write was not applied later"
    );
}

/// Three planned failovers in a row, so every node is master once: the replica bookkeeping must follow
/// (a node that was a replica and is now the master is not one of its own replicas).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successive_failovers_keep_writes_flowing() {
    let topology = mooring_conformance::redis::sentinel_topology(topology_options()).await;
    let store = sentinel_store(&topology, Duration::from_secs(10)).await;
    let writers = Writers::start(&store).await;
    for round in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let old = topology.failover().await;
        let new = topology.wait_for_new_master(&old, Duration::from_secs(20)).await;
        // Sentinel refuses a new failover until the previous one has settled.
        for _ in 0..100 {
            let roles = topology.roles().await;
            if roles.iter().filter(|(_, role)| role == "slave").count() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("failover {round}: {old} -> {new}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outcome = writers.finish().await;
    assert!(
        outcome.failed.is_empty(),
        "no write may fail within its deadline: {}",
        summary(&outcome)
    );
    let lost = lost_writes(&topology, &outcome.acked).await;
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost",
        lost.len(),
        outcome.acked.len()
    );
}

/// Data nodes with a password (as the chart deploys them): the store authenticates to every master it
/// discovers, including after a failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_protected_topology_is_followed_across_a_failover() {
    let topology =
        mooring_conformance::redis::sentinel_topology(topology_options().with_password("s3cret pass")).await;
    let mut config = sentinel_config(&topology, Duration::from_secs(10));
    config.password = Some("s3cret pass".into());
    let store = RedisStore::connect(config)
        .await
        .expect("connect with the password");
    let (key, _) = live_session(&store).await;
    let old = topology.failover().await;
    topology.wait_for_new_master(&old, Duration::from_secs(20)).await;
    let mut delta = Delta::default();
    delta.set.insert("after".into(), b"failover".to_vec());
    assert!(matches!(
        store.apply(&key, &delta, &policy()).await.expect("apply"),
        Applied::Saved { .. }
    ));
    let loaded = store.load(&key, &policy()).await.expect("load").expect("record");
    assert_eq!(loaded.record.attrs["after"], b"failover".to_vec());

    let mut wrong = sentinel_config(&topology, Duration::from_millis(500));
    wrong.password = Some("wrong".into());
    let refused = RedisStore::connect(wrong).await;
    assert!(refused.is_err(), "a wrong password must not connect");
    assert!(
        !format!("{:?}", refused.err()).contains("s3cret"),
        "the password never appears in errors"
    );
}

/// Sends SIGSTOP or SIGCONT to a server process.
fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid}");
}

/// A write blocked in `WAIT` when its master becomes a replica gets `-UNBLOCKED` from Redis (its answer to
/// every blocked client on that change; a planned failover does it to the old master). That is a failover,
/// not a failure: the store rediscovers and retries within the deadline, and the write is acknowledged once a
/// master and its replicas confirm it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_wait_is_cut_by_a_demotion_is_retried() {
    let topology = mooring_conformance::redis::sentinel_topology(topology_options()).await;
    let mut config = sentinel_config(&topology, Duration::from_secs(10));
    // Long enough that the demotion below meets the WAIT still blocked.
    config.wait_timeout = Duration::from_secs(3);
    config.response_timeout = Duration::from_secs(5);
    let store = RedisStore::connect(config).await.expect("connect");
    let (key, _) = live_session(&store).await;
    let master = store.master_addr().expect("a master");
    let replicas: Vec<(String, u32)> = topology
        .servers()
        .iter()
        .filter(|s| s.addr() != master)
        .map(|s| (s.addr(), s.pid().expect("running")))
        .collect();
    let mut admin = topology
        .servers()
        .iter()
        .find(|s| s.addr() == master)
        .expect("the master's server")
        .connect()
        .await;

    // The replicas stop acknowledging, so the write's WAIT blocks.
    for (_, pid) in &replicas {
        signal(*pid, "-STOP");
    }
    let writer = {
        let (store, key) = (store.clone(), key.clone());
        tokio::spawn(async move {
            let mut delta = Delta::default();
            delta.set.insert("cart".into(), b"2 pears".to_vec());
            store.apply(&key, &delta, &policy()).await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Demote the master while the write waits, then make it master again.
    let (host, port) = replicas[0].0.rsplit_once(':').expect("host:port");
    let () = redis::cmd("REPLICAOF")
        .arg(host)
        .arg(port)
        .query_async(&mut admin)
        .await
        .expect("REPLICAOF");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut admin)
        .await
        .expect("REPLICAOF NO ONE");
    for (_, pid) in &replicas {
        signal(*pid, "-CONT");
    }

    let applied = writer.await.expect("writer task");
    assert!(
        matches!(applied, Ok(Applied::Saved { .. })),
        "the write is retried after the demotion, not failed: {applied:?}"
    );
    let loaded = store
        .load(&key, &policy())
        .await
        .expect("load")
        .expect("the session");
    assert_eq!(loaded.record.attrs["cart"], b"2 pears".to_vec());
    assert!(
        store.stats().retries.load(Ordering::Relaxed) >= 1,
        "the write went through the retry path"
    );
}
