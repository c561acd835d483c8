//! The backup file every `moor backup` writes: signed, optionally encrypted, one envelope for every kind of
//! backup (sessions, a database dump).
//!
//! ```text
//! MOORBAK2\n
//! {"format":2,"kind":"sessions",...}\n              one JSON line: the Header
//! body                                             the payload, or its XChaCha20-Poly1305 sealing
//! 32 bytes                                          HMAC-SHA256(k_mac, every byte before)
//! ```
//!
//! - **Signed.** The MAC covers the magic, the header and the body, so one changed byte anywhere is refused
//!   by [`open`] before any content is parsed (the header is read only for its key id, to choose the key).
//! - **Encrypted** when asked: XChaCha20-Poly1305 with a random 24-byte nonce (in the header) and the magic
//!   plus header line as associated data.
//! - **Keys** ([`BackupKeys`]): HKDF-SHA256 of `BACKUP_KEY`, or of `APP_KEY` when no `BACKUP_KEY` is set,
//!   under their own salt (`mooring/backup/v1`), so a backup key never equals a cookie key. Previous keys
//!   (`BACKUP_PREVIOUS_KEYS`, `APP_PREVIOUS_KEYS`) still open older backups after a rotation. The header names
//!   the key by an 8-byte id (HKDF output too, so it reveals nothing of the key).
//!
//! Hand-written: the envelope is 30 lines over `hmac` and `chacha20poly1305`; a general archive format (age,
//! a JWS) would add a dependency and hide the one property that matters, "a changed byte is refused".

use anyhow::{Context, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The first bytes of a signed backup.
pub const MAGIC: &[u8] = b"MOORBAK2\n";
/// The first bytes of an unsigned backup of an older `moor` (read only by an explicit opt-in).
pub const LEGACY_MAGIC: &[u8] = b"MOORBAK1\n";
const MAC_LEN: usize = 32;
const NONCE_LEN: usize = 24;
/// The longest header line [`open`] reads.
const MAX_HEADER: usize = 64 * 1024;

/// What a backup holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The session keys of Redis (`DUMP` + absolute expiry of each).
    Sessions,
    /// A dump of the application's database by its standard tool.
    Database,
}

impl Kind {
    /// The name backups of this kind start with (`sessions-<unix ms>.moorbak`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sessions => "sessions",
            Self::Database => "database",
        }
    }
}

/// The header line of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The envelope's format: 2.
    pub format: u32,
    /// What the body holds.
    pub kind: Kind,
    /// When the backup was taken (unix ms).
    pub created_at_ms: u64,
    /// Where it was read from (`host:port` list, or a database URL without its password).
    pub source: String,
    /// Sessions: the key prefix covered (`""`: every key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Sessions: the number of keys; database: 0.
    #[serde(default)]
    pub items: u64,
    /// Database: the engine and dump format (`postgres-custom`, `mysql-sql`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// The id of the key that signed it (16 hex digits).
    pub key_id: String,
    /// The nonce (base64) when the body is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The length of the plain body in bytes.
    pub body_len: u64,
}

impl Header {
    /// A header for a new backup of `kind`, taken now from `source`; [`seal`] fills in the key, nonce and
    /// length.
    pub fn new(kind: Kind, created_at_ms: u64, source: impl Into<String>) -> Self {
        Self {
            format: 2,
            kind,
            created_at_ms,
            source: source.into(),
            prefix: None,
            items: 0,
            engine: None,
            key_id: String::new(),
            nonce: None,
            body_len: 0,
        }
    }

    /// Whether the body is encrypted.
    pub fn encrypted(&self) -> bool {
        self.nonce.is_some()
    }
}

#[derive(Clone)]
struct Subkeys {
    id: String,
    mac: [u8; 32],
    enc: [u8; 32],
}

impl Subkeys {
    #[allow(clippy::expect_used)]
    fn derive(secret: &[u8]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"mooring/backup/v1"), secret);
        let expand = |info: &[u8]| {
            let mut out = [0u8; 32];
            // 32 bytes is far below HKDF-SHA256's output limit.
            hk.expand(info, &mut out).expect("32-byte HKDF output");
            out
        };
        let id = expand(b"key-id");
        Self {
            id: id[..8].iter().map(|b| format!("{b:02x}")).collect(),
            mac: expand(b"file-mac"),
            enc: expand(b"file-encryption"),
        }
    }

    #[allow(clippy::expect_used)]
    fn mac(&self) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(&self.mac)
            .expect("HMAC takes keys of any length");
        mac.update(b"mooring/backup-file/v2\0");
        mac
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.enc.into())
    }
}

/// The keys backups are signed and encrypted with: the current one, and previous ones that still open older
/// backups.
#[derive(Clone)]
pub struct BackupKeys {
    current: Subkeys,
    previous: Vec<Subkeys>,
    /// Which variable the current key came from, for messages.
    source: &'static str,
}

