//! Login throttling shared by every replica: the [`AttemptStore`] contract and the [`Throttle`] policy.
//!
//! A throttle counts failures (wrong passwords) under [`AttemptKey`]s (an account, a client address, an
//! account from one address) in a store every replica sees (Redis, the SQL database), and blocks a key for a
//! while once it has too many failures in its window. It is kept apart from the session engine so any app can
//! use it for any kind of attempt, on any store that implements the four calls of [`AttemptStore`].
//!
//! # Contract ([`AttemptStore`])
//!
//! - **Keys are short and bounded.** An [`AttemptKey`] is a scope plus a 128-bit hash of what it names (an
//!   email, an address): whatever a client submits, a key is at most [`AttemptKey::MAX_LEN`] bytes, and the
//!   store never sees the email itself.
//! - **Everything expires.** A failure count lives for its window (from its first failure); a block for its
//!   duration. Storage is therefore bounded by the keys touched in one window, and stores delete or expire
//!   what is past both (Redis TTLs; SQL rows by a cleanup task).
//! - **Counts are atomic** across replicas: two failures recorded at once on two replicas count two.
//! - **A block is never shortened** by a later, shorter one (concurrent failures race to set it).
//! - **Errors are honest**: a store that cannot answer returns [`Error::Store`]; the caller must then refuse
//!   the attempt (fail closed), never let it through unchecked.
//!
//! # Policy ([`Throttle`])
//!
//! Each [`Counter`] has its own limit of failures per window. Once a counter reaches its limit, its key is
//! blocked for `first_lock × 2^(failures − limit)`, capped at `max_lock`. A blocked key is refused before any
//! password is checked, so a throttled attempt costs no hash. A success resets the counters the caller names
//! (an app resets the account's, not the address's).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// What a throttle counts failures under: `<scope>:<22 characters of base64url>` (a 128-bit SHA-256 prefix of
/// the parts), so its length does not depend on client input.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AttemptKey(String);

impl AttemptKey {
    /// The longest key: a scope of [`AttemptKey::MAX_SCOPE`] bytes, `:`, and 22 hash characters.
    pub const MAX_LEN: usize = Self::MAX_SCOPE + 1 + 22;
    /// The longest scope.
    pub const MAX_SCOPE: usize = 8;

    /// The key of `parts` in `scope` (e.g. `"a"` for an account, `["alice@example.com"]`). Parts are
    /// length-prefixed before hashing, so `["ab", "c"]` and `["a", "bc"]` differ.
    ///
    /// # Panics
    /// Panics if `scope` is empty, longer than [`AttemptKey::MAX_SCOPE`], or not ASCII alphanumeric: scopes
    /// are constants in code, never client input.
    pub fn new(scope: &str, parts: &[&str]) -> Self {
        assert!(
            !scope.is_empty()
                && scope.len() <= Self::MAX_SCOPE
                && scope.bytes().all(|b| b.is_ascii_alphanumeric()),
            "an attempt key scope is 1-8 ASCII letters or digits"
        );
        let mut hash = Sha256::new();
        hash.update(scope.as_bytes());
        for part in parts {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        let digest = hash.finalize();
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16]);
        Self(format!("{scope}:{text}"))
    }

    /// The key as stores write it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AttemptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A store of failure counts and blocks that every replica sees. See the module documentation.
#[async_trait]
pub trait AttemptStore: Send + Sync + 'static {
    /// Counts one failure under `key` and returns the failures counted in its current window. A window starts
    /// at the first failure after the previous one ended and lasts `window`.
    async fn record_failure(&self, key: &AttemptKey, window: Duration) -> Result<u64>;

    /// Blocks `key` for `duration` from now, unless it is already blocked for longer.
    async fn block(&self, key: &AttemptKey, duration: Duration) -> Result<()>;

    /// How much longer `key` is blocked; `None` when it is not.
    async fn blocked_for(&self, key: &AttemptKey) -> Result<Option<Duration>>;

    /// Forgets `key`'s failures and block.
    async fn reset(&self, key: &AttemptKey) -> Result<()>;
}

/// One counter of a throttle: a key and the failures it may have per window before it is blocked.
#[derive(Clone, Debug)]
pub struct Counter {
    /// What is counted.
    pub key: AttemptKey,
    /// Failures per window before the key is blocked (at least 1).
    pub limit: u32,
}

