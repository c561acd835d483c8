//! "Your sessions": the user's signed-in devices, and signing out the others. The list is bounded: at most
//! SESSION_MAX_PER_USER sessions (the newest), which with the cap enforced at sign-in is every one of them.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use mooring::Session;

use super::require_user;
use crate::auth::{self, CsrfForm, DEVICE, IP};
use crate::error::AppError;
use crate::pages::{Layout, SessionView, SessionsPage, render, timestamp};
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/sessions", get(list))
        .route("/sessions/revoke-others", post(revoke_others))
}

async fn list(State(state): State<AppState>, session: Session) -> Result<Response, AppError> {
    if let Err(redirect) = require_user(&session).await? {
        return Ok(redirect);
    }
    let mut infos = session.user_sessions().await?;
    infos.sort_by(|a, b| b.current.cmp(&a.current).then(b.last_seen.cmp(&a.last_seen)));
    let sessions = infos
        .into_iter()
        .map(|info| SessionView {
            device: info
                .get::<String>(DEVICE)
                .unwrap_or_else(|| "unknown device".into()),
            ip: info.get::<String>(IP).unwrap_or_else(|| "unknown".into()),
            created: timestamp(info.created_at as i64),
            last_seen: timestamp(info.last_seen as i64),
            current: info.current,
            fingerprint: info.fingerprint,
        })
        .collect();
    let layout = Layout::new(&state, &session, true).await?;
    Ok(render(&SessionsPage { layout, sessions }))
}

async fn revoke_others(session: Session, Form(form): Form<CsrfForm>) -> Result<Response, AppError> {
    auth::check_csrf(&session, &form.csrf).await?;
    if let Err(redirect) = require_user(&session).await? {
        return Ok(redirect);
    }
    let ended = session.revoke_other_sessions().await?;
    let plural = if ended == 1 { "" } else { "s" };
    session
        .flash(format!("Signed out {ended} other session{plural}."))
        .await?;
    Ok(Redirect::to("/sessions").into_response())
}
