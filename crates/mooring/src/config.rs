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
    pub(crate) plaintext_migration: bool,
    pub(crate) host_prefix: bool,
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
            plaintext_migration: false,
            host_prefix: false,
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

    /// With encryption on, also accept records written without it (plain values, legacy sealed values, no
    /// identity MAC) and upgrade them on load (default off: such records are refused, because anyone who can
    /// write to the store could forge them). Turn it on for the rollout of encryption, then off again.
    pub fn with_plaintext_migration(mut self, allow: bool) -> Self {
        self.plaintext_migration = allow;
        self
    }

    /// When the cookie is `Secure`, name it `__Host-<name>` (default off). Browsers then accept it only
    /// from this exact host, over HTTPS, with `Path=/` and no `Domain`: a sibling subdomain cannot plant or
    /// overwrite it. A name that already carries the prefix is kept as is.
    pub fn with_host_prefix(mut self, on: bool) -> Self {
        self.host_prefix = on;
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

    /// The cookie name as configured (see [`SessionConfig::effective_cookie_name`] for the name sent).
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        self.idle
    }

    /// The name the cookie is sent and read under: with the `__Host-` prefix when
    /// [`SessionConfig::with_host_prefix`] asks for it and the cookie is secure.
    pub fn effective_cookie_name(&self) -> std::borrow::Cow<'_, str> {
        if self.host_prefix && self.secure && !self.cookie_name.starts_with(HOST_PREFIX) {
            format!("{HOST_PREFIX}{}", self.cookie_name).into()
        } else {
            self.cookie_name.as_str().into()
        }
    }

    /// Checks the rules browsers apply to prefixed cookie names (RFC 6265bis §4.1.3), which would otherwise
    /// make them drop the cookie silently: `__Secure-` needs `Secure`; `__Host-` needs `Secure`, `Path=/` and
    /// no `Domain`.
    pub fn validate(&self) -> Result<(), CookieRuleError> {
        let name = self.effective_cookie_name();
        if name.starts_with(HOST_PREFIX) {
            if !self.secure {
                return Err(CookieRuleError::NotSecure(name.into_owned()));
            }
            if self.domain.is_some() {
                return Err(CookieRuleError::HostWithDomain(name.into_owned()));
            }
            if self.path != "/" {
                return Err(CookieRuleError::HostWithPath(
                    name.into_owned(),
                    self.path.clone(),
                ));
            }
        } else if name.starts_with(SECURE_PREFIX) && !self.secure {
            return Err(CookieRuleError::NotSecure(name.into_owned()));
        }
        Ok(())
    }
}

/// The prefix that pins a cookie to one host.
pub const HOST_PREFIX: &str = "__Host-";
/// The prefix that requires a secure cookie.
pub const SECURE_PREFIX: &str = "__Secure-";

/// A cookie configuration that browsers would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CookieRuleError {
    /// A `__Host-` or `__Secure-` cookie without `Secure`.
    #[error("the cookie name '{0}' requires a Secure cookie (HTTPS)")]
    NotSecure(String),
    /// A `__Host-` cookie with a `Domain`.
    #[error("the cookie name '{0}' forbids a Domain attribute (a __Host- cookie belongs to one host)")]
    HostWithDomain(String),
    /// A `__Host-` cookie with a path other than `/`.
    #[error("the cookie name '{0}' requires Path=/, not '{1}'")]
    HostWithPath(String, String),
}
