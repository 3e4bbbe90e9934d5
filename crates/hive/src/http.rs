//! The plain-HTTP listener: liveness, readiness and Prometheus metrics,
//! which change nothing and need no authentication; and event intake
//! (webhooks, Alertmanager), authenticated per endpoint in [`crate::events`].

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::json;

use crate::hive::Hive;

pub fn router(hive: Arc<Hive>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/webhooks/{name}", post(crate::events::webhook))
        .route("/v1/alertmanager", post(crate::events::alertmanager))
        // The event handlers read bodies themselves, up to the configured
        // limit, so an oversized one gets a counted 413 with a message.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(hive)
}

/// Ready when both the store and the broker answer: a hive that cannot
/// reach either cannot accept jobs.
async fn readyz(State(hive): State<Arc<Hive>>) -> impl IntoResponse {
    let store = hive.store.ping().await.err().map(|e| e.to_string());
    let broker = hive.publisher.ping().await.err().map(|e| e.to_string());
    let ready = store.is_none() && broker.is_none();
    let body = json!({
        "ready": ready,
        "store": store.unwrap_or_else(|| "ok".into()),
        "broker": broker.unwrap_or_else(|| "ok".into()),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

async fn metrics(State(hive): State<Arc<Hive>>) -> impl IntoResponse {
    match hive.metrics.render(hive.store.as_ref()).await {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot collect metrics: {e}\n"),
        )
            .into_response(),
    }
}
