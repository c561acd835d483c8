//! [`RedisStore`]: the [`SessionStore`] contract on Redis.
//!
//! # Data layout
//!
//! - A session is a hash at `<prefix><the first 14 characters of the store key>` ([`RedisStore::session_key`];
//!   [`crate::scripts`] lists its fields), with a TTL equal to its idle expiry capped by its absolute deadline.
//!   Deltas are field-level `HSET`/`HDEL` inside one Lua script, so concurrent requests that change different
//!   attributes both keep their change, and the version field gives compare-and-set. A hash was chosen over a
//!   versioned blob with a Lua compare-and-set because it needs no retries under contention and writes only
//!   the changed bytes.
//! - The user index is a sorted set at `<prefix>u:<user>`: members are store keys, scores their absolute
//!   deadlines (which never change, unlike idle expiries; a deadline is the creation time plus the absolute
//!   lifetime, so the lowest score is the oldest session). Every index write trims members past their
//!   deadline and keeps the set's own TTL at its latest deadline, so the index cleans itself without
//!   keyspace notifications or cron. A delete (sign-out, id rotation) removes its member. Members whose
//!   session idled out are dropped when a count, a listing or a sign-in beyond the cap finds their hash gone
//!   or owned by someone else.
//! - **The per-user cap.** The index write of a sign-in also reads the set's size (`ZCARD`, same pipeline).
//!   Only when it exceeds the cap does the store read the members, check which are still the user's
//!   (`HGET @u`, one request each), delete the oldest live ones beyond the cap (their hashes, each only if it
//!   still belongs to the user) and drop them from the set. The session signing in is never evicted.
//! - No operation spans two keys in one command or script, so everything works on Redis Cluster: the index
//!   update after a sign-in, and the index removal after a delete, are second requests, sent only when a
//!   user is involved.
//!
//! # Round trips
//!
//! | call | round trips |
//! |---|---|
//! | load (read + slide the TTL) | 1 (`HGETALL` + `PEXPIREAT`, pipelined); +1 in a session's last idle window, to cap the TTL at the deadline |
//! | create | 1 (`EVALSHA create` + `WAIT`, pipelined); +1 when created signed in |
//! | apply (delta) | 1 (`EVALSHA apply` + `WAIT`); +1 when the user changes |
//! | delete | 1 (`EVALSHA delete` + `WAIT`); +1 (`ZREM`) when the session had a user |
//! | count_user | 2 (`ZRANGEBYSCORE`, then one `HGET @u` per member, concurrently) |
//! | sign-in beyond the cap | +3 (`ZRANGEBYSCORE`; `HGET @u` per member; `EVALSHA delete_if_user` per evicted session), +1 `ZREM` |
//! | sign-out, delete, delete_user, eviction (only with a revocation log) | +1 log write (per 500 sessions) |
//!
//! so a read-modify-write request costs 2 and a new session 1.
//!
//! # Revocation log
//!
//! With [`RedisStore::with_revocation_log`], every record the store ends on purpose is written to a
//! [`RevocationLog`] kept outside Redis (the application's SQL database), under its Redis key
//! ([`RedisStore::session_key`], exactly as a `moor backup` file names it), so that a restore of an older
//! backup skips it and a signed-out session never comes back. The log is written **before** the record goes,
//! and if it cannot be written the call fails with the log's error and nothing is deleted:
//!
//! - `delete` (sign-out by `invalidate`, id rotation, a corrupt record): the key, then the delete;
//! - `delete_user`: every member but the one kept, in batches of [`MAX_BATCH`], then the deletes;
//! - the per-user cap: the sessions it evicts, then their `delete_if_user`.
//!
//! A delta that signs a session out (`set_user(None)`) or switches it to another user keeps the record but
//! ends the version signed in as the previous user. Who that was is known only from the script's reply, so
//! the key is recorded right after the apply and the call returns the log's error if that fails (the app
//! answers 503; the record has changed already, so a retry finds it signed out and records nothing more).
//! A sign-in from anonymous records nothing. Without a log nothing of this runs: no extra round trip.

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::join_all;
use mooring::revocation::MAX_BATCH;
use mooring::{Applied, Delta, Loaded, Policy, Record, RevocationLog, SessionStore, StoreKey, now_ms};
use redis::{Pipeline, Value};

