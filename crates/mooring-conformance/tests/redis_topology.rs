//! The Redis topology harness itself, against real processes: the store tests build on it, so it must start,
//! persist, fail over and rejoin the way production Redis does. Each test starts its own processes on its own
//! ports and directories; timings go to stderr (`--nocapture` shows them).

use std::time::{Duration, Instant};

use mooring_conformance::redis::{Options, SentinelOptions, cluster, sentinel_topology, standalone};
use redis::AsyncCommands;

/// A standalone server answers PING, requires its password, and keeps its data across a graceful restart and
/// across a kill -9 (AOF, fsynced every second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_answers_and_persists_across_restarts() {
    let started = Instant::now();
    let mut server = standalone(Options::default().with_password("pa ss@word")).await;
    eprintln!(
        "standalone started in {:?} on {}",
        started.elapsed(),
        server.addr()
    );
    assert!(server.pid().is_some());

    let mut con = server.connect().await;
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
    let unauthenticated = redis::Client::open(format!("redis://{}", server.addr())).unwrap();
    let mut anonymous = unauthenticated.get_multiplexed_async_connection().await.unwrap();
    let refused: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut anonymous).await;
    assert!(refused.is_err(), "the password is required");

    let () = con.set("graceful", "kept").await.unwrap();
    server.stop().await;
    assert!(server.pid().is_none());
    server.restart().await;
    let mut con = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let value: Option<String> = con.get("graceful").await.unwrap();
    assert_eq!(
        value.as_deref(),
        Some("kept"),
        "a graceful restart keeps the data"
    );

    let () = con.set("killed", "kept too").await.unwrap();
    // appendfsync everysec: give the AOF its fsync before the SIGKILL.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9().await;
    server.restart().await;
    let mut con = server.connect().await;
    let value: Option<String> = con.get("killed").await.unwrap();
    assert_eq!(value.as_deref(), Some("kept too"), "the AOF survives a kill -9");
    assert!(
        server.log_tail(5).contains("Ready to accept connections"),
        "{}",
        server.log_tail(20)
    );
}

/// kill -9 of the master: Sentinel promotes another node within ~10 s, and the old master, restarted, rejoins
/// as a replica of the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_kill_master_promotes_a_replica_and_the_old_master_rejoins() {
    let started = Instant::now();
    let mut topology = sentinel_topology(SentinelOptions::default().with_password("secret")).await;
    eprintln!("sentinel topology settled in {:?}", started.elapsed());
    assert_eq!(topology.sentinel_addrs().len(), 3);
    let roles = topology.roles().await;
    assert_eq!(
        roles.iter().filter(|(_, role)| role == "master").count(),
        1,
        "{roles:?}"
    );

    let old = topology.kill_master().await;
    let killed = Instant::now();
    let new = topology.wait_for_new_master(&old, Duration::from_secs(15)).await;
    let failover = killed.elapsed();
    eprintln!("kill -9 of {old}: all Sentinels report {new} (ROLE master) after {failover:?}");
    assert_ne!(new, old);
    assert!(failover < Duration::from_secs(10), "failover took {failover:?}");

    topology.restart_node(&old).await;
    let restarted = Instant::now();
    topology
        .wait_replica_of(&old, &new, Duration::from_secs(30))
        .await;
    eprintln!(
        "restarted {old} is a replica of {new} after {:?}",
        restarted.elapsed()
    );
    let roles = topology.roles().await;
    assert_eq!(
        roles
            .iter()
            .filter(|(_, role)| role == "master")
            .collect::<Vec<_>>(),
        [&(new, "master".to_owned())]
    );
}

/// `SENTINEL FAILOVER` (a rolling update) moves the master to another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_switches_the_master() {
    let mut topology = sentinel_topology(SentinelOptions::default()).await;
    let old = topology.failover().await;
    let asked = Instant::now();
    let new = topology.wait_for_new_master(&old, Duration::from_secs(15)).await;
    eprintln!("SENTINEL FAILOVER: {old} -> {new} after {:?}", asked.elapsed());
    assert_ne!(new, old);
    assert_eq!(topology.current_master().await, new);

    // The new master takes writes (it has the other replica, so min-replicas-to-write 1 holds).
    let mut con = topology.node_by_addr(&new).connect().await;
    let () = con.set("after-failover", 1).await.unwrap();
}

/// A 3-master cluster: every node reports `cluster_state:ok`, and a key written through one node's cluster
/// client is read back through a client seeded with all nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_of_three_masters_serves_keys() {
    let started = Instant::now();
    let cluster = cluster(3, 0).await;
    eprintln!("3-master cluster ok in {:?}", started.elapsed());
    assert_eq!(cluster.seed_addrs().len(), 3);
    for node in cluster.nodes() {
        let mut con = node.connect().await;
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(info.contains("cluster_state:ok"), "{info}");
    }

    let one_node = redis::cluster::ClusterClient::new(vec![cluster.nodes()[0].url()]).unwrap();
    let mut writer = one_node.get_async_connection().await.unwrap();
    let all_seeds: Vec<String> = cluster.nodes().iter().map(|n| n.url()).collect();
    let mut reader = redis::cluster::ClusterClient::new(all_seeds)
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    for i in 0..20 {
        let key = format!("key-{i}");
        let () = writer.set(&key, i).await.unwrap();
        let value: i64 = reader.get(&key).await.unwrap();
        assert_eq!(value, i);
    }
}

/// A cluster with a replica per master comes up with three masters and three linked replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_with_replicas_links_every_replica() {
    let started = Instant::now();
    let cluster = cluster(3, 1).await;
    eprintln!("3-master, 3-replica cluster ok in {:?}", started.elapsed());
    let roles = cluster.roles().await;
    assert_eq!(
        roles.iter().filter(|(_, role)| role == "master").count(),
        3,
        "{roles:?}"
    );
    assert_eq!(
        roles.iter().filter(|(_, role)| role == "slave").count(),
        3,
        "{roles:?}"
    );
}
