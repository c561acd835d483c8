//! `moor backup` and `moor restore`: a logical backup of the sessions in Redis, taken and restored over the
//! network, with no downtime and no file access to the Redis host, kept in a directory or in S3, signed so a
//! changed byte is refused, and restored without bringing back the sessions that were ended since.
//!
//! # Why logical, not the RDB file
//!
//! Seed 003 backs Redis up by copying `dump.rdb` out of the pod, and restores by scaling Redis to zero,
//! copying the file into the volume and scaling up again. That restore stops every session for its duration,
//! needs the AOF turned off first (a server with `appendonly yes` loads its AOF, not the RDB), and replaces
//! everything, sessions created since the backup included. For sessions, something else is wanted:
//!
//! - **backup** `SCAN`s the keys under the prefix and takes `DUMP` (Redis's own serialization, with its
//!   CRC) and `PEXPIRETIME` (the absolute expiry) of each. On Sentinel it reads an in-sync replica
//!   ([`RedisConfig::in_sync_replica`], `--from auto`), so the master does no extra work; the master when no
//!   replica is in sync.
//! - **restore** sends `RESTORE key <expiry> <payload> ABSTTL` to the live master. A key keeps the absolute
//!   expiry it had: a session restored a day later has not gained a day. Keys whose expiry has passed are
//!   skipped. A key that exists already is a newer version of that session (or a user index updated since)
//!   and is kept, unless `--replace` is given. So a restore into a Redis that lost its data brings the
//!   sessions back, and a restore into a healthy one changes nothing that is newer.
//!
//! # No resurrection
//!
//! A session ended after the backup (sign-out, revocation, id rotation) is gone from Redis but still in the
//! backup. The store records every key it ends in the app database's revocation log
//! ([`mooring::RevocationLog`], `mooring_sql::SqlRevocationLog`) before it deletes it; a restore looks every
//! key of the backup up there first ([`restore_entries`]) and skips those it names. Without the app's
//! database (`--database-url`, `DATABASE_URL`) a restore is refused unless `--ignore-revocations` says to
//! bring them back.
//!
//! # The file
//!
//! A backup is one [`crate::archive`] envelope of [`Kind::Sessions`] (`MOORBAK2`: a JSON header with the
//! prefix and key count, the body encrypted by default, an HMAC over every byte; keys from `BACKUP_KEY` or
//! `APP_KEY`). The body is the entry stream older moors wrote as the whole file:
//!
//! ```text
//! MOORBAK1\n
//! {"created_at_ms":..,"source":"host:port","prefix":"..","keys":N}\n      (one JSON line)
//! N × [u32 key length][key][i64 expiry, unix ms, -1 for none][u32 payload length][payload]   (big-endian)
//! END1[u64 N]
//! ```
//!
//! [`fetch`] checks the signature over the whole file before it reads anything else, then every length and
//! the trailer of the body ([`decode`]); Redis checks each payload's CRC and RDB version. Nothing is written
//! unless all of that passes. An unsigned `MOORBAK1` file of an older moor is read only with
//! `--accept-unsigned`.
//!
//! # Where backups go
//!
//! [`Repo`]: a directory, a file, or `s3://bucket/prefix/`, each backup named `sessions-<unix ms>.moorbak`,
//! written whole (an S3 `PUT`, a renamed local file), pruned to the newest `--keep`; restore takes the newest.
//!
//! # Redis Cluster
//!
//! With `REDIS_CLUSTER_NODES`, backup `SCAN`s every master that holds slots (from `CLUSTER NODES`) and
//! restore sends each `RESTORE` through a Cluster connection, which routes it by the key's slot. A key is
//! never split across slots, so a backup taken on a Cluster restores into a Cluster of any shape, and into a
//! single node too.

use anyhow::{Context, bail, ensure};
use futures_util::StreamExt;
use mooring::now_ms;
use mooring_redis::{RedisConfig, Topology};
use redis::Value;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};