use crate::config::{Durability, RedisConfig};
use crate::conn::{Backend, Retry, Wait};
use crate::error::{RedisStoreError, Result};
use crate::scripts::{Scripts, evalsha};
use crate::stats::RedisStats;

/// A session store on Redis (standalone, Sentinel or Cluster). Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
    /// Where the records it ends are written first, if anywhere (see the module documentation).
    revocations: Option<Arc<dyn RevocationLog>>,
}

struct Inner {
    backend: Backend,
    scripts: Scripts,
    config: Arc<RedisConfig>,
    stats: Arc<RedisStats>,
    /// Replicas each write must reach (`WAIT`), if any.
    wait: Option<u32>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("config", &self.inner.config)
            .field("wait", &self.inner.wait)
            .field("revocations", &self.revocations)
            .finish()
    }
}

fn shape(detail: impl Into<String>) -> RedisStoreError {
    RedisStoreError::Shape(detail.into())
}

fn bytes(value: Value) -> Result<Vec<u8>> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Int(n) => Ok(n.to_string().into_bytes()),
        other => Err(shape(format!("expected a string, got {other:?}"))),
    }
}

fn int(value: &Value) -> Result<i64> {
    match value {
        Value::Int(n) => Ok(*n),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| shape("not a number")),
        other => Err(shape(format!("expected an integer, got {other:?}"))),
    }
}

fn array(value: Value) -> Result<Vec<Value>> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(shape(format!("expected an array, got {other:?}"))),
    }
}

/// The hash field of an attribute: empty names and names starting with `@` are escaped so they never collide
/// with metadata.
fn attr_field(name: &str) -> Vec<u8> {
    if name.is_empty() || name.starts_with('@') {
        format!("@{name}").into_bytes()
    } else {
        name.as_bytes().to_vec()
    }
}

/// Packs the metadata field: version, created at and deadline (see [`crate::scripts`]).
fn pack_meta(version: u64, created: u64, deadline: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&(version as u32).to_be_bytes());
    out.extend_from_slice(&created.to_be_bytes()[2..]);
    match deadline.checked_sub(created).and_then(|o| u32::try_from(o).ok()) {
        Some(offset) => out.extend_from_slice(&offset.to_be_bytes()),
        None => out.extend_from_slice(&deadline.to_be_bytes()[2..]),
    }
    out
}

/// Unpacks the metadata field into version, created at and deadline.
fn unpack_meta(meta: &[u8]) -> Result<(u64, u64, u64)> {
    let be = |b: &[u8]| b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
    match meta.len() {
        14 => Ok((
            be(&meta[..4]),
            be(&meta[4..10]),
            be(&meta[4..10]) + be(&meta[10..]),
        )),
        16 => Ok((be(&meta[..4]), be(&meta[4..10]), be(&meta[10..]))),
        n => Err(shape(format!("metadata of {n} bytes"))),
    }
}

/// Decodes a session hash (`HGETALL` pairs) into its record and version.
pub(crate) fn decode(flat: Vec<Value>) -> Result<(Record, u64)> {
    if !flat.len().is_multiple_of(2) {
        return Err(shape("odd number of hash elements"));
    }
    let mut meta = None;
    let mut record = Record::default();
    let mut items = flat.into_iter();
    while let (Some(field), Some(value)) = (items.next(), items.next()) {
        let (field, value) = (bytes(field)?, bytes(value)?);
        match field.as_slice() {
            b"" => meta = Some(unpack_meta(&value)?),
            b"@u" => record.user = Some(String::from_utf8(value).map_err(|_| shape("@u is not UTF-8"))?),
            [b'@', rest @ ..] if rest.is_empty() || rest[0] == b'@' => {
                let name = String::from_utf8(rest.to_vec()).map_err(|_| shape("field is not UTF-8"))?;
                record.attrs.insert(name, value);
            }
            [b'@', ..] => {} // metadata of a newer version: ignored
            _ => {
                let name = String::from_utf8(field).map_err(|_| shape("field is not UTF-8"))?;
                record.attrs.insert(name, value);
            }
        }
    }
    let (version, created, deadline) = meta.ok_or_else(|| shape("no metadata field"))?;
    record.created_at = created;
    record.deadline = deadline;
    Ok((record, version))
}

