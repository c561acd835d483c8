//! `moor backup` and `moor restore`, run as the operator runs them, against a real Sentinel topology (1 master,
//! 2 replicas, 3 Sentinels, password set). Sessions written through the real store come back after every key
//! is lost: same records, same versions, same absolute expiries, same user index. The backup reads a replica;
//! the restore finds the master through the Sentinels, skips what expired meanwhile and keeps what is newer.
//! On a real Redis Cluster (3 masters), the backup reads every master and the restore routes each key to the
//! master of its slot.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mooring::{Delta, Policy, Record, SessionId, SessionStore, StoreKey, now_ms};
use mooring_conformance::redis::{Options, SentinelOptions, cluster_with_options, sentinel_topology};
use mooring_redis::{RedisConfig, RedisStore, Topology};
use redis::aio::MultiplexedConnection;

const PASSWORD: &str = "backup test p@ss";
const PREFIX: &str = "app:";

fn policy() -> Policy {
    Policy {
        idle: Duration::from_secs(600),
        max_record_bytes: 4096,
        max_sessions_per_user: None,
    }
}

/// Runs the `moor` binary with a clean Redis environment plus `env`; returns its stdout, or panics with its
/// output.
fn moor(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_moor"));
    for name in [
        "REDIS_URL",
        "REDIS_SENTINELS",
        "REDIS_CLUSTER_NODES",
        "REDIS_PREFIX",
        "REDIS_PASSWORD",
    ] {
        cmd.env_remove(name);
    }
    let out = cmd
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run moor");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "moor {args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Every key under the prefix: its `DUMP` payload and absolute expiry.
async fn snapshot(conn: &mut MultiplexedConnection) -> BTreeMap<String, (Vec<u8>, i64)> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{PREFIX}*"))
        .query_async(conn)
        .await
        .expect("KEYS");
    let mut out = BTreeMap::new();
    for key in keys {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(conn)
            .await
            .expect("DUMP");
        let expiry: i64 = redis::cmd("PEXPIRETIME")
            .arg(&key)
            .query_async(conn)
            .await
            .expect("PEXPIRETIME");
        out.insert(key, (dump, expiry));
    }
    out
}

async fn dbsize(conn: &mut MultiplexedConnection) -> u64 {
    redis::cmd("DBSIZE").query_async(conn).await.expect("DBSIZE")
}

fn url(addr: &str) -> String {
    format!(
        "redis://:{}@{addr}",
        PASSWORD.replace('@', "%40").replace(' ', "%20")
    )
}

/// The servers' settings of the chart and the lab that concern a restore: RESTORE payloads are validated in
/// full (`sanitize-dump-payload yes`), and normal clients' output buffers are bounded.
fn hardened(options: Options) -> Options {
    options
        .with_config("sanitize-dump-payload", "yes")
        .with_config("client-output-buffer-limit", "normal 64mb 16mb 60")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_come_back_after_every_key_is_lost() {
    let mut options = SentinelOptions::default().with_password(PASSWORD);
    options.server = hardened(options.server);
    let topology = sentinel_topology(options).await;
    let mut config = RedisConfig::new(Topology::Sentinel {
        sentinels: topology.sentinel_addrs(),
        master: topology.master_name().to_owned(),
        sentinel_username: None,
        sentinel_password: None,
    });
    config.password = Some(PASSWORD.to_owned());
    config.prefix = PREFIX.to_owned();
    let store = RedisStore::connect(config).await.expect("connect");
    assert!(store.wait_replicas().is_some(), "writes wait for the replicas");

    // 12 sessions: 4 signed in as ada, some written twice; one ends 1.5 s from now (it expires before the
    // restore); and a key of another app, outside the prefix.
    let mut sessions: Vec<(StoreKey, Record)> = Vec::new();
    for i in 0..12u8 {
        let key = SessionId::generate().store_key();
        let record = Record {
            created_at: now_ms(),
            deadline: now_ms() + if i == 11 { 1_500 } else { 3_600_000 },
            user: (i < 4).then(|| "ada".to_owned()),
            attrs: [("n".to_owned(), vec![1, i])].into(),
        };
        store.create(&key, &record, &policy()).await.expect("create");
        if i % 3 == 0 {
            let mut delta = Delta::default();
            delta.set.insert("cart".to_owned(), b"3 apples".to_vec());
            store.apply(&key, &delta, &policy()).await.expect("apply");
        }
        sessions.push((key, record));
    }
    let master_addr = store.master_addr().expect("master");
    let mut master = redis::Client::open(url(&master_addr))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("master connection");
    let () = redis::cmd("SET")
        .arg("other-app:key")
        .arg("not ours")
        .query_async(&mut master)
        .await
        .expect("SET");
    let before = snapshot(&mut master).await;
    assert_eq!(
        before.len(),
        13,
        "12 sessions and ada's index: {:?}",
        before.keys()
    );

    // Back up from a replica (the writes waited for it).
    let replica = topology
        .servers()
        .iter()
        .map(|s| s.addr())
        .find(|a| *a != master_addr)
        .expect("a replica");
    // Into a directory, twice, keeping one: what the chart's CronJob does.
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_arg = dir.path().to_str().expect("utf-8 path");
    for _ in 0..2 {
        let said = moor(
            &[
                "backup",
                "--url",
                &url(&replica),
                "--prefix",
                PREFIX,
                "--out",
                dir_arg,
                "--keep",
                "1",
            ],
            &[],
        );
        assert!(said.contains("backed up 13 keys"), "{said}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(
        files.len(),
        1,
        "--keep 1 leaves the newest backup only: {files:?}"
    );
    let file = files[0].clone();
    let file_arg = file.to_str().expect("utf-8 path");

    // Lose everything; wait for the short session's deadline; meanwhile one session is written again (newer
    // than the backup).
    let () = redis::cmd("FLUSHALL")
        .query_async(&mut master)
        .await
        .expect("FLUSHALL");
    for (key, _) in &sessions {
        assert_eq!(store.load(key, &policy()).await.expect("load"), None, "lost");
    }
    let (newer_key, newer) = &sessions[5];
    let rewritten = Record {
        attrs: [("n".to_owned(), vec![9, 9])].into(),
        ..newer.clone()
    };
    store
        .create(newer_key, &rewritten, &policy())
        .await
        .expect("create newer");
    tokio::time::sleep(Duration::from_millis(1_600)).await;

    // Restore through the Sentinels, with the password from the app's variable.
    let sentinels = topology.sentinel_addrs().join(",");
    let said = moor(
        &[
            "restore",
            "--sentinel",
            &sentinels,
            "--master",
            topology.master_name(),
            "--in",
            file_arg,
        ],
        &[("REDIS_PASSWORD", PASSWORD)],
    );
    assert!(
        said.contains("restored 11 keys; skipped 1 expired and 1 that exist already"),
        "{said}"
    );

    let after = snapshot(&mut master).await;
    for (key, (dump, expiry)) in &before {
        let short = store.session_key(&sessions[11].0);
        let newer = store.session_key(newer_key);
        match after.get(key) {
            _ if *key == short => assert!(!after.contains_key(key), "the expired session stays gone"),
            Some(_) if *key == newer => {}
            Some((d, e)) => {
                assert_eq!(d, dump, "{key}: same content");
                assert_eq!(e, expiry, "{key}: same absolute expiry");
            }
            None => panic!("{key} was not restored"),
        }
    }
    let exists: i64 = redis::cmd("EXISTS")
        .arg("other-app:key")
        .query_async(&mut master)
        .await
        .expect("EXISTS");
    assert_eq!(exists, 0, "keys outside the prefix are not in the backup");
    for (i, (key, record)) in sessions.iter().enumerate().take(11) {
        let loaded = store
            .load(key, &policy())
            .await
            .expect("load")
            .expect("the session is back");
        if i == 5 {
            assert_eq!(loaded.record, rewritten, "the newer session was kept");
            continue;
        }
        assert_eq!(loaded.record.attrs["n"], record.attrs["n"]);
        assert_eq!(loaded.record.user, record.user);
        assert_eq!(loaded.version, if i % 3 == 0 { 2 } else { 1 });
    }
    let mut ada: Vec<StoreKey> = store
        .list_user("ada", 100)
        .await
        .expect("list")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    ada.sort();
    let mut want: Vec<StoreKey> = sessions[..4].iter().map(|(k, _)| k.clone()).collect();
    want.sort();
    assert_eq!(ada, want, "the user index is back");

    refused_restores_write_nothing(&file, &url(&replica), &mut master).await;
}

/// A damaged file and a replica as target are refused with a clear message, and nothing is written.
async fn refused_restores_write_nothing(file: &Path, replica_url: &str, master: &mut MultiplexedConnection) {
    let () = redis::cmd("FLUSHALL")
        .query_async(master)
        .await
        .expect("FLUSHALL");
    let bytes = std::fs::read(file).expect("read");
    let cut = file.with_extension("cut");
    std::fs::write(&cut, &bytes[..bytes.len() - 20]).expect("write");
    let config = moor::backup::config(Some(&url("127.0.0.1:1")), &[], "", |_| None).expect("config");
    let target = moor::backup::target(&config).await.expect("target");
    let err = moor::backup::restore(target, &cut, false)
        .await
        .expect_err("a truncated file is refused");
    assert!(format!("{err:#}").contains("truncated backup"), "{err:#}");
    let config = moor::backup::config(Some(replica_url), &[], "", |_| None).expect("config");
    let target = moor::backup::target(&config).await.expect("target");
    let err = moor::backup::restore(target, file, false)
        .await
        .expect_err("a replica is refused");
    assert!(format!("{err:#}").contains("is a replica"), "{err:#}");
    assert_eq!(dbsize(master).await, 0, "a refused restore writes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_backup_reads_every_master_and_restores_by_slot() {
    let cluster = cluster_with_options(hardened(Options::default().with_password(PASSWORD)), 3, 0).await;
    let nodes: Vec<String> = cluster.nodes().iter().map(|n| n.addr()).collect();
    let mut config = RedisConfig::new(Topology::Cluster { nodes: nodes.clone() });
    config.password = Some(PASSWORD.to_owned());
    config.prefix = PREFIX.to_owned();
    let store = RedisStore::connect(config).await.expect("connect");
    let mut sessions = Vec::new();
    for i in 0..24u8 {
        let key = SessionId::generate().store_key();
        let record = Record {
            created_at: now_ms(),
            deadline: now_ms() + 3_600_000,
            user: (i < 5).then(|| "grace".to_owned()),
            attrs: [("n".to_owned(), vec![2, i])].into(),
        };
        store.create(&key, &record, &policy()).await.expect("create");
        sessions.push((key, record));
    }
    let mut conns = Vec::new();
    for node in cluster.nodes() {
        conns.push(node.connect().await);
    }
    let mut before = BTreeMap::new();
    let mut holding = 0;
    for conn in &mut conns {
        let keys = snapshot(conn).await;
        holding += usize::from(!keys.is_empty());
        before.extend(keys);
    }
    assert_eq!(before.len(), 25, "24 sessions and grace's index");
    assert_eq!(holding, 3, "the keys are spread over the three masters");

    let env = [
        ("REDIS_CLUSTER_NODES", nodes.join(",")),
        ("REDIS_PASSWORD", PASSWORD.to_owned()),
        ("REDIS_PREFIX", PREFIX.to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cluster.moorbak");
    let file_arg = file.to_str().expect("utf-8 path");
    let said = moor(&["backup", "--out", file_arg], &env);
    assert!(said.contains("backed up 25 keys"), "{said}");

    for conn in &mut conns {
        let () = redis::cmd("FLUSHALL").query_async(conn).await.expect("FLUSHALL");
    }
    assert_eq!(
        store.load(&sessions[0].0, &policy()).await.expect("load"),
        None,
        "lost"
    );
    let said = moor(&["restore", "--in", file_arg], &env);
    assert!(
        said.contains("restored 25 keys; skipped 0 expired and 0 that exist already"),
        "{said}"
    );

    let mut after = BTreeMap::new();
    for conn in &mut conns {
        after.extend(snapshot(conn).await);
    }
    assert_eq!(
        after, before,
        "every key is back on its slot's master, same content and expiry"
    );
    for (key, record) in &sessions {
        let loaded = store
            .load(key, &policy())
            .await
            .expect("load")
            .expect("the session is back");
        assert_eq!(loaded.record.attrs, record.attrs);
    }
    assert_eq!(
        store.list_user("grace", 100).await.expect("list").len(),
        5,
        "the user index is back"
    );
    let again = moor(&["restore", "--in", file_arg], &env);
    assert!(
        again.contains("restored 0 keys; skipped 0 expired and 25 that exist already"),
        "{again}"
    );
}
