//! The attempt store cases (login throttling) against `RedisStore::throttle()` on real Redis: a standalone
//! server, a Sentinel topology (1 master, 2 replicas, 3 Sentinels) and a Cluster; plus a planned Sentinel
//! failover under a block, and a check that every key the throttle writes expires. Each test starts its own
//! servers on free ports.

use std::sync::Arc;
use std::time::Duration;

use mooring::{AttemptKey, AttemptStore};
use mooring_conformance::redis::{Cluster, Options, RedisServer, SentinelOptions, SentinelTopology};
use mooring_redis::{Durability, RedisConfig, RedisStore, Topology};

async fn standalone() -> (RedisServer, RedisStore) {
    let server = mooring_conformance::redis::standalone(Options::default()).await;
    let mut config = RedisConfig::new(Topology::Standalone { url: server.url() });
    config.prefix = "p:".into();
    let store = RedisStore::connect(config).await.expect("connect");
    (server, store)
}

async fn sentinel() -> (SentinelTopology, RedisStore) {
    let topology = mooring_conformance::redis::sentinel_topology(SentinelOptions::default()).await;
    let mut config = RedisConfig::new(Topology::Sentinel {
        sentinels: topology.sentinel_addrs(),
        master: topology.master_name().to_owned(),
        sentinel_username: None,
        sentinel_password: None,
    });
    config.deadline = Duration::from_secs(15);
    let store = RedisStore::connect(config).await.expect("connect");
    (topology, store)
}

async fn cluster() -> (Cluster, RedisStore) {
    let cluster = mooring_conformance::redis::cluster(3, 1).await;
    let mut config = RedisConfig::new(Topology::Cluster {
        nodes: cluster.seed_addrs(),
    });
    config.durability = Durability::Replicas(1);
    let store = RedisStore::connect(config).await.expect("connect");
    (cluster, store)
}

fn attempts(store: &RedisStore) -> Arc<dyn AttemptStore> {
    Arc::new(store.throttle())
}

mod on_standalone {
    use super::*;
    mooring_conformance::attempt_store_suite!({
        let (server, store) = standalone().await;
        (server, attempts(&store))
    });
}

mod on_sentinel {
    use super::*;
    mooring_conformance::attempt_store_suite!({
        let (topology, store) = sentinel().await;
        (topology, attempts(&store))
    });
}

mod on_cluster {
    use super::*;
    mooring_conformance::attempt_store_suite!({
        let (cluster, store) = cluster().await;
        (cluster, attempts(&store))
    });
}

/// Every key the throttle writes has a TTL (storage stays bounded), and keys are short whatever the email.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_throttle_key_expires_and_is_short() {
    let (server, store) = standalone().await;
    let throttle = store.throttle();
    let key = AttemptKey::new("a", &[&"x".repeat(10_000)]);
    throttle
        .record_failure(&key, Duration::from_secs(900))
        .await
        .expect("record");
    throttle
        .block(&key, Duration::from_secs(30))
        .await
        .expect("block");
    let mut conn = server.connect().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert_eq!(keys.len(), 2, "{keys:?}");
    for k in &keys {
        assert!(
            k.starts_with("p:t:{a:") && k.len() <= 40,
            "short, prefixed key: {k}"
        );
        let ttl: i64 = redis::cmd("PTTL")
            .arg(k)
            .query_async(&mut conn)
            .await
            .expect("PTTL");
        assert!(ttl > 0, "{k} must expire, PTTL {ttl}");
    }
    let ttl: i64 = redis::cmd("PTTL")
        .arg(throttle.count_key(&key))
        .query_async(&mut conn)
        .await
        .expect("PTTL");
    assert!(
        ttl > 890_000 && ttl <= 900_000,
        "the count lives one window: {ttl}"
    );
}

/// A block survives a planned failover (Sentinel waits for the replica to catch up), and the throttle follows
/// the new master through the session store's connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_throttle_follows_a_sentinel_failover() {
    let (topology, store) = sentinel().await;
    let throttle = store.throttle();
    let key = AttemptKey::new("a", &["alice@example.com"]);
    for _ in 0..3 {
        throttle
            .record_failure(&key, Duration::from_secs(900))
            .await
            .expect("record");
    }
    throttle
        .block(&key, Duration::from_secs(120))
        .await
        .expect("block");
    let old = topology.failover().await;
    let new = topology.wait_for_new_master(&old, Duration::from_secs(20)).await;
    let left = throttle
        .blocked_for(&key)
        .await
        .expect("blocked_for after failover");
    assert!(left.is_some_and(|l| l > Duration::from_secs(100)), "{left:?}");
    assert_eq!(
        throttle
            .record_failure(&key, Duration::from_secs(900))
            .await
            .expect("record"),
        4,
        "the count carried over"
    );
    assert_eq!(store.master_addr().as_deref(), Some(new.as_str()));
}
