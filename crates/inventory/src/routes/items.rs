//! The signed-in user's inventory items: list, add, delete.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use mooring::Session;
use serde::Deserialize;

use super::require_user;
use crate::auth::{self, CsrfForm};
use crate::error::AppError;
use crate::pages::{ItemView, ItemsPage, Layout, render, timestamp};
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/items", get(list).post(add))
        .route("/items/{id}/delete", post(delete))
}

/// The add-item form.
#[derive(Deserialize)]
struct NewItem {
    #[serde(default)]
    name: String,
    #[serde(default)]
    quantity: String,
    #[serde(rename = "_csrf", default)]
    csrf: String,
}

async fn page(
    state: &AppState,
    session: &Session,
    user_id: i64,
    errors: Vec<String>,
    name: String,
    quantity: String,
) -> Result<Response, AppError> {
    let items = state
        .db
        .items(user_id)
        .await?
        .into_iter()
        .map(|i| ItemView {
            id: i.id,
            name: i.name,
            quantity: i.quantity,
            created: timestamp(i.created_at),
        })
        .collect();
    let layout = Layout::new(state, session, true).await?;
    Ok(render(&ItemsPage {
        layout,
        items,
        errors,
        name,
        quantity,
    }))
}

async fn list(State(state): State<AppState>, session: Session) -> Result<Response, AppError> {
    match require_user(&session).await? {
        Ok(user_id) => page(&state, &session, user_id, Vec::new(), String::new(), "1".into()).await,
        Err(redirect) => Ok(redirect),
    }
}

async fn add(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<NewItem>,
) -> Result<Response, AppError> {
    auth::check_csrf(&session, &form.csrf).await?;
    let user_id = match require_user(&session).await? {
        Ok(id) => id,
        Err(redirect) => return Ok(redirect),
    };
    let name = form.name.trim().to_owned();
    let mut errors = Vec::new();
    if name.is_empty() || name.chars().count() > 200 {
        errors.push("Give the item a name of 1 to 200 characters.".to_owned());
    }
    let quantity = match form.quantity.trim() {
        "" => Some(1),
        text => text
            .parse::<i64>()
            .ok()
            .filter(|q| (0..=1_000_000_000).contains(q)),
    };
    if quantity.is_none() {
        errors.push("Quantity must be a whole number from 0 to 1,000,000,000.".to_owned());
    }
    match quantity {
        Some(quantity) if errors.is_empty() => {
            state.db.add_item(user_id, &name, quantity).await?;
            session.flash(format!("Added {name}.")).await?;
            Ok(Redirect::to("/items").into_response())
        }
        _ => {
            let mut response = page(&state, &session, user_id, errors, name, form.quantity).await?;
            *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(response)
        }
    }
}

async fn delete(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    auth::check_csrf(&session, &form.csrf).await?;
    let user_id = match require_user(&session).await? {
        Ok(id) => id,
        Err(redirect) => return Ok(redirect),
    };
    if !state.db.delete_item(user_id, id).await? {
        return Err(AppError::NotFound);
    }
    session.flash("Item deleted.").await?;
    Ok(Redirect::to("/items").into_response())
}
