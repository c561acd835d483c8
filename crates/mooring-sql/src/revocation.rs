//! [`SqlRevocationLog`]: the [`RevocationLog`] contract on one SQL table, `mooring_revocations` (migration 3).
//!
//! One row per ended record: its key (the session store's own key, e.g. the Redis key a `moor backup` file
//! names) and `until_ms`, the unix-ms time after which the entry is dead. A record call is one upsert
//! statement for the whole batch that keeps the later of the stored and the new `until_ms`, so an entry is
//! only ever renewed, never shortened, whatever the order concurrent replicas write in. A lookup is one
//! `SELECT ... WHERE key IN (...) AND until_ms > now` for the batch. Dead rows are removed by
//! [`SqlRevocationLog::delete_expired`] (indexed on `until_ms`), which [`SqlRevocationLog::spawn_cleanup`]
//! runs periodically, so the table holds the records ended within one retention.
//!
//! Keys are compared byte for byte on every dialect: SQLite compares text with its binary collation,
//! PostgreSQL's deterministic collations compare equal strings only when their bytes are equal, and MySQL
//! keeps the key as `VARBINARY(255)` (its `_bin` collations are PAD SPACE: `'a'` would equal `'a '`).
//!
//! Keys within a batch are deduplicated (PostgreSQL refuses an upsert that touches one row twice) and sorted,
//! so concurrent batches take their row locks in one order; a deadlock the server still reports (InnoDB's
//! gap locks) is retried a few times, since the upsert is idempotent.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use mooring::revocation::{check_keys, retention_ms};
use mooring::{Error, RevocationLog, now_ms};
use sqlx::{AnyPool, AssertSqlSafe};
use tokio::task::JoinHandle;

use crate::dialect::Dialect;
use crate::error::{Result, SqlStoreError};
use crate::store::{SqlStore, to_db};

/// How many times a record call is retried after the database reports a deadlock.
const DEADLOCK_RETRIES: u32 = 5;

/// The revocation log in SQL. Cloning shares the pool.
#[derive(Clone, Debug)]
pub struct SqlRevocationLog {
    pool: AnyPool,
    dialect: Dialect,
    retention_ms: u64,
}

fn db(err: sqlx::Error) -> Error {
    SqlStoreError::Database(err).into()
}

/// True for the errors a retry can cure: a deadlock or a serialization failure.
fn is_deadlock(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(e) => {
            // PostgreSQL: 40P01 deadlock_detected, 40001 serialization_failure; MySQL: SQLSTATE 40001 for
            // ER_LOCK_DEADLOCK (1213).
            matches!(e.code().as_deref(), Some("40P01" | "40001" | "1213"))
        }
        _ => false,
    }
}

/// `n` comma-separated copies of `item`.
fn repeat(item: &str, n: usize) -> String {
    vec![item; n].join(", ")
}

impl SqlStore {
    /// A [`RevocationLog`] on this store's pool, keeping each entry for `retention` (the sessions' absolute
    /// lifetime). Its `mooring_revocations` table comes with [`SqlStore::migrate`].
    pub fn revocations(&self, retention: Duration) -> SqlRevocationLog {
        SqlRevocationLog {
            pool: self.pool().clone(),
            dialect: self.dialect(),
            retention_ms: retention_ms(retention),
        }
    }
}

impl SqlRevocationLog {
    /// Connects to `url` and brings the schema up to date (the same migrations as [`SqlStore`]); entries are
    /// kept for `retention`.
    pub async fn connect(url: &str, retention: Duration) -> Result<Self> {
        Ok(SqlStore::connect(url).await?.revocations(retention))
    }

