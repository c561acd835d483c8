//! # mooring
//!
//! Server-side sessions for tower and axum, built for many replicas behind a load balancer and a store that
//! may fail over under them.
//!
//! # Layout
//!
//! - [`id`]: session ids (the cookie's secret) and store keys (a hash of the id: what stores see).
//! - [`record`]: the stored record, the per-request [`Delta`], and the binary record format.
//! - [`store`]: the [`SessionStore`] contract every backend implements.
//! - [`memory`]: [`MemoryStore`], an in-process store for tests and examples.
//! - [`keys`]: the key ring that signs cookies and encrypts values at rest, with key rotation.
//! - [`config`]: [`SessionConfig`], cookie attributes, lifetimes and limits.
//! - [`session`]: the per-request [`Session`] handle and the [`SessionManager`] that makes them.
//! - [`stats`]: [`SessionStats`], counters and per-operation latency for metrics.
//! - [`layer`]: [`SessionLayer`], the tower middleware, and the axum extractor.
//! - [`error`]: [`Error`], which turns into a clean HTTP response.
//! - [`throttle`]: [`AttemptStore`] and [`Throttle`], login throttling shared by every replica.
//! - [`revocation`]: [`RevocationLog`], the sessions a store ended, kept outside it so a restore never brings one back.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use mooring::{Keys, MemoryStore, Session, SessionConfig, SessionManager};
//!
//! async fn visits(session: Session) -> Result<String, mooring::Error> {
//!     let n: u64 = session.get("visits").await?.unwrap_or(0) + 1;
//!     session.insert("visits", &n).await?;
//!     Ok(format!("visit {n}"))
//! }
//!
//! let keys = Keys::new(b"a secret of at least thirty-two bytes!", &[]).unwrap();
//! let manager = SessionManager::new(Arc::new(MemoryStore::new()), keys, SessionConfig::default());
//! let app: Router = Router::new().route("/", get(visits)).layer(manager.layer());
//! ```

pub mod config;
pub mod error;
pub mod id;
pub mod keys;
pub mod layer;
pub mod memory;
pub mod record;
pub mod revocation;
pub mod session;
pub mod stats;
pub mod store;
pub mod throttle;

pub use config::{CookieRuleError, SameSite, SessionConfig};
pub use error::{Error, Result};
pub use id::{SessionId, StoreKey};
pub use keys::Keys;
pub use layer::{SessionLayer, SessionService};
pub use memory::MemoryStore;
pub use record::{Applied, Delta, Loaded, Policy, Record, now_ms};
pub use revocation::{MemoryRevocationLog, RevocationLog};
pub use session::{Session, SessionInfo, SessionManager};
pub use stats::{SessionStats, StoreOp};
pub use store::SessionStore;
pub use throttle::{AttemptKey, AttemptStore, Backoff, Counter, MemoryAttemptStore, Throttle};