use crate::archive::{self, BackupKeys, Kind};
use crate::repo::Repo;

const MAGIC: &[u8] = b"MOORBAK1\n";
const TRAILER: &[u8] = b"END1";
/// Keys asked for per `SCAN` and sent per pipeline.
const BATCH: usize = 500;

/// The header line of a backup file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Header {
    /// When the backup was taken (unix ms).
    pub created_at_ms: u64,
    /// The nodes it was read from (`host:port`).
    pub source: String,
    /// The key prefix it covers (`""`: every key).
    pub prefix: String,
    /// Number of keys in the file.
    pub keys: u64,
}

/// One key of a backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: Vec<u8>,
    /// Absolute expiry in unix ms, or `None` for a key without TTL.
    pub expire_at_ms: Option<u64>,
    /// The `DUMP` payload.
    pub payload: Vec<u8>,
}

/// What a backup wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupSummary {
    /// Where it went (a file, or `s3://bucket/key`).
    pub location: String,
    /// Keys written.
    pub keys: u64,
    /// Keys that expired or were deleted between `SCAN` and `DUMP` (not in the backup).
    pub vanished: u64,
    /// Size of the backup in bytes.
    pub bytes: u64,
    /// Whether its body is encrypted.
    pub encrypted: bool,
    /// The nodes it was read from (`host:port`, comma-separated).
    pub source: String,
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Keys restored.
    pub restored: u64,
    /// Keys skipped because their expiry had passed.
    pub expired: u64,
    /// Keys skipped because they exist already (newer than the backup); 0 with `replace`.
    pub kept_existing: u64,
    /// Keys skipped because the revocation log says their session was ended after the backup.
    pub revoked: u64,
}

/// Where a backup reads and a restore writes.
pub enum Target {
    /// One node: the standalone URL, or the master the Sentinels name now.
    Node(Box<redis::ConnectionInfo>),
    /// A Redis Cluster.
    Cluster {
        /// Its masters that hold slots: a backup reads each.
        masters: Vec<redis::ConnectionInfo>,
        /// What a restore opens a connection that routes by slot with.
        config: Box<RedisConfig>,
    },
}

impl Target {
    /// The nodes a backup reads.
    pub fn sources(&self) -> Vec<redis::ConnectionInfo> {
        match self {
            Self::Node(info) => vec![(**info).clone()],
            Self::Cluster { masters, .. } => masters.clone(),
        }
    }
}

/// Finds the [`Target`] of `config`. The discovery, auth, db and TLS handling are the session store's own
/// ([`RedisConfig::current_node`], [`RedisConfig::cluster_masters`]).
pub async fn target(config: &RedisConfig) -> anyhow::Result<Target> {
    if matches!(config.topology, Topology::Cluster { .. }) {
        let masters = config
            .cluster_masters()
            .await
            .context("cannot list the Cluster's masters")?;
        let names: Vec<&str> = masters.iter().map(|(addr, _)| addr.as_str()).collect();
        tracing::info!(masters = %names.join(","), "using Redis Cluster");
        return Ok(Target::Cluster {
            masters: masters.into_iter().map(|(_, info)| info).collect(),
            config: Box::new(config.clone()),
        });
    }
    let (addr, info) = config
        .current_node()
        .await
        .context("cannot find the Redis node to use")?;
    tracing::info!(%addr, "using Redis node");
    Ok(Target::Node(Box::new(info)))
}

async fn connect(target: redis::ConnectionInfo) -> anyhow::Result<(MultiplexedConnection, String)> {
    let addr = target.addr().to_string();
    let conn = redis::Client::open(target)
        .context("Redis client")?
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("cannot connect to Redis at {addr}"))?;
    Ok((conn, addr))
}

