//! # mooring-sql
//!
//! [`SqlStore`]: a [`mooring::SessionStore`] on SQL, through sqlx's `Any` driver. SQLite is the embedded
//! default (one file, shareable by several processes); PostgreSQL and MySQL/MariaDB serve many replicas.
//!
//! ```no_run
//! # async fn example() -> Result<(), mooring_sql::SqlStoreError> {
//! let store = mooring_sql::SqlStore::connect("sqlite://data/sessions.db").await?;
//! let _cleanup = store.spawn_cleanup(std::time::Duration::from_secs(60));
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - `store` ([`SqlStore`]): the table, the contract's operations, and the expired-row cleanup.
//! - `migrate` ([`run_migrations`], [`Migration`]): the schema migrator (a numbered list, a version table, one
//!   migrating process at a time), public so applications migrate their own tables the same way.
//! - [`connect`]: opening a pool with the settings each database needs (SQLite: WAL, busy timeout, ...).
//! - [`Dialect`]: SQLite / PostgreSQL / MySQL differences, including `?` → `$n` placeholder rewriting, public
//!   so applications can write their own portable queries on the same pool.
//! - `throttle` ([`SqlAttemptStore`], [`SqlStore::throttle`]): login throttling on the `mooring_attempts` table.
//! - `revocation` ([`SqlRevocationLog`], [`SqlStore::revocations`]): the [`mooring::RevocationLog`] on the
//!   `mooring_revocations` table, the sessions a store ended, so a restore from a backup never brings one back.
//! - [`SqlStoreError`]: what goes wrong; converts into [`mooring::Error::Store`].

mod cleanup;
mod dialect;
mod error;
mod migrate;
mod pool;
mod revocation;
mod store;
mod throttle;

pub use dialect::Dialect;
pub use error::{Result, SqlStoreError};
pub use migrate::{Migration, run_migrations};
pub use pool::{ACQUIRE_TIMEOUT, SQLITE_BUSY_TIMEOUT, connect};
pub use revocation::SqlRevocationLog;
pub use store::SqlStore;
pub use throttle::SqlAttemptStore;
