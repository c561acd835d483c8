//! Liveness and readiness probes.
//!
//! `/healthz` answers while the process runs: it never looks at a dependency, so a store outage cannot make
//! Kubernetes restart every replica at once. `/readyz` checks the session store and the database (each under
//! the store timeout) and turns 503 as soon as shutdown begins, so load balancers drain the instance. A
//! failing session store turns it 503 only after `SESSION_STORE_TIMEOUT_MS` of failed checks (see
//! [`crate::state::StoreOutage`]): a failover shorter than that is ridden out by the requests themselves.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::state::AppState;

/// How long the database may take to answer a readiness check (the session store has its own timeout).
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
}

async fn ready(State(state): State<AppState>) -> Response {
    if !state.is_accepting() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "shutting down" })),
        )
            .into_response();
    }
    let (store, db) = tokio::join!(
        state.sessions.ping(),
        tokio::time::timeout(READY_TIMEOUT, state.db.ping())
    );
    let failing_for = state
        .store_outage
        .record(store.is_ok(), std::time::Instant::now());
    let store_word = match failing_for {
        None => "ok",
        Some(d) if d < state.store_outage.tolerated() => "degraded",
        Some(_) => "unavailable",
    };
    let store_ok = store_word != "unavailable";
    let db_ok = matches!(db, Ok(Ok(())));
    if let Err(err) = &store {
        tracing::warn!(
            error = %err,
            failing_for_ms = failing_for.unwrap_or_default().as_millis() as u64,
            tolerated_ms = state.store_outage.tolerated().as_millis() as u64,
            "readiness: session store unavailable"
        );
    }
    match &db {
        Ok(Err(err)) => tracing::warn!(error = %err, "readiness: database unavailable"),
        Err(_) => tracing::warn!("readiness: database did not answer in time"),
        Ok(Ok(())) => {}
    }
    let status = if store_ok && db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "unavailable" },
        "checks": {
            "session_store": store_word,
            "database": if db_ok { "ok" } else { "unavailable" },
        },
    });
    (status, Json(body)).into_response()
}
