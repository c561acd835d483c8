//! `moor backup` and `moor restore`, run as the operator runs them, against a real Sentinel topology (1 master,
//! 2 replicas, 3 Sentinels, password set) and a real S3-compatible server (s3s-fs). Sessions written through
//! the real store come back after every key is lost: same records, same versions, same absolute expiries,
//! same user index, except the one ended after the backup, which the app database's revocation log keeps
//! gone. The backup reads an in-sync replica (its command counters show it); the restore finds the master
//! through the Sentinels, skips what expired meanwhile and keeps what is newer. A backup with one byte
//! changed, or signed with another key, is refused and writes nothing. `--keep` on S3 deletes the oldest
//! backups only; an unfinished upload is never listed. On a real Redis Cluster (3 masters), the backup
//! reads every master and the restore routes each key to the master of its slot.

#[path = "support/s3.rs"]
mod s3;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use mooring::{Delta, Policy, Record, RevocationLog, SessionId, SessionStore, StoreKey, now_ms};
use mooring_conformance::provision;
use mooring_conformance::redis::{
    Options, SentinelOptions, cluster_with_options, sentinel_topology, standalone,
};
use mooring_redis::{RedisConfig, RedisStore, Topology};
use mooring_sql::SqlRevocationLog;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt};
use redis::aio::MultiplexedConnection;
use s3::S3Server;

const PASSWORD: &str = "backup test p@ss";
const PREFIX: &str = "app:";

fn policy() -> Policy {
    Policy {
        idle: Duration::from_secs(600),
        max_record_bytes: 4096,
        max_sessions_per_user: None,
    }
}

/// The key the tests sign backups with.
const BACKUP_KEY: &str = "a backup key of at least thirty-two bytes, for tests";

/// The `moor` binary with a clean environment (no Redis, S3, key or database settings inherited), the test
/// backup key, and `env`.
fn moor_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_moor"));
    for (name, _) in std::env::vars() {
        let ours = ["REDIS_", "AWS_", "BACKUP_", "APP_", "DATABASE_URL", "SESSION_"]
            .iter()
            .any(|p| name.starts_with(p));
        if ours {
            cmd.env_remove(name);
        }
    }
    cmd.env("BACKUP_KEY", BACKUP_KEY)
        .env("RUST_LOG", "warn")
        .args(args)
        .envs(env.iter().copied());
    cmd
}

/// Runs `moor` (see [`moor_command`]); returns its stdout and stderr, or panics with them.
fn moor_output(args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let out = moor_command(args, env).output().expect("run moor");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "moor {args:?} failed: {stdout}{stderr}");
    (stdout, stderr)
}

/// Runs `moor` (see [`moor_command`]); returns its stdout, or panics with its output.
fn moor(args: &[&str], env: &[(&str, &str)]) -> String {
    moor_output(args, env).0
}

/// Runs `moor`, which must fail with exit code 2; returns its stderr.
fn moor_refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = moor_command(args, env).output().expect("run moor");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "moor {args:?} must exit 2: {}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// `env` of an S3 server as `moor` takes it.
fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
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

