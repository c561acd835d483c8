//! [`SqlAttemptStore`]: the [`AttemptStore`] contract on one SQL table, `mooring_attempts` (migration 2).
//!
//! One row per attempt key: `failures` counted in the window ending at `window_end`, and `blocked_until`
//! (unix ms, 0 for none). Each call is one atomic statement (an upsert that restarts the window when it has
//! ended, or keeps the longer block), so concurrent failures on many replicas all count; MySQL has no
//! `RETURNING`, so its count is read back by a second statement, which may see a concurrent failure too
//! (that only blocks sooner). Rows are dead once both times have passed; [`SqlAttemptStore::delete_expired`]
//! removes them and [`SqlAttemptStore::spawn_cleanup`] runs it periodically, so the table holds at most the
//! keys touched in one window. Times come from the application's clock, as for the session rows.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mooring::{AttemptKey, AttemptStore, Error, now_ms};
use sqlx::{AnyPool, AssertSqlSafe};
use tokio::task::JoinHandle;

use crate::dialect::Dialect;
use crate::error::{Result, SqlStoreError};
use crate::store::{SqlStore, to_db};

/// Failure counts and blocks in SQL. Cloning shares the pool.
#[derive(Clone, Debug)]
pub struct SqlAttemptStore {
    pool: AnyPool,
    dialect: Dialect,
    queries: Arc<Queries>,
}

#[derive(Debug)]
struct Queries {
    count: Arc<str>,
    /// MySQL only: reads the count back after `count`.
    read_count: Option<Arc<str>>,
    block: Arc<str>,
    blocked: Arc<str>,
    reset: Arc<str>,
    delete_expired: Arc<str>,
}

impl Queries {
    fn new(dialect: Dialect) -> Self {
        let k = dialect.quote("key");
        let render = |sql: String| -> Arc<str> { dialect.sql(&sql).into() };
        let insert = format!("INSERT INTO mooring_attempts ({k}, failures, window_end, blocked_until)");
        let (count, read_count, block) = match dialect {
            Dialect::Sqlite | Dialect::Postgres => {
                let greatest = if dialect == Dialect::Sqlite {
                    "MAX"
                } else {
                    "GREATEST"
                };
                (
                    format!(
                        "{insert} VALUES (?, 1, ?, 0) ON CONFLICT ({k}) DO UPDATE SET \
                         failures = CASE WHEN mooring_attempts.window_end <= ? THEN 1 \
                         ELSE mooring_attempts.failures + 1 END, \
                         window_end = CASE WHEN mooring_attempts.window_end <= ? THEN ? \
                         ELSE mooring_attempts.window_end END \
                         RETURNING failures"
                    ),
                    None,
                    format!(
                        "{insert} VALUES (?, 0, ?, ?) ON CONFLICT ({k}) DO UPDATE SET \
                         blocked_until = {greatest}(mooring_attempts.blocked_until, excluded.blocked_until)"
                    ),
                )
            }
            // MySQL evaluates the assignments left to right, each seeing the ones before: `failures` is
            // assigned first, so both conditions read the old `window_end`.
            Dialect::MySql => (
                format!(
                    "{insert} VALUES (?, 1, ?, 0) ON DUPLICATE KEY UPDATE \
                     failures = IF(window_end <= ?, 1, failures + 1), \
                     window_end = IF(window_end <= ?, ?, window_end)"
                ),
                Some(render(format!(
                    "SELECT failures FROM mooring_attempts WHERE {k} = ?"
                ))),
                format!(
                    "{insert} VALUES (?, 0, ?, ?) ON DUPLICATE KEY UPDATE \
                     blocked_until = GREATEST(blocked_until, VALUES(blocked_until))"
                ),
            ),
        };
        Self {
            count: render(count),
            read_count,
            block: render(block),
            blocked: render(format!(
                "SELECT blocked_until FROM mooring_attempts WHERE {k} = ? AND blocked_until > ?"
            )),
            reset: render(format!("DELETE FROM mooring_attempts WHERE {k} = ?")),
            delete_expired: render(
                "DELETE FROM mooring_attempts WHERE window_end <= ? AND blocked_until <= ?".to_owned(),
            ),
        }
    }
}

