//! The key ring: signs cookies and, optionally, encrypts attribute values at rest.
//!
//! One application secret (`APP_KEY`) is expanded with HKDF-SHA256 into independent subkeys, one per purpose,
//! so the cookie MAC key and the encryption key never coincide. Previous secrets (`APP_PREVIOUS_KEYS`) are
//! kept for verification and decryption only: rotating the secret logs nobody out, and a cookie signed with an
//! old secret is re-signed with the current one on its next response.
//!
//! Cookie values, each with its own MAC domain string so one form can never be passed off as the other:
//!
//! - a stored session: `<id base64url (22)>.<HMAC-SHA256("mooring/cookie/v1" ‖ id) truncated to 128 bits,
//!   base64url (22)>` (unchanged since the first release, so deployed cookies keep working);
//! - a pre-session (no record exists): `p.<id (22)>.<body base64url>.<HMAC-SHA256("mooring/pre-session/v1" ‖
//!   id ‖ body) truncated to 128 bits (22)>`, the body being MessagePack of its expiry and pending flash
//!   messages. The body is authenticated, not encrypted: it only holds what the visitor is shown anyway.
//!
//! The CSRF token of a session is derived, not stored: `HMAC-SHA256(k_csrf, "mooring/csrf/v1" ‖ id)`, 256
//! bits, base64url. It depends on the id alone, so it is the same before and after a pre-session becomes a
//! stored session, and changes with the id on [`regenerate`](crate::Session::regenerate).
//!
//! Stored values carry a one-byte envelope tag: `PLAIN`, `SEALED` (the first encrypted format) or
//! `SEALED_V2`. A sealed value is `tag || nonce (24) || XChaCha20-Poly1305(value)`. Associated data: the
//! store key and the attribute name (`SEALED`); plus the record's absolute deadline and user
//! (`SEALED_V2`, written by this version), so a value cannot be moved to another session, attribute, user or
//! lifetime unnoticed. With encryption on, every record also carries an identity MAC (`record_mac`) over its identity
//! (store key, created, deadline, user), checked on every load.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::id::{SessionId, StoreKey};

/// Envelope tag of a value stored as is.
pub(crate) const PLAIN: u8 = 0x01;
/// Envelope tag of an encrypted value whose associated data is the store key and name (legacy, read only).
pub(crate) const SEALED: u8 = 0x02;
/// Envelope tag of an encrypted value whose associated data also binds the record's deadline and user.
pub(crate) const SEALED_V2: u8 = 0x03;
/// Envelope tag of the record identity MAC.
pub(crate) const RECORD_MAC: u8 = 0x04;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// Why a secret was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error(
        "the key is {0} bytes long; at least 32 are required (generate one with: openssl rand -base64 32)"
    )]
    TooShort(usize),
    /// A `base64:` secret is not valid base64.
    #[error("the key starts with 'base64:' but the rest is not valid base64")]
    BadBase64,
}

/// Decodes an application secret: `base64:<standard base64>` (the form generated keys take), or raw text.
pub fn parse_secret(text: &str) -> Result<Vec<u8>, KeyError> {
    let text = text.trim();
    let bytes = match text.strip_prefix("base64:") {
        Some(b64) => STANDARD.decode(b64).map_err(|_| KeyError::BadBase64)?,
        None => text.as_bytes().to_vec(),
    };
    if bytes.len() < MIN_SECRET_LEN {
        return Err(KeyError::TooShort(bytes.len()));
    }
    Ok(bytes)
}

/// A new random secret in the `base64:` form [`parse_secret`] reads.
#[allow(clippy::expect_used)]
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system CSPRNG is unavailable");
    format!("base64:{}", STANDARD.encode(bytes))
}

#[derive(Clone)]
struct Subkeys {
    mac: [u8; 32],
    enc: [u8; 32],
    csrf: [u8; 32],
    record: [u8; 32],
}

