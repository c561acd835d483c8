//! [`SqlStore`]: the [`SessionStore`] contract on one SQL table.
//!
//! Each session is one row of `mooring_sessions`: the record as a blob ([`Record::encode`]) plus the columns
//! queries need without decoding it (`user_id`, `version`, `deadline`, `expires_at`). A row is live while
//! `expires_at > now AND deadline > now`; every writer keeps `expires_at <= deadline`, so expired rows are
//! exactly `expires_at <= now`, which is what the cleanup deletes by (using the `expires_at` index).
//!
//! # Concurrent writers
//!
//! [`SqlStore::apply`] is an optimistic compare-and-set loop: read the row and its version, decode, apply the
//! delta, then `UPDATE ... WHERE key = ? AND version = ?`. If another request wrote in between, the update
//! matches no row and the loop reads the row again and re-applies the delta on top of the other write. This
//! is what lets two concurrent requests that change different attributes of one session both keep their
//! change, on every dialect, without holding row locks across round trips. A delta with an expected version
//! does not retry: a changed version is reported as [`Applied::Conflict`].
//!
//! # The user index is the `user_id` column
//!
//! Counting and listing a user's sessions are indexed queries on `user_id`, and deleting a row removes its
//! index entry with it. A write that attaches a session to a user then enforces the per-user cap with one
//! indexed `SELECT` (the newest session that must go, if any: the cap-th newest of the user's other live
//! sessions) and, only when there is one, one `DELETE` of it and everything older. The two statements are not
//! one transaction: a session created meanwhile is newer than the cut, so it is never the one deleted.
//!
//! # Sliding expiry costs a write only when it matters
//!
//! [`SqlStore::load`] reads the row, then pushes its expiry forward only when the new expiry is at least
//! [`Policy::touch_granularity`] later than the stored one. A burst of requests on one session therefore costs
//! one write per granularity period (a tenth of the idle timeout, at most a minute) rather than one per
//! request; the price is that a session may expire up to that much earlier than a store that writes on every
//! read would let it. The touch only ever moves the expiry forward, so concurrent loads cannot shorten it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mooring::{Applied, Delta, Error, Loaded, Policy, Record, SessionStore, StoreKey, now_ms};
use sqlx::any::AnyRow;
use sqlx::error::ErrorKind;
use sqlx::{AnyPool, AssertSqlSafe, Row};
use tokio::task::JoinHandle;

use crate::dialect::Dialect;
use crate::error::{Result, SqlStoreError};

/// How many times [`SqlStore::apply`] re-reads and retries after losing a race before giving up.
const MAX_APPLY_ATTEMPTS: u32 = 50;
/// Rows deleted per cleanup statement: small enough that one statement never holds locks for long.
const CLEANUP_BATCH: u64 = 500;
/// Pause between cleanup batches, so request traffic (and SQLite's single writer) gets its turn.
const CLEANUP_PAUSE: Duration = Duration::from_millis(5);

/// A session store on SQLite, PostgreSQL or MySQL/MariaDB. Cloning shares the pool.
#[derive(Clone, Debug)]
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
    queries: Arc<Queries>,
}

/// Every statement the store runs, rendered once for its dialect.
#[derive(Debug)]
struct Queries {
    select_live: Arc<str>,
    touch: Arc<str>,
    insert: Arc<str>,
    delete_dead_key: Arc<str>,
    update: Arc<str>,
    delete_live: Arc<str>,
    list_user: Arc<str>,
    count_user: Arc<str>,
    cap_cut: Arc<str>,
    evict_from: Arc<str>,
    delete_user: Arc<str>,
    delete_expired_batch: Arc<str>,
    overwrite_raw: Arc<str>,
}

