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
//!
//! # Pre-sessions: what creates a record
//!
//! A session without a record is a *pre-session*. Its CSRF token is derived from its id
//! ([`Keys`]), and its flash messages travel in its cookie (`p.<id>.<body>.<tag>`, MAC'd, at most
//! [`MAX_PRE_FLASH_BYTES`] of messages, Max-Age the idle timeout). A request with a pre-session cookie
//! costs no store call: the engine knows no record exists. Only a write that must persist, [`Session::set_user`]
//! or [`Session::insert`] of an app attribute, creates a record, under the same id (so the token stays valid),
//! and pending flash messages move into it.
//!
//! # Encrypted records
//!
//! With encryption on, a record carries [`AUTH`], a MAC over its store key, creation time, deadline and user,
//! checked on every load; values are sealed with the deadline and user in their associated data. A record
//! whose MAC is missing or wrong, or with a value that does not open, is refused (treated as absent, counted
//! in `records_refused`) unless [`SessionConfig::with_plaintext_migration`] allows legacy records, which are
//! then upgraded on load.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;
use tokio::sync::Mutex;

use crate::config::SessionConfig;
use crate::error::{Error, Result};
use crate::id::{SessionId, StoreKey};
use crate::keys::{Keys, PLAIN, RecordIdentity, SEALED, SEALED_V2};
use crate::record::{Applied, Delta, Policy, Record, now_ms};
use crate::stats::{SessionStats, StoreOp, bump};
use crate::store::SessionStore;

/// Attribute that held the CSRF token before tokens were derived. Still accepted by [`Session::verify_csrf`]
/// for sessions that have one (forms open during an upgrade keep working); never written again.
const CSRF: &str = "_csrf";
/// Reserved attribute holding the record identity MAC when encryption is on.
pub const AUTH: &str = "_mooring.auth";
/// The most bytes of flash messages (MessagePack) a pre-session cookie carries; beyond it the oldest
/// messages are dropped (and a single longer message is cut), counted in `flashes_dropped`.
pub const MAX_PRE_FLASH_BYTES: usize = 1024;
/// Bytes the identity MAC adds to an encrypted record (name, tag byte, HMAC-SHA256, lengths).
const AUTH_OVERHEAD: usize = AUTH.len() + 1 + 32 + 2;
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
    /// Send a pre-session cookie for this id with this (MessagePack) body.
    Pre(SessionId, Vec<u8>),
    /// Tell the client to delete its cookie.
    Clear,
}

/// A verified session cookie, as the layer found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CookieIn {
    /// A stored session's cookie, and whether a previous key signed it.
    Stored(SessionId, bool),
    /// A pre-session's cookie: no record exists for this id.
    Pre {
        id: SessionId,
        /// When the cookie stops being accepted (unix ms), MAC'd with the rest.
        expires_at: u64,
        flashes: Vec<String>,
        /// Signed with a previous key.
        resign: bool,
    },
}

/// The body of a pre-session cookie: its expiry and pending flash messages.
pub(crate) fn pre_body(expires_at: u64, flashes: &[String]) -> Vec<u8> {
    rmp_serde::to_vec(&(expires_at, flashes)).unwrap_or_default()
}

/// Reads a pre-session cookie body; `None` if it does not decode (it was MAC'd, so only a bug gets here).
pub(crate) fn read_pre_body(body: &[u8]) -> Option<(u64, Vec<String>)> {
    rmp_serde::from_slice(body).ok()
}

/// Keeps pending flash messages within [`MAX_PRE_FLASH_BYTES`]: drops the oldest, then cuts a single
/// message that alone is too long. Returns how many were dropped or cut.
fn bound_flashes(flashes: &mut Vec<String>) -> u64 {
    let size = |f: &Vec<String>| rmp_serde::to_vec(f).map_or(usize::MAX, |v| v.len());
    let mut dropped = 0;
    while flashes.len() > 1 && size(flashes) > MAX_PRE_FLASH_BYTES {
        flashes.remove(0);
        dropped += 1;
    }
    if let Some(only) = flashes.first_mut()
        && size(&vec![only.clone()]) > MAX_PRE_FLASH_BYTES
    {
        // A string header is at most 5 bytes and the array header 1: this many bytes of text always fit.
        let mut cut = MAX_PRE_FLASH_BYTES - 8;
        while !only.is_char_boundary(cut) {
            cut -= 1;
        }
        only.truncate(cut);
        dropped += 1;
    }
    dropped
}

