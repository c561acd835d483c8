//! [`audit`]: what the keys under a prefix are, read with the store's own layout and codec, so a restore
//! drill (or an operator) can tell that a Redis holds sessions the app can load, not just keys.
//!
//! Each key under the prefix is classified as the store writes it (see `store` and `throttle`):
//!
//! | key after the prefix | what | check |
//! |---|---|---|
//! | 14 base64url characters | a session | a hash that the store's own `decode` reads; its deadline decides expired |
//! | `u:<user>` | a user index | a sorted set |
//! | `t:{<attempt key>}` and `...}b` | a login-throttle counter or block | a string |
//! | anything else | another application's key (with an empty prefix) | none: counted as `other` |
//!
//! A key of a store layout with the wrong type, or a session hash that does not decode, is listed in
//! [`Audit::undecodable`] with the reason. The audit only reads (`SCAN`, `TYPE`, `HGETALL`), so it may run on
//! a replica. Keys are read in batches of [`BATCH`], two pipelined round trips per batch.

use std::collections::HashSet;

use mooring::now_ms;
use redis::aio::MultiplexedConnection;
use redis::{ConnectionInfo, Value};

use crate::error::{RedisStoreError, Result};

/// Keys asked for per `SCAN`, and read per pipeline.
const BATCH: usize = 500;
/// The most undecodable keys [`Audit::undecodable`] lists (all are counted).
pub const MAX_LISTED: usize = 100;
/// The length of a session key after the prefix (see `RedisStore::key`).
const SESSION_KEY_LEN: usize = 14;

/// What [`audit`] found under a prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audit {
    /// Sessions that decode and whose deadline has not passed.
    pub sessions: u64,
    /// Of those, sessions with a signed-in user.
    pub signed_in: u64,
    /// Distinct signed-in users (the `@u` field) among those sessions.
    pub users: u64,
    /// User index keys (`<prefix>u:<user>`).
    pub user_indexes: u64,
    /// Login-throttle keys (`<prefix>t:{...}`).
    pub throttle_keys: u64,
    /// Sessions that decode but whose absolute deadline has passed (Redis has not expired them yet).
    pub expired: u64,
    /// Keys under the prefix that are none of the store's (another application's, with an empty prefix).
    pub other: u64,
    /// Keys of the store's layout that cannot be read as such: how many in all.
    pub undecodable_count: u64,
    /// The first [`MAX_LISTED`] of them: the key (lossy UTF-8) and why.
    pub undecodable: Vec<(String, String)>,
}

/// Which of the store's keys a key (after the prefix) is, by its name alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Session,
    UserIndex,
    Throttle,
    Other,
}

fn classify(rest: &[u8]) -> Class {
    if rest.len() == SESSION_KEY_LEN
        && rest
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    {
        Class::Session
    } else if rest.starts_with(b"u:") {
        Class::UserIndex
    } else if rest.starts_with(b"t:{") {
        Class::Throttle
    } else {
        Class::Other
    }
}

/// Counts as it goes; users are kept as a set so that nodes of a Cluster add up.
#[derive(Default)]
struct Tally {
    audit: Audit,
    users: HashSet<String>,
}

impl Tally {
    fn undecodable(&mut self, key: &[u8], why: impl Into<String>) {
        self.audit.undecodable_count += 1;
        if self.audit.undecodable.len() < MAX_LISTED {
            self.audit
                .undecodable
                .push((String::from_utf8_lossy(key).into_owned(), why.into()));
        }
    }

    fn session(&mut self, key: &[u8], fields: Value, now: u64) {
        let flat = match fields {
            Value::Array(flat) => flat,
            Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            other => return self.undecodable(key, format!("HGETALL answered {other:?}")),
        };
        if flat.is_empty() {
            return; // expired or deleted between SCAN and HGETALL
        }
        match crate::store::decode(flat) {
            Err(err) => self.undecodable(key, err.to_string()),
            Ok((record, _)) if record.deadline <= now => self.audit.expired += 1,
            Ok((record, _)) => {
                self.audit.sessions += 1;
                if let Some(user) = record.user {
                    self.audit.signed_in += 1;
                    self.users.insert(user);
                }
            }
        }
    }

    fn finish(mut self) -> Audit {
        self.audit.users = self.users.len() as u64;
        self.audit
    }
}

/// Audits the keys under `prefix` on one node (a standalone server, a master or a replica).
pub async fn audit(info: ConnectionInfo, prefix: &str) -> Result<Audit> {
    audit_nodes(vec![info], prefix).await
}