impl Counter {
    /// A counter of `key` with `limit` failures per window.
    pub fn new(key: AttemptKey, limit: u32) -> Self {
        Self {
            key,
            limit: limit.max(1),
        }
    }
}

/// The backoff of a [`Throttle`]: the window failures are counted in, the first block, and the longest block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// How long a window of failures lasts, from its first failure.
    pub window: Duration,
    /// The block after the failure that reaches a counter's limit; it doubles with every further failure.
    pub first_lock: Duration,
    /// No block is longer than this.
    pub max_lock: Duration,
}

impl Backoff {
    /// The block after the `failures`-th failure under a counter of `limit`: none below the limit, then
    /// `first_lock × 2^(failures − limit)`, capped at `max_lock`.
    pub fn lock_for(&self, failures: u64, limit: u32) -> Option<Duration> {
        let excess = failures.checked_sub(u64::from(limit))?;
        let factor = 1u32.checked_shl(u32::try_from(excess).unwrap_or(u32::MAX).min(31));
        let lock = factor
            .and_then(|f| self.first_lock.checked_mul(f))
            .unwrap_or(self.max_lock);
        Some(lock.min(self.max_lock))
    }
}

/// A login throttle: a [`Backoff`] applied to [`Counter`]s in an [`AttemptStore`]. Cheap to clone.
#[derive(Clone)]
pub struct Throttle {
    store: std::sync::Arc<dyn AttemptStore>,
    backoff: Backoff,
    timeout: Duration,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("backoff", &self.backoff)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Throttle {
    /// A throttle on `store`; every store call that takes longer than `timeout` fails with
    /// [`Error::Timeout`] (callers then refuse the attempt).
    pub fn new(store: std::sync::Arc<dyn AttemptStore>, backoff: Backoff, timeout: Duration) -> Self {
        Self {
            store,
            backoff,
            timeout,
        }
    }

    /// The backoff in use.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    async fn timed<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| Error::Timeout(self.timeout))?
    }

    /// The longest block among `counters`, if any is blocked. Call it before checking the password.
    pub async fn blocked_for(&self, counters: &[Counter]) -> Result<Option<Duration>> {
        let mut longest: Option<Duration> = None;
        for counter in counters {
            if let Some(left) = self.timed(self.store.blocked_for(&counter.key)).await? {
                longest = Some(longest.map_or(left, |l| l.max(left)));
            }
        }
        Ok(longest)
    }

    /// Records a failure on every counter and blocks those at or past their limit; returns the longest block
    /// imposed, if any.
    pub async fn record_failure(&self, counters: &[Counter]) -> Result<Option<Duration>> {
        let mut longest: Option<Duration> = None;
        for counter in counters {
            let failures = self
                .timed(self.store.record_failure(&counter.key, self.backoff.window))
                .await?;
            if let Some(lock) = self.backoff.lock_for(failures, counter.limit) {
                self.timed(self.store.block(&counter.key, lock)).await?;
                longest = Some(longest.map_or(lock, |l| l.max(lock)));
            }
        }
        Ok(longest)
    }

    /// Forgets the failures and blocks of `counters` (after a success).
    pub async fn reset(&self, counters: &[Counter]) -> Result<()> {
        for counter in counters {
            self.timed(self.store.reset(&counter.key)).await?;
        }
        Ok(())
    }
}

/// An [`AttemptStore`] in process memory: for tests and single-process apps. Replicas do not share it, so
/// behind a load balancer each replica would allow the limit again; use a shared store there.
///
/// Entries past both their window and their block are dropped whenever the map has doubled since the last
/// sweep, so memory stays proportional to the keys touched in one window.
#[derive(Debug, Default)]
pub struct MemoryAttemptStore {
    inner: Mutex<MemoryAttempts>,
}

#[derive(Debug, Default)]
struct MemoryAttempts {
    entries: HashMap<AttemptKey, MemoryEntry>,
    sweep_at: usize,
}

#[derive(Debug)]
struct MemoryEntry {
    failures: u64,
    window_end: Instant,
    blocked_until: Option<Instant>,
}

impl MemoryEntry {
    fn is_dead(&self, now: Instant) -> bool {
        self.window_end <= now && self.blocked_until.is_none_or(|b| b <= now)
    }
}