/// The calls of `command` a server has answered since its counters were reset (`INFO commandstats`).
async fn calls(conn: &mut MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO commandstats");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a call count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_come_back_from_s3_without_the_ones_ended_since() {
    let mut options = SentinelOptions::default().with_password(PASSWORD);
    options.server = hardened(options.server);
    let mut topology = sentinel_topology(options).await;
    let mut config = RedisConfig::new(Topology::Sentinel {
        sentinels: topology.sentinel_addrs(),
        master: topology.master_name().to_owned(),
        sentinel_username: None,
        sentinel_password: None,
    });
    config.password = Some(PASSWORD.to_owned());
    config.prefix = PREFIX.to_owned();
    // The app's database, with its revocation log (an SQLite file the moor process opens too), which the
    // store writes every session it ends to.
    let db = provision::sqlite().await;
    let log = SqlRevocationLog::connect(&db.url, Duration::from_secs(3600))
        .await
        .expect("revocation log");
    let store = RedisStore::connect(config)
        .await
        .expect("connect")
        .with_revocation_log(std::sync::Arc::new(log.clone()));
    assert!(store.wait_replicas().is_some(), "writes wait for the replicas");
    let s3 = S3Server::start();
    let s3_env = s3.env();
    let bucket = s3.url("sessions/");

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

    // Back up through the Sentinels into S3, as the chart's CronJob does; count the DUMPs on each node.
    let mut nodes = Vec::new();
    for server in topology.servers() {
        let mut conn = server.connect().await;
        let () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut conn)
            .await
            .expect("CONFIG RESETSTAT");
        nodes.push((server.addr(), conn));
    }
    let sentinels = topology.sentinel_addrs().join(",");
    let master_name = topology.master_name().to_owned();
    let mut env = pairs(&s3_env);
    env.push(("REDIS_PASSWORD", PASSWORD));
    let redis_args = [
        "--sentinel",
        sentinels.as_str(),
        "--master",
        master_name.as_str(),
        "--prefix",
        PREFIX,
    ];
    let (said, logged) = moor_output(
        &[&["backup", "--out", bucket.as_str()][..], &redis_args[..]].concat(),
        &env,
    );
    assert!(said.contains("backed up 13 keys"), "{said}");
    assert!(said.contains("signed and encrypted"), "{said}");
    assert!(
        said.contains(" from 127.0.0.1:") && !said.contains(&format!(" from {master_addr} ")),
        "the summary names the replica it read: {said}{logged}"
    );
    let mut dumps = BTreeMap::new();
    for (addr, conn) in &mut nodes {
        dumps.insert(addr.clone(), calls(conn, "dump").await);
    }
    assert_eq!(
        dumps[&master_addr], 0,
        "the master does no backup work: {dumps:?}"
    );
    assert_eq!(
        dumps.values().filter(|n| **n > 0).count(),
        1,
        "one replica answered every DUMP: {dumps:?}"
    );
    assert!(dumps.values().any(|n| *n >= 13), "{dumps:?}");
    // `--from master` reads the master.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let out = elsewhere.path().join("from-master.moorbak");
    let said = moor(
        &[
            &[
                "backup",
                "--from",
                "master",
                "--out",
                out.to_str().expect("utf-8"),
            ][..],
            &redis_args[..],
        ]
        .concat(),
        &env,
    );
    assert!(said.contains("backed up 13 keys"), "{said}");
    let master_conn = &mut nodes
        .iter_mut()
        .find(|(a, _)| *a == master_addr)
        .expect("master")
        .1;
    assert!(
        calls(master_conn, "dump").await >= 13,
        "--from master reads the master"
    );

    // The object in S3 is encrypted: neither a session key nor a value shows in its bytes.
    let objects = s3.keys("sessions/");
    assert_eq!(objects.len(), 1, "{objects:?}");
    let object = std::fs::read(s3.object_path(&objects[0])).expect("read the object");
    assert!(object.starts_with(b"MOORBAK2\n"), "a signed backup");
    let shows = |needle: &[u8]| object.windows(needle.len()).any(|w| w == needle);
    for (key, _) in &sessions {
        assert!(
            !shows(store.session_key(key).as_bytes()),
            "a session key in plain text"
        );
    }
    assert!(!shows(b"3 apples"), "a session value in plain text");

    // One session ends after the backup: the store records it in the log, then deletes it.
    let (ended_key, _) = &sessions[7];
    store.delete(ended_key).await.expect("delete");
    let ended = store.session_key(ended_key);
    assert_eq!(
        log.find(std::slice::from_ref(&ended)).await.expect("find").len(),
        1,
        "the store logged the session it ended"
    );

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

    // Without the app's database, a restore is refused and says why.
    let why = moor_refused(
        &[&["restore", "--in", bucket.as_str()][..], &redis_args[..]].concat(),
        &env,
    );
    assert!(why.contains("--ignore-revocations"), "{why}");
    assert_eq!(dbsize(&mut master).await, 1, "the rewritten session only");

    // Restore from S3 through the Sentinels, with the password from the app's variable.
    let said = moor(
        &[
            &[
                "restore",
                "--in",
                bucket.as_str(),
                "--database-url",
                db.url.as_str(),
            ][..],
            &redis_args[..],
        ]
        .concat(),
        &env,
    );
    assert!(
        said.contains(
            "restored 10 keys; skipped 1 expired, 1 that exist already, 1 revoked since the backup"
        ),
        "{said}"
    );

    let after = snapshot(&mut master).await;
    let short = store.session_key(&sessions[11].0);
    let newer = store.session_key(newer_key);
    for (key, (dump, expiry)) in &before {
        match after.get(key) {
            _ if *key == short => assert!(!after.contains_key(key), "the expired session stays gone"),
            _ if *key == ended => assert!(!after.contains_key(key), "the ended session stays gone"),
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
        let loaded = store.load(key, &policy()).await.expect("load");
        if i == 7 {
            assert_eq!(loaded, None, "the ended session does not come back");
            continue;
        }
        let loaded = loaded.expect("the session is back");
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

    // Damaged and foreign backups: refused, nothing written.
    let () = redis::cmd("FLUSHALL")
        .query_async(&mut master)
        .await
        .expect("FLUSHALL");
    let dir = tempfile::tempdir().expect("tempdir");
    let header_digit = {
        let at = object
            .windows(17)
            .position(|w| w == b"\"created_at_ms\":1")
            .expect("the header's time");
        at + 17
    };
    let header_end = object.iter().skip(9).position(|&b| b == b'\n').expect("header") + 10;
    for (what, at) in [
        ("the header", header_digit),
        ("the body", header_end + (object.len() - header_end - 32) / 2),
        ("the signature", object.len() - 1),
    ] {
        let mut changed = object.clone();
        changed[at] = match (what, changed[at]) {
            ("the header", b'9') => b'8',
            ("the header", digit) => digit + 1,
            (_, byte) => byte ^ 0x01,
        };
        let file = dir.path().join(format!("changed-{at}.moorbak"));
        std::fs::write(&file, &changed).expect("write");
        let why = moor_refused(
            &[
                &[
                    "restore",
                    "--in",
                    file.to_str().expect("utf-8"),
                    "--ignore-revocations",
                ][..],
                &redis_args[..],
            ]
            .concat(),
            &env,
        );
        assert!(
            why.contains("signature does not match") && why.contains("nothing was restored"),
            "one byte of {what} changed: {why}"
        );
        assert_eq!(
            dbsize(&mut master).await,
            0,
            "{what}: a refused restore writes nothing"
        );
    }
    let mut other_key = env.clone();
    other_key.push(("BACKUP_KEY", "another backup key, thirty-two bytes or more"));
    let why = moor_refused(
        &[
            &["restore", "--in", bucket.as_str(), "--ignore-revocations"][..],
            &redis_args[..],
        ]
        .concat(),
        &other_key,
    );
    assert!(
        why.contains("signed with key") && why.contains("BACKUP_KEY is key"),
        "another key: {why}"
    );
    let replica = nodes
        .iter()
        .map(|(a, _)| a.clone())
        .find(|a| *a != master_addr)
        .expect("a replica");
    let why = moor_refused(
        &[
            "restore",
            "--in",
            bucket.as_str(),
            "--ignore-revocations",
            "--url",
            &url(&replica),
        ],
        &pairs(&s3_env),
    );
    assert!(why.contains("is a replica"), "{why}");
    assert_eq!(dbsize(&mut master).await, 0, "a refused restore writes nothing");

    // With no replica left, `--from replica` refuses and `--from auto` reads the master, and says so.
    let () = redis::cmd("SET")
        .arg(format!("{PREFIX}late"))
        .arg("1")
        .query_async(&mut master)
        .await
        .expect("SET");
    let replicas: Vec<String> = nodes
        .iter()
        .map(|(a, _)| a.clone())
        .filter(|a| *a != master_addr)
        .collect();
    for replica in &replicas {
        topology.node_by_addr(replica).stop().await;
    }
    let why = moor_refused(
        &[
            &["backup", "--from", "replica", "--out", bucket.as_str()][..],
            &redis_args[..],
        ]
        .concat(),
        &env,
    );
    assert!(why.contains("no replica is in sync"), "{why}");
    let (said, logged) = moor_output(
        &[&["backup", "--out", bucket.as_str()][..], &redis_args[..]].concat(),
        &env,
    );
    assert!(said.contains("backed up 1 keys"), "{said}");
    assert!(logged.contains("backing up from the master"), "{logged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_keeps_the_newest_backups_and_never_lists_an_unfinished_upload() {
    let server = standalone(Options::default().with_password(PASSWORD)).await;
    let mut conn = server.connect().await;
    let () = redis::cmd("SET")
        .arg(format!("{PREFIX}one"))
        .arg("1")
        .query_async(&mut conn)
        .await
        .expect("SET");
    let s3 = S3Server::start();
    let env = s3.env();
    let env = pairs(&env);
    let prefix = s3.url("nightly/");
    // Objects that are not sessions backups: another kind, another name, a sub-prefix.
    for foreign in [
        "nightly/database-1795000000000.moorbak",
        "nightly/notes.txt",
        "nightly/old/sessions-1795000000000.moorbak",
    ] {
        let path = s3.object_path(foreign);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, b"not ours").expect("write");
    }
    let redis_url = url(&server.addr());
    // The credentials also come from secret files (Kubernetes mounts), and the server takes the SSE and
    // storage-class headers moor sends.
    let secrets = tempfile::tempdir().expect("tempdir");
    let (id_file, secret_file) = (secrets.path().join("id"), secrets.path().join("secret"));
    std::fs::write(&id_file, format!("{}\n", s3.access_key)).expect("write");
    std::fs::write(&secret_file, &s3.secret_key).expect("write");
    let mut file_env: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .filter(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"))
        .collect();
    file_env.push(("AWS_ACCESS_KEY_ID_FILE", id_file.to_str().expect("utf-8")));
    file_env.push(("AWS_SECRET_ACCESS_KEY_FILE", secret_file.to_str().expect("utf-8")));
    file_env.push(("BACKUP_S3_SSE", "AES256"));
    file_env.push(("BACKUP_S3_STORAGE_CLASS", "STANDARD"));
    // Signed only: --no-encrypt, or BACKUP_ENCRYPT=false as the chart sets it.
    let mut plain_env = env.clone();
    plain_env.push(("BACKUP_ENCRYPT", "false"));
    let mut written = Vec::new();
    for run in 0..3 {
        let args = [
            "backup", "--url", &redis_url, "--prefix", PREFIX, "--out", &prefix, "--keep", "2",
        ];
        let said = match run {
            0 => moor(&[&args[..], &["--no-encrypt"][..]].concat(), &env),
            1 => moor(&[&args[..], &["--no-encrypt"][..]].concat(), &file_env),
            _ => moor(&args, &plain_env),
        };
        assert!(
            said.contains("backed up 1 keys") && said.contains("signed)"),
            "{said}"
        );
        written.push(said);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(written[2].contains("deleted the old backup"), "{}", written[2]);
    let left = s3.keys("nightly/");
    let sessions: Vec<&String> = left
        .iter()
        .filter(|k| k.starts_with("nightly/sessions-"))
        .collect();
    assert_eq!(sessions.len(), 2, "--keep 2: {left:?}");
    assert_eq!(left.len(), 5, "the foreign objects are left alone: {left:?}");
    let name = |said: &str| {
        said.split("/nightly/")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .expect("the backup's name")
            .to_owned()
    };
    assert!(
        !left.contains(&format!("nightly/{}", name(&written[0]))),
        "the oldest was deleted: {left:?}"
    );
    assert!(
        left.contains(&format!("nightly/{}", name(&written[2]))),
        "the newest is kept: {left:?}"
    );
    let plain = std::fs::read(s3.object_path(sessions[1])).expect("read");
    assert!(
        plain.windows(7).any(|w| w == b"app:one"),
        "--no-encrypt leaves the body readable (signed only)"
    );

    // An upload under the newest name that never completed is not a backup: neither listed nor restored.
    let unfinished = object_store::path::Path::from("nightly/sessions-9999999999999.moorbak");
    let store = s3_store(&s3);
    let mut upload = store.put_multipart(&unfinished).await.expect("start an upload");
    upload
        .put_part(vec![7u8; 1024].into())
        .await
        .expect("upload a part");
    let listed: Vec<String> = store
        .list_with_delimiter(Some(&object_store::path::Path::from("nightly")))
        .await
        .expect("list")
        .objects
        .into_iter()
        .map(|o| o.location.to_string())
        .collect();
    assert!(!listed.contains(&unfinished.to_string()), "{listed:?}");
    let () = redis::cmd("FLUSHALL")
        .query_async(&mut conn)
        .await
        .expect("FLUSHALL");
    let said = moor(
        &[
            "restore",
            "--url",
            &redis_url,
            "--in",
            &prefix,
            "--ignore-revocations",
        ],
        &env,
    );
    assert!(said.contains("restored 1 keys"), "{said}");
    assert!(
        said.contains(&name(&written[2])),
        "the newest complete backup: {said}"
    );
    upload.abort().await.expect("abort the upload");

    // An unsigned backup of an older moor: refused unless asked for, then restored with a warning.
    let legacy = moor::backup::encode(
        &moor::backup::Header {
            created_at_ms: now_ms(),
            source: server.addr(),
            prefix: PREFIX.to_owned(),
            keys: 1,
        },
        &[moor::backup::Entry {
            key: format!("{PREFIX}legacy").into_bytes(),
            expire_at_ms: None,
            payload: redis::cmd("DUMP")
                .arg(format!("{PREFIX}one"))
                .query_async(&mut conn)
                .await
                .expect("DUMP"),
        }],
    )
    .expect("encode");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("old.moorbak");
    std::fs::write(&file, legacy).expect("write");
    let file = file.to_str().expect("utf-8");
    let args = [
        "restore",
        "--url",
        &redis_url,
        "--in",
        file,
        "--ignore-revocations",
    ];
    let why = moor_refused(&args, &env);
    assert!(
        why.contains("unsigned") && why.contains("--accept-unsigned"),
        "{why}"
    );
    let (said, warned) = moor_output(&[&args[..], &["--accept-unsigned"][..]].concat(), &env);
    assert!(said.contains("restored 1 keys"), "{said}");
    assert!(warned.contains("unsigned backup"), "{warned}");

    // A standalone URL has no replicas to choose from.
    let why = moor_refused(
        &[
            "backup", "--url", &redis_url, "--out", &prefix, "--from", "replica",
        ],
        &env,
    );
    assert!(why.contains("needs a Sentinel topology"), "{why}");

    // A storage class the server does not know is refused by it, and the message says so.
    let why = moor_refused(
        &[
            "backup",
            "--url",
            &redis_url,
            "--out",
            &prefix,
            "--s3-storage-class",
            "NO_SUCH_CLASS",
        ],
        &env,
    );
    assert!(why.contains("InvalidStorageClass"), "{why}");
}

/// A plain object_store client of the server (not moor's), to do what moor never does.
fn s3_store(s3: &S3Server) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(&s3.bucket)
        .with_endpoint(&s3.endpoint)
        .with_region("us-east-1")
        .with_access_key_id(&s3.access_key)
        .with_secret_access_key(&s3.secret_key)
        .with_allow_http(true)
        .with_http_connector(moor::repo::TlsConnector)
        .build()
        .expect("an S3 client")
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
    let said = moor(&["restore", "--in", file_arg, "--ignore-revocations"], &env);
    assert!(
        said.contains(
            "restored 25 keys; skipped 0 expired, 0 that exist already, 0 revoked since the backup"
        ),
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
    let again = moor(&["restore", "--in", file_arg, "--ignore-revocations"], &env);
    assert!(
        again.contains(
            "restored 0 keys; skipped 0 expired, 25 that exist already, 0 revoked since the backup"
        ),
        "{again}"
    );
}
