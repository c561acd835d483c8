//! What a store keeps for one session, the changes a request makes to it, and the binary record format.
//!
//! A [`Record`] is a map of attributes (name → opaque bytes, already encoded and possibly encrypted by the
//! engine) plus the metadata every store needs: creation time, absolute deadline and the user it belongs to.
//! A request never sends a whole record back: it sends a [`Delta`] of the attributes it set or removed, so two
//! concurrent requests that change different attributes both keep their change.
//!
//! Stores that keep a record as one blob (SQL, memory) use [`Record::encode`] / [`Record::decode`]: a compact,
//! versioned binary layout. Format 1:
//!
//! ```text
//! u8      format (1)
//! varint  created_at   (unix ms)
//! varint  deadline     (unix ms, absolute expiry)
//! varint  user length + 1 (0 = no user), then the UTF-8 user id
//! varint  attribute count, then per attribute:
//!         varint name length, UTF-8 name, varint value length, value bytes
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The current binary record format.
const FORMAT_V1: u8 = 1;
/// No attribute name may be longer than this.
pub const MAX_NAME_LEN: usize = 255;
/// Upper bound on attributes in one record, checked while decoding untrusted bytes.
const MAX_ATTRS: u64 = 4096;

/// One session as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// When the session was created (unix milliseconds).
    pub created_at: u64,
    /// The absolute deadline (unix milliseconds): the session ends then however active it is.
    pub deadline: u64,
    /// The user the session is signed in as, if any: the key of the user index.
    pub user: Option<String>,
    /// Attributes: name → encoded value.
    pub attrs: BTreeMap<String, Vec<u8>>,
}

/// A record as loaded from a store, with what the store knows about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The record itself.
    pub record: Record,
    /// The record version: starts at 1 on create and grows by one on every applied delta.
    pub version: u64,
    /// When the record expires unless touched again (unix milliseconds); never after `record.deadline`.
    pub expires_at: u64,
}

/// The changes one request makes to a session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// Attributes to set (name → encoded value).
    pub set: BTreeMap<String, Vec<u8>>,
    /// Attributes to remove.
    pub remove: BTreeSet<String>,
    /// `Some(user)` changes the user the session belongs to (and so its place in the user index).
    pub user: Option<Option<String>>,
    /// Compare-and-set: apply only if the stored version is still this one.
    pub expected_version: Option<u64>,
}

impl Delta {
    /// True when applying this delta would change nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty() && self.user.is_none()
    }
}

/// What became of a [`Delta`] sent to a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The delta was applied; the record now has this version.
    Saved {
        /// The new version.
        version: u64,
    },
    /// There is no live record under that key (expired, invalidated or revoked): nothing was written.
    Missing,
    /// `expected_version` did not match: nothing was written.
    Conflict {
        /// The version the store holds.
        current: u64,
    },
}

/// The limits and lifetimes a store applies on each call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Idle timeout: a record not touched for this long expires. Every load and write slides it, but never past
    /// the record's absolute deadline.
    pub idle: Duration,
    /// The largest record a store accepts, as measured by [`Record::encoded_len`].
    pub max_record_bytes: usize,
    /// The most live sessions one user may have (`None`: no cap). When a write attaches a session to a user
    /// (a create with a user, a delta that sets one) and the user then has more, the store deletes the user's
    /// oldest other sessions, by [`Record::deadline`], until the cap holds. The session being attached is
    /// never the one evicted: a sign-in must not sign itself out.
    pub max_sessions_per_user: Option<NonZeroU32>,
}

impl Default for Policy {
    /// The engine's defaults ([`SessionConfig::default`](crate::SessionConfig::default)): 120 minutes idle,
    /// 64 KiB records, 20 sessions per user.
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(120 * 60),
            max_record_bytes: 64 * 1024,
            max_sessions_per_user: NonZeroU32::new(20),
        }
    }
}

