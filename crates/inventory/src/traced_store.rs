//! A span around every session store call, so an exported trace shows where a request spent its time.
//!
//! [`TracedStore`] wraps the real store only when spans are exported (see `Application::build`); without
//! export the store is used as it is. A span is named after the call (`session_store.load`, ...), is a
//! client span for Redis and SQL, and is an error when the call fails; a call the engine abandons at
//! `SESSION_STORE_TIMEOUT_MS` ends its span early, without a status. `ping` has no span: only readiness probes
//! call it.

use std::sync::Arc;

use async_trait::async_trait;
use mooring::{Applied, Delta, Loaded, Policy, Record, Result, SessionStore, StoreKey};
use tracing::Instrument as _;

/// A store whose calls each run in their own span.
pub(crate) struct TracedStore {
    inner: Arc<dyn SessionStore>,
    /// `db.system.name`: redis, sqlite, postgresql, mysql or memory.
    system: &'static str,
}

impl TracedStore {
    pub(crate) fn new(inner: Arc<dyn SessionStore>, system: &'static str) -> Self {
        Self { inner, system }
    }

    fn kind(&self) -> &'static str {
        if self.system == "memory" {
            "internal"
        } else {
            "client"
        }
    }

    /// Runs `call` in `span`, marking the span as an error when the call fails.
    async fn traced<T>(&self, span: tracing::Span, call: impl Future<Output = Result<T>>) -> Result<T> {
        let result = call.instrument(span.clone()).await;
        if let Err(err) = &result {
            span.record("otel.status_code", "error");
            span.record("error.type", error_type(err));
        }
        result
    }
}

/// The `error.type` attribute of a failed call.
fn error_type(err: &mooring::Error) -> &'static str {
    match err {
        mooring::Error::Store(_) => "store",
        mooring::Error::Timeout(_) => "timeout",
        mooring::Error::TooLarge { .. } => "too_large",
        mooring::Error::Corrupt(_) => "corrupt",
        mooring::Error::Conflict => "conflict",
        mooring::Error::Encode(_) => "encode",
    }
}

/// The span of one store call; the name must be a literal, hence a macro.
macro_rules! store_span {
    ($store:expr, $name:literal) => {
        tracing::info_span!(
            $name,
            otel.kind = $store.kind(),
            db.system.name = $store.system,
            otel.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        )
    };
}

#[async_trait]
impl SessionStore for TracedStore {
    async fn load(&self, key: &StoreKey, policy: &Policy) -> Result<Option<Loaded>> {
        self.traced(
            store_span!(self, "session_store.load"),
            self.inner.load(key, policy),
        )
        .await
    }

    async fn create(&self, key: &StoreKey, record: &Record, policy: &Policy) -> Result<()> {
        self.traced(
            store_span!(self, "session_store.create"),
            self.inner.create(key, record, policy),
        )
        .await
    }

    async fn apply(&self, key: &StoreKey, delta: &Delta, policy: &Policy) -> Result<Applied> {
        self.traced(
            store_span!(self, "session_store.apply"),
            self.inner.apply(key, delta, policy),
        )
        .await
    }

    async fn delete(&self, key: &StoreKey) -> Result<bool> {
        self.traced(store_span!(self, "session_store.delete"), self.inner.delete(key))
            .await
    }

    async fn list_user(&self, user: &str, limit: usize) -> Result<Vec<(StoreKey, Loaded)>> {
        self.traced(
            store_span!(self, "session_store.list_user"),
            self.inner.list_user(user, limit),
        )
        .await
    }

    async fn count_user(&self, user: &str) -> Result<u64> {
        self.traced(
            store_span!(self, "session_store.count_user"),
            self.inner.count_user(user),
        )
        .await
    }

    async fn delete_user(&self, user: &str, keep: Option<&StoreKey>) -> Result<u64> {
        self.traced(
            store_span!(self, "session_store.delete_user"),
            self.inner.delete_user(user, keep),
        )
        .await
    }

    /// Not traced: only readiness probes ping, and their spans are not exported (see `telemetry`).
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
}
