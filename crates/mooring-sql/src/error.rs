//! [`SqlStoreError`]: what can go wrong talking to the database.
//!
//! It converts into [`mooring::Error::Store`], which the engine answers with a 503 and logs; the database's own
//! error text (table names, constraint names, server versions) stays in that log line and never reaches a
//! client.

/// A `Result` with [`SqlStoreError`] as its error.
pub type Result<T, E = SqlStoreError> = std::result::Result<T, E>;

/// An error from the SQL session store.
#[derive(Debug, thiserror::Error)]
pub enum SqlStoreError {
    /// The database failed, refused the query or could not be reached in time.
    #[error("session database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database URL names a scheme this store does not speak.
    #[error(
        "unsupported session database URL scheme {scheme:?}: use sqlite://PATH, postgres://... or mysql://..."
    )]
    UnsupportedUrl {
        /// The scheme found (the rest of the URL is withheld: it may hold a password).
        scheme: String,
    },
    /// A schema migration failed; the database is left at the last version that completed.
    #[error("session schema migration {version} ({description}) failed: {source}")]
    Migration {
        /// The migration that failed.
        version: i64,
        /// What the migration does.
        description: &'static str,
        /// Why it failed.
        #[source]
        source: sqlx::Error,
    },
    /// Another process holds the MySQL migration lock for longer than we wait for it.
    #[error("timed out waiting {0} s for the session schema migration lock held by another process")]
    MigrationLockTimeout(u32),
}

impl From<SqlStoreError> for mooring::Error {
    fn from(err: SqlStoreError) -> Self {
        mooring::Error::store(err)
    }
}