/// The size the store counts against the limit: every field and value, plus two bytes each.
fn hash_size(fields: &[(Vec<u8>, Vec<u8>)]) -> usize {
    fields.iter().map(|(f, v)| f.len() + v.len() + 2).sum()
}

impl RedisStore {
    /// Connects to the configured topology, loads the scripts and resolves [`Durability::Auto`].
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let config = Arc::new(config);
        let stats = Arc::new(RedisStats::default());
        let backend = Backend::connect(Arc::clone(&config), Arc::clone(&stats)).await?;
        let scripts = Scripts::new();
        let wait = match config.durability {
            Durability::Async => None,
            Durability::Replicas(n) => Some(n),
            Durability::Auto => has_replicas(&backend).await?.then_some(1),
        };
        let store = Self {
            inner: Arc::new(Inner {
                backend,
                scripts,
                config,
                stats,
                wait,
            }),
            revocations: None,
        };
        store.load_scripts().await?;
        tracing::info!(wait = ?store.inner.wait, master = ?store.master_addr(), "Redis session store ready");
        Ok(store)
    }

    /// Writes every session this store ends on purpose (delete, `delete_user`, the per-user cap's eviction,
    /// a sign-out or user switch by delta) to `log` under its Redis key before it goes, and fails the call,
    /// deleting nothing, when the log cannot be written. See the module documentation.
    pub fn with_revocation_log(mut self, log: Arc<dyn RevocationLog>) -> Self {
        self.revocations = Some(log);
        self
    }

    /// The revocation log in use, if any.
    pub fn revocation_log(&self) -> Option<&Arc<dyn RevocationLog>> {
        self.revocations.as_ref()
    }

    /// Records the Redis keys of `keys` in the revocation log, [`MAX_BATCH`] per call. Without a log: nothing.
    async fn revoke(&self, keys: &[StoreKey]) -> mooring::Result<()> {
        let Some(log) = &self.revocations else {
            return Ok(());
        };
        let names: Vec<String> = keys.iter().map(|k| self.session_key(k)).collect();
        for batch in names.chunks(MAX_BATCH) {
            log.record(batch).await?;
        }
        Ok(())
    }

    async fn load_scripts(&self) -> Result<()> {
        self.inner.backend.load_scripts(&self.inner.scripts).await
    }

    /// What the connection layer has counted.
    pub fn stats(&self) -> &RedisStats {
        &self.inner.stats
    }

    /// The master in use (`host:port`), or `None` on Cluster.
    pub fn master_addr(&self) -> Option<String> {
        self.inner.backend.master_addr()
    }

    /// How many replicas must confirm each write (`None`: no `WAIT`).
    pub fn wait_replicas(&self) -> Option<u32> {
        self.inner.wait
    }

    /// The Redis key of a session, as `redis-cli` shows it: the prefix, then the first 14 characters (84 bits)
    /// of the store key. Short keys keep a small session in Redis's smallest allocation classes; 84 bits keep
    /// accidental collisions out of reach (about 10^-14 with a million live sessions), and ids cannot be
    /// chosen by clients, whose cookies are MAC-checked.
    pub fn session_key(&self, key: &StoreKey) -> String {
        let text = key.as_str();
        format!("{}{}", self.inner.config.prefix, &text[..text.len().min(14)])
    }

    /// The configured key prefix (also used by [`crate::RedisAttemptStore`]).
    pub(crate) fn prefix(&self) -> &str {
        &self.inner.config.prefix
    }

    /// The Redis key of a user's session index.
    pub fn user_key(&self, user: &str) -> String {
        format!("{}u:{user}", self.inner.config.prefix)
    }

    /// Runs a pipeline on the master; with `waits`, the backend appends the `WAIT` that confirms the write
    /// (its reply is the last value returned).
    pub(crate) async fn run(&self, pipe: &Pipeline, retry: Retry, waits: bool) -> Result<Vec<Value>> {
        let i = &self.inner;
        let wait = i.wait.filter(|_| waits).map(|min| Wait {
            min,
            timeout: i.config.wait_timeout,
        });
        i.backend
            .run(pipe, wait, retry, &i.scripts, &i.stats, i.config.deadline)
            .await
    }

    /// Adds `key` to the user's index (and trims it), removing it from `old`'s if that was another user, then
    /// enforces the policy's per-user cap.
    async fn index(
        &self,
        key: &StoreKey,
        user: Option<&str>,
        old: Option<&str>,
        deadline: u64,
        policy: &Policy,
    ) -> mooring::Result<()> {
        if let Some(old) = old.filter(|o| Some(*o) != user) {
            let mut pipe = redis::pipe();
            pipe.cmd("ZREM").arg(self.user_key(old)).arg(key.as_str());
            self.run(&pipe, Retry::Safe, true).await?;
        }
        if let Some(user) = user {
            let ukey = self.user_key(user);
            let mut pipe = redis::pipe();
            pipe.cmd("ZADD")
                .arg(&ukey)
                .arg(deadline)
                .arg(key.as_str())
                .ignore();
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(&ukey)
                .arg("-inf")
                .arg(now_ms())
                .ignore();
            pipe.cmd("PEXPIREAT").arg(&ukey).arg(deadline).arg("NX").ignore();
            pipe.cmd("PEXPIREAT").arg(&ukey).arg(deadline).arg("GT").ignore();
            if policy.max_sessions_per_user.is_some() {
                pipe.cmd("ZCARD").arg(&ukey);
            }
            let values = self.run(&pipe, Retry::Safe, true).await?;
            if let Some(cap) = policy.max_sessions_per_user {
                let entries = values.first().map(int).transpose()?.unwrap_or(0);
                if u64::try_from(entries).unwrap_or(0) > u64::from(cap.get()) {
                    self.evict(key, user, policy).await?;
                }
            }
        }
        Ok(())
    }

    /// The user a session belongs to, without loading it: `None` if it is gone or not a session.
    async fn owner(&self, key: &StoreKey) -> mooring::Result<Option<String>> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGET").arg(self.session_key(key)).arg("@u");
        match self
            .run(&pipe, Retry::Safe, false)
            .await
            .map_err(mooring::Error::from)
        {
            Ok(mut values) => match values.pop() {
                None | Some(Value::Nil) => Ok(None),
                Some(value) => Ok(String::from_utf8(bytes(value)?).ok()),
            },
            // A key of another type holds no session.
            Err(mooring::Error::Corrupt(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Splits index members into those still `user`'s sessions and stale ones (idled out, deleted, or now
    /// another user's), keeping their order. One `HGET` per member, all in flight at once.
    async fn still_owned(
        &self,
        user: &str,
        members: Vec<StoreKey>,
    ) -> mooring::Result<(Vec<StoreKey>, Vec<StoreKey>)> {
        let owners = join_all(members.iter().map(|k| self.owner(k))).await;
        let (mut live, mut stale) = (Vec::new(), Vec::new());
        for (key, owner) in members.into_iter().zip(owners) {
            if owner?.as_deref() == Some(user) {
                live.push(key);
            } else {
                stale.push(key);
            }
        }
        Ok((live, stale))
    }

    /// Removes members from a user's index. Best effort: a stale member is skipped by every reader, and the
    /// set trims it at its deadline anyway.
    async fn unindex(&self, user: &str, keys: &[StoreKey]) {
        if keys.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        let cmd = pipe.cmd("ZREM").arg(self.user_key(user));
        for key in keys {
            cmd.arg(key.as_str());
        }
        if let Err(err) = self.run(&pipe, Retry::Never, false).await {
            tracing::debug!(%err, "could not drop members from a user's session index");
        }
    }

    /// Deletes `user`'s oldest live sessions other than `attached` until the policy's cap holds, and drops
    /// them and any stale members from the index.
    async fn evict(&self, attached: &StoreKey, user: &str, policy: &Policy) -> mooring::Result<()> {
        // Ascending by score: the oldest first.
        let members: Vec<StoreKey> = self
            .members(user, false, 0, None)
            .await?
            .into_iter()
            .filter(|k| k != attached)
            .collect();
        let (live, mut gone) = self.still_owned(user, members).await?;
        let doomed = &live[..policy.evictions(live.len())];
        self.revoke(doomed).await?;
        let deletions = join_all(doomed.iter().map(|key| self.delete_if_user(key, user))).await;
        for done in deletions {
            done?;
        }
        tracing::debug!(
            evicted = doomed.len(),
            stale = gone.len(),
            "user session cap: oldest sessions deleted"
        );
        gone.extend_from_slice(doomed);
        self.unindex(user, &gone).await;
        Ok(())
    }

    /// Deletes a session if it still belongs to `user` (one single-key script, safe to repeat); whether it did.
    async fn delete_if_user(&self, key: &StoreKey, user: &str) -> mooring::Result<bool> {
        let mut cmd = evalsha(&self.inner.scripts.delete_if_user, &self.session_key(key));
        cmd.arg(user);
        let mut pipe = redis::pipe();
        pipe.add_command(cmd);
        match self
            .run(&pipe, Retry::Safe, true)
            .await
            .map_err(mooring::Error::from)
        {
            Ok(values) => Ok(values.first().map(int).transpose()? == Some(1)),
            // A key of another type holds no user: nothing of this user's to delete.
            Err(mooring::Error::Corrupt(_)) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Reads a session without touching its TTL: `None` if it is gone.
    async fn peek(&self, key: &StoreKey) -> Result<Option<Loaded>> {
        let mut pipe = redis::pipe();
        pipe.add_command(evalsha(&self.inner.scripts.peek, &self.session_key(key)));
        let mut values = self.run(&pipe, Retry::Safe, false).await?;
        let mut reply = array(values.pop().ok_or_else(|| shape("empty reply"))?)?.into_iter();
        let (Some(expiry), Some(flat)) = (reply.next(), reply.next()) else {
            return Err(shape("bad peek reply"));
        };
        let flat = array(flat)?;
        if flat.is_empty() {
            return Ok(None);
        }
        let (record, version) = decode(flat)?;
        let expires_at = u64::try_from(int(&expiry)?)
            .unwrap_or(record.deadline)
            .min(record.deadline);
        Ok(Some(Loaded {
            record,
            version,
            expires_at,
        }))
    }

    /// The user index's members still within their deadline, oldest or newest first, from `offset`, at most
    /// `count` of them (`None`: all).
    async fn members(
        &self,
        user: &str,
        newest_first: bool,
        offset: usize,
        count: Option<usize>,
    ) -> Result<Vec<StoreKey>> {
        let mut pipe = redis::pipe();
        let now = now_ms();
        let cmd = if newest_first {
            pipe.cmd("ZREVRANGEBYSCORE")
                .arg(self.user_key(user))
                .arg("+inf")
                .arg(now)
        } else {
            pipe.cmd("ZRANGEBYSCORE")
                .arg(self.user_key(user))
                .arg(now)
                .arg("+inf")
        };
        if let Some(count) = count {
            cmd.arg("LIMIT").arg(offset).arg(count);
        }
        let mut values = self.run(&pipe, Retry::Safe, false).await?;
        let members = array(values.pop().ok_or_else(|| shape("empty reply"))?)?;
        members
            .into_iter()
            .map(|m| {
                Ok(StoreKey::from_stored(
                    String::from_utf8(bytes(m)?).map_err(|_| shape("member is not UTF-8"))?,
                ))
            })
            .collect()
    }
}

async fn has_replicas(backend: &Backend) -> Result<bool> {
    Ok(match backend {
        Backend::Cluster(_) => {
            let nodes: String = backend
                .query(&redis::cmd("CLUSTER").arg("NODES").to_owned())
                .await?;
            nodes
                .lines()
                .any(|l| l.contains(" slave ") || l.contains(",slave ") || l.contains("slave,"))
        }
        Backend::Follower(_) => {
            let info: String = backend
                .query(&redis::cmd("INFO").arg("replication").to_owned())
                .await?;
            info.lines()
                .find_map(|l| l.trim().strip_prefix("connected_slaves:"))
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n > 0)
        }
    })
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn load(&self, key: &StoreKey, policy: &Policy) -> mooring::Result<Option<Loaded>> {
        let now = now_ms();
        let skey = self.session_key(key);
        let slid = policy.expires_at(now, u64::MAX);
        // One round trip of two native commands: Redis runs them back to back for this connection, and both
        // cost less than starting a script. A missing key ignores the PEXPIREAT.
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(&skey);
        pipe.cmd("PEXPIREAT").arg(&skey).arg(slid).ignore();
        let mut values = self.run(&pipe, Retry::Safe, false).await?;
        let flat = array(values.pop().ok_or_else(|| shape("empty reply"))?)?;
        if flat.is_empty() {
            return Ok(None);
        }
        let (record, version) = decode(flat)?;
        if record.deadline < slid {
            // The session's last idle window (or past its deadline): cap the TTL at the deadline, which removes
            // a key whose deadline has passed. The deadline never changes, so this cannot cut a live session
            // short. Best effort: without it the key outlives its deadline by at most one idle timeout, and is
            // refused as expired all the same.
            let mut cap = redis::pipe();
            cap.cmd("PEXPIREAT").arg(&skey).arg(record.deadline).ignore();
            if let Err(err) = self.run(&cap, Retry::Never, false).await {
                tracing::debug!(%err, "could not cap a session's TTL at its deadline");
            }
            if record.deadline <= now {
                return Ok(None);
            }
        }
        let expires_at = slid.min(record.deadline);
        Ok(Some(Loaded {
            record,
            version,
            expires_at,
        }))
    }

    async fn create(&self, key: &StoreKey, record: &Record, policy: &Policy) -> mooring::Result<()> {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> =
            vec![(Vec::new(), pack_meta(1, record.created_at, record.deadline))];
        if let Some(user) = &record.user {
            fields.push((b"@u".to_vec(), user.as_bytes().to_vec()));
        }
        fields.extend(record.attrs.iter().map(|(n, v)| (attr_field(n), v.clone())));
        let size = hash_size(&fields);
        if size > policy.max_record_bytes {
            return Err(mooring::Error::TooLarge {
                size,
                limit: policy.max_record_bytes,
            });
        }
        let mut cmd = evalsha(&self.inner.scripts.create, &self.session_key(key));
        cmd.arg(policy.expires_at(now_ms(), record.deadline));
        for (f, v) in &fields {
            cmd.arg(f).arg(v);
        }
        let mut pipe = redis::pipe();
        pipe.add_command(cmd);
        let values = self.run(&pipe, Retry::Safe, true).await?;
        match values.first().map(int).transpose()? {
            Some(1) => {}
            // An earlier attempt of this very call may have landed before its answer was lost (the call is
            // retried through a failover): the record is ours if it is exactly what we wrote and untouched since.
            Some(0) => match self.peek(key).await? {
                Some(found) if found.record == *record && found.version == 1 => {}
                _ => return Err(mooring::Error::Conflict),
            },
            other => return Err(shape(format!("bad create reply {other:?}")).into()),
        }
        if record.user.is_some() {
            self.index(key, record.user.as_deref(), None, record.deadline, policy)
                .await?;
        }
        Ok(())
    }

    async fn apply(&self, key: &StoreKey, delta: &Delta, policy: &Policy) -> mooring::Result<Applied> {
        let mut cmd = evalsha(&self.inner.scripts.apply, &self.session_key(key));
        let expected = delta.expected_version.map(|v| v.to_string()).unwrap_or_default();
        let user_op = match &delta.user {
            None => String::new(),
            Some(None) => "-".to_owned(),
            Some(Some(user)) => format!("={user}"),
        };
        let now = now_ms();
        cmd.arg(now)
            .arg(policy.expires_at(now, u64::MAX))
            .arg(expected)
            .arg(policy.max_record_bytes)
            .arg(user_op)
            .arg(delta.set.len());
        for (name, value) in &delta.set {
            cmd.arg(attr_field(name)).arg(value);
        }
        for name in &delta.remove {
            cmd.arg(attr_field(name));
        }
        let mut pipe = redis::pipe();
        pipe.add_command(cmd);
        let retry = if delta.expected_version.is_some() {
            Retry::Never
        } else {
            Retry::Safe
        };
        let mut values = self.run(&pipe, retry, true).await?;
        if self.inner.wait.is_some() {
            values.pop();
        }
        let reply = array(values.pop().ok_or_else(|| shape("empty reply"))?)?;
        match reply.first().map(int).transpose()? {
            Some(1) => {
                let version = reply
                    .get(1)
                    .map(int)
                    .transpose()?
                    .ok_or_else(|| shape("no version"))? as u64;
                if let Some(user) = &delta.user {
                    let old = reply
                        .get(2)
                        .cloned()
                        .map(bytes)
                        .transpose()?
                        .and_then(|b| String::from_utf8(b).ok());
                    let old = old.filter(|o| !o.is_empty());
                    let deadline = reply
                        .get(3)
                        .map(int)
                        .transpose()?
                        .and_then(|d| u64::try_from(d).ok())
                        .ok_or_else(|| shape("no deadline"))?;
                    // Signed out, or switched to another user: the version signed in as `old` has ended.
                    let revoked = match &old {
                        Some(old) if user.as_deref() != Some(old.as_str()) => {
                            self.revoke(std::slice::from_ref(key)).await
                        }
                        _ => Ok(()),
                    };
                    self.index(key, user.as_deref(), old.as_deref(), deadline, policy)
                        .await?;
                    revoked?;
                }
                Ok(Applied::Saved { version })
            }
            Some(0) => Ok(Applied::Missing),
            Some(-1) => Ok(Applied::Conflict {
                current: reply.get(1).map(int).transpose()?.unwrap_or(0) as u64,
            }),
            Some(-2) => Err(shape("session hash lacks readable metadata").into()),
            Some(-3) => {
                let size = reply.get(1).map(int).transpose()?.unwrap_or(0) as usize;
                Err(mooring::Error::TooLarge {
                    size,
                    limit: policy.max_record_bytes,
                })
            }
            other => Err(shape(format!("bad apply reply {other:?}")).into()),
        }
    }

    async fn delete(&self, key: &StoreKey) -> mooring::Result<bool> {
        self.revoke(std::slice::from_ref(key)).await?;
        let mut pipe = redis::pipe();
        pipe.add_command(evalsha(&self.inner.scripts.delete, &self.session_key(key)));
        let mut values = self.run(&pipe, Retry::Safe, true).await?;
        if self.inner.wait.is_some() {
            values.pop();
        }
        let mut reply = array(values.pop().ok_or_else(|| shape("empty reply"))?)?.into_iter();
        let deleted = reply.next().as_ref().map(int).transpose()? == Some(1);
        let user = match reply.next() {
            None | Some(Value::Nil) => None,
            Some(value) => String::from_utf8(bytes(value)?).ok(),
        };
        if let Some(user) = user {
            self.unindex(&user, std::slice::from_ref(key)).await;
        }
        Ok(deleted)
    }

    async fn list_user(&self, user: &str, limit: usize) -> mooring::Result<Vec<(StoreKey, Loaded)>> {
        let mut live = Vec::new();
        let mut stale = Vec::new();
        let mut offset = 0;
        // Page through the index newest first until `limit` live sessions are found: members that ended early
        // do not make the listing shorter than it could be.
        while live.len() < limit {
            let want = limit - live.len();
            let members = self.members(user, true, offset, Some(want)).await?;
            let fetched = members.len();
            let peeks = join_all(members.iter().map(|k| self.peek(k))).await;
            for (key, peeked) in members.into_iter().zip(peeks) {
                match peeked.map_err(mooring::Error::from) {
                    Ok(Some(loaded)) if loaded.record.user.as_deref() == Some(user) => {
                        live.push((key, loaded))
                    }
                    Ok(_) => stale.push(key),
                    // Not a session of this user's any more: a load reports it as corrupt.
                    Err(mooring::Error::Corrupt(detail)) => {
                        tracing::warn!(session = %key.fingerprint(), %detail, "corrupt session record left out of a user's sessions");
                        stale.push(key);
                    }
                    Err(err) => return Err(err),
                }
            }
            if fetched < want {
                break;
            }
            offset += fetched;
        }
        self.unindex(user, &stale).await;
        Ok(live)
    }

    /// Counts the members within their deadline whose hash still belongs to the user, so a session that idled
    /// out (its hash expired, its member not yet trimmed) is not counted; those members are dropped.
    async fn count_user(&self, user: &str) -> mooring::Result<u64> {
        let members = self.members(user, false, 0, None).await?;
        if members.is_empty() {
            return Ok(0);
        }
        let (live, stale) = self.still_owned(user, members).await?;
        self.unindex(user, &stale).await;
        Ok(live.len() as u64)
    }

    async fn delete_user(&self, user: &str, keep: Option<&StoreKey>) -> mooring::Result<u64> {
        let members: Vec<StoreKey> = self
            .members(user, false, 0, None)
            .await?
            .into_iter()
            .filter(|k| Some(k) != keep)
            .collect();
        self.revoke(&members).await?;
        let deletions = join_all(members.iter().map(|key| self.delete_if_user(key, user))).await;
        let mut deleted = 0;
        for done in deletions {
            deleted += u64::from(done?);
        }
        if !members.is_empty() {
            let mut pipe = redis::pipe();
            let cmd = pipe.cmd("ZREM").arg(self.user_key(user));
            for key in &members {
                cmd.arg(key.as_str());
            }
            self.run(&pipe, Retry::Safe, true).await?;
        }
        Ok(deleted)
    }

    async fn ping(&self) -> mooring::Result<()> {
        let pipe = redis::pipe().cmd("PING").to_owned();
        self.run(&pipe, Retry::Never, false).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(pairs: &[(&str, &[u8])]) -> Vec<Value> {
        pairs
            .iter()
            .flat_map(|(f, v)| {
                [
                    Value::BulkString(f.as_bytes().to_vec()),
                    Value::BulkString(v.to_vec()),
                ]
            })
            .collect()
    }

    #[test]
    fn hashes_decode_with_escaped_names() {
        let meta = pack_meta(3, 1_795_000_000_000, 1_795_043_200_000);
        assert_eq!(meta.len(), 14);
        let (record, version) = decode(flat(&[
            ("", &meta),
            ("@u", b"ada"),
            ("n", &[1, 5]),
            ("@@odd", b"x"),
            ("@", b"empty name"),
            ("@z", b"future metadata"),
        ]))
        .expect("decodes");
        assert_eq!(version, 3);
        assert_eq!(
            (record.created_at, record.deadline, record.user.as_deref()),
            (1_795_000_000_000, 1_795_043_200_000, Some("ada"))
        );
        let names: Vec<&str> = record.attrs.keys().map(String::as_str).collect();
        assert_eq!(names, ["", "@odd", "n"]);
        assert_eq!(attr_field("@odd"), b"@@odd".to_vec());
        assert_eq!(attr_field(""), b"@".to_vec());
        assert_eq!(attr_field("n"), b"n".to_vec());
    }

    #[test]
    fn metadata_packs_compactly_and_falls_back_for_long_lifetimes() {
        assert_eq!(
            unpack_meta(&pack_meta(7, 1000, 61_000)).ok(),
            Some((7, 1000, 61_000))
        );
        let far = 1000 + (1u64 << 33);
        let packed = pack_meta(u64::from(u32::MAX), 1000, far);
        assert_eq!(packed.len(), 16);
        assert_eq!(unpack_meta(&packed).ok(), Some((u64::from(u32::MAX), 1000, far)));
        assert_eq!(
            unpack_meta(&pack_meta(1, 5000, 10)).ok(),
            Some((1, 5000, 10)),
            "a deadline before creation"
        );
        assert!(unpack_meta(b"short").is_err());
    }

    #[test]
    fn sizes_count_fields_and_values() {
        let fields = vec![(b"@v".to_vec(), b"1".to_vec()), (b"n".to_vec(), vec![1, 5])];
        assert_eq!(hash_size(&fields), 3 + 2 + 3 + 2);
    }
}
