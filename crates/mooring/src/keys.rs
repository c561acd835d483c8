//! The key ring: signs cookies and, optionally, encrypts attribute values at rest.
//!
//! One application secret (`APP_KEY`) is expanded with HKDF-SHA256 into independent subkeys, one per purpose,
//! so the cookie MAC key and the encryption key never coincide. Previous secrets (`APP_PREVIOUS_KEYS`) are
//! kept for verification and decryption only: rotating the secret logs nobody out, and a cookie signed with an
//! old secret is re-signed with the current one on its next response.
//!
//! Cookie value: `<id base64url (22)>.<HMAC-SHA256(id) truncated to 128 bits, base64url (22)>`.
//!
//! Stored values carry a one-byte envelope tag: [`PLAIN`] or [`SEALED`]. A sealed value is
//! `tag || nonce (24) || XChaCha20-Poly1305(value)`, with the store key and the attribute name as associated
//! data, so a value cannot be moved to another session or attribute unnoticed.

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
/// Envelope tag of an encrypted value.
pub(crate) const SEALED: u8 = 0x02;
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
}

impl Subkeys {
    #[allow(clippy::expect_used)]
    fn derive(secret: &[u8]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"mooring/v1"), secret);
        let mut mac = [0u8; 32];
        let mut enc = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's output limit, so expansion cannot fail.
        hk.expand(b"cookie-mac", &mut mac).expect("32-byte HKDF output");
        hk.expand(b"value-encryption", &mut enc)
            .expect("32-byte HKDF output");
        Self { mac, enc }
    }

    fn tag(&self, id: &SessionId) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.mac).expect("HMAC takes keys of any length");
        mac.update(b"mooring/cookie/v1\0");
        mac.update(id.as_bytes());
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

fn aad(key: &StoreKey, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(key.as_str().len() + name.len() + 1);
    aad.extend_from_slice(key.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
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

    /// Encrypts a value for attribute `name` of the session stored under `key`.
    #[allow(clippy::expect_used)]
    pub(crate) fn seal(&self, key: &StoreKey, name: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the operating system CSPRNG is unavailable");
        let aad = aad(key, name);
        let sealed = self
            .current
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(SEALED);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts a sealed value (without its tag byte) with the current key, then the previous ones.
    pub(crate) fn open(&self, key: &StoreKey, name: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).ok()?;
        let aad = aad(key, name);
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find_map(|k| k.cipher().decrypt(&nonce, Payload { msg: body, aad: &aad }).ok())
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
        let sealed = old.seal(&sk, "cart", b"three apples");
        assert_eq!(
            rotated.open(&sk, "cart", &sealed[1..]).as_deref(),
            Some(&b"three apples"[..])
        );
    }

    #[test]
    fn sealed_values_are_bound_to_session_and_name() {
        let k = keys(A, &[]);
        let sk = SessionId::generate().store_key();
        let sealed = k.seal(&sk, "n", b"42");
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
    fn secrets_are_parsed_and_checked() {
        let generated = generate_secret();
        assert_eq!(parse_secret(&generated).map(|b| b.len()), Ok(32));
        assert_eq!(parse_secret("short"), Err(KeyError::TooShort(5)));
        assert_eq!(parse_secret("base64:***"), Err(KeyError::BadBase64));
        assert!(parse_secret(A).is_ok());
        assert!(Keys::new(b"short", &[]).is_err());
    }
}