    /// The upsert of `n` keys, each row binding its key and `until_ms`.
    fn record_sql(&self, n: usize) -> String {
        let k = self.dialect.quote("key");
        let rows = repeat("(?, ?)", n);
        let sql = match self.dialect {
            Dialect::Sqlite => format!(
                "INSERT INTO mooring_revocations ({k}, until_ms) VALUES {rows} ON CONFLICT ({k}) DO UPDATE \
                 SET until_ms = MAX(mooring_revocations.until_ms, excluded.until_ms)"
            ),
            Dialect::Postgres => format!(
                "INSERT INTO mooring_revocations ({k}, until_ms) VALUES {rows} ON CONFLICT ({k}) DO UPDATE \
                 SET until_ms = GREATEST(mooring_revocations.until_ms, excluded.until_ms)"
            ),
            Dialect::MySql => format!(
                "INSERT INTO mooring_revocations ({k}, until_ms) VALUES {rows} \
                 ON DUPLICATE KEY UPDATE until_ms = GREATEST(until_ms, VALUES(until_ms))"
            ),
        };
        self.dialect.sql(&sql).into_owned()
    }

    /// The lookup of `n` keys, then the time they must outlive. MySQL reads its binary key back as text.
    fn find_sql(&self, n: usize) -> String {
        let k = self.dialect.quote("key");
        let column = match self.dialect {
            Dialect::MySql => format!("CAST({k} AS CHAR CHARACTER SET utf8mb4)"),
            Dialect::Sqlite | Dialect::Postgres => k.clone(),
        };
        let list = repeat("?", n);
        self.dialect
            .sql(&format!(
                "SELECT {column} FROM mooring_revocations WHERE {k} IN ({list}) AND until_ms > ?"
            ))
            .into_owned()
    }

    /// Deletes the entries past their retention; returns how many.
    pub async fn delete_expired(&self) -> Result<u64> {
        let sql = self
            .dialect
            .sql("DELETE FROM mooring_revocations WHERE until_ms <= ?")
            .into_owned();
        Ok(sqlx::query(AssertSqlSafe(sql))
            .bind(to_db(now_ms()))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Spawns a task that runs [`SqlRevocationLog::delete_expired`] every `interval`; failures are logged and
    /// retried on the next round. The task runs until the handle is aborted or the runtime shuts down.
    pub fn spawn_cleanup(&self, interval: Duration) -> JoinHandle<()> {
        let log = self.clone();
        crate::cleanup::spawn(
            "revocation log entries",
            self.dialect,
            interval,
            Duration::ZERO,
            move || {
                let log = log.clone();
                async move { log.delete_expired().await }
            },
        )
    }
}

#[async_trait]
impl RevocationLog for SqlRevocationLog {
    async fn record(&self, keys: &[String]) -> mooring::Result<()> {
        check_keys(keys)?;
        let keys: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
        if keys.is_empty() {
            return Ok(());
        }
        let sql = self.record_sql(keys.len());
        let mut attempt = 0;
        loop {
            let until = to_db(now_ms().saturating_add(self.retention_ms));
            let query = keys
                .iter()
                .fold(sqlx::query(AssertSqlSafe(sql.as_str())), |q, key| {
                    q.bind(*key).bind(until)
                });
            match query.execute(&self.pool).await {
                Ok(_) => return Ok(()),
                Err(err) if attempt < DEADLOCK_RETRIES && is_deadlock(&err) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                }
                Err(err) => return Err(db(err)),
            }
        }
    }

    async fn find(&self, keys: &[String]) -> mooring::Result<HashSet<String>> {
        check_keys(keys)?;
        if keys.is_empty() {
            return Ok(HashSet::new());
        }
        let sql = self.find_sql(keys.len());
        let query = keys
            .iter()
            .fold(
                sqlx::query_scalar::<_, String>(AssertSqlSafe(sql.as_str())),
                |q, key| q.bind(key.as_str()),
            )
            .bind(to_db(now_ms()));
        let found = query.fetch_all(&self.pool).await.map_err(db)?;
        Ok(found.into_iter().collect())
    }

    async fn delete_expired(&self) -> mooring::Result<u64> {
        Ok(SqlRevocationLog::delete_expired(self).await?)
    }
}
