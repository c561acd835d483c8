//! What every handler shares.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mooring::{SessionManager, Throttle};

use crate::config::LoginLimits;
use crate::db::Db;
use crate::forwarded::TrustedProxies;
use crate::hashing::HashPool;
use crate::http::{HttpLimits, HttpStats};
use crate::metrics::Metrics;

/// Shared application state. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Users and items.
    pub db: Db,
    /// The session engine (for readiness and stats; handlers use the `Session` extractor).
    pub sessions: SessionManager,
    /// This instance's name (`served_by`).
    pub instance: Arc<str>,
    /// The session driver's name, as reported by `/session`.
    pub driver: &'static str,
    /// False once shutdown has begun: readiness then answers 503.
    pub accepting: Arc<AtomicBool>,
    /// Which proxies' `X-Forwarded-For` entries are believed (`TRUSTED_PROXIES`).
    pub trusted_proxies: Arc<TrustedProxies>,
    /// Whether `/session/values/*` are served (`SESSION_TEST_ENDPOINTS`); 404 otherwise.
    pub test_endpoints: bool,
    /// The server's limits (`HTTP_*`); the router's layers read them.
    pub http_limits: HttpLimits,
    /// What those limits did, for `/metrics`.
    pub http_stats: Arc<HttpStats>,
    /// Whether responses carry HSTS (the cookie is HTTPS-only, so the site is served over HTTPS).
    pub hsts: bool,
    /// What `/metrics` reports; the request middleware records into it.
    pub metrics: Arc<Metrics>,
    /// How long the session store may fail readiness checks before the instance reports not ready.
    pub store_outage: Arc<StoreOutage>,
    /// The password hashing pool (fixed threads and memory, bounded queue).
    pub hasher: HashPool,
    /// Login throttling, in a store every replica sees (CACHE_DRIVER).
    pub throttle: Throttle,
    /// Failed sign-ins allowed per window, per counter.
    pub login_limits: LoginLimits,
}

/// A session store outage as readiness sees it: since when its checks fail, and how long that is tolerated.
///
/// While the store is down, requests wait for it in the app, up to `SESSION_STORE_TIMEOUT_MS`, and complete
/// when it is back (a Redis failover takes a few seconds). If every instance reported not ready at the first
/// failed check, the load balancer would drop them all at once and answer 503 itself, for the whole
/// failover and until the next passing probe, requests the app would have served. So readiness turns 503
/// only once the store has failed for longer than that timeout: a store outage that long fails requests
/// anyway, and one instance that alone lost the store then leaves the rotation.
#[derive(Debug)]
pub struct StoreOutage {
    since: Mutex<Option<Instant>>,
    tolerated: Duration,
}

impl StoreOutage {
    /// An outage tracker that tolerates `tolerated` of failing checks.
    pub fn new(tolerated: Duration) -> Self {
        Self {
            since: Mutex::new(None),
            tolerated,
        }
    }

    /// Records a check's result; returns how long the store has been failing, or `None` if it answered.
    pub fn record(&self, ok: bool, now: Instant) -> Option<Duration> {
        let mut since = self
            .since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ok {
            *since = None;
            return None;
        }
        Some(now.saturating_duration_since(*since.get_or_insert(now)))
    }

    /// How long a failing store is tolerated.
    pub fn tolerated(&self) -> Duration {
        self.tolerated
    }
}

impl AppState {
    /// Whether the instance still takes new traffic.
    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_timed_from_its_first_failed_check_and_ends_with_a_passing_one() {
        let outage = StoreOutage::new(Duration::from_secs(2));
        let t0 = Instant::now();
        assert_eq!(outage.record(true, t0), None);
        assert_eq!(outage.record(false, t0), Some(Duration::ZERO));
        assert_eq!(
            outage.record(false, t0 + Duration::from_millis(1500)),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            outage.record(false, t0 + Duration::from_secs(3)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(outage.record(true, t0 + Duration::from_secs(4)), None);
        assert_eq!(
            outage.record(false, t0 + Duration::from_secs(5)),
            Some(Duration::ZERO),
            "a new outage starts its own clock"
        );
    }
}
