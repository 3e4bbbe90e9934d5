//! Event intake: generic webhooks and the Prometheus Alertmanager receiver
//! over HTTP, and events fired by operators. An event is acknowledged only
//! once it is stored; malformed input gets a 4xx naming the problem, is
//! counted, and never reaches the rules engine.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use ring::hmac;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use ultron8_store::NewEvent;

use crate::hive::Hive;

impl Hive {
    /// Stores an event and wakes this replica's rules engine. Once this
    /// returns Ok the event is durable and will be processed.
    pub async fn ingest_event(
        &self,
        trigger: &str,
        payload: Value,
        source: &str,
    ) -> Result<String, ultron8_store::StoreError> {
        let event = NewEvent {
            id: uuid::Uuid::now_v7().to_string(),
            trigger: trigger.to_string(),
            payload,
            source: source.to_string(),
            received_at: Utc::now(),
        };
        self.store.record_event(&event).await?;
        self.metrics
            .events_received
            .get_or_create(&crate::metrics::TriggerLabel {
                trigger: trigger.to_string(),
            })
            .inc();
        tracing::info!(event_id = %event.id, %trigger, %source, "event stored");
        self.events_arrived.notify_one();
        Ok(event.id)
    }
}

/// A refusal: status, message, and the reason label it is counted under.
fn refuse(hive: &Hive, status: StatusCode, reason: &str, message: String) -> Response {
    hive.metrics
        .events_refused
        .get_or_create(&crate::metrics::ReasonLabel {
            reason: reason.to_string(),
        })
        .inc();
    tracing::warn!(%reason, %message, "refused an event");
    (status, axum::Json(json!({ "error": message }))).into_response()
}

fn stored(id: &str) -> Response {
    (StatusCode::ACCEPTED, axum::Json(json!({ "event_id": id }))).into_response()
}

fn store_failed(e: ultron8_store::StoreError) -> Response {
    tracing::error!(error = %e, "cannot store an event");
    // 503: the sender should retry; nothing was acknowledged.
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({ "error": "the hive cannot store events right now; retry" })),
    )
        .into_response()
}

/// Reads the body up to the configured limit; past it, a 413 that says so.
async fn read_limited(hive: &Hive, body: Body) -> Result<Bytes, Response> {
    let limit = hive.config.max_event_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        refuse(
            hive,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body exceeds the limit of {limit} bytes"),
        )
    })
}

fn parse_json(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("body is not valid JSON: {e}"))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Compares secrets in constant time.
fn same_secret(given: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// `POST /v1/webhooks/{name}`: payload = `{webhook, body, headers}`.
pub async fn webhook(
    State(hive): State<Arc<Hive>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(config) = hive.config.webhooks.get(&name) else {
        let known: Vec<&String> = hive.config.webhooks.keys().collect();
        return refuse(
            &hive,
            StatusCode::NOT_FOUND,
            "unknown_webhook",
            format!("no webhook named {name:?}; configured: {known:?}"),
        );
    };
    let body = match read_limited(&hive, body).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let authorized = match (&config.token, &config.hmac_secret) {
        (Some(token), _) if bearer(&headers).is_some_and(|given| same_secret(given, token)) => true,
        (_, Some(secret)) => headers
            .get("x-ultron8-signature")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("sha256="))
            .and_then(|hex_sig| hex::decode(hex_sig).ok())
            .is_some_and(|signature| {
                let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
                hmac::verify(&key, &body, &signature).is_ok()
            }),
        _ => false,
    };
    if !authorized {
        return refuse(
            &hive,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!(
                "webhook {name:?} needs `Authorization: Bearer <token>` or `X-Ultron8-Signature: sha256=<HMAC-SHA256 of the body>`"
            ),
        );
    }
    let parsed = match parse_json(&body) {
        Ok(value) => value,
        Err(message) => return refuse(&hive, StatusCode::BAD_REQUEST, "malformed", message),
    };
    let mut selected = Map::new();
    for header in &config.headers {
        if let Some(value) = headers.get(header.as_str()).and_then(|v| v.to_str().ok()) {
            selected.insert(
                header.to_ascii_lowercase(),
                Value::String(value.to_string()),
            );
        }
    }
    let payload = json!({ "webhook": name, "body": parsed, "headers": selected });
    match hive
        .ingest_event("core.webhook", payload, &format!("webhook:{name}"))
        .await
    {
        Ok(id) => stored(&id),
        Err(e) => store_failed(e),
    }
}

