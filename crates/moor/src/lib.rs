//! # moor
//!
//! The operator CLI of mooring, as a library so tests and the binary share every piece.
//!
//! # Layout
//!
//! - [`lab`]: the local lab: real `inventory` instances, HAProxy, a Redis master with replicas and
//!   Sentinels, all as processes on loopback addresses, with the fault-injection primitives scenarios use.
//! - [`probe`]: the black-box session-survival probe: virtual users against any base URL.
//! - [`chaos`]: the failure scenarios, one file each, with their budgets and reports.
//! - [`attack`]: the hostile clients of the `hostile` scenario (floods, slowloris, cookie tossing, malformed
//!   requests) and what it measures (process RSS, the Redis keyspace).
//! - [`backup`]: `moor backup` / `moor restore`, a logical backup of the sessions in Redis.
//! - [`archive`]: the signed (optionally encrypted) envelope every backup file is written in.
//! - [`repo`]: where backups are kept (a directory, a file, an S3 bucket).
//! - [`env`]: the environment as moor reads it: a variable, or the secret file its `<NAME>_FILE` form names.
//! - [`database`]: `moor backup-db` / `moor restore-db`, database backups by the engines' own tools.
//! - [`drill`]: `moor drill`, the restore drill: the newest backups restored into scratch Redis and a scratch
//!   database, audited with the store's codec and compared with the live ones (RPO, RTO, counts).

pub mod archive;
pub mod attack;
pub mod backup;
pub mod chaos;
pub mod database;
pub mod drill;
pub mod env;
pub mod lab;
pub mod probe;
pub mod repo;
