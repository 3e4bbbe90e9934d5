//! The HTTP event intake: generic webhooks and the Prometheus Alertmanager
//! receiver. Adapters over [`crate::ops::events`]: they read the body up
//! to the configured size and time limits, call the operation, and answer 202 with the
//! stored event ids or the refusal as the error's HTTP status.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::HiveError;
use crate::hive::Hive;

/// Reads the body up to the configured size, within the configured time
/// for the whole of it (not per read: a byte every few seconds must not
/// keep a connection for ever); past either, a counted 413 or 408 that
/// says so.
async fn read_limited(hive: &Hive, body: Body) -> Result<Bytes, HiveError> {
    let reading = axum::body::to_bytes(body, hive.max_event_bytes());
    match tokio::time::timeout(hive.event_body_timeout(), reading).await {
        Ok(read) => read.map_err(|_| hive.event_too_large()),
        Err(_) => Err(hive.event_too_slow()),
    }
}

/// `POST /v1/webhooks/{name}`: payload = `{webhook, body, headers}`.
pub async fn webhook(
    State(hive): State<Arc<Hive>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let stored = async {
        // An unknown webhook is refused before its body is read.
        hive.check_webhook_exists(&name)?;
        let body = read_limited(&hive, body).await?;
        hive.receive_webhook(&name, &headers, &body).await
    };
    match stored.await {
        Ok(id) => (StatusCode::ACCEPTED, Json(json!({ "event_id": id }))).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

/// `POST /v1/alertmanager`: one `alertmanager.alert` event per alert.
pub async fn alertmanager(
    State(hive): State<Arc<Hive>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let stored = async {
        // An unauthorized sender is refused before its body is read.
        hive.authorize_alertmanager(&headers)?;
        let body = read_limited(&hive, body).await?;
        hive.receive_alertmanager(&body).await
    };
    match stored.await {
        Ok(ids) => (StatusCode::ACCEPTED, Json(json!({ "event_ids": ids }))).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}
