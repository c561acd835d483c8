//! Session identifiers and the keys they are stored under.
//!
//! A [`SessionId`] is the secret a browser holds: 128 bits from the operating system's CSPRNG. It only ever
//! travels inside the signed cookie. The store never sees it: records are filed under a [`StoreKey`], a
//! one-way hash of the id, so a dump or backup of the store holds nothing that can be replayed as a cookie.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Length of a session id in bytes (128 bits).
pub(crate) const ID_LEN: usize = 16;

/// The secret identifier of one session. Its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId([u8; ID_LEN]);

impl SessionId {
    /// A fresh id from the operating system's CSPRNG.
    ///
    /// # Panics
    /// Panics if the operating system has no entropy source, which no supported platform lacks: continuing
    /// with a predictable id would be worse.
    #[allow(clippy::expect_used)]
    pub fn generate() -> Self {
        let mut bytes = [0u8; ID_LEN];
        getrandom::fill(&mut bytes).expect("the operating system CSPRNG is unavailable");
        Self(bytes)
    }

    /// The id as base64url text (22 characters), as it appears in the cookie.
    pub(crate) fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Parses the base64url text of an id; `None` for anything else.
    pub(crate) fn decode(text: &str) -> Option<Self> {
        if text.len() != 22 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    /// The raw bytes, for signing.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key this session's record is stored under.
    pub fn store_key(&self) -> StoreKey {
        let digest = Sha256::new()
            .chain_update(b"mooring/store-key/v1\0")
            .chain_update(self.0)
            .finalize();
        StoreKey(URL_SAFE_NO_PAD.encode(&digest[..16]))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

/// The key a session record is stored under: base64url of a truncated SHA-256 of the id (22 characters).
///
/// It is not a secret in the sense the id is (it cannot be turned back into a cookie), but it is still not
/// shown to users: [`StoreKey::fingerprint`] is the short, public digest for that.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreKey(String);

impl StoreKey {
    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps a key read back from a store (for example from a user index).
    pub fn from_stored(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// A short digest (8 characters) that tells sessions apart in pages and logs without revealing anything
    /// that could be used to find or hijack the session.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"mooring/fingerprint/v1\0")
            .chain_update(&self.0)
            .finalize();
        URL_SAFE_NO_PAD.encode(&digest[..6])
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreKey({})", self.fingerprint())
    }
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_round_trip() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        assert_eq!(SessionId::decode(&a.encode()), Some(a.clone()));
        assert_eq!(a.encode().len(), 22);
    }

    #[test]
    fn store_key_is_not_the_id() {
        let id = SessionId::generate();
        let key = id.store_key();
        assert_eq!(key.as_str().len(), 22);
        assert_ne!(key.as_str(), id.encode());
        assert_eq!(key, id.store_key(), "derivation is deterministic");
        assert_eq!(key.fingerprint().len(), 8);
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for text in ["", "short", "!!!!!!!!!!!!!!!!!!!!!!", &"A".repeat(23)] {
            assert_eq!(SessionId::decode(text), None, "{text:?}");
        }
    }
}
