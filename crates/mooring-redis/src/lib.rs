//! # mooring-redis
//!
//! [`RedisStore`]: a [`mooring::SessionStore`] on Redis, built to lose no acknowledged write and log nobody
//! out across a failover.
//!
//! - **Standalone**, **Sentinel** (the master is discovered through the Sentinels and followed across
//!   failovers: `+switch-master`, a 1 s poll, and failover-class errors all trigger a single-flight
//!   rediscovery) and **Cluster** (every operation touches one key).
//! - **Durability**: with [`Durability::Replicas`] every write is pipelined with `WAIT n` and counts as saved
//!   only when `n` replicas confirm it. It relies on the servers running with `min-replicas-to-write 1`,
//!   `min-replicas-max-lag` of a few seconds, `appendonly yes` and `appendfsync everysec` (see the README).
//! - **Round trips**: a read (with its TTL slide) is one; a read-modify-write two; a new session one.
//! - **Revocation log**: with [`RedisStore::with_revocation_log`], every session the store ends on purpose
//!   (sign-out, revocation, eviction) is written under its Redis key to a [`mooring::RevocationLog`] outside
//!   Redis before it is deleted, so a restore of an older backup never brings it back.
//!
//! # Layout
//!
//! - [`audit`]: [`audit()`](audit::audit), what the keys under a prefix are, read with the store's codec.
//! - [`config`]: [`RedisConfig`], [`Topology`], [`Durability`].
//! - `conn`: the connection layer that follows the master (single flight, `ArcSwap`, retries, `WAIT`).
//! - `scripts`: the Lua scripts and the hash layout of a session.
//! - `store`: [`RedisStore`] and the user index.
//! - [`stats`]: [`RedisStats`], counters for metrics.
//! - `throttle`: [`RedisAttemptStore`] ([`RedisStore::throttle`]), login throttling on the same connection.
//! - [`RedisStoreError`]: what goes wrong; converts into [`mooring::Error`].

pub mod audit;
pub mod config;
mod conn;
mod error;
mod scripts;
pub mod stats;
mod store;
mod throttle;

pub use audit::{Audit, audit, audit_nodes};
pub use config::{Durability, RedisConfig, Topology};
pub use error::{RedisStoreError, Result};
pub use stats::RedisStats;
pub use store::RedisStore;
pub use throttle::RedisAttemptStore;
