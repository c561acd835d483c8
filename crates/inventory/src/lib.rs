//! # inventory
//!
//! The reference web app of mooring: users register, sign in and keep an inventory; sessions live in a shared
//! store so any replica can serve any request and a restart logs nobody out.
//!
//! # Layout
//!
//! - [`config`]: every environment variable, parsed into [`Config`](config::Config).
//! - [`app`]: [`Application`](app::Application) (build, bind, serve, shut down) and the full router.
//! - `routes`: one module per resource (account, items, sessions, the `/session` probe, health).
//! - [`hashing`]: argon2id hashing on a fixed pool of threads with preallocated memory and a bounded queue.
//! - [`auth`]: passwords (through that pool), login throttling keys, sign-in with id rotation, CSRF checks,
//!   client details.
//! - [`forwarded`]: the client address behind trusted proxies (`TRUSTED_PROXIES`).
//! - [`http`]: the HTTP server and its limits: header timeout, header and body size, connection and
//!   in-flight caps, request timeout, security headers.
//! - [`db`]: users and items in SQL.
//! - [`pages`]: askama templates and their layout.
//! - [`error`]: the app's error type and the responses it becomes.
//! - [`telemetry`]: logging, the per-request log line and the per-request span.
//! - [`otlp`]: OTLP/HTTP export of those spans (off by default), and its flush at shutdown.
//! - `traced_store`: a span around every session store call, when spans are exported.
//! - [`metrics`]: the Prometheus exposition served on `METRICS_PORT`.

pub mod app;
pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod forwarded;
pub mod hashing;
pub mod http;
pub mod metrics;
pub mod otlp;
pub mod pages;
mod routes;
pub mod state;
pub mod telemetry;
mod traced_store;
