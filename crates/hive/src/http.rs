//! The plain-HTTP listener: liveness, readiness and Prometheus metrics.
//! Nothing here changes state, so it needs no authentication.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use crate::hive::Hive;

pub fn router(hive: Arc<Hive>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
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