/// The Redis configuration of the app: the app's own parser of its variables
/// ([`inventory::config::redis_config_from`], so `REDIS_URL` or `REDIS_HOST`/`REDIS_PORT`, `REDIS_SENTINELS`
/// and the Sentinel credentials, `REDIS_USERNAME`, `REDIS_PASSWORD`, the `*_FILE` forms, `REDIS_DB`,
/// `REDIS_TLS` mean here what they mean there), read through `var`, with the command line's `url`,
/// `sentinels` and `master` in place of `REDIS_URL`, `REDIS_SENTINELS` and `REDIS_SENTINEL_MASTER` (the flags
/// default to those variables).
pub fn config(
    url: Option<&str>,
    sentinels: &[String],
    master: &str,
    var: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<RedisConfig> {
    Ok(inventory::config::redis_config_from(|name| match name {
        "REDIS_URL" => url.map(str::to_owned),
        "REDIS_SENTINELS" => Some(sentinels.join(",")),
        "REDIS_SENTINEL_MASTER" => (!sentinels.is_empty()).then(|| master.to_owned()),
        _ => var(name),
    })?)
}

/// Which node a backup reads on a Sentinel topology (`--from`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReadFrom {
    /// An in-sync replica ([`RedisConfig::in_sync_replica`]) when there is one, else the master.
    #[default]
    Auto,
    /// The master.
    Master,
    /// An in-sync replica, or fail.
    Replica,
}

impl std::str::FromStr for ReadFrom {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "master" => Ok(Self::Master),
            "replica" => Ok(Self::Replica),
            other => Err(format!("'{other}' is not auto, master or replica")),
        }
    }
}

/// The nodes a backup of `config` reads: on Sentinel, an in-sync replica or the master as `from` says (the
/// choice is logged); a standalone URL's node as given; every master of a Cluster.
pub async fn sources(config: &RedisConfig, from: ReadFrom) -> anyhow::Result<Vec<redis::ConnectionInfo>> {
    let sentinel = matches!(config.topology, Topology::Sentinel { .. });
    if from == ReadFrom::Replica && !sentinel {
        bail!(
            "--from replica needs a Sentinel topology (REDIS_SENTINELS), which names the replicas; a standalone \
             URL is read as given, a Cluster from its masters"
        );
    }
    if sentinel && from != ReadFrom::Master {
        match config
            .in_sync_replica()
            .await
            .context("cannot ask the Sentinels for the replicas")?
        {
            Some((addr, info)) => {
                tracing::info!(%addr, "backing up from an in-sync replica");
                return Ok(vec![info]);
            }
            None if from == ReadFrom::Replica => {
                bail!("no replica is in sync with the master (see --from); nothing was backed up")
            }
            None => tracing::warn!("no replica is in sync with the master: backing up from the master"),
        }
    }
    Ok(target(config).await?.sources())
}

/// What a backup read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The nodes read (`host:port`).
    pub sources: Vec<String>,
    /// The keys.
    pub entries: Vec<Entry>,
    /// Keys that expired or were deleted between `SCAN` and `DUMP`.
    pub vanished: u64,
}

