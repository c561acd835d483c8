//! The contract between the session engine and a storage backend.
//!
//! Every backend (memory, SQL, Redis) implements [`SessionStore`] and passes the one conformance suite in
//! `mooring-conformance`. The contract is shaped by what a replicated, failover-prone store needs:
//!
//! - **Deltas, not records.** [`SessionStore::apply`] receives only the attributes a request changed. Two
//!   concurrent requests that change different attributes of one session must both keep their change.
//! - **Versions.** Every record has a version (1 on create, +1 per applied delta). A delta may carry an
//!   expected version; the store then applies it only if it still matches (compare-and-set).
//! - **Read and slide in one call.** [`SessionStore::load`] returns the record and pushes its idle expiry
//!   forward (never past the absolute deadline), so a read costs one round trip.
//! - **A user index.** Records carry the user they are signed in as; a store can list a user's live
//!   sessions and revoke all but one. The index must clean itself as sessions expire.
//! - **Expiry is the store's job.** A record past its idle expiry or its absolute deadline is gone: `load`
//!   returns `None`, `apply` returns [`Applied::Missing`], listings omit it.
//! - **Errors are honest.** A store that cannot answer returns [`Error::Store`]; it never reports a missing
//!   session for a failed call, because the engine would then hand the user a new, empty session. A record it
//!   finds but cannot decode is [`Error::Corrupt`].

use async_trait::async_trait;

use crate::error::Result;
use crate::id::StoreKey;
use crate::record::{Applied, Delta, Loaded, Policy, Record};

/// A backend that keeps session records. See the module documentation for the contract.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Loads a live record and slides its idle expiry, in one call. `Ok(None)` if there is none.
    async fn load(&self, key: &StoreKey, policy: &Policy) -> Result<Option<Loaded>>;

    /// Stores a new record at version 1. Fails with [`Error::Conflict`](crate::Error::Conflict) if a live
    /// record already has this key, and with [`Error::TooLarge`](crate::Error::TooLarge) above the limit.
    async fn create(&self, key: &StoreKey, record: &Record, policy: &Policy) -> Result<()>;

    /// Applies a delta to a live record atomically, bumps its version and slides its expiry. A result that
    /// would exceed the size limit fails with [`Error::TooLarge`](crate::Error::TooLarge) and changes nothing.
    async fn apply(&self, key: &StoreKey, delta: &Delta, policy: &Policy) -> Result<Applied>;

    /// Deletes a record. `Ok(false)` if there was none.
    async fn delete(&self, key: &StoreKey) -> Result<bool>;

    /// The live sessions of a user, with their keys. Order is unspecified. Does not slide expiries.
    async fn list_user(&self, user: &str) -> Result<Vec<(StoreKey, Loaded)>>;

    /// Deletes every session of a user except `keep`; returns how many were deleted.
    async fn delete_user(&self, user: &str, keep: Option<&StoreKey>) -> Result<u64>;

    /// Checks that the store answers (for readiness probes).
    async fn ping(&self) -> Result<()>;
}
