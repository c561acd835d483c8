//! What the engine counts, for metrics and tests: session loads by result, cookie rejections, and per store
//! operation the calls, errors, timeouts and a latency histogram. Plain atomics: no metrics library is
//! imposed on users; an app renders [`SessionStats`] in whatever format it exports (the inventory app uses
//! the Prometheus text format).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One store operation of the [`SessionStore`](crate::SessionStore) contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// `load`.
    Load,
    /// `create`.
    Create,
    /// `apply`.
    Apply,
    /// `delete`.
    Delete,
    /// `list_user`.
    ListUser,
    /// `delete_user`.
    DeleteUser,
    /// `count_user`.
    CountUser,
    /// `ping`.
    Ping,
}

impl StoreOp {
    /// Every operation, in a fixed order.
    pub const ALL: [StoreOp; 8] = [
        StoreOp::Load,
        StoreOp::Create,
        StoreOp::Apply,
        StoreOp::Delete,
        StoreOp::ListUser,
        StoreOp::DeleteUser,
        StoreOp::CountUser,
        StoreOp::Ping,
    ];

    /// The operation's name, as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            StoreOp::Load => "load",
            StoreOp::Create => "create",
            StoreOp::Apply => "apply",
            StoreOp::Delete => "delete",
            StoreOp::ListUser => "list_user",
            StoreOp::DeleteUser => "delete_user",
            StoreOp::CountUser => "count_user",
            StoreOp::Ping => "ping",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds (seconds) of the latency histogram buckets; a final `+Inf` bucket is implied.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A fixed-bucket latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

/// A consistent-enough copy of a [`Histogram`] for rendering.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, cumulative count)` per bucket, ending with `(f64::INFINITY, count)`.
    pub cumulative: Vec<(f64, u64)>,
    /// Sum of all observations, in seconds.
    pub sum_seconds: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            elapsed.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The cumulative view Prometheus histograms expose.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let mut cumulative = Vec::with_capacity(self.buckets.len());
        for (i, bucket) in self.buckets.iter().enumerate() {
            running += bucket.load(Ordering::Relaxed);
            cumulative.push((LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), running));
        }
        HistogramSnapshot {
            cumulative,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count: running,
        }
    }
}

/// Counters and latency of one store operation.
#[derive(Debug, Default)]
pub struct OpStats {
    /// Calls that returned an error other than a timeout (the store failed or was unreachable).
    pub errors: AtomicU64,
    /// Calls that exceeded the store timeout.
    pub timeouts: AtomicU64,
    /// Duration of every call, successful or not.
    pub duration: Histogram,
}

/// Counters of what the engine saw.
#[derive(Debug, Default)]
pub struct SessionStats {
    /// Loads that found a live session.
    pub loads_hit: AtomicU64,
    /// Loads (with a valid cookie) that found nothing.
    pub loads_miss: AtomicU64,
    /// Loads that found a record past its absolute deadline.
    pub loads_expired: AtomicU64,
    /// Loads that found a record that could not be decoded.
    pub loads_corrupt: AtomicU64,
    /// Attribute values that could not be opened or decoded and were read as absent.
    pub values_undecodable: AtomicU64,
    /// Cookies refused because their MAC did not verify (or their value was not text).
    pub cookies_rejected: AtomicU64,
    /// Requests that carried more than one distinct valid cookie under the session's name (a sibling
    /// subdomain planting its own: "cookie tossing"). Such a request is answered as having no session.
    pub cookies_duplicate: AtomicU64,
    /// Records refused because encryption is on and their identity MAC is missing or wrong, or a value is
    /// plain or sealed for another identity (an edited record). Treated as absent.
    pub records_refused: AtomicU64,
    /// Pre-session cookies issued (sessions with a CSRF token or flash messages but no record).
    pub pre_sessions_issued: AtomicU64,
    /// Flash messages dropped (oldest first) or cut because a pre-session cookie holds at most
    /// [`MAX_PRE_FLASH_BYTES`](crate::session::MAX_PRE_FLASH_BYTES) of them.
    pub flashes_dropped: AtomicU64,
    /// Store calls that failed (all operations).
    pub store_errors: AtomicU64,
    /// Store calls that timed out (all operations).
    pub store_timeouts: AtomicU64,
    /// Sessions created.
    pub created: AtomicU64,
    /// Deltas saved.
    pub saved: AtomicU64,
    /// Writes dropped because the session had been deleted or had expired meanwhile.
    pub writes_to_missing: AtomicU64,
    ops: [OpStats; StoreOp::ALL.len()],
}

impl SessionStats {
    /// The counters and latency of one store operation.
    pub fn op(&self, op: StoreOp) -> &OpStats {
        &self.ops[op.index()]
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_count_everything() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.cumulative.first(), Some(&(0.0005, 1)));
        assert_eq!(
            s.cumulative.iter().find(|(b, _)| *b == 0.005).map(|c| c.1),
            Some(2)
        );
        assert_eq!(s.cumulative.last(), Some(&(f64::INFINITY, 3)));
        assert!((s.sum_seconds - 10.0033).abs() < 1e-6);
        assert_eq!(StoreOp::ALL.map(StoreOp::name).len(), 8);
        for (i, op) in StoreOp::ALL.into_iter().enumerate() {
            assert_eq!(op.index(), i, "ALL follows the declaration order");
        }
    }
}
