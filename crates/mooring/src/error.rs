//! The engine's error type.
//!
//! Store crates convert their own errors into [`Error::Store`]. In an axum handler an [`Error`] can be
//! returned with `?`: it becomes a response without any internal detail (503 with `Retry-After` for an
//! unavailable store). The detail belongs in logs, which the session layer writes when the call fails.

use std::time::Duration;

use axum_core::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// A `Result` with [`Error`] as its error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a session operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed or could not be reached. Responds 503 with `Retry-After`.
    #[error("session store failed: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A store call did not finish within the configured timeout. Responds 503 with `Retry-After`.
    #[error("session store did not answer within {0:?}")]
    Timeout(Duration),
    /// A record would exceed the size limit; nothing was written. Responds 500 (it is a bug in the caller).
    #[error("session record of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The size the record would have had.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The store holds a record under this key that cannot be decoded. The engine treats it as absent.
    #[error("stored session record is corrupt: {0}")]
    Corrupt(String),
    /// A compare-and-set lost to a concurrent write, or a created key already exists. Responds 409.
    #[error("session was changed concurrently")]
    Conflict,
    /// A value could not be serialized. Responds 500.
    #[error("session value could not be encoded: {0}")]
    Encode(String),
}

impl Error {
    /// Wraps any backend error as [`Error::Store`].
    pub fn store(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Store(Box::new(err))
    }

    /// True when the store could not answer: the request should be retried later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Store(_) | Self::Timeout(_))
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            Self::Store(_) | Self::Timeout(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "The service is briefly unavailable. Please retry.\n",
            ),
            Self::Conflict => (
                StatusCode::CONFLICT,
                "The session changed concurrently. Please retry.\n",
            ),
            Self::TooLarge { .. } | Self::Corrupt(_) | Self::Encode(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "Internal server error.\n")
            }
        };
        let mut response = (status, body).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
