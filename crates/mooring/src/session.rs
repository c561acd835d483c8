//! The per-request [`Session`] handle and the [`SessionManager`] that makes them.
//!
//! # Lifecycle of one request
//!
//! 1. The layer reads the cookie and checks its MAC. A cookie that fails is ignored before any store call.
//! 2. The handler gets a [`Session`]. Nothing is loaded until the handler first touches it: a request that
//!    never does costs no store call.
//! 3. The first access loads the record (one store call that also slides the idle expiry). If the store
//!    fails, the access returns [`Error`] (503 when returned from a handler) and the session stays unloaded:
//!    the request never continues with an empty session that would later replace the real one.
//! 4. Changes are collected as a delta. After the handler, the layer saves them: a new session is created in
//!    one call, an existing one gets only its changed attributes. If saving fails the response becomes a 503
//!    and the cookie is left alone.
//!
//! Values are MessagePack inside a one-byte envelope (plain, or sealed with XChaCha20-Poly1305 when
//! encryption is on). A value that cannot be opened or decoded reads as absent and is counted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;
use tokio::sync::Mutex;

use crate::config::SessionConfig;
use crate::error::{Error, Result};
use crate::id::{SessionId, StoreKey};
use crate::keys::{Keys, PLAIN, SEALED};
use crate::record::{Applied, Delta, Policy, Record, now_ms};
use crate::stats::{SessionStats, StoreOp, bump};
use crate::store::SessionStore;

/// Attribute holding the CSRF token.
const CSRF: &str = "_csrf";
/// Attribute holding flash messages for the next request.
const FLASH: &str = "_flash";
/// Bytes an encrypted value adds to a plain one (nonce + tag).
const SEAL_OVERHEAD: usize = 24 + 16;
/// The most sessions [`Session::user_sessions`] lists when there is no per-user cap, so a page listing them
/// stays bounded.
pub const UNCAPPED_LISTING_LIMIT: usize = 100;

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) keys: Keys,
    pub(crate) config: SessionConfig,
    pub(crate) stats: SessionStats,
}

impl Shared {
    fn policy(&self) -> Policy {
        Policy {
            idle: self.config.idle,
            max_record_bytes: self.config.max_record_bytes,
            max_sessions_per_user: self.config.max_sessions_per_user,
        }
    }

    /// The policy for creating a record: without the per-user cap when the record only replaces one of the
    /// same user's (id rotation of a signed-in session, whose old record is deleted right after), since
    /// counting both would evict one of the user's other sessions for nothing.
    fn create_policy(&self, rotates_same_user: bool) -> Policy {
        let policy = self.policy();
        if rotates_same_user {
            Policy {
                max_sessions_per_user: None,
                ..policy
            }
        } else {
            policy
        }
    }

    /// Runs one store call under the configured timeout, counting failures.
    async fn timed<T>(&self, op: StoreOp, call: impl Future<Output = Result<T>>) -> Result<T> {
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(self.config.store_timeout, call).await;
        let stats = self.stats.op(op);
        stats.duration.observe(started.elapsed());
        match outcome {
            Ok(Err(err)) if err.is_unavailable() => {
                bump(&stats.errors);
                bump(&self.stats.store_errors);
                tracing::warn!(error = %err, "session store call failed");
                Err(err)
            }
            Ok(result) => result,
            Err(_) => {
                bump(&stats.timeouts);
                bump(&self.stats.store_timeouts);
                tracing::warn!(timeout = ?self.config.store_timeout, "session store call timed out");
                Err(Error::Timeout(self.config.store_timeout))
            }
        }
    }
}

/// Builds sessions: holds the store, the key ring and the configuration. Cheap to clone.
#[derive(Clone)]
pub struct SessionManager {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManager")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl SessionManager {
    /// A manager over `store`, signing cookies with `keys`.
    pub fn new(store: Arc<dyn SessionStore>, keys: Keys, config: SessionConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                keys,
                config,
                stats: SessionStats::default(),
            }),
        }
    }

    /// The tower layer that gives every request a [`Session`].
    pub fn layer(&self) -> crate::layer::SessionLayer {
        crate::layer::SessionLayer {
            shared: Arc::clone(&self.shared),
        }
    }

    /// What the engine has counted so far.
    pub fn stats(&self) -> &SessionStats {
        &self.shared.stats
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.shared.config
    }

    /// Checks that the store answers within the store timeout (for readiness probes).
    pub async fn ping(&self) -> Result<()> {
        self.shared.timed(StoreOp::Ping, self.shared.store.ping()).await
    }
}