#[derive(Default)]
struct State {
    /// The verified cookie the request carried.
    cookie: Option<CookieIn>,
    loaded: bool,
    /// The handler used the session (any call): the response must not be cached.
    used: bool,
    /// Flash messages of a session without a record (they travel in the pre-session cookie).
    pre_flashes: Vec<String>,
    /// `pre_flashes` differ from what the client's cookie holds.
    pre_changed: bool,
    /// A CSRF token was handed out: a session without a record must give the client a cookie for its id.
    token_issued: bool,
    /// A legacy record accepted under the plaintext migration: write its identity MAC on save.
    needs_auth: bool,
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
    /// Whether the session holds anything that must persist: a user or an app attribute. A CSRF token and
    /// flash messages alone never do.
    fn has_data(&self) -> bool {
        !self.attrs.is_empty() || self.user.is_some()
    }

    fn identity(&self) -> RecordIdentity<'_> {
        RecordIdentity {
            created_at: self.created_at,
            deadline: self.deadline,
            user: self.user.as_deref(),
        }
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
        !self.set.is_empty() || !self.remove.is_empty() || self.user_changed || self.needs_auth
    }

    fn clear_pending(&mut self) {
        self.set.clear();
        self.remove.clear();
        self.user_changed = false;
        self.needs_auth = false;
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
        self.pre_flashes.clear();
        self.pre_changed = false;
        self.token_issued = false;
    }
}