/// Audits the keys under `prefix` on every node of `nodes` (the masters of a Cluster, from
/// [`crate::RedisConfig::cluster_masters`]) and adds them up; a user signed in on several nodes counts once.
pub async fn audit_nodes(nodes: Vec<ConnectionInfo>, prefix: &str) -> Result<Audit> {
    let mut tally = Tally::default();
    for info in nodes {
        let mut conn = redis::Client::open(info)?
            .get_multiplexed_async_connection()
            .await?;
        audit_node(&mut conn, prefix, &mut tally).await?;
    }
    Ok(tally.finish())
}

async fn audit_node(conn: &mut MultiplexedConnection, prefix: &str, tally: &mut Tally) -> Result<()> {
    let pattern = format!("{}*", glob_escape(prefix));
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(BATCH)
            .query_async(conn)
            .await?;
        audit_batch(conn, prefix, &keys, tally).await?;
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

async fn audit_batch(
    conn: &mut MultiplexedConnection,
    prefix: &str,
    keys: &[Vec<u8>],
    tally: &mut Tally,
) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("TYPE").arg(key);
    }
    let types: Vec<String> = pipe.query_async(conn).await?;
    let mut sessions = Vec::new();
    for (key, kind) in keys.iter().zip(&types) {
        let rest = key.strip_prefix(prefix.as_bytes()).unwrap_or(key);
        match (classify(rest), kind.as_str()) {
            (_, "none") => {} // gone since the SCAN
            (Class::Session, "hash") => sessions.push(key),
            (Class::UserIndex, "zset") => tally.audit.user_indexes += 1,
            (Class::Throttle, "string") => tally.audit.throttle_keys += 1,
            (Class::Other, _) => tally.audit.other += 1,
            (class, kind) => {
                let wanted = match class {
                    Class::Session => "a hash (a session)",
                    Class::UserIndex => "a sorted set (a user index)",
                    _ => "a string (a login-throttle key)",
                };
                tally.undecodable(key, format!("a {kind}, not {wanted}"));
            }
        }
    }
    if sessions.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for key in &sessions {
        pipe.cmd("HGETALL").arg(key);
    }
    let hashes: Vec<Value> = pipe.query_async(conn).await?;
    if hashes.len() != sessions.len() {
        return Err(RedisStoreError::Shape(format!(
            "{} answers to {} HGETALL",
            hashes.len(),
            sessions.len()
        )));
    }
    let now = now_ms();
    for (key, fields) in sessions.into_iter().zip(hashes) {
        tally.session(key, fields, now);
    }
    Ok(())
}

