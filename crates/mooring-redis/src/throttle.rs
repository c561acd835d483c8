//! [`RedisAttemptStore`]: the [`AttemptStore`] contract on Redis, through the session store's own connection
//! (so it follows the master across Sentinel failovers and retries as the sessions do).
//!
//! # Data layout
//!
//! - Failures of a key: a counter at `<prefix>t:{<attempt key>}`: `INCR`, then `PEXPIRE <window> NX`, so it
//!   expires one window after its first failure (a fixed window, started by the first failure after the last
//!   one ended).
//! - Its block: `<prefix>t:{<attempt key>}b`, value `1`, whose TTL is the block: `SET .. PX <d> NX` then
//!   `PEXPIRE <d> GT`, so a shorter, later block never shortens a longer one.
//!
//! Both keys carry the same hash tag, so the reset's one `DEL` works on Cluster. Every key has a TTL, so
//! storage is bounded by the keys touched in one window; the TTLs are Redis's, so replica clocks do not
//! matter. Calls do not wait for replicas (`WAIT`): a failover may lose the last second of counts, which lets
//! an attacker a few more attempts at most, while waiting would add a round trip to every login.
//! `INCR` is retried through a failover like the idempotent calls: a failure counted twice only blocks
//! sooner (fails closed).

use std::time::Duration;

use async_trait::async_trait;
use mooring::{AttemptKey, AttemptStore};
use redis::Value;

use crate::conn::Retry;
use crate::error::RedisStoreError;
use crate::store::RedisStore;

/// Failure counts and blocks in Redis. Made by [`RedisStore::throttle`]; cheap to clone.
#[derive(Clone, Debug)]
pub struct RedisAttemptStore {
    store: RedisStore,
}

impl RedisStore {
    /// An [`AttemptStore`] on this store's connection and key prefix.
    pub fn throttle(&self) -> RedisAttemptStore {
        RedisAttemptStore { store: self.clone() }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisAttemptStore {
    /// The Redis key counting `key`'s failures.
    pub fn count_key(&self, key: &AttemptKey) -> String {
        format!("{}t:{{{}}}", self.store.prefix(), key.as_str())
    }

    /// The Redis key holding `key`'s block.
    pub fn block_key(&self, key: &AttemptKey) -> String {
        format!("{}t:{{{}}}b", self.store.prefix(), key.as_str())
    }
}

fn shape(detail: String) -> mooring::Error {
    RedisStoreError::Shape(detail).into()
}

#[async_trait]
impl AttemptStore for RedisAttemptStore {
    async fn record_failure(&self, key: &AttemptKey, window: Duration) -> mooring::Result<u64> {
        let count = self.count_key(key);
        let mut pipe = redis::pipe();
        pipe.cmd("INCR").arg(&count);
        pipe.cmd("PEXPIRE")
            .arg(&count)
            .arg(millis(window))
            .arg("NX")
            .ignore();
        let values = self.store.run(&pipe, Retry::Safe, false).await?;
        match values.first() {
            Some(Value::Int(n)) => Ok(u64::try_from(*n).unwrap_or(0)),
            other => Err(shape(format!("INCR answered {other:?}"))),
        }
    }

    async fn block(&self, key: &AttemptKey, duration: Duration) -> mooring::Result<()> {
        let block = self.block_key(key);
        let ms = millis(duration);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&block)
            .arg(1)
            .arg("PX")
            .arg(ms)
            .arg("NX")
            .ignore();
        pipe.cmd("PEXPIRE").arg(&block).arg(ms).arg("GT").ignore();
        self.store.run(&pipe, Retry::Safe, false).await?;
        Ok(())
    }

    async fn blocked_for(&self, key: &AttemptKey) -> mooring::Result<Option<Duration>> {
        let mut pipe = redis::pipe();
        pipe.cmd("PTTL").arg(self.block_key(key));
        let values = self.store.run(&pipe, Retry::Safe, false).await?;
        match values.first() {
            // -2: no such key; -1: no TTL, which this store never writes (treated as not blocked).
            Some(Value::Int(ms)) if *ms > 0 => Ok(Some(Duration::from_millis(*ms as u64))),
            Some(Value::Int(_)) => Ok(None),
            other => Err(shape(format!("PTTL answered {other:?}"))),
        }
    }

    async fn reset(&self, key: &AttemptKey) -> mooring::Result<()> {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(self.count_key(key))
            .arg(self.block_key(key))
            .ignore();
        self.store.run(&pipe, Retry::Safe, false).await?;
        Ok(())
    }
}