impl Policy {
    /// How many of a user's other live sessions a store must evict after attaching one more, when the user
    /// has `others` live sessions besides the one attached.
    pub fn evictions(&self, others: usize) -> usize {
        match self.max_sessions_per_user {
            None => 0,
            Some(cap) => (others + 1).saturating_sub(cap.get() as usize),
        }
    }

    /// When a record touched `now` expires: the sliding idle expiry, capped by the absolute deadline.
    pub fn expires_at(&self, now: u64, deadline: u64) -> u64 {
        now.saturating_add(self.idle.as_millis() as u64).min(deadline)
    }

    /// How stale an expiry may get before a read bothers to write a fresh one: a tenth of the idle timeout, at
    /// most a minute. Stores that pay for every write (SQL) skip touches younger than this.
    pub fn touch_granularity(&self) -> Duration {
        (self.idle / 10).min(Duration::from_secs(60))
    }
}

/// The current time in unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why bytes could not be decoded as a record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// The bytes ended before the record did.
    #[error("record is truncated")]
    Truncated,
    /// The first byte names a format this version does not know.
    #[error("unknown record format {0}")]
    UnknownFormat(u8),
    /// A length or count is out of range, or text is not UTF-8.
    #[error("record is malformed: {0}")]
    Malformed(&'static str),
    /// Bytes remain after the last attribute.
    #[error("record has trailing bytes")]
    TrailingBytes,
}

impl Record {
    /// Applies a delta's attribute and user changes (not its version check) to this record.
    pub fn apply(&mut self, delta: &Delta) {
        for name in &delta.remove {
            self.attrs.remove(name);
        }
        for (name, value) in &delta.set {
            self.attrs.insert(name.clone(), value.clone());
        }
        if let Some(user) = &delta.user {
            self.user.clone_from(user);
        }
    }

    /// The size of the encoded record in bytes; the measure for [`Policy::max_record_bytes`].
    pub fn encoded_len(&self) -> usize {
        let text = |s: &str| varint_len(s.len() as u64) + s.len();
        1 + varint_len(self.created_at)
            + varint_len(self.deadline)
            + self
                .user
                .as_deref()
                .map_or(1, |u| varint_len(u.len() as u64 + 1) + u.len())
            + varint_len(self.attrs.len() as u64)
            + self
                .attrs
                .iter()
                .map(|(k, v)| text(k) + varint_len(v.len() as u64) + v.len())
                .sum::<usize>()
    }

    /// Encodes the record, or fails with [`Error::TooLarge`](crate::Error::TooLarge) above the policy's limit.
    pub fn encode_within(&self, policy: &Policy) -> crate::Result<Vec<u8>> {
        let size = self.encoded_len();
        if size > policy.max_record_bytes {
            return Err(crate::Error::TooLarge {
                size,
                limit: policy.max_record_bytes,
            });
        }
        Ok(self.encode())
    }

