//! `/session`: the seed deployment's session test endpoint, and the per-attribute endpoints that the
//! session-survival probe and the concurrency tests use.
//!
//! `GET /session` sets `test_session` (as the seed does), counts `hits` exactly (compare-and-set, retried on
//! conflict, so concurrent calls through different replicas never lose a hit), and reports which instance
//! served it and a short fingerprint of the session (never the id).
//!
//! `PUT /session/values/{name}` stores the request body, a JSON string (`"value"`, up to 1 KiB of UTF-8), as
//! attribute `probe.{name}`; `GET /session/values/{name}` reads it back. Each name is its own attribute, so
//! concurrent writers of different names never overwrite each other. They are JSON endpoints, not forms, and
//! `PUT` requires `Content-Type: application/json` (else `415`): a cross-site page can send neither a PUT nor
//! that content type without a CORS preflight, which this app never grants, so they need no CSRF token.
//!
//! They exist for tests and the chaos lab, and let anyone store data in a session: they answer `404`, as any
//! unknown path, unless `SESSION_TEST_ENDPOINTS=true`.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mooring::Session;
use serde_json::{Value, json};

use crate::error::AppError;
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/session", get(session_info))
        .route("/session/values/{name}", get(read_value).put(write_value))
}

const MAX_VALUE_BYTES: usize = 1024;

async fn session_info(State(state): State<AppState>, session: Session) -> Result<Json<Value>, AppError> {
    let hits = loop {
        let hits: u64 = session.get("hits").await?.unwrap_or(0) + 1;
        session.insert("hits", &hits).await?;
        session.insert("test_session", "session_is_working").await?;
        match session.save_if_unchanged().await {
            Ok(()) => break hits,
            Err(mooring::Error::Conflict) => session.reload().await,
            Err(err) => return Err(err.into()),
        }
    };
    Ok(Json(json!({
        "message": if hits == 1 { "Session created" } else { "Session continued" },
        "value": session.get::<String>("test_session").await?,
        "hits": hits,
        "served_by": &*state.instance,
        "session": session.fingerprint().await?,
        "driver": state.driver,
        "user": session.user().await?,
    })))
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

async fn read_value(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    if !state.test_endpoints {
        return Err(AppError::NotFound);
    }
    if !valid_name(&name) {
        return Ok(bad_request("names are 1-64 letters, digits, '-' or '_'"));
    }
    let value: Option<String> = session.get(&format!("probe.{name}")).await?;
    Ok(Json(json!({ "name": name, "value": value, "served_by": &*state.instance })).into_response())
}

async fn write_value(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    if !state.test_endpoints {
        return Err(AppError::NotFound);
    }
    if !valid_name(&name) {
        return Ok(bad_request("names are 1-64 letters, digits, '-' or '_'"));
    }
    if !is_json(&headers) {
        return Ok((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Json(json!({ "error": "send the value as JSON: Content-Type: application/json" })),
        )
            .into_response());
    }
    let Ok(value) = serde_json::from_slice::<String>(&body) else {
        return Ok(bad_request("the body must be a JSON string, such as \"blue\""));
    };
    if value.len() > MAX_VALUE_BYTES {
        return Ok(bad_request("values are at most 1024 bytes"));
    }
    session.insert(&format!("probe.{name}"), &value).await?;
    // Saved before answering, so a 200 means the value is in the store.
    session.save().await?;
    Ok(Json(json!({ "name": name, "value": value, "served_by": &*state.instance })).into_response())
}

/// Whether the request says its body is JSON (`application/json`, parameters such as `charset` allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}
