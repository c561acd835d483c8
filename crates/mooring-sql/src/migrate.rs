//! A tiny schema migrator: an ordered list of numbered migrations, each a list of per-dialect statements, and
//! a `mooring_schema_migrations` table recording the numbers applied.
//!
//! Invariants:
//!
//! - **Idempotent.** Running it again applies nothing; statements are `IF NOT EXISTS` where the dialect allows,
//!   so a migration interrupted half-way (MySQL cannot roll DDL back) completes on the next run.
//! - **Safe when many replicas start at once.** Exactly one process migrates at a time, the others wait and
//!   then find nothing to do: PostgreSQL takes `pg_advisory_xact_lock` inside the migration transaction,
//!   MySQL holds `GET_LOCK` on one connection for the whole run, SQLite runs it in one `BEGIN IMMEDIATE`
//!   (write) transaction.
//! - **Rolling updates.** Versions the running code does not know (written by a newer replica) are ignored,
//!   so an old replica keeps starting while a new one has already migrated forward. Migrations are therefore
//!   additive: a new column must have a default, nothing is renamed or dropped while old code may run.

use sqlx::{Any, AnyConnection, AnyPool, Executor, Transaction};

use crate::dialect::Dialect;
use crate::error::{Result, SqlStoreError};

/// Key of the PostgreSQL advisory lock taken while migrating (an arbitrary constant: "mooring" in ASCII).
const PG_LOCK_KEY: i64 = 0x006d_6f6f_7269_6e67;
/// Name of the MySQL user lock taken while migrating.
const MYSQL_LOCK_NAME: &str = "mooring_schema_migrations";
/// How long a MySQL replica waits for another one's migration, in seconds.
const MYSQL_LOCK_WAIT_SECS: u32 = 60;

/// One schema change. Applications can run their own list with [`run_migrations`], under the same lock.
pub struct Migration {
    /// Its number: applied in ascending order, recorded once applied.
    pub version: i64,
    /// What it does, for errors and logs.
    pub description: &'static str,
    /// Its statements for a dialect, run in order.
    pub statements: fn(Dialect) -> Vec<&'static str>,
}

/// Every migration, in order. Append only: never edit or renumber one that has shipped.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "create mooring_sessions",
        statements: create_sessions,
    },
    Migration {
        version: 2,
        description: "create mooring_attempts",
        statements: create_attempts,
    },
    Migration {
        version: 3,
        description: "create mooring_revocations",
        statements: create_revocations,
    },
];

fn create_sessions(dialect: Dialect) -> Vec<&'static str> {
    match dialect {
        Dialect::Sqlite => vec![
            r#"CREATE TABLE IF NOT EXISTS mooring_sessions (
                "key" VARCHAR(64) NOT NULL PRIMARY KEY,
                user_id VARCHAR(255) NULL,
                version BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                deadline BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                data BLOB NOT NULL
            )"#,
            "CREATE INDEX IF NOT EXISTS mooring_sessions_user_id ON mooring_sessions (user_id)",
            "CREATE INDEX IF NOT EXISTS mooring_sessions_expires_at ON mooring_sessions (expires_at)",
        ],
        Dialect::Postgres => vec![
            r#"CREATE TABLE IF NOT EXISTS mooring_sessions (
                "key" VARCHAR(64) NOT NULL PRIMARY KEY,
                user_id VARCHAR(255) NULL,
                version BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                deadline BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                data BYTEA NOT NULL
            )"#,
            "CREATE INDEX IF NOT EXISTS mooring_sessions_user_id ON mooring_sessions (user_id)",
            "CREATE INDEX IF NOT EXISTS mooring_sessions_expires_at ON mooring_sessions (expires_at)",
        ],
        // Keys are case-sensitive base64url and user ids are compared exactly, so both use binary collations
        // (MySQL's default collation would fold case). The indexes live in the one CREATE TABLE because MySQL
        // has no CREATE INDEX IF NOT EXISTS.
        Dialect::MySql => vec![
            "CREATE TABLE IF NOT EXISTS mooring_sessions (
                `key` VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
                user_id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
                version BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                deadline BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                data LONGBLOB NOT NULL,
                INDEX mooring_sessions_user_id (user_id),
                INDEX mooring_sessions_expires_at (expires_at)
            ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4",
        ],
    }
}

/// Failure counts and blocks of the login throttle ([`crate::SqlAttemptStore`]): one row per attempt key, dead
/// once both `window_end` and `blocked_until` have passed (the cleanup deletes by `window_end` first, indexed).
fn create_attempts(dialect: Dialect) -> Vec<&'static str> {
    match dialect {
        Dialect::Sqlite | Dialect::Postgres => vec![
            r#"CREATE TABLE IF NOT EXISTS mooring_attempts (
                "key" VARCHAR(64) NOT NULL PRIMARY KEY,
                failures BIGINT NOT NULL,
                window_end BIGINT NOT NULL,
                blocked_until BIGINT NOT NULL
            )"#,
            "CREATE INDEX IF NOT EXISTS mooring_attempts_window_end ON mooring_attempts (window_end)",
        ],
        Dialect::MySql => vec![
            "CREATE TABLE IF NOT EXISTS mooring_attempts (
                `key` VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
                failures BIGINT NOT NULL,
                window_end BIGINT NOT NULL,
                blocked_until BIGINT NOT NULL,
                INDEX mooring_attempts_window_end (window_end)
            ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4",
        ],
    }
}