fn hmac(key: &[u8; 32], domain: &[u8]) -> Hmac<Sha256> {
    #[allow(clippy::expect_used)]
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(domain);
    mac
}

impl Subkeys {
    #[allow(clippy::expect_used)]
    fn derive(secret: &[u8]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"mooring/v1"), secret);
        let expand = |info: &[u8]| {
            let mut out = [0u8; 32];
            // 32 bytes is far below HKDF-SHA256's output limit, so expansion cannot fail.
            hk.expand(info, &mut out).expect("32-byte HKDF output");
            out
        };
        Self {
            mac: expand(b"cookie-mac"),
            enc: expand(b"value-encryption"),
            csrf: expand(b"csrf-token"),
            record: expand(b"record-identity"),
        }
    }

    fn tag(&self, id: &SessionId) -> Hmac<Sha256> {
        let mut mac = hmac(&self.mac, b"mooring/cookie/v1\0");
        mac.update(id.as_bytes());
        mac
    }

    fn pre_tag(&self, id: &SessionId, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = hmac(&self.mac, b"mooring/pre-session/v1\0");
        mac.update(id.as_bytes());
        mac.update(body);
        mac
    }

    fn csrf(&self, id: &SessionId) -> Hmac<Sha256> {
        let mut mac = hmac(&self.csrf, b"mooring/csrf/v1\0");
        mac.update(id.as_bytes());
        mac
    }

    fn record(&self, key: &StoreKey, identity: &RecordIdentity<'_>) -> Hmac<Sha256> {
        let mut mac = hmac(&self.record, b"mooring/record/v1\0");
        mac.update(&identity.bytes(key));
        mac
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.enc.into())
    }
}

/// The current secret's subkeys plus those of previous secrets.
#[derive(Clone)]
pub struct Keys {
    current: Subkeys,
    previous: Vec<Subkeys>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Keys {{ current: <redacted>, previous: {} }}",
            self.previous.len()
        )
    }
}

/// The outcome of checking a cookie value.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verified {
    /// Signed with the current key.
    Current(SessionId),
    /// Signed with a previous key: valid, but should be re-signed.
    Previous(SessionId),
}

/// What a record's identity MAC and its values' associated data bind: everything about a record that decides
/// who it signs in and for how long.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordIdentity<'a> {
    pub(crate) created_at: u64,
    pub(crate) deadline: u64,
    pub(crate) user: Option<&'a str>,
}

impl RecordIdentity<'_> {
    /// An unambiguous encoding: fixed-width numbers, the user length-prefixed (or a 0 byte for none).
    fn bytes(&self, key: &StoreKey) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(key.as_str().as_bytes());
        out.push(0);
        out.extend_from_slice(&self.created_at.to_be_bytes());
        out.extend_from_slice(&self.deadline.to_be_bytes());
        match self.user {
            None => out.push(0),
            Some(user) => {
                out.push(1);
                out.extend_from_slice(&(user.len() as u64).to_be_bytes());
                out.extend_from_slice(user.as_bytes());
            }
        }
        out
    }
}

