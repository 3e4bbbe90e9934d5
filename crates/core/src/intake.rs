//! Event bodies as they arrive over HTTP, read into event payloads: a
//! generic webhook's JSON body, and a Prometheus Alertmanager notification
//! (webhook payload version 4) as one payload per alert.
//!
//! The bytes come from the network, unauthenticated senders included, so
//! this is where they are judged; the hive authenticates, bounds and
//! stores around it, and maps an `Err` (the message for the sender) to a
//! refusal that stores nothing. Pure, so the fuzz targets in `fuzz/` reach
//! exactly what the hive runs.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::echo::{elide, quote};

/// One alert of a notification, as the `alertmanager.alert` event it
/// becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    pub payload: Value,
    /// What makes this alert the same as one sent before (see
    /// [`alertmanager`]), as text for the caller to digest into an
    /// idempotency key; None when nothing tells two such alerts apart.
    pub identity: Option<String>,
}

/// A generic webhook's body: any JSON value with no NUL character
/// anywhere. Err is the message for the sender.
pub fn webhook_body(body: &[u8]) -> Result<Value, String> {
    let parsed: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not valid JSON: {e}"))?;
    match nul_character_message(&parsed, "body") {
        Some(message) => Err(message),
        None => Ok(parsed),
    }
}

/// An Alertmanager notification, one event per alert, so a resolved alert
/// is an event of its own and can drive an undo. The whole notification is
/// checked before any alert is returned, so that a caller storing them
/// stores all or none. Err is the message for the sender.
///
/// An alert's identity is the notification's group key, the alert's
/// fingerprint (a hash of its labels), when it started and its status:
/// the same alert resolving, or firing again later (a new start), is a
/// new event, while Alertmanager sending a notification again (it does
/// until one is acknowledged, and every `repeat_interval` while an alert
/// fires) repeats identities. None when the alert has no fingerprint or
/// start (not sent by an Alertmanager): nothing then tells two alerts
/// apart.
pub fn alertmanager(body: &[u8]) -> Result<Vec<AlertEvent>, String> {
    let document: Value = serde_json::from_slice(body)
        .map_err(|e| format!("not an Alertmanager webhook payload: {e}"))?;
    // Checked on the whole notification first, so that no alert of it
    // is stored when one cannot be.
    if let Some(message) = nul_character_message(&document, "") {
        return Err(message);
    }
    let payload: AlertmanagerPayload = serde_json::from_value(document)
        .map_err(|e| format!("not an Alertmanager webhook payload: {e}"))?;
    if payload.version != "4" {
        return Err(format!(
            "Alertmanager webhook payload version {} is not supported; expected \"4\"",
            quote(&payload.version)
        ));
    }
    if let Some(bad) = payload
        .alerts
        .iter()
        .find(|a| a.status != "firing" && a.status != "resolved")
    {
        return Err(format!(
            "alert status {} is neither \"firing\" nor \"resolved\"",
            quote(&bad.status)
        ));
    }
    let mut events = Vec::with_capacity(payload.alerts.len());
    for alert in payload.alerts {
        let identity = (!alert.fingerprint.is_empty() && !alert.starts_at.is_empty()).then(|| {
            // A JSON array: no choice of the four values can read as another.
            json!([
                payload.group_key,
                alert.fingerprint,
                alert.starts_at,
                alert.status
            ])
            .to_string()
        });
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
        events.push(AlertEvent {
            payload: event,
            identity,
        });
    }
    Ok(events)
}

/// The refusal of a body holding a NUL character (see
/// [`crate::triggers::nul_character_at`]), naming where, under `root`
/// (empty: the body is the root). None when there is none.
pub fn nul_character_message(body: &Value, root: &str) -> Option<String> {
    let path = crate::triggers::nul_character_at(body)?;
    let path = match (root, path.as_str()) {
        ("", _) => path,
        (root, "$") => root.to_string(),
        (root, path) => format!("{root}.{path}"),
    };
    Some(format!(
        "{} holds a NUL character (\\u0000), which the hive cannot store; nothing was stored",
        elide(&path)
    ))
}

/// Alertmanager's webhook payload, version 4.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlertmanagerPayload {
    version: String,
    #[serde(default)]
    group_key: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    const NOTIFICATION: &str = r#"{
        "version": "4", "groupKey": "{}:{alertname=\"DiskFull\"}", "receiver": "ultron8",
        "status": "firing", "externalURL": "http://am:9093",
        "groupLabels": {"alertname": "DiskFull"}, "commonLabels": {"alertname": "DiskFull"},
        "alerts": [
            {"status": "firing", "labels": {"alertname": "DiskFull", "instance": "web-1"},
             "startsAt": "2026-01-01T00:00:00Z", "fingerprint": "abc"},
            {"status": "resolved", "labels": {"alertname": "DiskFull", "instance": "web-2"}}
        ]
    }"#;

    #[test]
    fn a_notification_becomes_one_event_per_alert_with_its_identity() {
        let events = alertmanager(NOTIFICATION.as_bytes()).expect("parses");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].payload["labels"]["instance"], "web-1");
        assert_eq!(events[0].payload["receiver"], "ultron8");
        assert_eq!(events[0].payload["external_url"], "http://am:9093");
        assert_eq!(
            events[0].identity.as_deref(),
            Some(r#"["{}:{alertname=\"DiskFull\"}","abc","2026-01-01T00:00:00Z","firing"]"#)
        );
        // No fingerprint or start: nothing tells two such alerts apart.
        assert_eq!(events[1].identity, None);
        assert_eq!(events[1].payload["status"], "resolved");
    }

    #[test]
    fn malformed_notifications_are_refused_with_what_is_wrong() {
        let cases = [
            ("[", "not an Alertmanager webhook payload"),
            ("{}", "missing field `version`"),
            (
                r#"{"version": "3", "alerts": []}"#,
                "version \"3\" is not supported",
            ),
            (
                r#"{"version": "4", "alerts": [{"status": "pending"}]}"#,
                "alert status \"pending\" is neither",
            ),
            (
                r#"{"version": "4", "alerts": [{"status": "firing", "labels": {"a": "\u0000"}}]}"#,
                "alerts.0.labels.a holds a NUL character",
            ),
        ];
        for (body, expected) in cases {
            let error = alertmanager(body.as_bytes()).expect_err(body);
            assert!(error.contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn a_webhook_body_is_any_json_without_a_nul_character() {
        assert_eq!(
            webhook_body(br#"{"a": [1, "x"]}"#),
            Ok(json!({"a": [1, "x"]}))
        );
        assert_eq!(webhook_body(b"3"), Ok(json!(3)));
        let error = webhook_body(b"{").expect_err("not JSON");
        assert!(error.starts_with("body is not valid JSON"), "{error}");
        let error = webhook_body(br#"{"a": "\u0000"}"#).expect_err("NUL");
        assert!(error.starts_with("body.a holds a NUL character"), "{error}");
        let error = webhook_body(br#""\u0000""#).expect_err("NUL");
        assert!(error.starts_with("body holds a NUL character"), "{error}");
    }
}
