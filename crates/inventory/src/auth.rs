//! Passwords (argon2id), the signed-in user, CSRF checks and client details.

use std::net::SocketAddr;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use mooring::Session;

use crate::error::AppError;
use crate::state::AppState;

/// Session attribute holding the signed-in user's email (shown in the layout without a database query).
pub const EMAIL: &str = "email";
/// Session attribute: the browser and OS at sign-in.
pub const DEVICE: &str = "device";
/// Session attribute: the client IP at sign-in.
pub const IP: &str = "ip";

/// Hashes a password with argon2id (default parameters: 19 MiB, 2 passes), off the async runtime.
pub async fn hash_password(password: String) -> Result<String, AppError> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
    })
    .await
    .map_err(|e| AppError::Internal(format!("hashing task failed: {e}")))?
    .map_err(|e| AppError::Internal(format!("hashing failed: {e}")))
}

/// Checks a password against a stored hash, off the async runtime. With no user, a dummy hash is checked so
/// that unknown emails take as long as wrong passwords.
pub async fn verify_password(password: String, stored: Option<String>) -> Result<bool, AppError> {
    const DUMMY: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$ZmFrZWhhc2hmYWtlaGFzaGZha2VoYXNoZmFrZWg";
    tokio::task::spawn_blocking(move || {
        let real = stored.is_some();
        let text = stored.unwrap_or_else(|| DUMMY.to_owned());
        let ok = PasswordHash::new(&text)
            .map(|hash| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &hash)
                    .is_ok()
            })
            .unwrap_or(false);
        real && ok
    })
    .await
    .map_err(|e| AppError::Internal(format!("verification task failed: {e}")))
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

    #[tokio::test]
    async fn passwords_verify_only_against_their_hash() {
        let hash = super::hash_password("correct horse".into()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            super::verify_password("correct horse".into(), Some(hash.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !super::verify_password("wrong".into(), Some(hash))
                .await
                .expect("verify")
        );
        assert!(
            !super::verify_password("anything".into(), None)
                .await
                .expect("verify")
        );
    }
}
