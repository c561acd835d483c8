//! An in-process store for tests, examples and single-process development.
//!
//! It keeps each record in the binary record format, exactly as a blob store would, so it exercises the codec
//! and can be handed corrupt bytes by tests. Expired records are dropped when touched and swept on every
//! write that finds the map has grown past twice its size at the last sweep.
//!
//! The user index is the `user` of each entry: counting and listing scan the map, and the per-user cap is
//! enforced under the same lock as the write that attaches a session, so it is exact.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::id::StoreKey;
use crate::record::{Applied, Delta, Loaded, Policy, Record, now_ms};
use crate::store::SessionStore;

#[derive(Debug)]
struct Entry {
    bytes: Vec<u8>,
    version: u64,
    expires_at: u64,
    deadline: u64,
    created_at: u64,
    user: Option<String>,
}

impl Entry {
    fn live(&self, now: u64) -> bool {
        now < self.expires_at && now < self.deadline
    }
}

#[derive(Debug, Default)]
struct Map {
    entries: HashMap<StoreKey, Entry>,
    swept_at_len: usize,
}

/// A session store held in process memory. Cloning shares the same map.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    map: Arc<Mutex<Map>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Map> {
        // A panic while holding the lock cannot leave an entry half-written (every mutation is one insert or
        // remove), so a poisoned map is still consistent.
        self.map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The keys of every record held, live or not. For tests and debugging.
    pub fn keys(&self) -> Vec<StoreKey> {
        self.lock().entries.keys().cloned().collect()
    }

    /// Replaces the stored bytes of a record, keeping its expiry. For tests of corrupt-record handling.
    pub fn overwrite_raw(&self, key: &StoreKey, bytes: Vec<u8>) -> bool {
        match self.lock().entries.get_mut(key) {
            Some(entry) => {
                entry.bytes = bytes;
                true
            }
            None => false,
        }
    }
}

fn decode(entry: &Entry) -> Result<Record> {
    Record::decode(&entry.bytes).map_err(|e| Error::Corrupt(e.to_string()))
}

impl Map {
    /// Deletes `user`'s oldest live sessions other than `attached` until the policy's cap holds.
    fn enforce_cap(&mut self, attached: &StoreKey, user: &str, policy: &Policy, now: u64) {
        let mut others: Vec<(u64, u64, StoreKey)> = self
            .entries
            .iter()
            .filter(|(key, e)| *key != attached && e.live(now) && e.user.as_deref() == Some(user))
            .map(|(key, e)| (e.deadline, e.created_at, key.clone()))
            .collect();
        let evict = policy.evictions(others.len());
        if evict == 0 {
            return;
        }
        others.sort();
        for (_, _, key) in others.into_iter().take(evict) {
            self.entries.remove(&key);
        }
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn load(&self, key: &StoreKey, policy: &Policy) -> Result<Option<Loaded>> {
        let now = now_ms();
        let mut map = self.lock();
        let Some(entry) = map.entries.get_mut(key) else {
            return Ok(None);
        };
        if !entry.live(now) {
            map.entries.remove(key);
            return Ok(None);
        }
        let record = decode(entry)?;
        entry.expires_at = policy.expires_at(now, entry.deadline);
        Ok(Some(Loaded {
            record,
            version: entry.version,
            expires_at: entry.expires_at,
        }))
    }

    async fn create(&self, key: &StoreKey, record: &Record, policy: &Policy) -> Result<()> {
        let bytes = record.encode_within(policy)?;
        let now = now_ms();
        let mut map = self.lock();
        if map.entries.get(key).is_some_and(|e| e.live(now)) {
            return Err(Error::Conflict);
        }
        if map.entries.len() > 2 * map.swept_at_len.max(512) {
            map.entries.retain(|_, e| e.live(now));
            map.swept_at_len = map.entries.len();
        }
        let entry = Entry {
            bytes,
            version: 1,
            expires_at: policy.expires_at(now, record.deadline),
            deadline: record.deadline,
            created_at: record.created_at,
            user: record.user.clone(),
        };
        map.entries.insert(key.clone(), entry);
        if let Some(user) = &record.user {
            map.enforce_cap(key, user, policy, now);
        }
        Ok(())
    }

    async fn apply(&self, key: &StoreKey, delta: &Delta, policy: &Policy) -> Result<Applied> {
        let now = now_ms();
        let mut map = self.lock();
        let Some(entry) = map.entries.get_mut(key) else {
            return Ok(Applied::Missing);
        };
        if !entry.live(now) {
            map.entries.remove(key);
            return Ok(Applied::Missing);
        }
        if let Some(expected) = delta.expected_version
            && expected != entry.version
        {
            return Ok(Applied::Conflict {
                current: entry.version,
            });
        }
        let mut record = decode(entry)?;
        record.apply(delta);
        entry.bytes = record.encode_within(policy)?;
        entry.version += 1;
        entry.user = record.user;
        entry.expires_at = policy.expires_at(now, entry.deadline);
        let version = entry.version;
        if let Some(Some(user)) = &delta.user {
            map.enforce_cap(key, user, policy, now);
        }
        Ok(Applied::Saved { version })
    }

    async fn delete(&self, key: &StoreKey) -> Result<bool> {
        let now = now_ms();
        Ok(self.lock().entries.remove(key).is_some_and(|e| e.live(now)))
    }

    async fn list_user(&self, user: &str, limit: usize) -> Result<Vec<(StoreKey, Loaded)>> {
        let now = now_ms();
        let map = self.lock();
        let mut mine: Vec<(&StoreKey, &Entry)> = map
            .entries
            .iter()
            .filter(|(_, e)| e.live(now) && e.user.as_deref() == Some(user))
            .collect();
        mine.sort_by(|(ka, a), (kb, b)| (b.deadline, b.created_at, kb).cmp(&(a.deadline, a.created_at, ka)));
        let mut out = Vec::new();
        for (key, entry) in mine {
            if out.len() >= limit {
                break;
            }
            // A record that cannot be decoded is no session to list (a load reports it as corrupt).
            let Ok(record) = decode(entry) else { continue };
            out.push((
                key.clone(),
                Loaded {
                    record,
                    version: entry.version,
                    expires_at: entry.expires_at,
                },
            ));
        }
        Ok(out)
    }

    async fn count_user(&self, user: &str) -> Result<u64> {
        let now = now_ms();
        let map = self.lock();
        let live = map
            .entries
            .values()
            .filter(|e| e.live(now) && e.user.as_deref() == Some(user))
            .count();
        Ok(live as u64)
    }

    async fn delete_user(&self, user: &str, keep: Option<&StoreKey>) -> Result<u64> {
        let now = now_ms();
        let mut map = self.lock();
        let before = map.entries.len();
        let mut live_removed = 0;
        map.entries.retain(|key, entry| {
            let doomed = entry.user.as_deref() == Some(user) && Some(key) != keep;
            if doomed && entry.live(now) {
                live_removed += 1;
            }
            !doomed
        });
        debug_assert!(map.entries.len() <= before);
        Ok(live_removed)
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}
