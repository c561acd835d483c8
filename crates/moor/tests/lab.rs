//! The lab as real processes: `inventory` instances behind HAProxy, a Redis master with 2 replicas and 3
//! Sentinels, brought up in a temporary directory on a free base port, then every fault-injection primitive
//! the chaos scenarios use, then `down --wipe`, after which no process and no tc filter is left.
//!
//! The apps are the real `inventory` binary. `cargo test -p moor` does not build another package's binary, so
//! the test looks for `target/<profile>/inventory` (built by `cargo build -p inventory`, or by `cargo test
//! --workspace`); when it is missing the test builds it, into `target/moor-lab-inventory/`: the running
//! `cargo test` holds the lock of its own target directory, and a nested `cargo build` there would wait for
//! it forever.
//!
//! Needs root (the partition installs tc filters on `lo`), redis-server and haproxy.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use moor::lab::{Driver, Lab, LabConfig, LabGuard, MemberKind, Role, Signal, find_free_base_port};

/// The real `inventory` binary (built if missing; see the module documentation).
fn inventory_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/lab-<hash> → target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let beside = profile_dir.join("inventory");
    if beside.exists() {
        return beside;
    }
    let target = profile_dir.parent().expect("target/").join("moor-lab-inventory");
    let release = profile_dir.file_name().is_some_and(|p| p == "release");
    eprintln!(
        "{} is missing: building it into {} (cargo build -p inventory)",
        beside.display(),
        target.display()
    );
    let mut build = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build
        .args(["build", "-p", "inventory"])
        .env("CARGO_TARGET_DIR", &target);
    if release {
        build.arg("--release");
    }
    let status = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("running cargo build -p inventory");
    assert!(status.success(), "cargo build -p inventory failed");
    target
        .join(if release { "release" } else { "debug" })
        .join("inventory")
}

/// A lab configuration in a fresh directory on a base port whose whole range is free.
fn config(dir: &tempfile::TempDir, apps: usize, driver: Driver) -> LabConfig {
    let base_port = find_free_base_port(20_000..30_000, apps, driver).expect("a free range of ports");
    LabConfig {
        dir: dir.path().join("lab"),
        apps,
        driver,
        base_port,
        down_after_ms: 1000,
        inventory_bin: Some(inventory_bin()),
    }
}

/// Whether `pid` is a live process (a zombie is not).
fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat.rsplit_once(')')?.1.split_whitespace().next()? != "Z"))
        .unwrap_or(false)
}

/// What `tc` lists for this lab's filters (its base port is their `pref`), and whether its drop device
/// exists.
fn tc_traces(base_port: u16) -> (String, bool) {
    let filters = std::process::Command::new("tc")
        .args([
            "filter",
            "show",
            "dev",
            "lo",
            "parent",
            "ffff:",
            "pref",
            &base_port.to_string(),
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let device = std::process::Command::new("ip")
        .args(["link", "show", &format!("moor{base_port}")])
        .output()
        .is_ok_and(|o| o.status.success());
    (filters, device)
}

/// Whether a TCP connection from `from` (an address of this machine, any port) to `to` is established
/// within 500 ms.
async fn connects(from: &str, to: &str) -> bool {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("an IPv4 address"))
        .expect("bind to a loopback alias");
    let to = to.parse().expect("host:port");
    matches!(
        tokio::time::timeout(Duration::from_millis(500), socket.connect(to)).await,
        Ok(Ok(_))
    )
}

/// `GET /session` through `url` with one cookie jar: the JSON bodies.
async fn sessions(client: &reqwest::Client, url: &str, n: usize) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for _ in 0..n {
        let response = client
            .get(format!("{url}/session"))
            .send()
            .await
            .expect("GET /session");
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        out.push(response.json().await.expect("JSON"));
    }
    out
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client")
}

