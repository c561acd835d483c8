//! The tower layer and service that attach a [`Session`] to every request, and the axum extractor.

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
use crate::id::SessionId;
use crate::keys::Verified;
use crate::session::{CookieOut, Session, Shared};

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
    /// Finds this app's session cookie and checks its MAC. Forged or garbled cookies are ignored here, before
    /// any store call.
    fn read_cookie(&self, headers: &HeaderMap) -> Result<Option<(SessionId, bool)>, CookieHeaderTooLarge> {
        let all = headers.get_all(header::COOKIE);
        let total: usize = all.iter().map(|v| v.len()).sum();
        if total > self.config.max_cookie_header_bytes {
            return Err(CookieHeaderTooLarge);
        }
        let mut rejected = false;
        for value in all.iter().filter_map(|v| v.to_str().ok()) {
            for pair in value.split(';') {
                let Some((name, val)) = pair.trim().split_once('=') else {
                    continue;
                };
                if name.trim() != self.config.cookie_name {
                    continue;
                }
                match self.keys.verify(val.trim().trim_matches('"')) {
                    Some(Verified::Current(id)) => return Ok(Some((id, false))),
                    Some(Verified::Previous(id)) => return Ok(Some((id, true))),
                    None => rejected = true,
                }
            }
        }
        if rejected {
            self.stats
                .cookies_rejected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(None)
    }

    fn set_cookie(&self, out: &CookieOut) -> Option<HeaderValue> {
        let c = &self.config;
        let mut cookie = match out {
            CookieOut::Keep => return None,
            CookieOut::Set(id) => Cookie::build((c.cookie_name.clone(), self.keys.sign(id)))
                .max_age(cookie::time::Duration::seconds(c.absolute.as_secs() as i64)),
            CookieOut::Clear => Cookie::build((c.cookie_name.clone(), ""))
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
                Ok(out) => {
                    if let Some(value) = shared.set_cookie(&out) {
                        response.headers_mut().append(header::SET_COOKIE, value);
                        response
                            .headers_mut()
                            .entry(header::CACHE_CONTROL)
                            .or_insert(HeaderValue::from_static("no-store"));
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
