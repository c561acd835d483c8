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
//! - [`error`]: [`Error`], which turns into a clean HTTP response.

pub mod error;
pub mod id;
pub mod memory;
pub mod record;
pub mod store;

pub use error::{Error, Result};
pub use id::{SessionId, StoreKey};
pub use memory::MemoryStore;
pub use record::{Applied, Delta, Loaded, Policy, Record, now_ms};
pub use store::SessionStore;
