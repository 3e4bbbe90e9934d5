//! The plain-HTTP listener: liveness, readiness and Prometheus metrics,
//! which change nothing and need no authentication; and event intake
//! (webhooks, Alertmanager), authenticated per endpoint in [`crate::events`].

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::json;

use crate::hive::Hive;
use crate::metrics::Exposition;

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

/// Ready when both the store and the broker answer, each within
/// [`CHECK_TIMEOUT`](crate::ops::health::CHECK_TIMEOUT): a hive that cannot reach either cannot accept jobs,
/// and a probe must get its answer before its own timeout.
async fn readyz(State(hive): State<Arc<Hive>>) -> impl IntoResponse {
    let readiness = hive.readiness().await;
    let ready = readiness.ready();
    let said = |answer: Result<(), String>| answer.err().unwrap_or_else(|| "ok".into());
    let body = json!({
        "ready": ready,
        "store": said(readiness.store),
        "broker": said(readiness.broker),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

/// The exposition in the format the scraper asked for (see
/// [`Exposition::negotiate`]).
async fn metrics(State(hive): State<Arc<Hive>>, headers: HeaderMap) -> impl IntoResponse {
    let format = Exposition::negotiate(
        headers
            .get(header::ACCEPT)
            .and_then(|accept| accept.to_str().ok()),
    );
    match hive
        .metrics
        .render(hive.store.as_ref(), format, chrono::Utc::now())
        .await
    {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, format.content_type())],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}\n"),
        )
            .into_response(),
    }
}