/// What the layer must do with the cookie after the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CookieOut {
    /// Leave the client's cookie as it is.
    Keep,
    /// Send a cookie for this id.
    Set(SessionId),
    /// Tell the client to delete its cookie.
    Clear,
}

#[derive(Default)]
struct State {
    /// The id from a verified cookie, and whether it was signed with a previous key.
    cookie: Option<(SessionId, bool)>,
    loaded: bool,
    /// The id in effect after loading: the cookie's, or a fresh one not yet stored.
    id: Option<SessionId>,
    /// The stored version, when the session exists in the store.
    version: Option<u64>,
    created_at: u64,
    deadline: u64,
    user: Option<String>,
    /// Plain attribute values (MessagePack).
    attrs: BTreeMap<String, Vec<u8>>,
    set: BTreeSet<String>,
    remove: BTreeSet<String>,
    user_changed: bool,
    /// A stored session to delete at save (after `invalidate`, or the old key after `regenerate`).
    doomed: Option<StoreKey>,
    /// A corrupt record to clean up, best effort.
    corrupt: Option<StoreKey>,
    cookie_out: Option<CookieOut>,
}

impl State {
    fn has_data(&self) -> bool {
        !self.attrs.is_empty() || self.user.is_some()
    }

    /// The record this state would store, with `attrs` as its (encoded) attributes.
    fn record(&self, attrs: BTreeMap<String, Vec<u8>>) -> Record {
        Record {
            created_at: self.created_at,
            deadline: self.deadline,
            user: self.user.clone(),
            attrs,
        }
    }

    fn dirty(&self) -> bool {
        !self.set.is_empty() || !self.remove.is_empty() || self.user_changed
    }

    fn clear_pending(&mut self) {
        self.set.clear();
        self.remove.clear();
        self.user_changed = false;
    }

    fn start_fresh(&mut self, absolute: Duration) {
        let now = now_ms();
        self.id = Some(SessionId::generate());
        self.version = None;
        self.created_at = now;
        self.deadline = now + absolute.as_millis() as u64;
        self.user = None;
        self.attrs.clear();
        self.clear_pending();
    }
}

/// One request's view of its session. Clone it freely: clones share the same state.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session")
    }
}

/// One of a user's sessions, as listed by [`Session::user_sessions`].
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// A short public digest identifying the session.
    pub fingerprint: String,
    /// Whether it is the session of the current request.
    pub current: bool,
    /// When it was created (unix ms).
    pub created_at: u64,
    /// When it was last used, to the store's touch granularity (unix ms).
    pub last_seen: u64,
    attrs: BTreeMap<String, Vec<u8>>,
}

impl SessionInfo {
    /// Reads one of the session's attributes; absent or undecodable values are `None`.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        self.attrs.get(name).and_then(|v| rmp_serde::from_slice(v).ok())
    }
}

impl Session {
    pub(crate) fn new(shared: Arc<Shared>, cookie: Option<(SessionId, bool)>) -> Self {
        Self {
            shared,
            state: Arc::new(Mutex::new(State {
                cookie,
                ..State::default()
            })),
        }
    }

    /// Opens a stored value: strips the envelope, decrypting if sealed. `None` if it cannot be opened.
    fn open_value(&self, key: &StoreKey, name: &str, stored: &[u8]) -> Option<Vec<u8>> {
        match stored.split_first() {
            Some((&PLAIN, rest)) => Some(rest.to_vec()),
            Some((&SEALED, rest)) => self.shared.keys.open(key, name, rest),
            _ => None,
        }
    }

    fn seal_value(&self, key: &StoreKey, name: &str, plain: &[u8]) -> Vec<u8> {
        if self.shared.config.encrypt {
            self.shared.keys.seal(key, name, plain)
        } else {
            let mut out = Vec::with_capacity(plain.len() + 1);
            out.push(PLAIN);
            out.extend_from_slice(plain);
            out
        }
    }

    fn open_all(&self, key: &StoreKey, attrs: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
        attrs
            .into_iter()
            .filter_map(|(name, stored)| match self.open_value(key, &name, &stored) {
                Some(plain) => Some((name, plain)),
                None => {
                    bump(&self.shared.stats.values_undecodable);
                    tracing::warn!(session = %key.fingerprint(), attribute = %name, "unreadable session value dropped");
                    None
                }
            })
            .collect()
    }