/// The revocation log ([`crate::SqlRevocationLog`]): one row per ended record, dead once `until_ms` has passed
/// (the cleanup deletes by it, indexed). Keys are compared byte for byte: MySQL keeps them as `VARBINARY`,
/// because its `_bin` collations ignore trailing spaces.
fn create_revocations(dialect: Dialect) -> Vec<&'static str> {
    match dialect {
        Dialect::Sqlite | Dialect::Postgres => vec![
            r#"CREATE TABLE IF NOT EXISTS mooring_revocations (
                "key" VARCHAR(255) NOT NULL PRIMARY KEY,
                until_ms BIGINT NOT NULL
            )"#,
            "CREATE INDEX IF NOT EXISTS mooring_revocations_until_ms ON mooring_revocations (until_ms)",
        ],
        Dialect::MySql => vec![
            "CREATE TABLE IF NOT EXISTS mooring_revocations (
                `key` VARBINARY(255) NOT NULL PRIMARY KEY,
                until_ms BIGINT NOT NULL,
                INDEX mooring_revocations_until_ms (until_ms)
            ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4",
        ],
    }
}

/// The session store's version table.
const SESSION_TABLE: &str = "mooring_schema_migrations";

/// Brings the session schema up to date; see the module documentation. Returns the versions it applied.
pub(crate) async fn run(pool: &AnyPool, dialect: Dialect) -> Result<Vec<i64>> {
    run_migrations(pool, dialect, SESSION_TABLE, MIGRATIONS).await
}

/// Applies the `migrations` not yet recorded in the version table `table` (created if missing), one process
/// at a time, as described in the module documentation. Returns the versions it applied.
///
/// # Panics
/// Panics if `table` is not a plain identifier (ASCII letters, digits, `_`): it is spliced into SQL.
pub async fn run_migrations(
    pool: &AnyPool,
    dialect: Dialect,
    table: &'static str,
    migrations: &'static [Migration],
) -> Result<Vec<i64>> {
    assert!(
        !table.is_empty() && table.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "migration table name must be a plain identifier"
    );
    let list = MigrationList { table, migrations };
    match dialect {
        Dialect::Postgres => {
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PG_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
            let applied = apply_pending(&mut tx, dialect, &list).await?;
            tx.commit().await?;
            Ok(applied)
        }
        Dialect::Sqlite => {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let applied = apply_pending(&mut tx, dialect, &list).await?;
            tx.commit().await?;
            Ok(applied)
        }
        Dialect::MySql => {
            let mut conn = pool.acquire().await?;
            let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
                .bind(MYSQL_LOCK_NAME)
                .bind(i64::from(MYSQL_LOCK_WAIT_SECS))
                .fetch_one(&mut *conn)
                .await?;
            if got != Some(1) {
                return Err(SqlStoreError::MigrationLockTimeout(MYSQL_LOCK_WAIT_SECS));
            }
            let result = apply_pending(&mut conn, dialect, &list).await;
            let released = sqlx::query("SELECT RELEASE_LOCK(?)")
                .bind(MYSQL_LOCK_NAME)
                .execute(&mut *conn)
                .await;
            if released.is_err() {
                // A connection we cannot talk to any more must not go back to the pool still holding the
                // lock; closing it makes the server release the lock.
                conn.close_on_drop();
            }
            let applied = result?;
            released?;
            Ok(applied)
        }
    }
}

/// Either a transaction (PostgreSQL, SQLite) or a plain connection (MySQL, whose DDL commits implicitly).
trait MigrationConn: Send {
    fn conn(&mut self) -> &mut AnyConnection;
}

impl MigrationConn for Transaction<'static, Any> {
    fn conn(&mut self) -> &mut AnyConnection {
        self
    }
}

impl MigrationConn for sqlx::pool::PoolConnection<Any> {
    fn conn(&mut self) -> &mut AnyConnection {
        self
    }
}

/// A version table and the migrations it records.
struct MigrationList {
    table: &'static str,
    migrations: &'static [Migration],
}

/// Applies, in order, every migration not yet recorded. The caller holds the dialect's migration lock.
async fn apply_pending(
    conn: &mut impl MigrationConn,
    dialect: Dialect,
    list: &MigrationList,
) -> Result<Vec<i64>> {
    let conn = conn.conn();
    let table = list.table;
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {table} (version BIGINT NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL)"
    );
    conn.execute(sqlx::AssertSqlSafe(create)).await?;
    let done: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT version FROM {table}")))
        .fetch_all(&mut *conn)
        .await?;
    let insert = dialect
        .sql(&format!(
            "INSERT INTO {table} (version, applied_at) VALUES (?, ?)"
        ))
        .into_owned();
    let mut applied = Vec::new();
    for migration in list.migrations.iter().filter(|m| !done.contains(&m.version)) {
        let failed = |source| SqlStoreError::Migration {
            version: migration.version,
            description: migration.description,
            source,
        };
        for statement in (migration.statements)(dialect) {
            conn.execute(statement).await.map_err(failed)?;
        }
        sqlx::query(sqlx::AssertSqlSafe(insert.as_ref()))
            .bind(migration.version)
            .bind(crate::store::to_db(mooring::now_ms()))
            .execute(&mut *conn)
            .await
            .map_err(failed)?;
        tracing::info!(
            version = migration.version,
            description = migration.description,
            table,
            "applied schema migration"
        );
        applied.push(migration.version);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_ascending_order() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert!(MIGRATIONS.iter().all(|m| m.version > 0));
    }

    #[test]
    fn every_dialect_has_statements_for_every_migration() {
        for m in MIGRATIONS {
            for dialect in [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql] {
                assert!(
                    !(m.statements)(dialect).is_empty(),
                    "{} for {dialect:?}",
                    m.version
                );
            }
        }
    }
}
