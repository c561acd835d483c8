//! The routes, one module per resource, merged in [`router`].

mod account;
mod health;
mod items;
mod probe;
mod sessions;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use mooring::Session;

use crate::auth;
use crate::error::AppError;
use crate::pages::{HomePage, Layout, render};
use crate::state::AppState;

/// Every route of the app except the probes, without middleware (see [`crate::app::router`]).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/static/app.css", get(stylesheet))
        .merge(account::router())
        .merge(items::router())
        .merge(sessions::router())
        .merge(probe::router())
        .fallback(|| async { AppError::NotFound })
}

/// `/healthz` and `/readyz`, apart from [`router`] so that the in-flight limit never sheds them.
pub fn probes() -> Router<AppState> {
    health::router()
}

async fn home(state: axum::extract::State<AppState>, session: Session) -> Result<Response, AppError> {
    Ok(render(&HomePage {
        layout: Layout::new(&state, &session, false).await?,
    }))
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        include_str!("../../static/app.css"),
    )
}

/// The signed-in user's id, or a redirect to the sign-in page. The redirect writes nothing to the session, so
/// a request with a stale or forged cookie gets no new cookie in return.
async fn require_user(session: &Session) -> Result<Result<i64, Response>, AppError> {
    Ok(auth::user_id(session)
        .await?
        .ok_or_else(|| Redirect::to("/login").into_response()))
}
