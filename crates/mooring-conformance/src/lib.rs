//! # mooring-conformance
//!
//! The one test suite every [`SessionStore`] must pass. A store crate provides a [`Harness`] (a fresh,
//! isolated store per test: its own database, file or key prefix) and instantiates the suite with
//! [`conformance_suite!`], which expands to one `#[tokio::test]` per case so failures name the case.
//!
//! ```text
//! mooring_conformance::conformance_suite!(MyHarness::new().await);
//! ```
//!
//! - [`attempts`]: the cases of the login throttle's [`mooring::AttemptStore`] contract, with
//!   [`attempt_store_suite!`].
//! - [`revocations`]: the cases of the [`mooring::RevocationLog`] contract (the records a store ended, so a
//!   restore never brings them back), with [`revocation_log_suite!`].
//! - [`redis`]: real Redis topologies (standalone, Sentinel, Cluster) started as processes on free ports, for
//!   the Redis store's tests and its failover tests.

use std::sync::Arc;

use async_trait::async_trait;
use mooring::{SessionStore, StoreKey};

pub mod attempts;
pub mod cases;
pub mod provision;
pub mod redis;
pub mod revocations;

/// One store under test, isolated from every other test.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// The store under test.
    fn store(&self) -> Arc<dyn SessionStore>;

    /// Overwrites the stored record of `key` with bytes that cannot be decoded as a record, the way a bug, a
    /// foreign writer or a damaged backup would. The record must exist.
    async fn corrupt(&self, key: &StoreKey);

    /// How many entries the store's user index holds for `user`, live or stale, read from the backend
    /// itself, for stores that keep the index apart from the records (Redis: the sorted set's `ZCARD`).
    /// `None` (the default) for stores whose records are the index (SQL, memory).
    async fn index_entries(&self, _user: &str) -> Option<u64> {
        None
    }
}

/// Expands to one `#[tokio::test]` per conformance case. `$harness` is an expression (it may use `.await`)
/// evaluated once per test to build a fresh [`Harness`].
#[macro_export]
macro_rules! conformance_suite {
    ($harness:expr) => {
        $crate::conformance_suite!(@cases $harness;
            round_trip, load_slides_idle_expiry, idle_expiry, absolute_deadline, deltas_only_touch_their_attributes,
            concurrent_writers_keep_their_attributes, compare_and_set, create_refuses_existing_key,
            apply_to_missing_record, id_rotation, invalidation, user_index, user_index_skips_corrupt_records,
            corrupt_record, size_limit, user_cap_evicts_the_oldest, delete_removes_the_index_entry,
            count_user_counts_live_sessions, listing_is_bounded_newest_first);
    };
    (@cases $harness:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $harness;
                $crate::cases::$case(&harness).await;
            }
        )+
    };
}