/// Alertmanager's webhook payload, version 4.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlertmanagerPayload {
    version: String,
    #[serde(default)]
    receiver: String,
    #[serde(default)]
    group_labels: Map<String, Value>,
    #[serde(default)]
    common_labels: Map<String, Value>,
    #[serde(default, rename = "externalURL")]
    external_url: String,
    alerts: Vec<Alert>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Alert {
    status: String,
    #[serde(default)]
    labels: Map<String, Value>,
    #[serde(default)]
    annotations: Map<String, Value>,
    #[serde(default)]
    starts_at: String,
    #[serde(default)]
    ends_at: String,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
    #[serde(default)]
    fingerprint: String,
}

/// `POST /v1/alertmanager`: one `alertmanager.alert` event per alert, so a
/// resolved alert is an event of its own and can drive an undo.
pub async fn alertmanager(
    State(hive): State<Arc<Hive>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(token) = &hive.config.alertmanager_token
        && !bearer(&headers).is_some_and(|given| same_secret(given, token))
    {
        return refuse(&hive, StatusCode::UNAUTHORIZED, "unauthorized",
            "the Alertmanager receiver needs `Authorization: Bearer <token>` (http_config.authorization in alertmanager.yml)".into());
    }
    let body = match read_limited(&hive, body).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let payload: AlertmanagerPayload = match serde_json::from_slice(&body) {
        Ok(payload) => payload,
        Err(e) => {
            return refuse(
                &hive,
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("not an Alertmanager webhook payload: {e}"),
            );
        }
    };
    if payload.version != "4" {
        return refuse(
            &hive,
            StatusCode::BAD_REQUEST,
            "malformed",
            format!(
                "Alertmanager webhook payload version {:?} is not supported; expected \"4\"",
                payload.version
            ),
        );
    }
    if let Some(bad) = payload
        .alerts
        .iter()
        .find(|a| a.status != "firing" && a.status != "resolved")
    {
        return refuse(
            &hive,
            StatusCode::BAD_REQUEST,
            "malformed",
            format!(
                "alert status {:?} is neither \"firing\" nor \"resolved\"",
                bad.status
            ),
        );
    }
    let mut ids = Vec::new();
    for alert in payload.alerts {
        let event = json!({
            "status": alert.status,
            "labels": alert.labels,
            "annotations": alert.annotations,
            "starts_at": alert.starts_at,
            "ends_at": alert.ends_at,
            "fingerprint": alert.fingerprint,
            "generator_url": alert.generator_url,
            "receiver": payload.receiver,
            "group_labels": payload.group_labels,
            "common_labels": payload.common_labels,
            "external_url": payload.external_url,
        });
        // Alerts already stored stay stored if a later one fails;
        // Alertmanager retries the whole notification, so a retry may store
        // an alert twice (a rule's cooldown absorbs that).
        match hive
            .ingest_event("alertmanager.alert", event, "alertmanager")
            .await
        {
            Ok(id) => ids.push(id),
            Err(e) => return store_failed(e),
        }
    }
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "event_ids": ids })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("ab", "abc"));
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer s3cret".parse().expect("header"));
        assert_eq!(bearer(&headers), Some("s3cret"));
        headers.insert("authorization", "Basic s3cret".parse().expect("header"));
        assert_eq!(bearer(&headers), None);
    }
}
