//! The tower layer and service that attach a [`Session`] to every request, and the axum extractor.
//!
//! # Reading the cookie
//!
//! The `Cookie` headers are parsed as bytes, split on `;`: a pair that is not valid text (a non-ASCII byte
//! planted by another site or a broken client) is skipped alone, the other cookies still count. Among the
//! pairs named like the session cookie, those whose MAC fails are ignored (counted in `cookies_rejected`).
//! If more than one *distinct* valid value remains, the request is ambiguous: a sibling subdomain can plant a
//! cookie under our name (cookie tossing), and its value is valid, because it is a real session of the
//! attacker's. Picking either one could make the user act inside the attacker's session (the attack tossing
//! exists for), and no rule based on order or on "the one that loads" tells them apart. So an ambiguous
//! request is answered as having no session at all: nothing is loaded, nothing cleared (clearing could only
//! remove our own host-only cookie), and it is counted in `cookies_duplicate`. An attacker who can set
//! cookies for the parent domain can deny service anyway (cookie bombing); what it must not achieve is a
//! victim signed into its session. The `__Host-` prefix ([`SessionConfig::with_host_prefix`]) prevents the
//! planting altogether.
//!
//! [`SessionConfig::with_host_prefix`]: crate::SessionConfig::with_host_prefix

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum_core::extract::FromRequestParts;
use cookie::Cookie;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use tower_layer::Layer;
use tower_service::Service;

use crate::config::SameSite;
use crate::keys::Verified;
use crate::record::now_ms;
use crate::session::{CookieIn, CookieOut, Session, Shared, read_pre_body};
use crate::stats::bump;

/// Adds sessions to a service. Made by [`SessionManager::layer`](crate::SessionManager::layer).
#[derive(Clone)]
pub struct SessionLayer {
    pub(crate) shared: Arc<Shared>,
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service made by [`SessionLayer`].
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// The request's `Cookie` headers are larger than allowed.
struct CookieHeaderTooLarge;

impl Shared {
    /// Finds this app's session cookie and checks its MAC (see the module documentation for the rules).
    /// Forged or garbled cookies are ignored here, before any store call.
    fn read_cookie(&self, headers: &HeaderMap) -> Result<Option<CookieIn>, CookieHeaderTooLarge> {
        let all = headers.get_all(header::COOKIE);
        let total: usize = all.iter().map(|v| v.len()).sum();
        if total > self.config.max_cookie_header_bytes {
            return Err(CookieHeaderTooLarge);
        }
        let name = self.config.effective_cookie_name();
        let mut rejected = false;
        let mut found: Option<(&[u8], CookieIn)> = None;
        let mut ambiguous = false;
        for pair in all.iter().flat_map(|v| v.as_bytes().split(|&b| b == b';')) {
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if pair[..eq].trim_ascii() != name.as_bytes() {
                continue;
            }
            let raw = pair[eq + 1..].trim_ascii();
            let raw = raw
                .strip_prefix(b"\"")
                .and_then(|r| r.strip_suffix(b"\""))
                .unwrap_or(raw);
            let Some(cookie) = std::str::from_utf8(raw)
                .ok()
                .and_then(|text| self.verify_cookie(text))
            else {
                rejected = true;
                continue;
            };
            let Some(cookie) = cookie else {
                // A pre-session cookie past its expiry: absent, not forged.
                continue;
            };
            match &found {
                None => found = Some((raw, cookie)),
                Some((first, _)) if *first == raw => {}
                Some(_) => ambiguous = true,
            }
        }
        if rejected {
            bump(&self.stats.cookies_rejected);
        }
        if ambiguous {
            bump(&self.stats.cookies_duplicate);
            tracing::info!("several valid session cookies in one request; answered as no session");
            return Ok(None);
        }
        Ok(found.map(|(_, cookie)| cookie))
    }

    /// Verifies one cookie value of either form. `None` if forged; `Some(None)` if valid but expired.
    fn verify_cookie(&self, text: &str) -> Option<Option<CookieIn>> {
        if text.starts_with("p.") {
            let (id, body, resign) = self.keys.verify_pre(text)?;
            let (expires_at, flashes) = read_pre_body(&body)?;
            return Some((expires_at > now_ms()).then_some(CookieIn::Pre {
                id,
                expires_at,
                flashes,
                resign,
            }));
        }
        Some(Some(match self.keys.verify(text)? {
            Verified::Current(id) => CookieIn::Stored(id, false),
            Verified::Previous(id) => CookieIn::Stored(id, true),
        }))
    }

    fn set_cookie(&self, out: &CookieOut) -> Option<HeaderValue> {
        let c = &self.config;
        let name = c.effective_cookie_name().into_owned();
        let mut cookie = match out {
            CookieOut::Keep => return None,
            CookieOut::Set(id) => Cookie::build((name, self.keys.sign(id)))
                .max_age(cookie::time::Duration::seconds(c.absolute.as_secs() as i64)),
            // A pre-session lives as long as an idle session would: its body carries the same expiry.
            CookieOut::Pre(id, body) => Cookie::build((name, self.keys.sign_pre(id, body)))
                .max_age(cookie::time::Duration::seconds(c.idle.as_secs() as i64)),
            CookieOut::Clear => Cookie::build((name, ""))
                .max_age(cookie::time::Duration::ZERO)
                .expires(cookie::time::OffsetDateTime::UNIX_EPOCH),
        }
        .path(c.path.clone())
        .http_only(true)
        .secure(c.secure)
        .same_site(match c.same_site {
            SameSite::Strict => cookie::SameSite::Strict,
            SameSite::Lax => cookie::SameSite::Lax,
            SameSite::None => cookie::SameSite::None,
        });
        if let Some(domain) = &c.domain {
            cookie = cookie.domain(domain.clone());
        }
        HeaderValue::try_from(cookie.build().to_string()).ok()
    }
}

fn plain<B: From<&'static str>>(status: StatusCode, body: &'static str) -> Response<B> {
    let mut response = Response::new(B::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<&'static str> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let cookie = match shared.read_cookie(req.headers()) {
                Ok(cookie) => cookie,
                Err(CookieHeaderTooLarge) => {
                    return Ok(plain(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "Cookie header too large.\n",
                    ));
                }
            };
            let session = Session::new(Arc::clone(&shared), cookie);
            req.extensions_mut().insert(session.clone());
            let mut response = inner.call(req).await?;
            match session.finish().await {
                Ok((out, used)) => {
                    let set = shared.set_cookie(&out);
                    // A response built from a session (its user, token or flash messages) is private to it:
                    // no cache may keep it, whether or not a cookie is sent. The handler's own choice wins.
                    if used || set.is_some() {
                        response
                            .headers_mut()
                            .entry(header::CACHE_CONTROL)
                            .or_insert(HeaderValue::from_static("no-store"));
                    }
                    if let Some(value) = set {
                        response.headers_mut().append(header::SET_COOKIE, value);
                    }
                }
                Err(err) => {
                    // The handler's work on the session was not saved: answering as if it were would lie. The
                    // client keeps its cookie and retries.
                    tracing::warn!(error = %err, "session could not be saved; answering 503");
                    let mut unavailable = plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "The service is briefly unavailable. Please retry.\n",
                    );
                    unavailable
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    response = unavailable;
                }
            }
            Ok(response)
        })
    }
}

/// The extractor fails only when the [`SessionLayer`] is missing: a wiring bug, answered with a bare 500.
impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Session>().cloned().ok_or_else(|| {
            tracing::error!("Session extractor used on a route without SessionLayer");
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal server error.\n")
        })
    }
}
