//! The revocation log: which session records a store ended on purpose (sign-out, revocation, id rotation,
//! a user's other sessions ended), kept where a loss of the session store does not reach, so that a restore
//! from a backup taken earlier never brings one of them back.
//!
//! # Why a log outside the session store
//!
//! A backup is taken at one moment; a user who signs out afterwards has their record deleted from the store.
//! If the store then loses its data and is restored from that backup, the deleted record would come back,
//! and a copy of its cookie taken before the sign-out (a stolen one) would work again. Tombstones kept in the
//! session store itself would be lost together with the data they protect, so the log lives elsewhere: the
//! application's SQL database (`mooring-sql`), which is backed up on its own schedule.
//!
//! # Contract ([`RevocationLog`])
//!
//! - **Keys are the store's own.** A store records the key under which it keeps a record, as a backup of it
//!   names that record (for Redis, the Redis key: prefix and key). The log treats them as opaque strings of
//!   at most [`MAX_KEY_LEN`] bytes.
//! - **Recorded before the record goes.** A store writes the log first and deletes second, so no record is
//!   ever gone from the store without its entry in the log. If the log cannot be written, the store's call
//!   fails and nothing is deleted.
//! - **Entries expire.** An entry is kept for the log's retention (the longest a session can live: its
//!   absolute lifetime), after which no backup can hold a live version of that record anyway; a restore skips
//!   records past their expiry on its own. Storage is bounded by the records ended within one lifetime.
//! - **Lookups are batched**: [`RevocationLog::find`] answers which of up to [`MAX_BATCH`]
//!   keys are in the log, in one call.
//! - **Errors are honest**: a log that cannot answer returns [`Error::Store`]; a restore must then stop, never
//!   restore unchecked.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::record::now_ms;

/// Where a store records the records it ended, and where a restore looks them up. See the module
/// documentation for the contract.
#[async_trait]
pub trait RevocationLog: Send + Sync + std::fmt::Debug + 'static {
    /// Records that the records under `keys` were ended now. Recording a key again renews its entry.
    async fn record(&self, keys: &[String]) -> Result<()>;

    /// Which of `keys` are in the log and not yet expired.
    async fn find(&self, keys: &[String]) -> Result<HashSet<String>>;

    /// Removes the entries past their retention; returns how many it removed.
    async fn delete_expired(&self) -> Result<u64>;
}

/// The longest key a log accepts.
pub const MAX_KEY_LEN: usize = 255;
/// The most keys one [`RevocationLog::find`] or [`RevocationLog::record`] call is given.
pub const MAX_BATCH: usize = 500;

/// Checks the arguments of a [`RevocationLog`] call against the contract's limits.
pub fn check_keys(keys: &[String]) -> Result<()> {
    if keys.len() > MAX_BATCH {
        return Err(Error::Store(Box::<dyn std::error::Error + Send + Sync>::from(
            format!(
                "{} keys in one revocation log call; at most {}",
                keys.len(),
                MAX_BATCH
            ),
        )));
    }
    if let Some(key) = keys.iter().find(|k| k.is_empty() || k.len() > MAX_KEY_LEN) {
        return Err(Error::Store(Box::<dyn std::error::Error + Send + Sync>::from(
            format!(
                "a revocation log key is 1 to {} bytes, not {}",
                MAX_KEY_LEN,
                key.len()
            ),
        )));
    }
    Ok(())
}

/// Milliseconds of a retention, saturating.
pub fn retention_ms(retention: Duration) -> u64 {
    u64::try_from(retention.as_millis()).unwrap_or(u64::MAX)
}

/// A [`RevocationLog`] in this process's memory, for tests and single-process use. It dies with the process,
/// so it protects nothing across a restart.
#[derive(Debug)]
pub struct MemoryRevocationLog {
    retention_ms: u64,
    entries: Mutex<HashMap<String, u64>>,
}

impl MemoryRevocationLog {
    /// An empty log keeping each entry for `retention`.
    pub fn new(retention: Duration) -> Self {
        Self {
            retention_ms: retention_ms(retention),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many entries it holds (expired ones included until [`RevocationLog::delete_expired`]).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl RevocationLog for MemoryRevocationLog {
    async fn record(&self, keys: &[String]) -> Result<()> {
        check_keys(keys)?;
        let until = now_ms().saturating_add(self.retention_ms);
        let mut entries = self.lock();
        for key in keys {
            // The later expiry wins, as in every log: an entry is renewed, never shortened.
            let entry = entries.entry(key.clone()).or_insert(until);
            *entry = (*entry).max(until);
        }
        Ok(())
    }

    async fn find(&self, keys: &[String]) -> Result<HashSet<String>> {
        check_keys(keys)?;
        let now = now_ms();
        let entries = self.lock();
        Ok(keys
            .iter()
            .filter(|k| entries.get(*k).is_some_and(|until| *until > now))
            .cloned()
            .collect())
    }

    async fn delete_expired(&self) -> Result<u64> {
        let now = now_ms();
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|_, until| *until > now);
        Ok((before - entries.len()) as u64)
    }
}