/// Reads every key under `prefix` from the nodes in `sources` (a master or a replica each; one node, or every
/// master of a Cluster).
pub async fn read(sources: Vec<redis::ConnectionInfo>, prefix: &str) -> anyhow::Result<Snapshot> {
    ensure!(!sources.is_empty(), "no Redis node to back up");
    let mut snapshot = Snapshot::default();
    let pattern = format!("{}*", mooring_redis::audit::glob_escape(prefix));
    for source in sources {
        let (mut conn, addr) = connect(source).await?;
        snapshot.sources.push(addr.clone());
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut conn)
                .await
                .with_context(|| format!("SCAN on {addr}"))?;
            if !keys.is_empty() {
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd("PEXPIRETIME").arg(key).cmd("DUMP").arg(key);
                }
                let values: Vec<Value> = pipe
                    .query_async(&mut conn)
                    .await
                    .with_context(|| format!("DUMP on {addr}"))?;
                for (key, pair) in keys.into_iter().zip(values.chunks(2)) {
                    match pair {
                        [Value::Int(expiry), Value::BulkString(payload)] if *expiry != -2 => {
                            snapshot.entries.push(Entry {
                                key,
                                expire_at_ms: u64::try_from(*expiry).ok(),
                                payload: payload.clone(),
                            })
                        }
                        // Gone between SCAN and DUMP (expired or deleted).
                        [_, Value::Nil] | [Value::Int(-2), _] => snapshot.vanished += 1,
                        other => bail!("unexpected answer to PEXPIRETIME/DUMP on {addr}: {other:?}"),
                    }
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(snapshot)
}

/// Reads every key under `prefix` from `sources` and writes it to `repo` as one signed backup (encrypted when
/// `encrypt`), under a new name in a collection or as the one object `repo` names.
pub async fn backup(
    sources: Vec<redis::ConnectionInfo>,
    prefix: &str,
    repo: &Repo,
    keys: &BackupKeys,
    encrypt: bool,
) -> anyhow::Result<BackupSummary> {
    let snapshot = read(sources, prefix).await?;
    let created_at_ms = now_ms();
    let source = snapshot.sources.join(",");
    let inner = Header {
        created_at_ms,
        source: source.clone(),
        prefix: prefix.to_owned(),
        keys: snapshot.entries.len() as u64,
    };
    let body = encode(&inner, &snapshot.entries)?;
    let mut header = archive::Header::new(Kind::Sessions, created_at_ms, source);
    header.prefix = Some(prefix.to_owned());
    header.items = inner.keys;
    let sealed = archive::seal(header, &body, keys, encrypt)?;
    let bytes = sealed.len() as u64;
    let location = repo.put(Kind::Sessions, created_at_ms, sealed).await?;
    let source = snapshot.sources.join(",");
    Ok(BackupSummary {
        location,
        keys: inner.keys,
        vanished: snapshot.vanished,
        bytes,
        encrypted: encrypt,
        source,
    })
}

/// A sessions backup read and checked by [`fetch`].
#[derive(Clone, Debug)]
pub struct Fetched {
    /// Where it was read.
    pub location: String,
    /// Its signed header; `None` for an unsigned backup of an older moor (read with `accept_unsigned`).
    pub header: Option<archive::Header>,
    /// The keys.
    pub entries: Vec<Entry>,
}

/// Reads the sessions backup `repo` names (the newest of a collection) and checks it whole: the signature
/// with `keys` (one changed byte, or another key, is refused), then every length of the body. An unsigned
/// `MOORBAK1` file of an older moor is refused unless `accept_unsigned`, and then read with a warning.
pub async fn fetch(repo: &Repo, keys: &BackupKeys, accept_unsigned: bool) -> anyhow::Result<Fetched> {
    let (location, bytes) = repo.fetch(Kind::Sessions).await?;
    let refused = |e: anyhow::Error| e.context(format!("{location} cannot be restored"));
    if bytes.starts_with(archive::LEGACY_MAGIC) {
        if !accept_unsigned {
            return Err(refused(anyhow::anyhow!(
                "it is an unsigned backup of an older moor (MOORBAK1), which cannot be checked for changes; \
                 restore it only if you trust the file, with --accept-unsigned"
            )));
        }
        tracing::warn!(%location, "restoring an unsigned backup (MOORBAK1): its contents cannot be checked for changes");
        let (_, entries) = decode(&bytes).map_err(refused)?;
        return Ok(Fetched {
            location,
            header: None,
            entries,
        });
    }
    let (header, body) = archive::open(&bytes, keys).map_err(refused)?;
    if header.kind != Kind::Sessions {
        return Err(refused(anyhow::anyhow!(
            "it is a {} backup, not a sessions backup",
            header.kind.as_str()
        )));
    }
    let (inner, entries) = decode(&body).map_err(refused)?;
    ensure!(
        inner.keys == header.items,
        "{location} cannot be restored: its header counts {} keys, its body {}",
        header.items,
        inner.keys
    );
    Ok(Fetched {
        location,
        header: Some(header),
        entries,
    })
}

/// Serializes a backup.
pub fn encode(header: &Header, entries: &[Entry]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(
        64 + entries
            .iter()
            .map(|e| e.key.len() + e.payload.len() + 16)
            .sum::<usize>(),
    );
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&serde_json::to_vec(header)?);
    out.push(b'\n');
    for e in entries {
        let key_len = u32::try_from(e.key.len()).context("key too long")?;
        let payload_len = u32::try_from(e.payload.len()).context("value too large")?;
        out.extend_from_slice(&key_len.to_be_bytes());
        out.extend_from_slice(&e.key);
        let expiry = e
            .expire_at_ms
            .map_or(-1, |t| i64::try_from(t).unwrap_or(i64::MAX));
        out.extend_from_slice(&expiry.to_be_bytes());
        out.extend_from_slice(&payload_len.to_be_bytes());
        out.extend_from_slice(&e.payload);
    }
    out.extend_from_slice(TRAILER);
    out.extend_from_slice(&(entries.len() as u64).to_be_bytes());
    Ok(out)
}

