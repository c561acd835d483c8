//! Registration, sign-in (throttled, see [`crate::auth::login_counters`]), sign-out and the dashboard.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use mooring::Session;
use serde::Deserialize;

use super::require_user;
use crate::auth::{self, Client, CsrfForm};
use crate::error::AppError;
use crate::pages::{DashboardPage, Layout, LoginPage, RegisterPage, render};
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/register", get(register_form).post(register))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/dashboard", get(dashboard))
}

/// The registration form's fields.
#[derive(Deserialize)]
struct Registration {
    email: String,
    password: String,
    password_confirm: String,
    #[serde(rename = "_csrf", default)]
    csrf: String,
}

/// The sign-in form's fields.
#[derive(Deserialize)]
struct Credentials {
    email: String,
    password: String,
    #[serde(rename = "_csrf", default)]
    csrf: String,
}

async fn register_form(State(state): State<AppState>, session: Session) -> Result<Response, AppError> {
    let layout = Layout::new(&state, &session, true).await?;
    Ok(render(&RegisterPage {
        layout,
        email: String::new(),
        errors: Vec::new(),
    }))
}

fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

async fn register(
    State(state): State<AppState>,
    session: Session,
    client: Client,
    Form(form): Form<Registration>,
) -> Result<Response, AppError> {
    auth::check_csrf(&session, &form.csrf).await?;
    let email = normalize_email(&form.email);
    let mut errors = Vec::new();
    if email.len() > 254 || !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        errors.push("Enter a valid email address.".to_owned());
    }
    if form.password.chars().count() < 8 {
        errors.push("Choose a password of at least 8 characters.".to_owned());
    }
    if form.password.len() > MAX_PASSWORD_BYTES {
        errors.push("That password is too long (1024 bytes at most).".to_owned());
    }
    if form.password != form.password_confirm {
        errors.push("The two passwords differ.".to_owned());
    }
    if errors.is_empty() {
        let hash = auth::hash_password(&state, form.password).await?;
        if state.db.create_user(&email, &hash).await? {
            let user = state
                .db
                .user_by_email(&email)
                .await?
                .ok_or_else(|| AppError::Internal("new user vanished".into()))?;
            auth::sign_in(&session, user.id, &user.email, &client).await?;
            session.flash("Welcome! Your account is ready.").await?;
            return Ok(Redirect::to("/dashboard").into_response());
        }
        errors.push("That email is already registered. Sign in instead.".to_owned());
    }
    let layout = Layout::new(&state, &session, true).await?;
    let mut response = render(&RegisterPage {
        layout,
        email,
        errors,
    });
    *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    Ok(response)
}

async fn login_form(State(state): State<AppState>, session: Session) -> Result<Response, AppError> {
    if auth::user_id(&session).await?.is_some() {
        return Ok(Redirect::to("/dashboard").into_response());
    }
    let layout = Layout::new(&state, &session, true).await?;
    Ok(render(&LoginPage {
        layout,
        email: String::new(),
        errors: Vec::new(),
    }))
}

/// The longest password checked; longer ones fail without reaching the hashing queue, so a queued job holds at
/// most this much of the client's input.
const MAX_PASSWORD_BYTES: usize = 1024;

/// Signs in. The throttle is asked first (a throttled attempt costs no hash and no database query); then the
/// password is checked on the hashing pool; a failure counts on all three counters, a success resets the
/// account's (not the address's).
async fn login(
    State(state): State<AppState>,
    session: Session,
    client: Client,
    Form(form): Form<Credentials>,
) -> Result<Response, AppError> {
    auth::check_csrf(&session, &form.csrf).await?;
    let email = normalize_email(&form.email);
    let counters = auth::login_counters(&state.login_limits, &email, &client.ip);
    if let Some(left) = state
        .throttle
        .blocked_for(&counters)
        .await
        .map_err(AppError::Throttle)?
    {
        return too_many_attempts(&state, &session, email, left).await;
    }
    let (user, password) = if form.password.len() <= MAX_PASSWORD_BYTES {
        (state.db.user_by_email(&email).await?, form.password)
    } else {
        (None, String::new())
    };
    let ok = auth::verify_password(&state, password, user.as_ref().map(|u| u.password_hash.clone())).await?;
    match user {
        Some(user) if ok => {
            state
                .throttle
                .reset(&counters[..2])
                .await
                .map_err(AppError::Throttle)?;
            auth::sign_in(&session, user.id, &user.email, &client).await?;
            Ok(Redirect::to("/dashboard").into_response())
        }
        _ => {
            state
                .throttle
                .record_failure(&counters)
                .await
                .map_err(AppError::Throttle)?;
            let layout = Layout::new(&state, &session, true).await?;
            let errors = vec!["Email or password is incorrect.".to_owned()];
            let mut response = render(&LoginPage {
                layout,
                email,
                errors,
            });
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            Ok(response)
        }
    }
}

/// 429 with `Retry-After` (whole seconds, rounded up) and the login page saying when to try again.
async fn too_many_attempts(
    state: &AppState,
    session: &Session,
    email: String,
    left: Duration,
) -> Result<Response, AppError> {
    let seconds = left.as_millis().div_ceil(1000).max(1);
    let layout = Layout::new(state, session, true).await?;
    let unit = if seconds == 1 { "second" } else { "seconds" };
    let mut response = render(&LoginPage {
        layout,
        email,
        errors: vec![format!("Too many attempts. Try again in {seconds} {unit}.")],
    });
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&seconds.to_string()).unwrap_or(HeaderValue::from_static("1")),
    );
    Ok(response)
}

async fn logout(session: Session, Form(form): Form<CsrfForm>) -> Result<Response, AppError> {
    auth::check_csrf(&session, &form.csrf).await?;
    session.invalidate().await;
    session.flash("You have been signed out.").await?;
    Ok(Redirect::to("/").into_response())
}

async fn dashboard(State(state): State<AppState>, session: Session) -> Result<Response, AppError> {
    let user_id = match require_user(&session).await? {
        Ok(id) => id,
        Err(redirect) => return Ok(redirect),
    };
    let items = state.db.items(user_id).await?;
    // Counted by the store, without loading any of the user's sessions.
    let session_count = usize::try_from(session.user_session_count().await?).unwrap_or(usize::MAX);
    let fingerprint = session.fingerprint().await?;
    let layout = Layout::new(&state, &session, true).await?;
    Ok(render(&DashboardPage {
        layout,
        item_count: items.len() as i64,
        total_quantity: items.iter().map(|i| i.quantity).sum(),
        session_count,
        fingerprint,
    }))
}
