//! Passwords (argon2id, on the [`crate::hashing`] pool), login throttling counters, the signed-in user, CSRF checks and client details.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use mooring::{AttemptKey, Counter, Session};

use crate::config::LoginLimits;
use crate::error::AppError;
use crate::state::AppState;

/// Session attribute holding the signed-in user's email (shown in the layout without a database query).
pub const EMAIL: &str = "email";
/// Session attribute: the browser and OS at sign-in.
pub const DEVICE: &str = "device";
/// Session attribute: the client IP at sign-in.
pub const IP: &str = "ip";

/// Hashes a new password on the hashing pool (argon2id, default parameters). A full pool is
/// [`AppError::Busy`] (503).
pub async fn hash_password(state: &AppState, password: String) -> Result<String, AppError> {
    Ok(state.hasher.hash(password).await?)
}

/// Checks a password against a stored hash on the hashing pool. With no user, a dummy hash is checked so
/// that unknown emails take as long as wrong passwords. A full pool is [`AppError::Busy`] (503).
pub async fn verify_password(
    state: &AppState,
    password: String,
    stored: Option<String>,
) -> Result<bool, AppError> {
    Ok(state.hasher.verify(password, stored).await?)
}

/// The login throttle's counters for a sign-in to `email` (normalized) from `ip`: the account from this
/// address (strict), the account from anywhere (looser), and the address for any account. Keys are hashes,
/// so their size does not depend on what the client sends.
pub fn login_counters(limits: &LoginLimits, email: &str, ip: &str) -> [Counter; 3] {
    [
        Counter::new(AttemptKey::new("ai", &[email, ip]), limits.per_account_address),
        Counter::new(AttemptKey::new("a", &[email]), limits.per_account),
        Counter::new(AttemptKey::new("i", &[ip]), limits.per_ip),
    ]
}

/// The signed-in user's id, if any.
pub async fn user_id(session: &Session) -> Result<Option<i64>, AppError> {
    Ok(session.user().await?.and_then(|u| u.parse().ok()))
}

/// A form whose only field is the CSRF token (sign-out, delete, revoke).
#[derive(serde::Deserialize)]
pub struct CsrfForm {
    /// The submitted token.
    #[serde(rename = "_csrf", default)]
    pub csrf: String,
}

/// Refuses a form whose CSRF token does not match the session's.
pub async fn check_csrf(session: &Session, submitted: &str) -> Result<(), AppError> {
    if session.verify_csrf(submitted).await? {
        Ok(())
    } else {
        Err(AppError::Csrf)
    }
}

/// Signs the session in: rotates its id (against fixation), attaches it to the user index, and records what
/// the sessions page shows.
pub async fn sign_in(session: &Session, user_id: i64, email: &str, client: &Client) -> Result<(), AppError> {
    session.regenerate().await?;
    session.set_user(Some(&user_id.to_string())).await?;
    session.insert(EMAIL, email).await?;
    session.insert(DEVICE, &client.device).await?;
    session.insert(IP, &client.ip).await?;
    Ok(())
}

/// Who is on the other end: IP and a short device description.
pub struct Client {
    /// Client IP.
    pub ip: String,
    /// Browser and OS.
    pub device: String,
}

impl FromRequestParts<AppState> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // The client address as the trusted proxies report it (see `crate::forwarded`), never the leftmost,
        // client-written X-Forwarded-For entry.
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| state.trusted_proxies.client(c.0.ip(), &parts.headers).to_string());
        let ua = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        Ok(Self {
            ip: ip.unwrap_or_else(|| "unknown".into()),
            device: describe_device(ua),
        })
    }
}

/// "Firefox on Linux" from a User-Agent, or a truncated User-Agent when it is not recognised.
pub fn describe_device(ua: &str) -> String {
    let browser = [
        ("Edg/", "Edge"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map(|(_, name)| *name);
    let os = [
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map(|(_, name)| *name);
    match (browser, os) {
        (Some(b), Some(o)) => format!("{b} on {o}"),
        (Some(b), None) => b.to_owned(),
        _ if ua.is_empty() => "unknown device".to_owned(),
        _ => ua.chars().take(60).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::describe_device;

    #[test]
    fn devices_are_described_briefly() {
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36";
        assert_eq!(describe_device(chrome), "Chrome on Linux");
        assert_eq!(describe_device("curl/8.1"), "curl");
        assert_eq!(describe_device(""), "unknown device");
        assert_eq!(describe_device(&"x".repeat(500)).len(), 60);
    }

    #[test]
    fn login_counters_are_bounded_and_distinct() {
        let limits = crate::config::LoginLimits {
            per_account_address: 5,
            per_account: 20,
            per_ip: 50,
        };
        let [pair, account, ip] = super::login_counters(&limits, &"a".repeat(5000), "203.0.113.7");
        assert_eq!((pair.limit, account.limit, ip.limit), (5, 20, 50));
        for c in [&pair, &account, &ip] {
            assert!(c.key.as_str().len() <= mooring::AttemptKey::MAX_LEN);
        }
        let [other_pair, other_account, other_ip] =
            super::login_counters(&limits, "b@example.com", "203.0.113.7");
        assert_ne!(pair.key, other_pair.key);
        assert_ne!(account.key, other_account.key);
        assert_eq!(ip.key, other_ip.key, "one address, one address counter");
    }
}