/// Escapes the glob characters of a `SCAN MATCH` pattern (shared with `moor backup`, which scans the same keys).
pub fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {

    use std::time::Duration;

    use mooring::{AttemptKey, AttemptStore, Policy, Record, SessionId, SessionStore};
    use mooring_conformance::redis::{Options, cluster, standalone};

    use super::*;
    use crate::{RedisConfig, RedisStore, Topology};

    #[test]
    fn keys_are_classified_by_the_store_layout() {
        assert_eq!(classify(b"AbCdEfGhIj-_12"), Class::Session);
        assert_eq!(classify(b"u:ada"), Class::UserIndex);
        assert_eq!(classify(b"t:{login:ada}"), Class::Throttle);
        assert_eq!(classify(b"t:{login:ada}b"), Class::Throttle);
        for other in [&b"AbCdEfGhIj-_1"[..], b"AbCdEfGhIj+_12", b"other-app:key", b""] {
            assert_eq!(classify(other), Class::Other, "{other:?}");
        }
    }

    #[test]
    fn undecodable_keys_are_all_counted_and_the_list_is_capped() {
        let mut tally = Tally::default();
        for i in 0..150 {
            tally.session(
                format!("k{i}").as_bytes(),
                Value::Array(vec![
                    Value::BulkString(b"n".to_vec()),
                    Value::BulkString(b"1".to_vec()),
                ]),
                0,
            );
        }
        let audit = tally.finish();
        assert_eq!(audit.undecodable_count, 150);
        assert_eq!(audit.undecodable.len(), MAX_LISTED);
        assert!(
            audit.undecodable[0].1.contains("no metadata field"),
            "{:?}",
            audit.undecodable[0]
        );
    }

    fn policy() -> Policy {
        Policy {
            idle: Duration::from_secs(600),
            max_record_bytes: 4096,
            max_sessions_per_user: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_real_redis_is_read_with_the_store_codec() {
        let server = standalone(Options::default()).await;
        let mut config = RedisConfig::new(Topology::Standalone { url: server.url() });
        config.prefix = "app[1]:".to_owned();
        let store = RedisStore::connect(config).await.expect("connect");
        let now = now_ms();
        // 5 sessions: 3 signed in (ada twice, bob once), 2 anonymous.
        for user in [Some("ada"), Some("ada"), Some("bob"), None, None] {
            let record = Record {
                created_at: now,
                deadline: now + 3_600_000,
                user: user.map(str::to_owned),
                attrs: [("cart".to_owned(), "3 pommes, 2 Äpfel".as_bytes().to_vec())].into(),
            };
            let key = SessionId::generate().store_key();
            store.create(&key, &record, &policy()).await.expect("create");
        }
        store
            .throttle()
            .record_failure(&AttemptKey::new("login", &["ada"]), Duration::from_secs(60))
            .await
            .expect("throttle");
        let mut conn = server.connect().await;
        // A session hash whose deadline passed (the key's TTL is still running), one without metadata, a user
        // index of the wrong type, and another application's key.
        let mut meta = 1u32.to_be_bytes().to_vec();
        meta.extend_from_slice(&(now - 10_000).to_be_bytes()[2..]);
        meta.extend_from_slice(&5_000u32.to_be_bytes());
        let () = redis::cmd("HSET")
            .arg("app[1]:ExpiredSess1on")
            .arg("")
            .arg(meta)
            .query_async(&mut conn)
            .await
            .expect("HSET");
        let () = redis::cmd("HSET")
            .arg("app[1]:BrokenSess1on_")
            .arg("n")
            .arg("1")
            .query_async(&mut conn)
            .await
            .expect("HSET");
        let () = redis::cmd("SET")
            .arg("app[1]:u:mallory")
            .arg("x")
            .query_async(&mut conn)
            .await
            .expect("SET");
        let () = redis::cmd("SET")
            .arg("app[1]:notes")
            .arg("x")
            .query_async(&mut conn)
            .await
            .expect("SET");
        let () = redis::cmd("SET")
            .arg("app[2]:AbCdEfGhIjKlMn")
            .arg("outside the prefix")
            .query_async(&mut conn)
            .await
            .expect("SET");

        let found = audit(server.connection_info(), "app[1]:").await.expect("audit");
        let mut undecodable = found.undecodable.clone();
        undecodable.sort();
        assert_eq!(
            (
                found.sessions,
                found.signed_in,
                found.users,
                found.user_indexes,
                found.expired,
                found.other,
                found.undecodable_count
            ),
            (5, 3, 2, 2, 1, 1, 2),
            "{found:?}"
        );
        assert_eq!(found.throttle_keys, 1, "{found:?}");
        assert_eq!(undecodable[0].0, "app[1]:BrokenSess1on_");
        assert!(undecodable[0].1.contains("no metadata"), "{undecodable:?}");
        assert_eq!(undecodable[1].0, "app[1]:u:mallory");
        assert!(undecodable[1].1.contains("not a sorted set"), "{undecodable:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_masters_of_a_cluster_add_up_and_a_user_counts_once() {
        let cluster = cluster(3, 0).await;
        let nodes: Vec<String> = cluster.nodes().iter().map(|n| n.addr()).collect();
        let mut config = RedisConfig::new(Topology::Cluster { nodes });
        config.prefix = "app:".to_owned();
        let store = RedisStore::connect(config.clone()).await.expect("connect");
        let now = now_ms();
        for i in 0..30u8 {
            let record = Record {
                created_at: now,
                deadline: now + 3_600_000,
                user: (i < 9).then(|| "grace".to_owned()),
                attrs: [("n".to_owned(), vec![i])].into(),
            };
            store
                .create(&SessionId::generate().store_key(), &record, &policy())
                .await
                .expect("create");
        }
        let masters: Vec<ConnectionInfo> = config
            .cluster_masters()
            .await
            .expect("masters")
            .into_iter()
            .map(|(_, info)| info)
            .collect();
        assert_eq!(masters.len(), 3);
        let found = audit_nodes(masters, "app:").await.expect("audit");
        assert_eq!(
            (
                found.sessions,
                found.signed_in,
                found.users,
                found.user_indexes,
                found.undecodable_count
            ),
            (30, 9, 1, 1, 0),
            "{found:?}"
        );
    }

    #[test]
    fn prefixes_are_escaped_for_scan() {
        assert_eq!(glob_escape("app:*[x]?\\"), "app:\\*\\[x\\]\\?\\\\");
    }
}
