//! What goes wrong talking to Redis. Converts into [`mooring::Error`]: configuration and connection problems
//! become `Store` (503), a record of the wrong shape becomes `Corrupt` (read as absent).

/// A Redis store failure.
#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    /// The configuration cannot work (bad URL, address, or topology).
    #[error("Redis configuration: {0}")]
    Config(String),
    /// Redis answered with an error or could not be reached.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No Sentinel could name a reachable master.
    #[error("no master for '{0}' found through the Sentinels")]
    NoMaster(String),
    /// Fewer replicas than required confirmed a write (`WAIT`): it does not count as saved.
    #[error("write not confirmed by {wanted} replica(s) within the WAIT timeout (confirmed by {got})")]
    NotReplicated {
        /// Replicas required.
        wanted: u32,
        /// Replicas that confirmed.
        got: u32,
    },
    /// The store kept failing until its deadline.
    #[error("Redis did not recover within the {0:?} deadline: {1}")]
    Deadline(std::time::Duration, Box<RedisStoreError>),
    /// A stored value does not have the shape the store writes.
    #[error("session record has an unexpected shape: {0}")]
    Shape(String),
}

impl From<RedisStoreError> for mooring::Error {
    fn from(err: RedisStoreError) -> Self {
        match err {
            RedisStoreError::Shape(detail) => mooring::Error::Corrupt(detail),
            RedisStoreError::Redis(e) if crate::conn::server_code(&e).as_deref() == Some("WRONGTYPE") => {
                mooring::Error::Corrupt(e.to_string())
            }
            other => mooring::Error::store(other),
        }
    }
}

/// A `Result` with [`RedisStoreError`].
pub type Result<T, E = RedisStoreError> = std::result::Result<T, E>;