/// Parses and checks a whole backup file: magic, header, every length, the trailer and the key count.
pub fn decode(bytes: &[u8]) -> anyhow::Result<(Header, Vec<Entry>)> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .context("not a moor backup (the file does not start with MOORBAK1)")?;
    let newline = rest
        .iter()
        .position(|&b| b == b'\n')
        .context("truncated backup: no header line")?;
    let header: Header =
        serde_json::from_slice(&rest[..newline]).context("the backup's header is not valid")?;
    let mut cur = &rest[newline + 1..];
    let mut take = |n: usize, what: &str| -> anyhow::Result<&[u8]> {
        ensure!(cur.len() >= n, "truncated backup: it ends inside {what}");
        let (head, tail) = cur.split_at(n);
        cur = tail;
        Ok(head)
    };
    let mut entries = Vec::new();
    for _ in 0..header.keys {
        let key_len = u32::from_be_bytes(take(4, "a key length")?.try_into()?) as usize;
        let key = take(key_len, "a key")?.to_vec();
        let expiry = i64::from_be_bytes(take(8, "an expiry")?.try_into()?);
        let payload_len = u32::from_be_bytes(take(4, "a value length")?.try_into()?) as usize;
        let payload = take(payload_len, "a value")?.to_vec();
        entries.push(Entry {
            key,
            expire_at_ms: u64::try_from(expiry).ok(),
            payload,
        });
    }
    ensure!(
        take(4, "the trailer")? == TRAILER,
        "corrupt backup: no trailer after {} keys",
        header.keys
    );
    let count = u64::from_be_bytes(take(8, "the trailer")?.try_into()?);
    ensure!(
        count == header.keys,
        "corrupt backup: the trailer counts {count} keys, the header {}",
        header.keys
    );
    ensure!(
        cur.is_empty(),
        "corrupt backup: {} bytes after the trailer",
        cur.len()
    );
    Ok((header, entries))
}

/// How long the revocation log keeps entries when a restore opens it: the app's `SESSION_ABSOLUTE_LIFETIME`
/// (minutes, its leading number), else 30 days. A reader only looks entries up, so this matters little.
pub fn revocation_retention(var: impl Fn(&str) -> Option<String>) -> std::time::Duration {
    let minutes = var("SESSION_ABSOLUTE_LIFETIME").and_then(|v| {
        let digits: String = v.trim().chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u64>().ok().filter(|m| *m > 0)
    });
    std::time::Duration::from_secs(minutes.map_or(30 * 24 * 3600, |m| m * 60))
}

