//! Session and cookie settings.

use std::num::NonZeroU32;
use std::time::Duration;

/// The cookie's `SameSite` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSite {
    /// Sent only on same-site requests.
    Strict,
    /// Sent on same-site requests and top-level cross-site navigations (the default).
    Lax,
    /// Sent on every request; browsers require `Secure` with it.
    None,
}

impl std::str::FromStr for SameSite {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "strict" => Ok(Self::Strict),
            "lax" => Ok(Self::Lax),
            "none" => Ok(Self::None),
            other => Err(format!(
                "'{other}' is not a SameSite value; use lax, strict or none"
            )),
        }
    }
}

/// How sessions behave: cookie attributes, lifetimes, limits and store timeouts.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub(crate) cookie_name: String,
    pub(crate) secure: bool,
    pub(crate) same_site: SameSite,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) idle: Duration,
    pub(crate) absolute: Duration,
    pub(crate) encrypt: bool,
    pub(crate) max_record_bytes: usize,
    pub(crate) max_cookie_header_bytes: usize,
    pub(crate) store_timeout: Duration,
    pub(crate) max_sessions_per_user: Option<NonZeroU32>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cookie_name: "mooring_session".into(),
            secure: true,
            same_site: SameSite::Lax,
            path: "/".into(),
            domain: None,
            idle: Duration::from_secs(120 * 60),
            absolute: Duration::from_secs(12 * 3600),
            encrypt: false,
            max_record_bytes: 64 * 1024,
            max_cookie_header_bytes: 16 * 1024,
            store_timeout: Duration::from_secs(2),
            max_sessions_per_user: NonZeroU32::new(20),
        }
    }
}

impl SessionConfig {
    /// The cookie name (default `mooring_session`).
    pub fn with_cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// Whether the cookie carries `Secure` (default true; turn it off only for plain-HTTP development).
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// The cookie's `SameSite` attribute (default `Lax`).
    pub fn with_same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// The cookie's `Path` (default `/`).
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// The cookie's `Domain` (default: none, so the cookie is host-only).
    pub fn with_domain(mut self, domain: Option<String>) -> Self {
        self.domain = domain;
        self
    }

    /// The sliding idle timeout (default 120 minutes).
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// The absolute lifetime from creation, however active the session (default 12 hours). Id rotation keeps
    /// the original deadline.
    pub fn with_absolute_lifetime(mut self, absolute: Duration) -> Self {
        self.absolute = absolute;
        self
    }

    /// Encrypt attribute values at rest with XChaCha20-Poly1305 (default off).
    pub fn with_encryption(mut self, encrypt: bool) -> Self {
        self.encrypt = encrypt;
        self
    }

    /// The largest encoded record accepted (default 64 KiB).
    pub fn with_max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    /// Requests whose `Cookie` headers exceed this many bytes get 431 (default 16 KiB).
    pub fn with_max_cookie_header_bytes(mut self, bytes: usize) -> Self {
        self.max_cookie_header_bytes = bytes;
        self
    }

    /// How long one store call may take before the request gets 503 (default 2 s).
    pub fn with_store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// The most live sessions one user may have (default 20; 0 removes the cap). Signing a session in beyond
    /// it signs the user's oldest other sessions out (their records are deleted), as Spring Session's
    /// `maximumSessions` does; the session signing in is never the one evicted. The cap also bounds
    /// [`Session::user_sessions`](crate::Session::user_sessions).
    pub fn with_max_sessions_per_user(mut self, max: u32) -> Self {
        self.max_sessions_per_user = NonZeroU32::new(max);
        self
    }

    /// The per-user session cap, `None` when there is none.
    pub fn max_sessions_per_user(&self) -> Option<NonZeroU32> {
        self.max_sessions_per_user
    }

    /// The cookie name.
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        self.idle
    }
}