impl std::fmt::Debug for BackupKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupKeys")
            .field("key_id", &self.current.id)
            .field("previous", &self.previous.len())
            .field("source", &self.source)
            .finish()
    }
}

impl BackupKeys {
    /// Keys from secrets (each at least 32 bytes, as [`mooring::keys::parse_secret`] reads them).
    pub fn from_secrets(current: &[u8], previous: &[Vec<u8>]) -> Self {
        Self {
            current: Subkeys::derive(current),
            previous: previous.iter().map(|s| Subkeys::derive(s)).collect(),
            source: "the given key",
        }
    }

    /// The keys of this environment: `BACKUP_KEY` (or the file `BACKUP_KEY_FILE` names) with
    /// `BACKUP_PREVIOUS_KEYS`, else `APP_KEY` (or `APP_KEY_FILE`) with `APP_PREVIOUS_KEYS`. Secrets are
    /// `base64:<32 bytes>` or 32+ bytes of text, as for the app.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let read = |name: &str| crate::env::secret(&var, name);
        for (name, previous, source) in [
            ("BACKUP_KEY", "BACKUP_PREVIOUS_KEYS", "BACKUP_KEY"),
            ("APP_KEY", "APP_PREVIOUS_KEYS", "APP_KEY (no BACKUP_KEY is set)"),
        ] {
            let Some(secret) = read(name)? else { continue };
            let current =
                mooring::keys::parse_secret(&secret).with_context(|| format!("{name} is not usable"))?;
            let previous = read(previous)?
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    mooring::keys::parse_secret(s)
                        .with_context(|| format!("a key in {previous} is not usable"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut keys = Self::from_secrets(&current, &previous);
            keys.source = source;
            return Ok(keys);
        }
        bail!(
            "no key to sign backups with: set BACKUP_KEY (or BACKUP_KEY_FILE), or APP_KEY as the app has it \
             (generate one with: openssl rand -base64 32, and prefix it with base64:)"
        )
    }

    /// The id of the current key, as headers name it.
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    fn find(&self, id: &str) -> Option<&Subkeys> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
    }
}

/// Writes a backup: `header` (its key id, nonce and length are set here) and `body`, signed with the current
/// key, and encrypted when `encrypt`.
#[allow(clippy::expect_used)]
pub fn seal(mut header: Header, body: &[u8], keys: &BackupKeys, encrypt: bool) -> anyhow::Result<Vec<u8>> {
    header.format = 2;
    header.key_id = keys.current.id.clone();
    header.body_len = body.len() as u64;
    let nonce = encrypt.then(|| {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the operating system CSPRNG is unavailable");
        nonce
    });
    header.nonce = nonce.map(|n| STANDARD.encode(n));
    let mut out = Vec::with_capacity(body.len() + 512);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&serde_json::to_vec(&header)?);
    out.push(b'\n');
    match nonce {
        Some(nonce) => {
            let sealed = keys
                .current
                .cipher()
                .encrypt(&XNonce::from(nonce), Payload { msg: body, aad: &out })
                .map_err(|_| anyhow::anyhow!("the backup could not be encrypted"))?;
            out.extend_from_slice(&sealed);
        }
        None => out.extend_from_slice(body),
    }
    let mut mac = keys.current.mac();
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    Ok(out)
}

/// The header of a backup, read without checking the signature: for listings only. Never act on it.
pub fn peek_header(bytes: &[u8]) -> anyhow::Result<Header> {
    let rest = match bytes.strip_prefix(MAGIC) {
        Some(rest) => rest,
        None if bytes.starts_with(LEGACY_MAGIC) => {
            bail!("this is an unsigned backup of an older moor (MOORBAK1); it cannot be checked for changes")
        }
        None => bail!("not a moor backup (the file does not start with MOORBAK2)"),
    };
    let newline = rest
        .iter()
        .take(MAX_HEADER)
        .position(|&b| b == b'\n')
        .context("truncated or damaged backup: no header line")?;
    let header: Header =
        serde_json::from_slice(&rest[..newline]).context("damaged backup: the header is not valid")?;
    ensure!(
        header.format == 2,
        "backup format {} is not known to this moor",
        header.format
    );
    Ok(header)
}

