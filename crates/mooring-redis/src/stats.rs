//! Counters of the Redis connection layer, for metrics.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the connection layer has done so far.
#[derive(Debug, Default)]
pub struct RedisStats {
    /// Times the store switched to a different master (Sentinel).
    pub master_switches: AtomicU64,
    /// Rediscoveries (asking the Sentinels, or reconnecting a standalone node), whether or not the master
    /// changed.
    pub rediscoveries: AtomicU64,
    /// Writes whose `WAIT` confirmed fewer replicas than required.
    pub wait_missed: AtomicU64,
    /// Calls retried after a failover-class error (I/O, timeout, READONLY, NOREPLICAS, LOADING, MASTERDOWN,
    /// UNBLOCKED).
    pub retries: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
