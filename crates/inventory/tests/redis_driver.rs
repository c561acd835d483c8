//! The app on `SESSION_DRIVER=redis` through Sentinel, as two real processes: a session moves between them,
//! and when the Redis master is killed under continuous writes nobody is logged out and no acknowledged
//! write is lost. Readiness follows the store.

mod support;

use std::time::Duration;

use mooring_conformance::redis::SentinelOptions;
use reqwest::StatusCode;
use support::{APP_KEY, Client, Process, email};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_a_redis_master_kill_across_two_instances() {
    let mut topology = mooring_conformance::redis::sentinel_topology(
        // 2 s: a 1 s window made Sentinels fail over twice on a loaded CI machine.
        SentinelOptions::default().with_down_after(Duration::from_secs(2)),
    )
    .await;
    let sentinels = topology.sentinel_addrs().join(",");
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let db = mooring_conformance::provision::sqlite().await;
    let spawn = |name: &'static str, dir: &tempfile::TempDir| {
        let dir = dir.path().to_str().expect("utf-8").to_owned();
        let (sentinels, db) = (sentinels.clone(), db.url.clone());
        async move {
            Process::spawn(&[
                ("SESSION_DRIVER", "redis"),
                ("REDIS_SENTINELS", &sentinels),
                ("REDIS_SENTINEL_MASTER", "mymaster"),
                ("SESSION_STORE_TIMEOUT_MS", "15000"),
                ("DATABASE_URL", &db),
                ("DATA_DIR", &dir),
                ("APP_KEY", APP_KEY),
                ("INSTANCE_NAME", name),
                ("METRICS_PORT", "0"),
            ])
            .await
        }
    };
    let (a, b) = tokio::join!(spawn("inventory-a", &dirs[0]), spawn("inventory-b", &dirs[1]));

    let mut user = Client::new(&a.url);
    user.register(&email("redis"), "correct horse battery").await;
    assert_eq!(user.get("/session").await.json()["driver"], "redis");
    user.base = b.url.clone();
    let page = user.get("/dashboard").await;
    assert_eq!(page.status, StatusCode::OK, "signed in on the other instance too");
    assert_eq!(
        user.get("/session").await.json()["hits"],
        2,
        "hits continue across instances"
    );

    // Writers through both instances, alternating, while the master is killed.
    let cookie = user.cookie.clone().expect("cookie");
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let urls = [a.url.clone(), b.url.clone()];
            let cookie = cookie.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut failures = Vec::new();
                for i in 0..120 {
                    let mut c = Client::new(&urls[i % 2]);
                    c.cookie = Some(cookie.clone());
                    let name = format!("w{w}-{i}");
                    let page = c.put(&format!("/session/values/{name}"), &name).await;
                    assert!(
                        page.set_cookie("inventory_session").is_none(),
                        "{name}: the cookie was replaced"
                    );
                    match page.status {
                        StatusCode::OK => acked.push(name),
                        other => failures.push(format!("{name}: {other}")),
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                (acked, failures)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let old = topology.kill_master().await;
    topology.wait_for_new_master(&old, Duration::from_secs(20)).await;

    let (mut acked, mut failures) = (Vec::new(), Vec::new());
    for w in writers {
        let (a, f) = w.await.expect("writer");
        acked.extend(a);
        failures.extend(f);
    }
    assert!(
        failures.is_empty(),
        "requests failed during the failover: {failures:?}"
    );
    for instance in [&a.url, &b.url] {
        user.base = instance.clone();
        assert_eq!(
            user.get("/dashboard").await.status,
            StatusCode::OK,
            "nobody is logged out"
        );
    }
    let mut lost = Vec::new();
    for name in &acked {
        if user.get(&format!("/session/values/{name}")).await.json()["value"] != name.as_str() {
            lost.push(name.clone());
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {lost:?}",
        lost.len(),
        acked.len()
    );

    // Readiness follows the store: every data node down, /readyz says 503 once the outage outlasts the store
    // timeout (15 s here), /healthz stays 200.
    let nodes: Vec<String> = topology.servers().iter().map(|s| s.addr()).collect();
    for node in &nodes {
        if topology.node_by_addr(node).is_running() {
            topology.node_by_addr(node).stop().await;
        }
    }
    let probe = Client::new(&a.url);
    support::assert_readiness_drops_after(&probe, Duration::from_secs(15)).await;
    assert_eq!(probe.get_with("/healthz", &[]).await.status, StatusCode::OK);
}