/// Checks a whole backup and returns its header and plain body. The signature is checked over every byte
/// before anything is decrypted or parsed (beyond the header's key id); one changed, missing or added byte
/// is refused with a message saying so.
pub fn open(bytes: &[u8], keys: &BackupKeys) -> anyhow::Result<(Header, Vec<u8>)> {
    let header = peek_header(bytes)?;
    let header_end = MAGIC.len()
        + bytes[MAGIC.len()..]
            .iter()
            .position(|&b| b == b'\n')
            .context("truncated backup")?
        + 1;
    ensure!(
        bytes.len() >= header_end + MAC_LEN,
        "truncated backup: it ends before its signature"
    );
    let subkeys = keys.find(&header.key_id).with_context(|| {
        format!(
            "the backup was signed with key {} and {} is key {} (set BACKUP_PREVIOUS_KEYS or APP_PREVIOUS_KEYS \
             to the key it was taken with)",
            header.key_id, keys.source, keys.current.id
        )
    })?;
    let (signed, tag) = bytes.split_at(bytes.len() - MAC_LEN);
    let mut mac = subkeys.mac();
    mac.update(signed);
    mac.verify_slice(tag).map_err(|_| {
        anyhow::anyhow!(
            "the backup's signature does not match: the file was changed, truncated or damaged after it was \
             written; nothing was restored"
        )
    })?;
    let body = &signed[header_end..];
    let plain = match &header.nonce {
        Some(nonce) => {
            let nonce: [u8; NONCE_LEN] = STANDARD
                .decode(nonce)
                .ok()
                .and_then(|n| n.try_into().ok())
                .context("damaged backup: bad nonce")?;
            subkeys
                .cipher()
                .decrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: body,
                        aad: &signed[..header_end],
                    },
                )
                .map_err(|_| anyhow::anyhow!("the backup could not be decrypted"))?
        }
        None => body.to_vec(),
    };
    ensure!(
        plain.len() as u64 == header.body_len,
        "damaged backup: the body is {} bytes, the header says {}",
        plain.len(),
        header.body_len
    );
    Ok((header, plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &[u8]) -> BackupKeys {
        BackupKeys::from_secrets(secret, &[])
    }

    fn sample(encrypt: bool) -> (Vec<u8>, BackupKeys) {
        let keys = keys(b"0123456789abcdef0123456789abcdef");
        let mut header = Header::new(Kind::Sessions, 1_795_000_000_000, "127.0.0.1:6390");
        header.prefix = Some(String::new());
        header.items = 2;
        (
            seal(header, b"the body of a backup", &keys, encrypt).expect("seal"),
            keys,
        )
    }

    #[test]
    fn sealed_backups_open_with_their_key() {
        for encrypt in [false, true] {
            let (bytes, keys) = sample(encrypt);
            let (header, body) = open(&bytes, &keys).expect("open");
            assert_eq!(body, b"the body of a backup");
            assert_eq!(
                (header.kind, header.items, header.encrypted()),
                (Kind::Sessions, 2, encrypt)
            );
            let shows = bytes.windows(20).any(|w| w == b"the body of a backup");
            assert_eq!(shows, !encrypt, "an encrypted body does not show its text");
        }
    }

    #[test]
    fn every_changed_byte_and_every_truncation_is_refused() {
        for encrypt in [false, true] {
            let (bytes, keys) = sample(encrypt);
            for i in 0..bytes.len() {
                let mut changed = bytes.clone();
                changed[i] ^= 0x01;
                assert!(open(&changed, &keys).is_err(), "byte {i} changed");
            }
            for len in 0..bytes.len() {
                assert!(open(&bytes[..len], &keys).is_err(), "cut at {len}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(open(&longer, &keys).is_err(), "a byte added");
        }
    }

    #[test]
    fn another_key_is_refused_and_a_previous_key_still_opens() {
        let (bytes, old) = sample(true);
        let new = keys(b"another key of thirty-two bytes!!");
        let err = open(&bytes, &new).expect_err("another key");
        assert!(err.to_string().contains("signed with key"), "{err}");
        let rotated = BackupKeys::from_secrets(
            b"another key of thirty-two bytes!!",
            &[b"0123456789abcdef0123456789abcdef".to_vec()],
        );
        assert_ne!(rotated.key_id(), old.key_id());
        open(&bytes, &rotated).expect("the previous key opens it");
    }

    #[test]
    fn keys_come_from_backup_key_then_app_key() {
        let env = crate::env::fixed;
        let app = BackupKeys::from_env(env(&[(
            "APP_KEY",
            "base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )]))
        .expect("APP_KEY");
        let both = BackupKeys::from_env(env(&[
            ("APP_KEY", "base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
            ("BACKUP_KEY", "a backup key of at least thirty-two bytes"),
        ]))
        .expect("BACKUP_KEY");
        assert_ne!(app.key_id(), both.key_id(), "BACKUP_KEY wins over APP_KEY");
        assert!(BackupKeys::from_env(env(&[])).is_err(), "no key at all");
        assert!(
            BackupKeys::from_env(env(&[("BACKUP_KEY", "short")])).is_err(),
            "a short key"
        );
    }

    #[test]
    fn legacy_and_foreign_files_say_what_they_are() {
        let keys = keys(b"0123456789abcdef0123456789abcdef");
        let legacy = open(b"MOORBAK1\n{}\n", &keys).expect_err("legacy");
        assert!(legacy.to_string().contains("unsigned"), "{legacy}");
        let foreign = open(b"REDIS0011", &keys).expect_err("foreign");
        assert!(foreign.to_string().contains("not a moor backup"), "{foreign}");
    }
}
