//! Opening an [`AnyPool`] with the settings a session store needs.
//!
//! SQLite is the one that needs care, because several processes (replicas on one host, the CLI, a backup job)
//! may open the same file at once:
//!
//! - `mode=rwc` creates the file if it is missing.
//! - WAL journal: readers never block the writer and the writer never blocks readers. The journal mode is
//!   stored in the file, so it is switched once; switching needs an exclusive lock that SQLite does not wait
//!   for, so the switch is retried for up to [`SQLITE_BUSY_TIMEOUT`] when another process holds the file.
//! - `busy_timeout` of [`SQLITE_BUSY_TIMEOUT`]: a writer waits for another process's write instead of failing
//!   at once.
//! - `synchronous = NORMAL`: in WAL mode a commit is durable across application crashes and only the last
//!   transactions can be lost on power loss, which is the right trade for sessions.
//! - foreign keys on (sqlx's default, made explicit).
//!
//! For every database, a pooled connection is pinged before it is handed out (sqlx's default): one extra
//! round trip per call, paid so that connections killed by a database restart or failover are replaced
//! transparently instead of failing the next requests. Waiting for a connection is bounded by
//! [`ACQUIRE_TIMEOUT`].
//!
//! An in-memory SQLite URL (`sqlite::memory:`) gets exactly one connection that is never recycled: through
//! `Any`, each new connection would otherwise open a new, empty database.

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, Executor};

use crate::dialect::Dialect;
use crate::error::Result;

/// How long an SQLite writer waits for another connection or process to finish its write.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a store call waits for a free pooled connection before failing (the engine's own timeout is the
/// real bound; this keeps a dead database from parking calls forever).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections per pool for PostgreSQL and MySQL. Small on purpose: every replica opens its own pool and the
/// server's connection limit is shared by all of them.
const SERVER_MAX_CONNECTIONS: u32 = 10;
/// Connections per pool for an SQLite file: writes are serialized anyway, reads run in parallel under WAL.
const SQLITE_MAX_CONNECTIONS: u32 = 8;

/// Opens a connection pool for `url` (`sqlite://PATH`, `postgres://...`, `mysql://...`), with the SQLite
/// settings described in the module documentation. Installs sqlx's `Any` drivers on first use.
///
/// The pool connects eagerly, so an unreachable database fails here rather than on the first request.
pub async fn connect(url: &str) -> Result<AnyPool> {
    sqlx::any::install_default_drivers();
    let dialect = Dialect::from_url(url)?;
    let options = AnyPoolOptions::new()
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .min_connections(0);
    let pool = match dialect {
        Dialect::Postgres | Dialect::MySql => {
            options
                .max_connections(SERVER_MAX_CONNECTIONS)
                .idle_timeout(Duration::from_secs(300))
                .connect(url)
                .await?
        }
        Dialect::Sqlite if is_sqlite_memory(url) => {
            options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .after_connect(|conn, _| Box::pin(sqlite_settings(conn)))
                .connect(url)
                .await?
        }
        Dialect::Sqlite => {
            options
                .max_connections(SQLITE_MAX_CONNECTIONS)
                .after_connect(|conn, _| Box::pin(sqlite_settings(conn)))
                .connect(&sqlite_create_if_missing(url))
                .await?
        }
    };
    Ok(pool)
}

/// True for SQLite URLs that name an in-memory database.
fn is_sqlite_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// Adds `mode=rwc` (create the file if missing) unless the URL already chooses a mode.
fn sqlite_create_if_missing(url: &str) -> String {
    match url.split_once('?') {
        Some((_, query)) if query.split('&').any(|pair| pair.starts_with("mode=")) => url.to_owned(),
        Some(_) => format!("{url}&mode=rwc"),
        None => format!("{url}?mode=rwc"),
    }
}

/// Per-connection SQLite settings; see the module documentation.
async fn sqlite_settings(conn: &mut AnyConnection) -> sqlx::Result<()> {
    let busy_ms = SQLITE_BUSY_TIMEOUT.as_millis();
    conn.execute(sqlx::AssertSqlSafe(format!("PRAGMA busy_timeout = {busy_ms}")))
        .await?;
    conn.execute("PRAGMA synchronous = NORMAL").await?;
    conn.execute("PRAGMA foreign_keys = ON").await?;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await?;
    if mode.eq_ignore_ascii_case("wal") || mode.eq_ignore_ascii_case("memory") {
        return Ok(());
    }
    // Entering WAL takes an exclusive lock that busy_timeout does not cover: retry while another process holds
    // the file (it is usually just another replica switching to WAL at the same moment).
    let deadline = tokio::time::Instant::now() + SQLITE_BUSY_TIMEOUT;
    loop {
        match sqlx::query_scalar::<_, String>("PRAGMA journal_mode = WAL")
            .fetch_one(&mut *conn)
            .await
        {
            Ok(_) => return Ok(()),
            Err(err) if tokio::time::Instant::now() >= deadline => return Err(err),
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_get_create_mode_unless_they_choose_one() {
        assert_eq!(
            sqlite_create_if_missing("sqlite://a.db"),
            "sqlite://a.db?mode=rwc"
        );
        assert_eq!(
            sqlite_create_if_missing("sqlite://a.db?cache=private"),
            "sqlite://a.db?cache=private&mode=rwc"
        );
        assert_eq!(
            sqlite_create_if_missing("sqlite://a.db?mode=ro"),
            "sqlite://a.db?mode=ro"
        );
        assert!(is_sqlite_memory("sqlite::memory:"));
        assert!(!is_sqlite_memory("sqlite://a.db"));
    }
}