impl Queries {
    fn new(dialect: Dialect) -> Self {
        let k = dialect.quote("key");
        let render = |sql: String| -> Arc<str> { dialect.sql(&sql).into() };
        let delete_expired_batch = match dialect {
            Dialect::Sqlite => format!(
                "DELETE FROM mooring_sessions WHERE rowid IN \
                 (SELECT rowid FROM mooring_sessions WHERE expires_at <= ? LIMIT {CLEANUP_BATCH})"
            ),
            // SKIP LOCKED: rows a request is updating right now are left for the next round.
            Dialect::Postgres => format!(
                "DELETE FROM mooring_sessions WHERE {k} IN (SELECT {k} FROM mooring_sessions \
                 WHERE expires_at <= ? LIMIT {CLEANUP_BATCH} FOR UPDATE SKIP LOCKED)"
            ),
            Dialect::MySql => format!(
                "DELETE FROM mooring_sessions WHERE expires_at <= ? ORDER BY expires_at LIMIT {CLEANUP_BATCH}"
            ),
        };
        Self {
            select_live: render(format!(
                "SELECT version, expires_at, deadline, data FROM mooring_sessions \
                 WHERE {k} = ? AND expires_at > ? AND deadline > ?"
            )),
            touch: render(format!(
                "UPDATE mooring_sessions SET expires_at = ? WHERE {k} = ? AND expires_at > ? AND expires_at < ?"
            )),
            insert: render(format!(
                "INSERT INTO mooring_sessions ({k}, user_id, version, created_at, deadline, expires_at, data) \
                 VALUES (?, ?, 1, ?, ?, ?, ?)"
            )),
            delete_dead_key: render(format!(
                "DELETE FROM mooring_sessions WHERE {k} = ? AND (expires_at <= ? OR deadline <= ?)"
            )),
            update: render(format!(
                "UPDATE mooring_sessions SET data = ?, version = version + 1, user_id = ?, expires_at = ? \
                 WHERE {k} = ? AND version = ? AND expires_at > ? AND deadline > ?"
            )),
            delete_live: render(format!(
                "DELETE FROM mooring_sessions WHERE {k} = ? AND expires_at > ? AND deadline > ?"
            )),
            list_user: render(format!(
                "SELECT {k}, version, expires_at, data FROM mooring_sessions \
                 WHERE user_id = ? AND expires_at > ? AND deadline > ? \
                 ORDER BY deadline DESC, created_at DESC, {k} DESC LIMIT ?"
            )),
            count_user: render(
                "SELECT COUNT(*) FROM mooring_sessions WHERE user_id = ? AND expires_at > ? AND deadline > ?"
                    .to_owned(),
            ),
            // The newest of the user's other live sessions that the cap leaves no room for (OFFSET cap - 1).
            cap_cut: render(format!(
                "SELECT deadline, created_at, {k} FROM mooring_sessions \
                 WHERE user_id = ? AND {k} <> ? AND expires_at > ? AND deadline > ? \
                 ORDER BY deadline DESC, created_at DESC, {k} DESC LIMIT 1 OFFSET ?"
            )),
            // That session and every older one of the user but the attached one, in the listing's order.
            evict_from: render(format!(
                "DELETE FROM mooring_sessions WHERE user_id = ? AND {k} <> ? AND (deadline < ? \
                 OR (deadline = ? AND (created_at < ? OR (created_at = ? AND {k} <= ?))))"
            )),
            delete_user: render(format!(
                "DELETE FROM mooring_sessions WHERE user_id = ? AND {k} <> ? AND expires_at > ? AND deadline > ?"
            )),
            delete_expired_batch: render(delete_expired_batch),
            overwrite_raw: render(format!("UPDATE mooring_sessions SET data = ? WHERE {k} = ?")),
        }
    }
}

/// A unix-millisecond time or version as the signed 64-bit integer SQL stores (saturating).
pub(crate) fn to_db(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored integer back as unsigned (a negative value, which no writer produces, reads as 0).
fn from_db(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Wraps a database error as the engine's store error.
fn db(err: sqlx::Error) -> Error {
    SqlStoreError::Database(err).into()
}

fn decode(bytes: &[u8]) -> mooring::Result<Record> {
    Record::decode(bytes).map_err(|e| Error::Corrupt(e.to_string()))
}

/// A random duration in `[0, max)`, to spread retries and replicas' cleanup rounds apart.
fn jitter(max: Duration) -> Duration {
    let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(getrandom::u64().unwrap_or(0) % max_ms)
}

/// The columns of a live row that `load` and `apply` need.
struct LiveRow {
    version: u64,
    expires_at: u64,
    deadline: u64,
    data: Vec<u8>,
}

impl LiveRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        Ok(Self {
            version: from_db(row.try_get(0)?),
            expires_at: from_db(row.try_get(1)?),
            deadline: from_db(row.try_get(2)?),
            data: row.try_get(3)?,
        })
    }
}

