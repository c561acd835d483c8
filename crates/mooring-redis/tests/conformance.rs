//! The conformance suite against real Redis: a standalone server, a Sentinel topology (1 master, 2 replicas,
//! 3 Sentinels, quorum 2) and a Redis Cluster (3 masters, 3 replicas). Every test starts its own servers on
//! free ports.

use std::sync::Arc;

use async_trait::async_trait;
use mooring::{SessionStore, StoreKey};
use mooring_conformance::Harness;
use mooring_conformance::redis::{Cluster, Options, RedisServer, SentinelOptions, SentinelTopology};
use mooring_redis::{Durability, RedisConfig, RedisStore, Topology};

/// The servers behind a store; kept alive as long as the harness.
enum Servers {
    Standalone(RedisServer),
    Sentinel(SentinelTopology),
    Cluster(Cluster),
}

struct RedisHarness {
    store: RedisStore,
    servers: Servers,
}

impl RedisHarness {
    async fn standalone() -> Self {
        let server = mooring_conformance::redis::standalone(Options::default()).await;
        let mut config = RedisConfig::new(Topology::Standalone { url: server.url() });
        config.prefix = "t:".into();
        let store = RedisStore::connect(config).await.expect("connect");
        assert_eq!(
            store.wait_replicas(),
            None,
            "a lone server has no replicas to wait for"
        );
        Self {
            store,
            servers: Servers::Standalone(server),
        }
    }

    async fn sentinel() -> Self {
        let topology = mooring_conformance::redis::sentinel_topology(SentinelOptions::default()).await;
        let config = RedisConfig::new(Topology::Sentinel {
            sentinels: topology.sentinel_addrs(),
            master: topology.master_name().to_owned(),
            sentinel_username: None,
            sentinel_password: None,
        });
        let store = RedisStore::connect(config).await.expect("connect");
        assert_eq!(
            store.wait_replicas(),
            Some(1),
            "replicas exist, so writes wait for one by default"
        );
        Self {
            store,
            servers: Servers::Sentinel(topology),
        }
    }

    async fn cluster() -> Self {
        let cluster = mooring_conformance::redis::cluster(3, 1).await;
        let mut config = RedisConfig::new(Topology::Cluster {
            nodes: cluster.seed_addrs(),
        });
        config.durability = Durability::Replicas(1);
        let store = RedisStore::connect(config).await.expect("connect");
        Self {
            store,
            servers: Servers::Cluster(cluster),
        }
    }

    async fn raw(&self, cmd: &redis::Cmd) {
        let () = self.raw_query(cmd).await;
    }

    async fn raw_query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let url = match &self.servers {
            Servers::Standalone(server) => server.url(),
            Servers::Sentinel(topology) => format!("redis://{}", topology.current_master().await),
            Servers::Cluster(cluster) => {
                let client = redis::cluster::ClusterClient::new(
                    cluster
                        .seed_addrs()
                        .iter()
                        .map(|a| format!("redis://{a}"))
                        .collect::<Vec<_>>(),
                )
                .expect("cluster client");
                let mut conn = client.get_async_connection().await.expect("cluster connection");
                return cmd.query_async(&mut conn).await.expect("raw command");
            }
        };
        let mut conn = redis::Client::open(url)
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        cmd.query_async(&mut conn).await.expect("raw command")
    }
}

#[async_trait]
impl Harness for RedisHarness {
    fn store(&self) -> Arc<dyn SessionStore> {
        Arc::new(self.store.clone())
    }

    /// Turns the session hash into a string: a foreign key of the wrong type, as a bug or another app sharing
    /// the database would leave behind.
    async fn corrupt(&self, key: &StoreKey) {
        let redis_key = self.store.session_key(key);
        self.raw(redis::cmd("DEL").arg(&redis_key)).await;
        self.raw(redis::cmd("SET").arg(&redis_key).arg("not a session"))
            .await;
    }

    /// The members of the user's sorted set, live or stale, as Redis itself reports them.
    async fn index_entries(&self, user: &str) -> Option<u64> {
        Some(
            self.raw_query(redis::cmd("ZCARD").arg(self.store.user_key(user)))
                .await,
        )
    }
}

mod standalone {
    use super::*;
    mooring_conformance::conformance_suite!(RedisHarness::standalone().await);
}

mod sentinel {
    use super::*;
    mooring_conformance::conformance_suite!(RedisHarness::sentinel().await);
}

mod cluster {
    use super::*;
    mooring_conformance::conformance_suite!(RedisHarness::cluster().await);
}
