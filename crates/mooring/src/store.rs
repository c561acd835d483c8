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
//! - **A bounded user index.** Records carry the user they are signed in as; a store can count a user's live
//!   sessions without loading them, list the newest few, and revoke all but one. The index must clean itself
//!   as sessions expire, and [`SessionStore::delete`] removes a session from it. A write that attaches a
//!   session to a user enforces [`Policy::max_sessions_per_user`]: the user's oldest other sessions are
//!   deleted (records, not just index entries) until the cap holds.
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
    /// record already has this key, and with [`Error::TooLarge`](crate::Error::TooLarge) above the limit. A
    /// record with a user enforces the policy's per-user cap (see [`Policy::max_sessions_per_user`]).
    async fn create(&self, key: &StoreKey, record: &Record, policy: &Policy) -> Result<()>;

    /// Applies a delta to a live record atomically, bumps its version and slides its expiry. A result that
    /// would exceed the size limit fails with [`Error::TooLarge`](crate::Error::TooLarge) and changes nothing.
    /// A delta that sets a user enforces the policy's per-user cap once applied.
    async fn apply(&self, key: &StoreKey, delta: &Delta, policy: &Policy) -> Result<Applied>;

    /// Deletes a record and its user-index entry. `Ok(false)` if there was none.
    async fn delete(&self, key: &StoreKey) -> Result<bool>;

    /// At most `limit` live sessions of a user, with their keys, the newest (latest deadline) first. Does not
    /// slide expiries.
    async fn list_user(&self, user: &str, limit: usize) -> Result<Vec<(StoreKey, Loaded)>>;

    /// How many live sessions a user has, without loading any of them.
    async fn count_user(&self, user: &str) -> Result<u64>;

    /// Deletes every session of a user except `keep`; returns how many were deleted.
    async fn delete_user(&self, user: &str, keep: Option<&StoreKey>) -> Result<u64>;

    /// Checks that the store answers (for readiness probes).
    async fn ping(&self) -> Result<()>;
}