    async fn ensure_loaded(&self, st: &mut State) -> Result<()> {
        if st.loaded {
            return Ok(());
        }
        let shared = &self.shared;
        if let Some((id, _)) = st.cookie.clone() {
            let key = id.store_key();
            match shared
                .timed(StoreOp::Load, shared.store.load(&key, &shared.policy()))
                .await
            {
                Ok(Some(loaded)) if loaded.record.deadline > now_ms() => {
                    bump(&shared.stats.loads_hit);
                    st.attrs = self.open_all(&key, loaded.record.attrs);
                    st.id = Some(id);
                    st.version = Some(loaded.version);
                    st.created_at = loaded.record.created_at;
                    st.deadline = loaded.record.deadline;
                    st.user = loaded.record.user;
                    st.loaded = true;
                    return Ok(());
                }
                Ok(Some(_)) => bump(&shared.stats.loads_expired),
                Ok(None) => bump(&shared.stats.loads_miss),
                Err(Error::Corrupt(detail)) => {
                    bump(&shared.stats.loads_corrupt);
                    tracing::warn!(session = %key.fingerprint(), %detail, "corrupt session record treated as absent");
                    st.corrupt = Some(key);
                }
                Err(err) => return Err(err),
            }
        }
        st.start_fresh(shared.config.absolute);
        st.loaded = true;
        Ok(())
    }

    fn projected_len(&self, st: &State, name: &str, len: usize) -> usize {
        let overhead = 1 + if self.shared.config.encrypt {
            SEAL_OVERHEAD
        } else {
            0
        };
        let record = st.record(
            st.attrs
                .iter()
                .filter(|(k, _)| k.as_str() != name)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        record.encoded_len() + st.attrs.len().saturating_sub(1) * overhead + name.len() + len + overhead + 8
    }

    fn put(&self, st: &mut State, name: &str, plain: Vec<u8>) -> Result<()> {
        let projected = self.projected_len(st, name, plain.len());
        let limit = self.shared.config.max_record_bytes;
        if projected > limit {
            return Err(Error::TooLarge {
                size: projected,
                limit,
            });
        }
        st.attrs.insert(name.to_owned(), plain);
        st.remove.remove(name);
        st.set.insert(name.to_owned());
        Ok(())
    }

    fn take(st: &mut State, name: &str) -> Option<Vec<u8>> {
        let old = st.attrs.remove(name)?;
        st.set.remove(name);
        st.remove.insert(name.to_owned());
        Some(old)
    }

    /// Reads an attribute. A value stored with another type, or that cannot be opened, reads as `None`.
    pub async fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        Ok(st.attrs.get(name).and_then(|bytes| match rmp_serde::from_slice(bytes) {
            Ok(value) => Some(value),
            Err(err) => {
                bump(&self.shared.stats.values_undecodable);
                tracing::warn!(attribute = %name, error = %err, "session value of an unexpected type read as absent");
                None
            }
        }))
    }