impl MemoryAttemptStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many keys it holds (dead ones included until the next sweep).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when it holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryAttempts> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn entry<'a>(attempts: &'a mut MemoryAttempts, key: &AttemptKey, now: Instant) -> &'a mut MemoryEntry {
        if attempts.entries.len() >= attempts.sweep_at.max(1024) {
            attempts.entries.retain(|_, e| !e.is_dead(now));
            attempts.sweep_at = attempts.entries.len() * 2;
        }
        attempts
            .entries
            .entry(key.clone())
            .or_insert_with(|| MemoryEntry {
                failures: 0,
                window_end: now,
                blocked_until: None,
            })
    }
}

#[async_trait]
impl AttemptStore for MemoryAttemptStore {
    async fn record_failure(&self, key: &AttemptKey, window: Duration) -> Result<u64> {
        let now = Instant::now();
        let mut attempts = self.lock();
        let entry = Self::entry(&mut attempts, key, now);
        if entry.window_end <= now {
            entry.failures = 0;
            entry.window_end = now + window;
        }
        entry.failures += 1;
        Ok(entry.failures)
    }

    async fn block(&self, key: &AttemptKey, duration: Duration) -> Result<()> {
        let now = Instant::now();
        let mut attempts = self.lock();
        let entry = Self::entry(&mut attempts, key, now);
        let until = now + duration;
        if entry.blocked_until.is_none_or(|b| b < until) {
            entry.blocked_until = Some(until);
        }
        Ok(())
    }

    async fn blocked_for(&self, key: &AttemptKey) -> Result<Option<Duration>> {
        let now = Instant::now();
        Ok(self
            .lock()
            .entries
            .get(key)
            .and_then(|e| e.blocked_until)
            .filter(|until| *until > now)
            .map(|until| until - now))
    }

    async fn reset(&self, key: &AttemptKey) -> Result<()> {
        self.lock().entries.remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_short_whatever_they_name() {
        let long = "x".repeat(100_000);
        let key = AttemptKey::new("ai", &[&long, "203.0.113.9"]);
        assert!(key.as_str().len() <= AttemptKey::MAX_LEN, "{key}");
        assert!(key.as_str().starts_with("ai:"));
        assert!(!key.as_str().contains("xxx"), "the input is hashed, not stored");
        assert_ne!(
            AttemptKey::new("a", &["ab", "c"]),
            AttemptKey::new("a", &["a", "bc"])
        );
        assert_ne!(AttemptKey::new("a", &["x"]), AttemptKey::new("i", &["x"]));
        assert_eq!(AttemptKey::new("a", &["x"]), AttemptKey::new("a", &["x"]));
    }

    #[test]
    fn backoff_doubles_from_the_limit_and_is_capped() {
        let backoff = Backoff {
            window: Duration::from_secs(900),
            first_lock: Duration::from_secs(1),
            max_lock: Duration::from_secs(900),
        };
        assert_eq!(backoff.lock_for(4, 5), None);
        assert_eq!(backoff.lock_for(5, 5), Some(Duration::from_secs(1)));
        assert_eq!(backoff.lock_for(6, 5), Some(Duration::from_secs(2)));
        assert_eq!(backoff.lock_for(9, 5), Some(Duration::from_secs(16)));
        assert_eq!(backoff.lock_for(15, 5), Some(Duration::from_secs(900)));
        assert_eq!(backoff.lock_for(u64::MAX, 5), Some(Duration::from_secs(900)));
    }

    #[tokio::test]
    async fn the_throttle_blocks_at_the_limit_and_a_reset_clears_it() {
        let store = std::sync::Arc::new(MemoryAttemptStore::new());
        let throttle = Throttle::new(
            store.clone(),
            Backoff {
                window: Duration::from_secs(60),
                first_lock: Duration::from_secs(30),
                max_lock: Duration::from_secs(60),
            },
            Duration::from_secs(1),
        );
        let account = [Counter::new(AttemptKey::new("a", &["alice"]), 3)];
        for _ in 0..2 {
            assert_eq!(throttle.record_failure(&account).await.unwrap(), None);
        }
        assert_eq!(throttle.blocked_for(&account).await.unwrap(), None);
        assert_eq!(
            throttle.record_failure(&account).await.unwrap(),
            Some(Duration::from_secs(30))
        );
        let left = throttle.blocked_for(&account).await.unwrap().expect("blocked");
        assert!(
            left > Duration::from_secs(29) && left <= Duration::from_secs(30),
            "{left:?}"
        );
        throttle.reset(&account).await.unwrap();
        assert_eq!(throttle.blocked_for(&account).await.unwrap(), None);
        assert!(store.is_empty());
    }
}