impl SqlStore {
    /// Connects to `url` with [`connect`](crate::connect) and brings the schema up to date
    /// ([`SqlStore::migrate`]). The one call an application needs.
    pub async fn connect(url: &str) -> Result<Self> {
        let store = Self::new(crate::pool::connect(url).await?)?;
        store.migrate().await?;
        Ok(store)
    }

    /// A store on an existing pool, for applications that share their pool or run migrations separately. The
    /// dialect comes from the pool's URL. Call [`SqlStore::migrate`] before first use.
    pub fn new(pool: AnyPool) -> Result<Self> {
        let dialect = Dialect::from_url(pool.connect_options().database_url.as_str())?;
        Ok(Self {
            pool,
            dialect,
            queries: Arc::new(Queries::new(dialect)),
        })
    }

    /// Creates or upgrades the `mooring_sessions` table. Idempotent and safe to run from many replicas at
    /// once; returns the migration versions this call applied (empty when the schema was already current).
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        crate::migrate::run(&self.pool, self.dialect).await
    }

    /// The connection pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The dialect the store speaks.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Deletes every expired row, 500 rows per statement with a short pause between
    /// statements, and returns how many it deleted. Requests never wait for more than one batch.
    pub async fn delete_expired(&self) -> Result<u64> {
        let mut total = 0;
        loop {
            let deleted = sqlx::query(AssertSqlSafe(self.queries.delete_expired_batch.clone()))
                .bind(to_db(now_ms()))
                .execute(&self.pool)
                .await?
                .rows_affected();
            total += deleted;
            if deleted < CLEANUP_BATCH {
                return Ok(total);
            }
            tokio::time::sleep(CLEANUP_PAUSE).await;
        }
    }

    /// Spawns a task that runs [`SqlStore::delete_expired`] every `interval` (the first round after a random
    /// part of it, so replicas started together do not clean together). Failures are logged and retried on
    /// the next round; the task runs until the returned handle is aborted or the runtime shuts down.
    pub fn spawn_cleanup(&self, interval: Duration) -> JoinHandle<()> {
        let store = self.clone();
        crate::cleanup::spawn("sessions", self.dialect, interval, jitter(interval), move || {
            let store = store.clone();
            async move { store.delete_expired().await }
        })
    }

    /// Replaces the stored bytes of a record, keeping everything else. For tests of corrupt-record handling;
    /// returns whether a row was found.
    pub async fn overwrite_raw(&self, key: &StoreKey, bytes: Vec<u8>) -> Result<bool> {
        let done = sqlx::query(AssertSqlSafe(self.queries.overwrite_raw.clone()))
            .bind(bytes)
            .bind(key.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// After a created record: enforces the per-user cap if it has a user.
    async fn attached(&self, key: &StoreKey, user: Option<&str>, policy: &Policy) -> mooring::Result<()> {
        match user {
            Some(user) => self.enforce_cap(key, user, policy).await,
            None => Ok(()),
        }
    }

    async fn select_live(&self, key: &StoreKey, now: u64) -> mooring::Result<Option<LiveRow>> {
        let row = sqlx::query(AssertSqlSafe(self.queries.select_live.clone()))
            .bind(key.as_str())
            .bind(to_db(now))
            .bind(to_db(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(LiveRow::from_row).transpose().map_err(db)
    }

    async fn insert(
        &self,
        key: &StoreKey,
        record: &Record,
        bytes: &[u8],
        expires_at: u64,
    ) -> sqlx::Result<()> {
        sqlx::query(AssertSqlSafe(self.queries.insert.clone()))
            .bind(key.as_str())
            .bind(record.user.as_deref())
            .bind(to_db(record.created_at))
            .bind(to_db(record.deadline))
            .bind(to_db(expires_at))
            .bind(bytes)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes `user`'s oldest live sessions other than `attached` until the policy's cap holds.
    async fn enforce_cap(&self, attached: &StoreKey, user: &str, policy: &Policy) -> mooring::Result<()> {
        let Some(cap) = policy.max_sessions_per_user else {
            return Ok(());
        };
        let now = to_db(now_ms());
        let cut = sqlx::query(AssertSqlSafe(self.queries.cap_cut.clone()))
            .bind(user)
            .bind(attached.as_str())
            .bind(now)
            .bind(now)
            .bind(i64::from(cap.get() - 1))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        let Some(cut) = cut else { return Ok(()) };
        let deadline: i64 = cut.try_get(0).map_err(db)?;
        let created_at: i64 = cut.try_get(1).map_err(db)?;
        let key: String = cut.try_get(2).map_err(db)?;
        let evicted = sqlx::query(AssertSqlSafe(self.queries.evict_from.clone()))
            .bind(user)
            .bind(attached.as_str())
            .bind(deadline)
            .bind(deadline)
            .bind(created_at)
            .bind(created_at)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected();
        tracing::debug!(
            evicted,
            cap = cap.get(),
            "user session cap: oldest sessions deleted"
        );
        Ok(())
    }
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.kind() == ErrorKind::UniqueViolation)
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn load(&self, key: &StoreKey, policy: &Policy) -> mooring::Result<Option<Loaded>> {
        let now = now_ms();
        let Some(row) = self.select_live(key, now).await? else {
            return Ok(None);
        };
        let record = decode(&row.data)?;
        let mut expires_at = row.expires_at;
        let fresh = policy.expires_at(now, row.deadline);
        let granularity = u64::try_from(policy.touch_granularity().as_millis()).unwrap_or(u64::MAX);
        if fresh > row.expires_at && fresh - row.expires_at >= granularity {
            let touched = sqlx::query(AssertSqlSafe(self.queries.touch.clone()))
                .bind(to_db(fresh))
                .bind(key.as_str())
                .bind(to_db(now))
                .bind(to_db(fresh))
                .execute(&self.pool)
                .await
                .map_err(db)?;
            // Zero rows: a concurrent load already moved it further, or the row is gone since we read it. The
            // record we hold was live when read either way.
            if touched.rows_affected() > 0 {
                expires_at = fresh;
            }
        }
        Ok(Some(Loaded {
            record,
            version: row.version,
            expires_at,
        }))
    }

    async fn create(&self, key: &StoreKey, record: &Record, policy: &Policy) -> mooring::Result<()> {
        let bytes = record.encode_within(policy)?;
        let now = now_ms();
        let expires_at = policy.expires_at(now, record.deadline);
        match self.insert(key, record, &bytes, expires_at).await {
            Ok(()) => return self.attached(key, record.user.as_deref(), policy).await,
            Err(err) if is_unique_violation(&err) => {}
            Err(err) => return Err(db(err)),
        }
        // The key is taken. An expired row may be replaced; a live one is a conflict.
        let cleared = sqlx::query(AssertSqlSafe(self.queries.delete_dead_key.clone()))
            .bind(key.as_str())
            .bind(to_db(now))
            .bind(to_db(now))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if cleared.rows_affected() == 0 {
            return Err(Error::Conflict);
        }
        match self.insert(key, record, &bytes, expires_at).await {
            Ok(()) => self.attached(key, record.user.as_deref(), policy).await,
            Err(err) if is_unique_violation(&err) => Err(Error::Conflict),
            Err(err) => Err(db(err)),
        }
    }

    async fn apply(&self, key: &StoreKey, delta: &Delta, policy: &Policy) -> mooring::Result<Applied> {
        for attempt in 0..MAX_APPLY_ATTEMPTS {
            let now = now_ms();
            let Some(row) = self.select_live(key, now).await? else {
                return Ok(Applied::Missing);
            };
            if let Some(expected) = delta.expected_version
                && expected != row.version
            {
                return Ok(Applied::Conflict { current: row.version });
            }
            let mut record = decode(&row.data)?;
            record.apply(delta);
            let bytes = record.encode_within(policy)?;
            let updated = sqlx::query(AssertSqlSafe(self.queries.update.clone()))
                .bind(bytes)
                .bind(record.user)
                .bind(to_db(policy.expires_at(now, row.deadline)))
                .bind(key.as_str())
                .bind(to_db(row.version))
                .bind(to_db(now))
                .bind(to_db(now))
                .execute(&self.pool)
                .await
                .map_err(db)?;
            if updated.rows_affected() > 0 {
                if let Some(Some(user)) = &delta.user {
                    self.enforce_cap(key, user, policy).await?;
                }
                return Ok(Applied::Saved {
                    version: row.version + 1,
                });
            }
            // Another writer got there first (or the row expired meanwhile): back off a little, growing with
            // each loss and randomized so the losers do not collide again, then re-read.
            let cap = Duration::from_millis(1 << attempt.min(5));
            tokio::time::sleep(jitter(cap)).await;
        }
        Err(Error::Conflict)
    }

    async fn delete(&self, key: &StoreKey) -> mooring::Result<bool> {
        let now = to_db(now_ms());
        let deleted = sqlx::query(AssertSqlSafe(self.queries.delete_live.clone()))
            .bind(key.as_str())
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn list_user(&self, user: &str, limit: usize) -> mooring::Result<Vec<(StoreKey, Loaded)>> {
        let now = to_db(now_ms());
        let rows = sqlx::query(AssertSqlSafe(self.queries.list_user.clone()))
            .bind(user)
            .bind(now)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let key: String = row.try_get(0).map_err(db)?;
            let version: i64 = row.try_get(1).map_err(db)?;
            let expires_at: i64 = row.try_get(2).map_err(db)?;
            let data: Vec<u8> = row.try_get(3).map_err(db)?;
            let key = StoreKey::from_stored(key);
            // A record that cannot be decoded is no session to list (a load reports it as corrupt).
            let record = match decode(&data) {
                Ok(record) => record,
                Err(err) => {
                    tracing::warn!(session = %key.fingerprint(), %err, "corrupt session record left out of a user's sessions");
                    continue;
                }
            };
            let loaded = Loaded {
                record,
                version: from_db(version),
                expires_at: from_db(expires_at),
            };
            out.push((key, loaded));
        }
        Ok(out)
    }

    async fn count_user(&self, user: &str) -> mooring::Result<u64> {
        let now = to_db(now_ms());
        let row = sqlx::query(AssertSqlSafe(self.queries.count_user.clone()))
            .bind(user)
            .bind(now)
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        let live: i64 = row.try_get(0).map_err(db)?;
        Ok(from_db(live))
    }

    async fn delete_user(&self, user: &str, keep: Option<&StoreKey>) -> mooring::Result<u64> {
        let now = to_db(now_ms());
        // Keys are never empty, so "" keeps nothing.
        let keep = keep.map_or("", StoreKey::as_str);
        let deleted = sqlx::query(AssertSqlSafe(self.queries.delete_user.clone()))
            .bind(user)
            .bind(keep)
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(deleted.rows_affected())
    }

    async fn ping(&self) -> mooring::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_queries_use_numbered_placeholders_and_quoted_key() {
        let q = Queries::new(Dialect::Postgres);
        assert!(!q.update.contains('?'), "{}", q.update);
        assert!(q.update.contains("\"key\" = $4 AND version = $5"), "{}", q.update);
        assert!(q.delete_expired_batch.contains("SKIP LOCKED"));
    }

    #[test]
    fn mysql_queries_quote_key_with_backticks() {
        let q = Queries::new(Dialect::MySql);
        assert!(q.select_live.contains("`key` = ?"), "{}", q.select_live);
    }

    #[test]
    fn db_integers_saturate() {
        assert_eq!(to_db(u64::MAX), i64::MAX);
        assert_eq!(from_db(-1), 0);
        assert_eq!(from_db(to_db(1_700_000_000_000)), 1_700_000_000_000);
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        for _ in 0..100 {
            assert!(jitter(Duration::from_millis(8)) < Duration::from_millis(8));
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