/// Why a loaded record was refused.
enum Refusal {
    /// Encryption is on and the record is not authentic (or is legacy, without the migration setting).
    Unauthenticated(&'static str),
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
    pub(crate) fn new(shared: Arc<Shared>, cookie: Option<CookieIn>) -> Self {
        Self {
            shared,
            state: Arc::new(Mutex::new(State {
                cookie,
                ..State::default()
            })),
        }
    }

    /// Opens a stored value: strips the envelope, decrypting if sealed. `None` if it cannot be opened. The
    /// flag is true for a legacy envelope (plain or first-format sealed).
    fn open_value(
        &self,
        key: &StoreKey,
        name: &str,
        identity: &RecordIdentity<'_>,
        stored: &[u8],
    ) -> Option<(Vec<u8>, bool)> {
        match stored.split_first() {
            Some((&PLAIN, rest)) => Some((rest.to_vec(), true)),
            Some((&SEALED, rest)) => self.shared.keys.open(key, name, rest).map(|v| (v, true)),
            Some((&SEALED_V2, rest)) => self
                .shared
                .keys
                .open_v2(key, name, identity, rest)
                .map(|v| (v, false)),
            _ => None,
        }
    }

    fn seal_value(&self, key: &StoreKey, name: &str, identity: &RecordIdentity<'_>, plain: &[u8]) -> Vec<u8> {
        if self.shared.config.encrypt {
            self.shared.keys.seal(key, name, identity, plain)
        } else {
            let mut out = Vec::with_capacity(plain.len() + 1);
            out.push(PLAIN);
            out.extend_from_slice(plain);
            out
        }
    }

    /// Opens every value of a loaded record. With encryption on, first checks the identity MAC, and refuses
    /// the record if it is not authentic or holds a value that does not open under its identity. Returns the
    /// plain values and whether the record is legacy (accepted under the migration setting: rewrite it).
    fn open_record(
        &self,
        key: &StoreKey,
        record: &Record,
    ) -> std::result::Result<(BTreeMap<String, Vec<u8>>, bool), Refusal> {
        let identity = RecordIdentity {
            created_at: record.created_at,
            deadline: record.deadline,
            user: record.user.as_deref(),
        };
        let config = &self.shared.config;
        let mut legacy = false;
        if config.encrypt {
            match record.attrs.get(AUTH) {
                Some(mac) if self.shared.keys.verify_record(key, &identity, mac) => {}
                Some(_) => return Err(Refusal::Unauthenticated("identity MAC does not match")),
                None if config.plaintext_migration => legacy = true,
                None => return Err(Refusal::Unauthenticated("no identity MAC")),
            }
        }
        let mut attrs = BTreeMap::new();
        for (name, stored) in &record.attrs {
            if name == AUTH {
                continue;
            }
            match self.open_value(key, name, &identity, stored) {
                Some((_, true)) if config.encrypt && !config.plaintext_migration => {
                    return Err(Refusal::Unauthenticated(
                        "a value is not sealed with its identity",
                    ));
                }
                Some((plain, old)) => {
                    legacy |= old && config.encrypt;
                    attrs.insert(name.clone(), plain);
                }
                None if config.encrypt => {
                    return Err(Refusal::Unauthenticated(
                        "a value does not open under its identity",
                    ));
                }
                None => {
                    bump(&self.shared.stats.values_undecodable);
                    tracing::warn!(session = %key.fingerprint(), attribute = %name, "unreadable session value dropped");
                }
            }
        }
        Ok((attrs, legacy))
    }

    async fn ensure_loaded(&self, st: &mut State) -> Result<()> {
        st.used = true;
        if st.loaded {
            return Ok(());
        }
        let shared = &self.shared;
        match st.cookie.clone() {
            Some(CookieIn::Pre { id, flashes, .. }) => {
                // A pre-session has no record by construction: nothing to load.
                st.start_fresh(shared.config.absolute);
                st.id = Some(id);
                st.pre_flashes = flashes;
                st.loaded = true;
                return Ok(());
            }
            Some(CookieIn::Stored(id, _)) => self.load_stored(st, id).await?,
            None => {}
        }
        if !st.loaded {
            st.start_fresh(shared.config.absolute);
            st.loaded = true;
        }
        Ok(())
    }

    /// Loads the record of a stored-session cookie; leaves `st` unloaded if there is none (or it is refused).
    async fn load_stored(&self, st: &mut State, id: SessionId) -> Result<()> {
        let shared = &self.shared;
        let key = id.store_key();
        match shared
            .timed(StoreOp::Load, shared.store.load(&key, &shared.policy()))
            .await
        {
            Ok(Some(loaded)) if loaded.record.deadline > now_ms() => {
                match self.open_record(&key, &loaded.record) {
                    Ok((attrs, legacy)) => {
                        bump(&shared.stats.loads_hit);
                        st.attrs = attrs;
                        st.id = Some(id);
                        st.version = Some(loaded.version);
                        st.created_at = loaded.record.created_at;
                        st.deadline = loaded.record.deadline;
                        st.user = loaded.record.user;
                        st.loaded = true;
                        if legacy {
                            // Accepted under the migration setting: reseal every value and add the MAC.
                            st.needs_auth = true;
                            st.set = st.attrs.keys().cloned().collect();
                        }
                        return Ok(());
                    }
                    Err(Refusal::Unauthenticated(why)) => {
                        bump(&shared.stats.records_refused);
                        tracing::warn!(session = %key.fingerprint(), reason = why, "unauthenticated session record refused");
                        st.corrupt = Some(key);
                    }
                }
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
        Ok(())
    }

    fn projected_len(&self, st: &State, name: &str, len: usize) -> usize {
        let encrypt = self.shared.config.encrypt;
        let overhead = 1 + if encrypt { SEAL_OVERHEAD } else { 0 };
        let auth = if encrypt { AUTH_OVERHEAD } else { 0 };
        let record = st.record(
            st.attrs
                .iter()
                .filter(|(k, _)| k.as_str() != name)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        record.encoded_len()
            + st.attrs.len().saturating_sub(1) * overhead
            + name.len()
            + len
            + overhead
            + 8
            + auth
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
        if name == AUTH {
            return Err(Error::Encode(format!("'{AUTH}' is reserved for the engine")));
        }
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
        if st.version.is_none() {
            // No record (yet): the message travels in the pre-session cookie, or moves into the record if
            // this request creates one.
            st.pre_flashes.push(message.into());
            let dropped = bound_flashes(&mut st.pre_flashes);
            self.shared
                .stats
                .flashes_dropped
                .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
            st.pre_changed = true;
            return Ok(());
        }
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
        let mut messages: Vec<String> = Self::take(&mut st, FLASH)
            .and_then(|b| rmp_serde::from_slice(&b).ok())
            .unwrap_or_default();
        if !st.pre_flashes.is_empty() {
            messages.append(&mut st.pre_flashes);
            st.pre_changed = true;
        }
        Ok(messages)
    }

    /// The session's CSRF token: an HMAC of the session id, so it costs no storage and stays the same when a
    /// pre-session gets a record. Embed it in forms; check it with [`Session::verify_csrf`].
    pub async fn csrf_token(&self) -> Result<String> {
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let Some(id) = st.id.clone() else {
            return Err(Error::Encode("a loaded session has an id".into()));
        };
        st.token_issued = true;
        Ok(self.shared.keys.csrf_token(&id))
    }

    /// Checks a submitted CSRF token in constant time: the token derived from the session id (under the
    /// current or a previous key), or the token a session created before derived tokens stored.
    pub async fn verify_csrf(&self, submitted: &str) -> Result<bool> {
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        if submitted.is_empty() {
            return Ok(false);
        }
        if let Some(id) = &st.id
            && self.shared.keys.verify_csrf(id, submitted)
        {
            return Ok(true);
        }
        Ok(st
            .attrs
            .get(CSRF)
            .and_then(|b| rmp_serde::from_slice::<String>(b).ok())
            .is_some_and(|token| bool::from(token.as_bytes().ct_eq(submitted.as_bytes()))))
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
        // Pending pre-session flashes travel with the new id.
        st.pre_changed |= !st.pre_flashes.is_empty();
        Ok(())
    }

    /// Ends the session (sign-out): its record is deleted and the cookie cleared. The handle then behaves as a
    /// new, empty session, so a flash message set afterwards starts a fresh one.
    pub async fn invalidate(&self) {
        let mut st = self.state.lock().await;
        st.used = true;
        let stored = match (&st.version, &st.id, &st.cookie) {
            (Some(_), Some(id), _) => Some(id.store_key()),
            (_, _, Some(CookieIn::Stored(id, _))) if !st.loaded => Some(id.store_key()),
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
        // A record that is not authentic is left out, as a load would refuse it.
        Ok(listed
            .into_iter()
            .filter_map(|(key, loaded)| {
                Some(SessionInfo {
                    fingerprint: key.fingerprint(),
                    current: Some(&key) == current.as_ref(),
                    created_at: loaded.record.created_at,
                    last_seen: loaded
                        .expires_at
                        .saturating_sub(idle)
                        .clamp(loaded.record.created_at, now),
                    attrs: match self.open_record(&key, &loaded.record) {
                        Ok((attrs, _)) => attrs,
                        Err(_) => return None,
                    },
                })
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
            (_, Some(id), Some(_)) => Some(CookieIn::Stored(id, false)),
            (cookie, _, _) => cookie,
        };
        st.cookie_out = cookie_out;
        st.used = true;
    }

    /// Saves after the handler, returning what to do with the cookie and whether the session was used.
    pub(crate) async fn finish(&self) -> Result<(CookieOut, bool)> {
        let mut st = self.state.lock().await;
        self.flush(&mut st, false).await?;
        if let (Some(CookieIn::Stored(_, true)), Some(id), Some(_), None) =
            (&st.cookie, &st.id, st.version, &st.cookie_out)
        {
            // Signed with a previous key: re-sign with the current one.
            st.cookie_out = Some(CookieOut::Set(id.clone()));
        }
        if st.loaded
            && st.version.is_none()
            && let Some(id) = st.id.clone()
        {
            let now = now_ms();
            let idle = self.shared.config.idle.as_millis() as u64;
            // The client already holds a current, fresh-enough cookie for this pre-session.
            let holds = matches!(&st.cookie, Some(CookieIn::Pre { id: held, expires_at, resign: false, .. })
                if *held == id && expires_at.saturating_sub(now) > idle / 2);
            if st.pre_changed || (st.token_issued && !holds) {
                bump(&self.shared.stats.pre_sessions_issued);
                let body = pre_body(now.saturating_add(idle), &st.pre_flashes);
                st.cookie_out = Some(CookieOut::Pre(id, body));
            }
        }
        let used = st.used;
        Ok((st.cookie_out.take().unwrap_or(CookieOut::Keep), used))
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
                if !st.pre_flashes.is_empty() {
                    // The pre-session's pending messages move into the record it becomes.
                    let mut messages: Vec<String> = st
                        .attrs
                        .get(FLASH)
                        .and_then(|b| rmp_serde::from_slice(b).ok())
                        .unwrap_or_default();
                    messages.append(&mut st.pre_flashes);
                    let plain = rmp_serde::to_vec(&messages).map_err(|e| Error::Encode(e.to_string()))?;
                    self.put(st, FLASH, plain)?;
                }
                let identity = st.identity();
                let mut attrs: BTreeMap<String, Vec<u8>> = st
                    .attrs
                    .iter()
                    .map(|(n, v)| (n.clone(), self.seal_value(&key, n, &identity, v)))
                    .collect();
                if shared.config.encrypt {
                    attrs.insert(AUTH.to_owned(), shared.keys.record_mac(&key, &identity));
                }
                let record = st.record(attrs);
                let policy = shared.create_policy(st.doomed.is_some() && !st.user_changed);
                shared
                    .timed(StoreOp::Create, shared.store.create(&key, &record, &policy))
                    .await?;
                bump(&shared.stats.created);
                st.version = Some(1);
                st.clear_pending();
                st.pre_changed = false;
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
                let identity = st.identity();
                let encrypt = shared.config.encrypt;
                // The user is part of every sealed value's associated data: a new user reseals them all (a
                // full rewrite, but only on sign-in or sign-out, which regenerate anyway in most apps).
                let names: Vec<&String> = if encrypt && st.user_changed {
                    st.attrs.keys().collect()
                } else {
                    st.set.iter().collect()
                };
                let mut set: BTreeMap<String, Vec<u8>> = names
                    .into_iter()
                    .filter_map(|n| Some((n.clone(), self.seal_value(&key, n, &identity, st.attrs.get(n)?))))
                    .collect();
                if encrypt && (st.user_changed || st.needs_auth) {
                    set.insert(AUTH.to_owned(), shared.keys.record_mac(&key, &identity));
                }
                let delta = Delta {
                    set,
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