    /// Encodes the record in the current binary format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push(FORMAT_V1);
        put_varint(&mut out, self.created_at);
        put_varint(&mut out, self.deadline);
        match &self.user {
            None => put_varint(&mut out, 0),
            Some(user) => {
                put_varint(&mut out, user.len() as u64 + 1);
                out.extend_from_slice(user.as_bytes());
            }
        }
        put_varint(&mut out, self.attrs.len() as u64);
        for (name, value) in &self.attrs {
            put_varint(&mut out, name.len() as u64);
            out.extend_from_slice(name.as_bytes());
            put_varint(&mut out, value.len() as u64);
            out.extend_from_slice(value);
        }
        out
    }

    /// Decodes bytes written by [`Record::encode`]. Never panics, whatever the input.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader(bytes);
        match r.byte()? {
            FORMAT_V1 => {}
            other => return Err(CodecError::UnknownFormat(other)),
        }
        let created_at = r.varint()?;
        let deadline = r.varint()?;
        let user = match r.varint()? {
            0 => None,
            n => Some(r.text((n - 1) as usize)?),
        };
        let count = r.varint()?;
        if count > MAX_ATTRS {
            return Err(CodecError::Malformed("too many attributes"));
        }
        let mut attrs = BTreeMap::new();
        for _ in 0..count {
            let len = r.varint()? as usize;
            if len > MAX_NAME_LEN {
                return Err(CodecError::Malformed("attribute name too long"));
            }
            let name = r.text(len)?;
            let len = r.varint()? as usize;
            let value = r.take(len)?.to_vec();
            attrs.insert(name, value);
        }
        if !r.0.is_empty() {
            return Err(CodecError::TrailingBytes);
        }
        Ok(Self {
            created_at,
            deadline,
            user,
            attrs,
        })
    }
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, CodecError> {
        let (&b, rest) = self.0.split_first().ok_or(CodecError::Truncated)?;
        self.0 = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(CodecError::Malformed("varint overflows 64 bits"));
            }
            value |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::Malformed("varint too long"))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], CodecError> {
        if len > self.0.len() {
            return Err(CodecError::Truncated);
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }

    fn text(&mut self, len: usize) -> Result<String, CodecError> {
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| CodecError::Malformed("text is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = Record> {
        (
            any::<u64>(),
            any::<u64>(),
            proptest::option::of("[a-z0-9@.]{0,40}"),
            proptest::collection::btree_map(
                "[a-z_.]{1,20}",
                proptest::collection::vec(any::<u8>(), 0..64),
                0..8,
            ),
        )
            .prop_map(|(created_at, deadline, user, attrs)| Record {
                created_at,
                deadline,
                user,
                attrs,
            })
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(r in record()) {
            let bytes = r.encode();
            prop_assert_eq!(bytes.len(), r.encoded_len());
            prop_assert_eq!(Record::decode(&bytes), Ok(r));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Record::decode(&bytes);
        }

        #[test]
        fn every_truncation_is_an_error(r in record()) {
            let bytes = r.encode();
            for cut in 0..bytes.len() {
                prop_assert!(Record::decode(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn small_session_is_compact() {
        let mut r = Record {
            created_at: now_ms(),
            deadline: now_ms() + 3_600_000,
            ..Record::default()
        };
        r.attrs.insert("n".into(), vec![0x01, 0x05]);
        assert!(r.encoded_len() < 24, "{} bytes", r.encoded_len());
    }

    #[test]
    fn unknown_format_is_reported() {
        assert_eq!(Record::decode(&[9, 0, 0]), Err(CodecError::UnknownFormat(9)));
        assert_eq!(Record::decode(&[]), Err(CodecError::Truncated));
    }

    #[test]
    fn delta_applies_removals_sets_and_user() {
        let mut r = Record::default();
        r.attrs.insert("a".into(), vec![1]);
        r.attrs.insert("b".into(), vec![2]);
        let mut d = Delta::default();
        d.remove.insert("a".into());
        d.set.insert("c".into(), vec![3]);
        d.user = Some(Some("u1".into()));
        r.apply(&d);
        assert_eq!(r.attrs.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(r.user.as_deref(), Some("u1"));
    }

    #[test]
    fn expiry_is_capped_by_the_deadline() {
        let p = Policy {
            idle: Duration::from_secs(60),
            max_record_bytes: 1024,
            max_sessions_per_user: None,
        };
        assert_eq!(p.expires_at(1_000, 1_000_000), 61_000);
        assert_eq!(p.expires_at(1_000, 30_000), 30_000);
    }

    #[test]
    fn evictions_make_room_for_the_attached_session() {
        let capped = Policy {
            max_sessions_per_user: NonZeroU32::new(3),
            ..Policy::default()
        };
        assert_eq!(capped.evictions(0), 0);
        assert_eq!(capped.evictions(2), 0, "two others and the new one make three");
        assert_eq!(capped.evictions(3), 1);
        assert_eq!(capped.evictions(10), 8);
        let uncapped = Policy {
            max_sessions_per_user: None,
            ..capped
        };
        assert_eq!(uncapped.evictions(1000), 0);
    }
}