    /// Sets an attribute. Fails with [`Error::TooLarge`] (and changes nothing) if the record would exceed the
    /// size limit.
    pub async fn insert<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        let plain = rmp_serde::to_vec(value).map_err(|e| Error::Encode(e.to_string()))?;
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        self.put(&mut st, name, plain)
    }

    /// Removes an attribute, returning whether it was there.
    pub async fn remove(&self, name: &str) -> Result<bool> {
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        Ok(Self::take(&mut st, name).is_some())
    }

    /// Adds a message to show on the next page that calls [`Session::take_flashes`].
    pub async fn flash(&self, message: impl Into<String>) -> Result<()> {
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let mut messages: Vec<String> = st
            .attrs
            .get(FLASH)
            .and_then(|b| rmp_serde::from_slice(b).ok())
            .unwrap_or_default();
        messages.push(message.into());
        let plain = rmp_serde::to_vec(&messages).map_err(|e| Error::Encode(e.to_string()))?;
        self.put(&mut st, FLASH, plain)
    }

    /// Returns the pending flash messages and removes them, so each is read once.
    pub async fn take_flashes(&self) -> Result<Vec<String>> {
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        Ok(Self::take(&mut st, FLASH)
            .and_then(|b| rmp_serde::from_slice(&b).ok())
            .unwrap_or_default())
    }

    /// The session's CSRF token, created on first use. Embed it in forms; check it with
    /// [`Session::verify_csrf`].
    pub async fn csrf_token(&self) -> Result<String> {
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        if let Some(token) = st
            .attrs
            .get(CSRF)
            .and_then(|b| rmp_serde::from_slice::<String>(b).ok())
        {
            return Ok(token);
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::Encode(format!("no randomness for a CSRF token: {e}")))?;
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let plain = rmp_serde::to_vec(&token).map_err(|e| Error::Encode(e.to_string()))?;
        self.put(&mut st, CSRF, plain)?;
        Ok(token)
    }

    /// Checks a submitted CSRF token in constant time. False when the session has no token.
    pub async fn verify_csrf(&self, submitted: &str) -> Result<bool> {
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let Some(token) = st
            .attrs
            .get(CSRF)
            .and_then(|b| rmp_serde::from_slice::<String>(b).ok())
        else {
            return Ok(false);
        };
        Ok(!submitted.is_empty() && bool::from(token.as_bytes().ct_eq(submitted.as_bytes())))
    }

    /// The user this session is signed in as.
    pub async fn user(&self) -> Result<Option<String>> {
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        Ok(st.user.clone())
    }

    /// Signs the session in as `user` (adding it to the user index), or out with `None`. Call
    /// [`Session::regenerate`] as well on sign-in.
    pub async fn set_user(&self, user: Option<&str>) -> Result<()> {
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        st.user = user.map(str::to_owned);
        st.user_changed = true;
        Ok(())
    }

    /// Gives the session a new id, keeping its data and deadline, and retires the old id: call it on sign-in
    /// and on any privilege change, against session fixation. The CSRF token is renewed too.
    pub async fn regenerate(&self) -> Result<()> {
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        if st.version.is_some() {
            let old = st.id.as_ref().map(SessionId::store_key);
            st.doomed = st.doomed.take().or(old);
            st.version = None;
        }
        st.id = Some(SessionId::generate());
        st.attrs.remove(CSRF);
        Ok(())
    }

    /// Ends the session (sign-out): its record is deleted and the cookie cleared. The handle then behaves as a
    /// new, empty session, so a flash message set afterwards starts a fresh one.
    pub async fn invalidate(&self) {
        let mut st = self.state.lock().await;
        let stored = match (&st.version, &st.id, &st.cookie) {
            (Some(_), Some(id), _) => Some(id.store_key()),
            (_, _, Some((id, _))) if !st.loaded => Some(id.store_key()),
            _ => None,
        };
        if let Some(key) = stored {
            st.doomed = Some(key);
        }
        st.cookie = None;
        st.start_fresh(self.shared.config.absolute);
        st.loaded = true;
        st.cookie_out = Some(CookieOut::Clear);
    }

    /// A short public digest of this session (not its id), once it has one.
    pub async fn fingerprint(&self) -> Result<String> {
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        Ok(st
            .id
            .as_ref()
            .map(|id| id.store_key().fingerprint())
            .unwrap_or_default())
    }

    /// The signed-in user's live sessions, newest first (empty when signed out). At most the per-user cap
    /// ([`SessionConfig::with_max_sessions_per_user`]), or [`UNCAPPED_LISTING_LIMIT`] without a cap; see
    /// [`Session::user_session_count`] for how many there are in all.
    pub async fn user_sessions(&self) -> Result<Vec<SessionInfo>> {
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let Some(user) = st.user.clone() else {
            return Ok(Vec::new());
        };
        let current = st.version.and(st.id.as_ref().map(SessionId::store_key));
        let limit = self
            .shared
            .config
            .max_sessions_per_user
            .map_or(UNCAPPED_LISTING_LIMIT, |cap| cap.get() as usize);
        let listed = self
            .shared
            .timed(StoreOp::ListUser, self.shared.store.list_user(&user, limit))
            .await?;
        let idle = self.shared.config.idle.as_millis() as u64;
        let now = now_ms();
        Ok(listed
            .into_iter()
            .map(|(key, loaded)| SessionInfo {
                fingerprint: key.fingerprint(),
                current: Some(&key) == current.as_ref(),
                created_at: loaded.record.created_at,
                last_seen: loaded
                    .expires_at
                    .saturating_sub(idle)
                    .clamp(loaded.record.created_at, now),
                attrs: self.open_all(&key, loaded.record.attrs),
            })
            .collect())
    }

    /// How many live sessions the signed-in user has (0 when signed out), counted by the store without loading
    /// any of them.
    pub async fn user_session_count(&self) -> Result<u64> {
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let Some(user) = st.user.clone() else { return Ok(0) };
        self.shared
            .timed(StoreOp::CountUser, self.shared.store.count_user(&user))
            .await
    }

    /// Signs out every other session of the signed-in user; returns how many ended.
    pub async fn revoke_other_sessions(&self) -> Result<u64> {
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let Some(user) = st.user.clone() else { return Ok(0) };
        let keep = st.version.and(st.id.as_ref().map(SessionId::store_key));
        self.shared
            .timed(
                StoreOp::DeleteUser,
                self.shared.store.delete_user(&user, keep.as_ref()),
            )
            .await
    }

    /// Saves pending changes now instead of after the handler, so the handler can react to a failure.
    pub async fn save(&self) -> Result<()> {
        let mut st = self.state.lock().await;
        self.flush(&mut st, false).await
    }

    /// Saves pending changes only if nobody else changed the session since it was loaded; otherwise fails with
    /// [`Error::Conflict`] and keeps nothing. Use it for read-modify-write of one attribute (a counter), then
    /// [`Session::reload`] and retry on conflict.
    pub async fn save_if_unchanged(&self) -> Result<()> {
        let mut st = self.state.lock().await;
        self.flush(&mut st, true).await
    }

    /// Drops unsaved changes and loads the session again on next access.
    pub async fn reload(&self) {
        let mut st = self.state.lock().await;
        let keep = (st.cookie.clone(), st.id.clone(), st.version);
        let cookie_out = st.cookie_out.take();
        *st = State::default();
        st.cookie = match keep {
            (_, Some(id), Some(_)) => Some((id, false)),
            (cookie, _, _) => cookie,
        };
        st.cookie_out = cookie_out;
    }

    /// Saves after the handler, returning what to do with the cookie.
    pub(crate) async fn finish(&self) -> Result<CookieOut> {
        let mut st = self.state.lock().await;
        self.flush(&mut st, false).await?;
        if let (Some((_, true)), Some(id), Some(_), None) = (&st.cookie, &st.id, st.version, &st.cookie_out) {
            // Signed with a previous key: re-sign with the current one.
            st.cookie_out = Some(CookieOut::Set(id.clone()));
        }
        Ok(st.cookie_out.take().unwrap_or(CookieOut::Keep))
    }

    async fn flush(&self, st: &mut State, compare_and_set: bool) -> Result<()> {
        let shared = &self.shared;
        if let Some(key) = st.corrupt.take() {
            // Best effort: a corrupt record would otherwise linger until it expires.
            let _ = shared.timed(StoreOp::Delete, shared.store.delete(&key)).await;
        }
        if !st.loaded {
            if let Some(key) = st.doomed.take() {
                shared.timed(StoreOp::Delete, shared.store.delete(&key)).await?;
            }
            return Ok(());
        }
        let Some(id) = st.id.clone() else { return Ok(()) };
        let key = id.store_key();
        match st.version {
            None if st.has_data() => {
                let record = st.record(
                    st.attrs
                        .iter()
                        .map(|(n, v)| (n.clone(), self.seal_value(&key, n, v)))
                        .collect(),
                );
                let policy = shared.create_policy(st.doomed.is_some() && !st.user_changed);
                shared
                    .timed(StoreOp::Create, shared.store.create(&key, &record, &policy))
                    .await?;
                bump(&shared.stats.created);
                st.version = Some(1);
                st.clear_pending();
                st.cookie_out = Some(CookieOut::Set(id));
                if let Some(old) = st.doomed.take()
                    && let Err(err) = shared.timed(StoreOp::Delete, shared.store.delete(&old)).await
                {
                    st.doomed = Some(old);
                    return Err(err);
                }
            }
            None => {
                if let Some(old) = st.doomed.take() {
                    shared.timed(StoreOp::Delete, shared.store.delete(&old)).await?;
                    st.cookie_out = Some(CookieOut::Clear);
                }
                st.clear_pending();
            }
            Some(version) if st.dirty() => {
                let delta = Delta {
                    set: st
                        .set
                        .iter()
                        .filter_map(|n| Some((n.clone(), self.seal_value(&key, n, st.attrs.get(n)?))))
                        .collect(),
                    remove: st.remove.clone(),
                    user: st.user_changed.then(|| st.user.clone()),
                    expected_version: compare_and_set.then_some(version),
                };
                match shared
                    .timed(StoreOp::Apply, shared.store.apply(&key, &delta, &shared.policy()))
                    .await?
                {
                    Applied::Saved { version } => {
                        bump(&shared.stats.saved);
                        st.version = Some(version);
                        st.clear_pending();
                    }
                    Applied::Conflict { .. } => return Err(Error::Conflict),
                    Applied::Missing => {
                        // Signed out or revoked elsewhere while this request ran: the write must not resurrect it.
                        bump(&shared.stats.writes_to_missing);
                        tracing::info!(session = %key.fingerprint(), "write to an ended session dropped");
                        st.start_fresh(shared.config.absolute);
                        st.cookie_out = Some(CookieOut::Clear);
                    }
                }
            }
            Some(_) => {}
        }
        Ok(())
    }
}
