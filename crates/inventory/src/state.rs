//! What every handler shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mooring::SessionManager;

use crate::db::Db;
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
    /// Whether to believe X-Forwarded-For.
    pub trust_proxy_headers: bool,
    /// What `/metrics` reports; the request middleware records into it.
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// Whether the instance still takes new traffic.
    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }
}