fn aad(key: &StoreKey, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(key.as_str().len() + name.len() + 1);
    aad.extend_from_slice(key.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// Associated data of a [`SEALED_V2`] value: a version label, then the legacy data, then the identity (the
/// store key appears in both; the label keeps a V2 value from ever opening as a V1 one and back).
fn aad_v2(key: &StoreKey, name: &str, identity: &RecordIdentity<'_>) -> Vec<u8> {
    let mut aad = b"mooring/value/v2\0".to_vec();
    aad.extend_from_slice(&(name.len() as u64).to_be_bytes());
    aad.extend_from_slice(name.as_bytes());
    aad.extend_from_slice(&identity.bytes(key));
    aad
}

impl Keys {
    /// A key ring from the current secret and the previous ones (raw bytes, see [`parse_secret`]).
    pub fn new(current: &[u8], previous: &[Vec<u8>]) -> Result<Self, KeyError> {
        for secret in std::iter::once(current).chain(previous.iter().map(Vec::as_slice)) {
            if secret.len() < MIN_SECRET_LEN {
                return Err(KeyError::TooShort(secret.len()));
            }
        }
        Ok(Self {
            current: Subkeys::derive(current),
            previous: previous.iter().map(|s| Subkeys::derive(s)).collect(),
        })
    }

    /// The signed cookie value for an id.
    pub(crate) fn sign(&self, id: &SessionId) -> String {
        let tag = self.current.tag(id).finalize().into_bytes();
        format!("{}.{}", id.encode(), URL_SAFE_NO_PAD.encode(&tag[..TAG_LEN]))
    }

    /// Checks a cookie value against every key, in constant time per key. `None` for anything forged,
    /// truncated or garbled.
    pub(crate) fn verify(&self, value: &str) -> Option<Verified> {
        let (id_text, tag_text) = value.split_once('.')?;
        if tag_text.len() != 22 {
            return None;
        }
        let id = SessionId::decode(id_text)?;
        let tag = URL_SAFE_NO_PAD.decode(tag_text).ok()?;
        if self.current.tag(&id).verify_truncated_left(&tag).is_ok() {
            return Some(Verified::Current(id));
        }
        self.previous
            .iter()
            .any(|k| k.tag(&id).verify_truncated_left(&tag).is_ok())
            .then_some(Verified::Previous(id))
    }

    /// The signed pre-session cookie value for an id and its body.
    pub(crate) fn sign_pre(&self, id: &SessionId, body: &[u8]) -> String {
        let tag = self.current.pre_tag(id, body).finalize().into_bytes();
        format!(
            "p.{}.{}.{}",
            id.encode(),
            URL_SAFE_NO_PAD.encode(body),
            URL_SAFE_NO_PAD.encode(&tag[..TAG_LEN])
        )
    }

    /// Checks a pre-session cookie value; returns the id, the body and whether a previous key signed it.
    pub(crate) fn verify_pre(&self, value: &str) -> Option<(SessionId, Vec<u8>, bool)> {
        let rest = value.strip_prefix("p.")?;
        let (id_text, rest) = rest.split_once('.')?;
        let (body_text, tag_text) = rest.split_once('.')?;
        if tag_text.len() != 22 {
            return None;
        }
        let id = SessionId::decode(id_text)?;
        let body = URL_SAFE_NO_PAD.decode(body_text).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag_text).ok()?;
        if self
            .current
            .pre_tag(&id, &body)
            .verify_truncated_left(&tag)
            .is_ok()
        {
            return Some((id, body, false));
        }
        self.previous
            .iter()
            .any(|k| k.pre_tag(&id, &body).verify_truncated_left(&tag).is_ok())
            .then_some((id, body, true))
    }

    /// The CSRF token of a session id, with the current key.
    pub(crate) fn csrf_token(&self, id: &SessionId) -> String {
        URL_SAFE_NO_PAD.encode(self.current.csrf(id).finalize().into_bytes())
    }

    /// Checks a submitted CSRF token against the id's token under every key (a key rotation must not break
    /// forms already open), in constant time per key.
    pub(crate) fn verify_csrf(&self, id: &SessionId, submitted: &str) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(submitted) else {
            return false;
        };
        std::iter::once(&self.current)
            .chain(&self.previous)
            .any(|k| k.csrf(id).verify_slice(&bytes).is_ok())
    }

    /// The identity MAC of the record stored under `key`, as stored (tag byte first).
    pub(crate) fn record_mac(&self, key: &StoreKey, identity: &RecordIdentity<'_>) -> Vec<u8> {
        let mut out = vec![RECORD_MAC];
        out.extend_from_slice(&self.current.record(key, identity).finalize().into_bytes());
        out
    }

    /// Checks a stored identity MAC (tag byte first) against every key, in constant time per key.
    pub(crate) fn verify_record(&self, key: &StoreKey, identity: &RecordIdentity<'_>, stored: &[u8]) -> bool {
        let Some((&RECORD_MAC, tag)) = stored.split_first() else {
            return false;
        };
        std::iter::once(&self.current)
            .chain(&self.previous)
            .any(|k| k.record(key, identity).verify_slice(tag).is_ok())
    }

    /// Encrypts a value for attribute `name` of the session stored under `key`, binding the record identity.
    pub(crate) fn seal(
        &self,
        key: &StoreKey,
        name: &str,
        identity: &RecordIdentity<'_>,
        plain: &[u8],
    ) -> Vec<u8> {
        self.seal_with(SEALED_V2, &aad_v2(key, name, identity), plain)
    }

    /// Encrypts in the legacy format (store key and name only); kept to test that old values still open.
    #[cfg(test)]
    pub(crate) fn seal_v1(&self, key: &StoreKey, name: &str, plain: &[u8]) -> Vec<u8> {
        self.seal_with(SEALED, &aad(key, name), plain)
    }

    #[allow(clippy::expect_used)]
    fn seal_with(&self, tag: u8, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the operating system CSPRNG is unavailable");
        let sealed = self
            .current
            .cipher()
            .encrypt(&XNonce::from(nonce), Payload { msg: plain, aad })
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(tag);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts a legacy sealed value (without its tag byte) with the current key, then the previous ones.
    pub(crate) fn open(&self, key: &StoreKey, name: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        self.open_with(&aad(key, name), sealed)
    }

    /// Decrypts a [`SEALED_V2`] value (without its tag byte) of a record with this identity.
    pub(crate) fn open_v2(
        &self,
        key: &StoreKey,
        name: &str,
        identity: &RecordIdentity<'_>,
        sealed: &[u8],
    ) -> Option<Vec<u8>> {
        self.open_with(&aad_v2(key, name, identity), sealed)
    }

    fn open_with(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).ok()?;
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find_map(|k| k.cipher().decrypt(&nonce, Payload { msg: body, aad }).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str, previous: &[&str]) -> Keys {
        let prev: Vec<Vec<u8>> = previous.iter().map(|p| p.as_bytes().to_vec()).collect();
        Keys::new(secret.as_bytes(), &prev).expect("valid keys")
    }

    const A: &str = "an application secret of at least 32 bytes";
    const B: &str = "another secret, also at least 32 bytes long";

    #[test]
    fn signed_cookies_verify_and_forgeries_do_not() {
        let k = keys(A, &[]);
        let id = SessionId::generate();
        let cookie = k.sign(&id);
        assert_eq!(cookie.len(), 45);
        assert_eq!(k.verify(&cookie), Some(Verified::Current(id.clone())));
        // Another id with the same tag, a flipped tag character, garbage, a bare id.
        let other = SessionId::generate();
        let (_, tag) = cookie.split_once('.').expect("dot");
        assert_eq!(k.verify(&format!("{}.{tag}", other.encode())), None);
        let mut flipped = cookie.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(k.verify(std::str::from_utf8(&flipped).expect("ascii")), None);
        for bad in ["", ".", "garbage", &id.encode(), &"x".repeat(4096), "é.é"] {
            assert_eq!(k.verify(bad), None, "{bad:?}");
        }
        assert_eq!(
            keys(B, &[]).verify(&cookie),
            None,
            "another secret must not verify"
        );
    }

    #[test]
    fn previous_keys_still_verify_and_decrypt() {
        let old = keys(A, &[]);
        let rotated = keys(B, &[A]);
        let id = SessionId::generate();
        assert_eq!(
            rotated.verify(&old.sign(&id)),
            Some(Verified::Previous(id.clone()))
        );
        let sk = id.store_key();
        let sealed = old.seal_v1(&sk, "cart", b"three apples");
        assert_eq!(
            rotated.open(&sk, "cart", &sealed[1..]).as_deref(),
            Some(&b"three apples"[..])
        );
    }

    #[test]
    fn sealed_values_are_bound_to_session_and_name() {
        let k = keys(A, &[]);
        let sk = SessionId::generate().store_key();
        let sealed = k.seal_v1(&sk, "n", b"42");
        assert_eq!(sealed[0], SEALED);
        assert_eq!(k.open(&sk, "n", &sealed[1..]).as_deref(), Some(&b"42"[..]));
        assert_eq!(k.open(&sk, "m", &sealed[1..]), None, "moved to another attribute");
        assert_eq!(
            k.open(&SessionId::generate().store_key(), "n", &sealed[1..]),
            None,
            "moved to another session"
        );
        assert_eq!(k.open(&sk, "n", &sealed[1..10]), None, "truncated");
    }

    #[test]
    fn v2_values_are_bound_to_the_record_identity() {
        let k = keys(A, &[]);
        let sk = SessionId::generate().store_key();
        let who = RecordIdentity {
            created_at: 1,
            deadline: 2,
            user: Some("ada"),
        };
        let sealed = k.seal(&sk, "n", &who, b"42");
        assert_eq!(sealed[0], SEALED_V2);
        assert_eq!(
            k.open_v2(&sk, "n", &who, &sealed[1..]).as_deref(),
            Some(&b"42"[..])
        );
        for other in [
            RecordIdentity {
                user: Some("eve"),
                ..who
            },
            RecordIdentity { user: None, ..who },
            RecordIdentity { deadline: 3, ..who },
        ] {
            assert_eq!(k.open_v2(&sk, "n", &other, &sealed[1..]), None, "{other:?}");
        }
        assert_eq!(
            k.open(&sk, "n", &sealed[1..]),
            None,
            "a V2 value never opens as V1"
        );
        let mac = k.record_mac(&sk, &who);
        assert!(k.verify_record(&sk, &who, &mac));
        assert!(!k.verify_record(
            &sk,
            &RecordIdentity {
                user: Some("eve"),
                ..who
            },
            &mac
        ));
        assert!(!k.verify_record(&SessionId::generate().store_key(), &who, &mac));
        assert!(!k.verify_record(&sk, &who, &mac[..20]));
    }

    #[test]
    fn pre_session_cookies_and_csrf_tokens_have_their_own_domains() {
        let k = keys(A, &[]);
        let id = SessionId::generate();
        let pre = k.sign_pre(&id, b"body");
        assert_eq!(k.verify_pre(&pre), Some((id.clone(), b"body".to_vec(), false)));
        assert_eq!(
            k.verify(&pre),
            None,
            "a pre-session cookie is not a stored-session cookie"
        );
        let stored = k.sign(&id);
        assert_eq!(k.verify_pre(&format!("p.{stored}")), None);
        // The body is authenticated.
        let forged = pre.replace(&URL_SAFE_NO_PAD.encode(b"body"), &URL_SAFE_NO_PAD.encode(b"bodz"));
        assert_eq!(k.verify_pre(&forged), None);
        let token = k.csrf_token(&id);
        assert!(k.verify_csrf(&id, &token));
        assert!(!k.verify_csrf(&SessionId::generate(), &token));
        assert!(!k.verify_csrf(&id, ""));
        assert!(!k.verify_csrf(&id, &token[..20]));
        assert!(
            keys(B, &[A]).verify_csrf(&id, &token),
            "a rotated key keeps open forms valid"
        );
    }

    #[test]
    fn secrets_are_parsed_and_checked() {
        let generated = generate_secret();
        assert_eq!(parse_secret(&generated).map(|b| b.len()), Ok(32));
        assert_eq!(parse_secret("short"), Err(KeyError::TooShort(5)));
        assert_eq!(parse_secret("base64:***"), Err(KeyError::BadBase64));
        assert!(parse_secret(A).is_ok());
        assert!(Keys::new(b"short", &[]).is_err());
    }
}