/// The revocation log a restore checks: the app database's (`database_url`), or none with `ignore` (the
/// sessions ended since the backup come back then, and a warning says so). Neither is refused: restoring
/// without the log would bring back sessions users signed out of, and their stolen cookies with them.
pub async fn revocation_log(
    database_url: Option<&str>,
    ignore: bool,
    var: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<mooring_sql::SqlRevocationLog>> {
    match (database_url.filter(|u| !u.trim().is_empty()), ignore) {
        (_, true) => {
            tracing::warn!(
                "--ignore-revocations: sessions ended after the backup (sign-outs, revocations) come back"
            );
            Ok(None)
        }
        (Some(url), false) => mooring_sql::SqlRevocationLog::connect(url.trim(), revocation_retention(var))
            .await
            .map(Some)
            .context(
                "cannot open the revocation log in the app's database (DATABASE_URL); nothing was restored",
            ),
        (None, false) => bail!(
            "no DATABASE_URL: a restore checks the app's revocation log so that sessions ended since the backup \
             (sign-outs, revocations) stay ended; give the app's database with --database-url (or DATABASE_URL, \
             DATABASE_URL_FILE), or restore them all with --ignore-revocations"
        ),
    }
}

/// Restores checked `entries` into `target`, skipping those whose expiry has passed and, with `revocations`,
/// those the log says were ended (signed out, revoked) since: their keys are looked up in batches before
/// anything is written, so a log that cannot answer stops the restore with nothing written.
pub async fn restore_entries(
    target: Target,
    entries: &[Entry],
    replace: bool,
    revocations: Option<&dyn mooring::RevocationLog>,
) -> anyhow::Result<RestoreSummary> {
    let mut revoked = std::collections::HashSet::new();
    if let Some(log) = revocations {
        for batch in entries.chunks(mooring::revocation::MAX_BATCH) {
            let keys: Vec<String> = batch
                .iter()
                .filter_map(|e| String::from_utf8(e.key.clone()).ok())
                .filter(|k| !k.is_empty() && k.len() <= mooring::revocation::MAX_KEY_LEN)
                .collect();
            revoked.extend(
                log.find(&keys)
                    .await
                    .context("cannot read the revocation log; nothing was restored")?,
            );
        }
    }
    let live: Vec<&Entry> = entries
        .iter()
        .filter(|e| std::str::from_utf8(&e.key).map_or(true, |k| !revoked.contains(k)))
        .collect();
    let mut summary = match target {
        Target::Node(info) => {
            let (conn, addr) = connect(*info).await?;
            restore_into(conn, &addr, &live, replace).await?
        }
        Target::Cluster { config, .. } => {
            let conn = config
                .cluster_connection()
                .await
                .context("cannot connect to the Redis Cluster")?;
            restore_into(conn, "the Cluster", &live, replace).await?
        }
    };
    summary.revoked = (entries.len() - live.len()) as u64;
    Ok(summary)
}

/// Sends one `RESTORE` per live entry through `conn`, up to [`BATCH`] in flight (a multiplexed or Cluster
/// connection pipelines them), and counts the answers.
async fn restore_into<C>(
    conn: C,
    addr: &str,
    entries: &[&Entry],
    replace: bool,
) -> anyhow::Result<RestoreSummary>
where
    C: redis::aio::ConnectionLike + Clone + Send + 'static,
{
    let mut summary = RestoreSummary::default();
    let mut answers = futures_util::stream::iter(entries.iter().copied())
        .map(|e| {
            let mut conn = conn.clone();
            async move {
                if e.expire_at_ms.is_some_and(|t| t <= now_ms()) {
                    return (e, None);
                }
                let mut cmd = redis::cmd("RESTORE");
                cmd.arg(&e.key)
                    .arg(e.expire_at_ms.unwrap_or(0))
                    .arg(&e.payload)
                    .arg("ABSTTL");
                if replace {
                    cmd.arg("REPLACE");
                }
                (e, Some(cmd.query_async::<Value>(&mut conn).await))
            }
        })
        .buffered(BATCH);
    while let Some((e, answer)) = answers.next().await {
        match answer {
            None => summary.expired += 1,
            Some(Ok(_)) => summary.restored += 1,
            Some(Err(err)) if err.code() == Some("BUSYKEY") => summary.kept_existing += 1,
            Some(Err(err)) if err.code() == Some("READONLY") => {
                bail!(
                    "{addr} is a replica: restore into the master (give --sentinel and --master to find it)"
                )
            }
            Some(Err(err)) => bail!(
                "RESTORE of '{}' on {addr} failed after {} keys were restored: {err}",
                String::from_utf8_lossy(&e.key),
                summary.restored
            ),
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Header, Vec<Entry>) {
        let entries = vec![
            Entry {
                key: b"AbCdEfGhIjKlMn".to_vec(),
                expire_at_ms: Some(1_795_000_000_000),
                payload: vec![0, 1, 2, 255],
            },
            Entry {
                key: b"u:42".to_vec(),
                expire_at_ms: None,
                payload: Vec::new(),
            },
        ];
        let header = Header {
            created_at_ms: 1,
            source: "127.0.0.1:6390".into(),
            prefix: String::new(),
            keys: 2,
        };
        (header, entries)
    }

    #[test]
    fn files_round_trip() {
        let (header, entries) = sample();
        let bytes = encode(&header, &entries).expect("encode");
        assert_eq!(decode(&bytes).expect("decode"), (header, entries));
    }

    #[test]
    fn every_truncation_and_damage_is_refused() {
        let (header, entries) = sample();
        let bytes = encode(&header, &entries).expect("encode");
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len]).is_err(),
                "a file cut at {len} bytes must be refused"
            );
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode(&extra).is_err(), "trailing bytes");
        let mut lying = encode(&Header { keys: 1, ..header }, &entries[..1]).expect("encode");
        let n = lying.len();
        lying[n - 1] = 2;
        assert!(
            decode(&lying).is_err(),
            "a trailer that disagrees with the header"
        );
    }

    #[test]
    fn the_configuration_comes_from_the_apps_variables() {
        let env = crate::env::fixed;
        let plain = config(None, &[], "mymaster", env(&[])).expect("defaults");
        assert!(matches!(&plain.topology, Topology::Standalone { url } if url == "redis://127.0.0.1:6379"));
        let full = config(
            None,
            &[],
            "mymaster",
            env(&[
                ("REDIS_HOST", "redis"),
                ("REDIS_PORT", "6380"),
                ("REDIS_USERNAME", "app"),
                ("REDIS_PASSWORD", "p@ss:w/rd"),
                ("REDIS_DB", "3"),
                ("REDIS_TLS", "true"),
            ]),
        )
        .expect("every variable");
        assert!(matches!(&full.topology, Topology::Standalone { url } if url == "redis://redis:6380"));
        assert_eq!(
            (
                full.username.as_deref(),
                full.password.as_deref(),
                full.db,
                full.tls
            ),
            (Some("app"), Some("p@ss:w/rd"), 3, true)
        );
        let sentinel = config(
            None,
            &["s1:26379".to_owned()],
            "inventory",
            env(&[("REDIS_SENTINEL_PASSWORD", "sp"), ("REDIS_PASSWORD", "pw")]),
        )
        .expect("Sentinels");
        assert!(matches!(
            &sentinel.topology,
            Topology::Sentinel { master, sentinel_password: Some(p), .. } if master == "inventory" && p == "sp"
        ));
        assert_eq!(sentinel.password.as_deref(), Some("pw"));
        assert!(config(Some("redis://h:1"), &["s1:26379".to_owned()], "m", env(&[])).is_err());
        assert!(config(None, &[], "m", env(&[("REDIS_PORT", "63x")])).is_err());
        assert!(config(None, &[], "m", env(&[("REDIS_TLS", "maybe")])).is_err());
        assert!(config(None, &[], "m", env(&[("REDIS_DB", "one")])).is_err());
        let cluster =
            config(None, &[], "m", env(&[("REDIS_CLUSTER_NODES", "n1:7000,n2:7000")])).expect("a Cluster");
        assert!(matches!(&cluster.topology, Topology::Cluster { nodes } if nodes.len() == 2));
    }
}
