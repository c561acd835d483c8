//! Registration, sign-in, sign-out and the dashboard.

use axum::extract::State;
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
    if form.password.len() > 1024 {
        errors.push("That password is too long (1024 bytes at most).".to_owned());
    }
    if form.password != form.password_confirm {
        errors.push("The two passwords differ.".to_owned());
    }
    if errors.is_empty() {
        let hash = auth::hash_password(form.password).await?;
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
    *response.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
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

async fn login(
    State(state): State<AppState>,
    session: Session,
    client: Client,
    Form(form): Form<Credentials>,
) -> Result<Response, AppError> {
    auth::check_csrf(&session, &form.csrf).await?;
    let email = normalize_email(&form.email);
    let user = if form.password.len() <= 1024 {
        state.db.user_by_email(&email).await?
    } else {
        None
    };
    let ok = auth::verify_password(form.password, user.as_ref().map(|u| u.password_hash.clone())).await?;
    match user {
        Some(user) if ok => {
            auth::sign_in(&session, user.id, &user.email, &client).await?;
            Ok(Redirect::to("/dashboard").into_response())
        }
        _ => {
            let layout = Layout::new(&state, &session, true).await?;
            let errors = vec!["Email or password is incorrect.".to_owned()];
            let mut response = render(&LoginPage {
                layout,
                email,
                errors,
            });
            *response.status_mut() = axum::http::StatusCode::UNAUTHORIZED;
            Ok(response)
        }
    }
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