/// A SET on `addr` from 127.0.0.1 (not cut off by a partition): `Ok` or the server's error code.
async fn try_write(addr: &str) -> Result<(), String> {
    let client = redis::Client::open(format!("redis://{addr}/")).map_err(|e| e.to_string())?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(1)));
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())?;
    redis::cmd("SET")
        .arg("moor-lab-test")
        .arg("x")
        .query_async::<()>(&mut connection)
        .await
        .map_err(|e| e.code().unwrap_or("?").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_lab_comes_up_takes_faults_and_goes_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(&dir, 3, Driver::RedisSentinel);
    let base_port = cfg.base_port;
    let mut guard = LabGuard::new(&cfg.dir, true);

    let started = Instant::now();
    let lab = Lab::up(cfg.clone()).await.expect("lab up");
    eprintln!("lab up: {:?}", started.elapsed());
    assert_eq!(lab.url(), format!("http://127.0.0.1:{base_port}"));
    assert_eq!(lab.app_urls().len(), 3);
    assert_eq!(lab.sentinel_addrs().len(), 3);

    let status = lab.status().await.expect("status");
    eprintln!("{status}");
    assert!(status.all_healthy(), "{status}");
    assert_eq!(
        status.of_kind(MemberKind::App).filter(|m| m.healthy).count(),
        3,
        "{status}"
    );
    assert_eq!(status.count(Role::Master), 1, "{status}");
    assert_eq!(status.count(Role::Replica), 2, "{status}");
    assert_eq!(status.count(Role::Sentinel), 3, "{status}");
    assert_eq!(status.count(Role::Lb), 1, "{status}");
    let master = lab.redis_master().await.expect("master");
    assert_eq!(status.master.as_deref(), Some(master.as_str()));
    assert_eq!(master, lab.redis_nodes().await[0], "redis-1 starts as the master");

    // Idempotent: a second `up` starts nothing.
    let pids: Vec<Option<u32>> = status.members.iter().map(|m| m.pid).collect();
    let again = Lab::up(cfg.clone()).await.expect("lab up again");
    let status = again.status().await.expect("status");
    assert_eq!(status.members.iter().map(|m| m.pid).collect::<Vec<_>>(), pids);
    // And `open` attaches to the same lab.
    assert_eq!(Lab::open(&cfg.dir).expect("open").url(), lab.url());

    // Through HAProxy: one session, served round-robin by several instances.
    let user = client();
    let bodies = sessions(&user, &lab.url(), 6).await;
    let served_by: BTreeSet<&str> = bodies.iter().filter_map(|b| b["served_by"].as_str()).collect();
    assert!(served_by.len() >= 2, "round-robin over the apps: {bodies:?}");
    assert!(served_by.iter().all(|s| s.starts_with("app-")), "{served_by:?}");
    assert_eq!(bodies[5]["hits"], 6, "one session across instances: {bodies:?}");
    assert_eq!(bodies[0]["driver"], "redis");

    // kill -9 an app: HAProxy routes around it; start_app brings it back ready on a new pid.
    let old_pid = status
        .members
        .iter()
        .find(|m| m.name == "app-1")
        .and_then(|m| m.pid)
        .expect("pid");
    lab.signal_app(0, Signal::Kill).await.expect("kill app-1");
    assert!(!pid_alive(old_pid));
    let app1 = |s: &moor::lab::Status| {
        s.members
            .iter()
            .find(|m| m.name == "app-1")
            .cloned()
            .expect("app-1")
    };
    assert!(!app1(&lab.status().await.expect("status")).running);
    let bodies = sessions(&user, &lab.url(), 4).await;
    assert_eq!(
        bodies[3]["hits"], 10,
        "no request failed, nobody logged out: {bodies:?}"
    );
    let restart = Instant::now();
    lab.start_app(0).await.expect("start app-1");
    eprintln!("app restart to ready: {:?}", restart.elapsed());
    let app = app1(&lab.status().await.expect("status"));
    assert!(app.running && app.healthy, "{app:?}");
    assert_ne!(app.pid, Some(old_pid));
    lab.wait_healthy(Duration::from_secs(10))
        .await
        .expect("healthy again");

    // A planned failover moves the master; the old one rejoins as a replica; sessions follow.
    let failover = Instant::now();
    let old = lab.sentinel_failover().await.expect("SENTINEL FAILOVER");
    assert_eq!(old, master);
    let new = lab
        .wait_for_master_change(&old, Duration::from_secs(30))
        .await
        .expect("new master");
    eprintln!(
        "planned failover: new master {new} after {:?}",
        failover.elapsed()
    );
    assert_ne!(new, old);
    let following = lab
        .wait_rejoined(&old, Duration::from_secs(40))
        .await
        .expect("old master rejoins");
    eprintln!("{old} follows {following} (promoted: {new})");
    eprintln!(
        "old master {old} a replica of {new} after {:?}",
        failover.elapsed()
    );
    assert_eq!(lab.redis_role(&new).await.expect("role"), "master");
    let bodies = sessions(&user, &lab.url(), 1).await;
    assert_eq!(bodies[0]["hits"], 11, "{bodies:?}");

    // Partition the master from the replicas and the Sentinels (not from 127.0.0.1, where the apps and this
    // test connect from).
    let isolated = new.clone();
    let isolated_ip = isolated.split(':').next().expect("host");
    let peer = lab
        .redis_nodes()
        .await
        .into_iter()
        .find(|n| *n != isolated)
        .expect("a peer");
    let peer_ip = peer.split(':').next().expect("host").to_owned();
    let sentinel = lab.sentinel_addrs()[0].clone();
    assert!(connects(isolated_ip, &peer).await, "before the cut");
    let cut = Instant::now();
    let partition = lab.partition(&isolated).await.expect("partition");
    assert_eq!(partition.isolated(), isolated);
    assert!(!tc_traces(base_port).0.trim().is_empty(), "filters installed");
    assert!(!connects(isolated_ip, &peer).await, "isolated → data node is cut");
    assert!(
        !connects(isolated_ip, &sentinel).await,
        "isolated → Sentinel is cut"
    );
    assert!(
        !connects(&peer_ip, &isolated).await,
        "data node → isolated is cut"
    );
    assert!(connects("127.0.0.1", &isolated).await, "the apps still reach it");
    assert!(
        connects(&peer_ip, &sentinel).await,
        "the others still reach each other"
    );
    // The Sentinels see the master down and promote another node...
    let promoted = lab
        .wait_for_master_change(&isolated, Duration::from_secs(30))
        .await
        .expect("the Sentinels fail over");
    eprintln!("partition: {promoted} promoted after {:?}", cut.elapsed());
    // ... while the isolated node, which lost its replicas, refuses writes (min-replicas-to-write).
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        match try_write(&isolated).await {
            Err(code) if code == "NOREPLICAS" => break true,
            _ if Instant::now() >= deadline => break false,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert!(refused, "the isolated master still accepts writes");
    let status = lab.status().await.expect("status");
    assert_eq!(status.partition.as_deref(), Some(isolated.as_str()), "{status}");
    let cut_off = status
        .members
        .iter()
        .find(|m| m.addr == isolated)
        .expect("the isolated node");
    assert!(
        cut_off.running && !cut_off.healthy,
        "no replica in sync: {status}"
    );
    eprintln!("{status}");
    partition.heal().await.expect("heal");
    assert_eq!(
        tc_traces(base_port),
        (String::new(), false),
        "nothing left after heal"
    );
    let following = lab
        .wait_rejoined(&isolated, Duration::from_secs(40))
        .await
        .expect("the isolated node rejoins as a replica");
    eprintln!("{isolated} follows {following} (promoted: {promoted})");
    eprintln!(
        "partition healed: {isolated} a replica of {promoted} after {:?}",
        cut.elapsed()
    );
    lab.wait_healthy(Duration::from_secs(30))
        .await
        .expect("healthy after the partition");
    let bodies = sessions(&user, &lab.url(), 1).await;
    assert_eq!(bodies[0]["hits"], 12, "{bodies:?}");

    // Down without --wipe keeps the data (the seeds' PVCs): the next `up` restarts every process on its
    // directory and config as Sentinel last rewrote it, and the session is still there.
    let restart = Instant::now();
    lab.down(false).await.expect("lab down");
    let stopped = lab.status().await.expect("status");
    assert!(
        stopped.members.iter().all(|m| !m.running && m.pid.is_none()),
        "{stopped}"
    );
    let lab = Lab::up(cfg.clone()).await.expect("lab up on the kept data");
    eprintln!("down + up on the kept data: {:?}", restart.elapsed());
    let status = lab.status().await.expect("status");
    assert!(status.all_healthy(), "{status}");
    assert_eq!(
        status.master.as_deref(),
        Some(promoted.as_str()),
        "the master stays where Sentinel put it"
    );
    let bodies = sessions(&user, &lab.url(), 1).await;
    assert_eq!(bodies[0]["hits"], 13, "{bodies:?}");

    // Down with --wipe: no process, no filter, no files.
    let pids: Vec<u32> = lab
        .status()
        .await
        .expect("status")
        .members
        .iter()
        .filter_map(|m| m.pid)
        .collect();
    assert_eq!(pids.len(), 3 + 1 + 3 + 3, "every member ran");
    let down = Instant::now();
    lab.down(true).await.expect("lab down --wipe");
    eprintln!("lab down: {:?}", down.elapsed());
    guard.disarm();
    let alive: Vec<u32> = pids.into_iter().filter(|p| pid_alive(*p)).collect();
    assert!(alive.is_empty(), "still running after down: {alive:?}");
    assert_eq!(tc_traces(base_port), (String::new(), false));
    assert!(!cfg.dir.join("state.json").exists());
    assert!(!cfg.dir.exists(), "the lab directory is gone");
    eprintln!("whole test: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_and_standalone_redis_labs_run_without_sentinels() {
    for (driver, apps, session_driver) in [(Driver::Sql, 1, "database"), (Driver::Redis, 2, "redis")] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(&dir, apps, driver);
        let _guard = LabGuard::new(&cfg.dir, true);
        let lab = Lab::up(cfg.clone()).await.expect("lab up");
        let status = lab.status().await.expect("status");
        assert!(status.all_healthy(), "{status}");
        assert_eq!(status.count(Role::Sentinel), 0, "{status}");
        assert_eq!(status.count(Role::App), apps, "{status}");
        let user = client();
        let bodies = sessions(&user, &lab.url(), 2).await;
        assert_eq!(bodies[1]["hits"], 2, "{bodies:?}");
        assert_eq!(bodies[0]["driver"], session_driver);
        match driver {
            Driver::Sql => {
                assert!(lab.redis_master().await.is_err());
                assert!(status.master.is_none());
            }
            _ => {
                assert_eq!(status.count(Role::Master), 1, "{status}");
                assert_eq!(
                    lab.redis_master().await.expect("master"),
                    lab.redis_nodes().await[0]
                );
                assert!(
                    lab.partition(&lab.redis_nodes().await[0]).await.is_err(),
                    "no Sentinels to cut off from"
                );
            }
        }
        // Stopped without --wipe, the lab keeps its data and comes back with the same users and sessions.
        lab.down(false).await.expect("down");
        assert!(
            lab.status()
                .await
                .expect("status")
                .members
                .iter()
                .all(|m| !m.running)
        );
        let lab = Lab::up(cfg.clone()).await.expect("up again");
        assert!(lab.status().await.expect("status").all_healthy());
        let bodies = sessions(&user, &lab.url(), 1).await;
        assert_eq!(
            bodies[0]["hits"], 3,
            "the session survived down and up: {bodies:?}"
        );
        lab.down(true).await.expect("down --wipe");
    }
}