fn db(err: sqlx::Error) -> Error {
    SqlStoreError::Database(err).into()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl SqlStore {
    /// An [`AttemptStore`] on this store's pool (its `mooring_attempts` table comes with [`SqlStore::migrate`]).
    pub fn throttle(&self) -> SqlAttemptStore {
        SqlAttemptStore::on(self.pool().clone(), self.dialect())
    }
}

impl SqlAttemptStore {
    /// Connects to `url` and brings the schema up to date (the same migrations as [`SqlStore`]).
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(SqlStore::connect(url).await?.throttle())
    }

    fn on(pool: AnyPool, dialect: Dialect) -> Self {
        Self {
            pool,
            dialect,
            queries: Arc::new(Queries::new(dialect)),
        }
    }

    /// Deletes the rows past both their window and their block; returns how many.
    pub async fn delete_expired(&self) -> Result<u64> {
        let now = to_db(now_ms());
        Ok(sqlx::query(AssertSqlSafe(self.queries.delete_expired.clone()))
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Spawns a task that runs [`SqlAttemptStore::delete_expired`] every `interval`; failures are logged and
    /// retried on the next round. The task runs until the handle is aborted or the runtime shuts down.
    pub fn spawn_cleanup(&self, interval: Duration) -> JoinHandle<()> {
        let store = self.clone();
        crate::cleanup::spawn(
            "login attempts",
            self.dialect,
            interval,
            Duration::ZERO,
            move || {
                let store = store.clone();
                async move { store.delete_expired().await }
            },
        )
    }
}

#[async_trait]
impl AttemptStore for SqlAttemptStore {
    async fn record_failure(&self, key: &AttemptKey, window: Duration) -> mooring::Result<u64> {
        let now = now_ms();
        let end = to_db(now.saturating_add(millis(window)));
        let now = to_db(now);
        let query = sqlx::query_scalar::<_, i64>(AssertSqlSafe(self.queries.count.clone()))
            .bind(key.as_str())
            .bind(end)
            .bind(now)
            .bind(now)
            .bind(end);
        let failures = match &self.queries.read_count {
            None => query.fetch_one(&self.pool).await.map_err(db)?,
            Some(read) => {
                sqlx::query(AssertSqlSafe(self.queries.count.clone()))
                    .bind(key.as_str())
                    .bind(end)
                    .bind(now)
                    .bind(now)
                    .bind(end)
                    .execute(&self.pool)
                    .await
                    .map_err(db)?;
                sqlx::query_scalar::<_, i64>(AssertSqlSafe(read.clone()))
                    .bind(key.as_str())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(db)?
            }
        };
        Ok(u64::try_from(failures).unwrap_or(0))
    }

    async fn block(&self, key: &AttemptKey, duration: Duration) -> mooring::Result<()> {
        let now = now_ms();
        sqlx::query(AssertSqlSafe(self.queries.block.clone()))
            .bind(key.as_str())
            .bind(to_db(now))
            .bind(to_db(now.saturating_add(millis(duration))))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn blocked_for(&self, key: &AttemptKey) -> mooring::Result<Option<Duration>> {
        let now = now_ms();
        let until: Option<i64> = sqlx::query_scalar(AssertSqlSafe(self.queries.blocked.clone()))
            .bind(key.as_str())
            .bind(to_db(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(until
            .and_then(|u| u64::try_from(u).ok())
            .filter(|u| *u > now)
            .map(|u| Duration::from_millis(u - now)))
    }

    async fn reset(&self, key: &AttemptKey) -> mooring::Result<()> {
        sqlx::query(AssertSqlSafe(self.queries.reset.clone()))
            .bind(key.as_str())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }
}
