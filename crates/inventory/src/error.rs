//! The app's error type. Each variant documents its status; none shows internal text to the client.
//!
//! The detail travels to the request-log middleware in the response's extensions ([`ErrorDetail`]), which
//! logs it with the request id: errors are logged in one place, never inside `IntoResponse`.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use crate::db::DbError;
use crate::pages::{ErrorPage, Layout};

/// Internal detail of a failed request, for the log line.
#[derive(Clone, Debug)]
pub struct ErrorDetail(pub String);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The session store failed: 503 with `Retry-After` (or 409/500 as [`mooring::Error`] decides).
    #[error(transparent)]
    Session(#[from] mooring::Error),
    /// The database failed: 503 with `Retry-After`.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A form arrived without the session's CSRF token: 403.
    #[error("CSRF token missing or wrong")]
    Csrf,
    /// No such page or item: 404.
    #[error("not found")]
    NotFound,
    /// Password hashing is at capacity (its queue is full or the wait was too long): 503 with `Retry-After`
    /// and a page saying the service is busy.
    #[error("{0}")]
    Busy(crate::hashing::HashError),
    /// The login throttle's store failed: 503 with `Retry-After` (the attempt is refused, never let through
    /// unchecked).
    #[error("login throttle store failed: {0}")]
    Throttle(mooring::Error),
    /// A bug: 500.
    #[error("{0}")]
    Internal(String),
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let page = ErrorPage {
        layout: Layout::bare(""),
        status: status.as_u16(),
        title: title.to_owned(),
        message: message.to_owned(),
    };
    let body = page
        .render()
        .unwrap_or_else(|_| format!("{} {title}\n", status.as_u16()));
    (status, Html(body)).into_response()
}

impl From<crate::hashing::HashError> for AppError {
    fn from(err: crate::hashing::HashError) -> Self {
        match err {
            crate::hashing::HashError::Busy(_) => Self::Busy(err),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let detail = ErrorDetail(self.to_string());
        let mut response = match self {
            Self::Session(err) => err.into_response(),
            Self::Db(_) => {
                let mut r = page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Briefly unavailable",
                    "Please retry in a moment.",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            Self::Busy(_) => {
                let mut r = page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The service is busy",
                    "Too many people are signing in right now. Please try again in a few seconds.",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
                r
            }
            Self::Throttle(_) => {
                let mut r = page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Briefly unavailable",
                    "Signing in is briefly unavailable. Please retry in a moment.",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            Self::Csrf => page(
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form is no longer valid. Go back, reload the page and submit it again.",
            ),
            Self::NotFound => page(StatusCode::NOT_FOUND, "Not found", "There is nothing here."),
            Self::Internal(_) => page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Please retry later.",
            ),
        };
        response.extensions_mut().insert(detail);
        response
    }
}
