//! Events: storing them (from webhooks, Alertmanager, timers and operators)
//! and reading them back. An event is acknowledged only once it is stored;
//! a refused one is counted under its reason and never stored.

use axum::http::HeaderMap;
use chrono::Utc;
use ring::hmac;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use ultron8_core::echo::{elide, quote};
use ultron8_core::ids::EventId;
use ultron8_store::{EventFilter, EventRecord, NewEvent};

use crate::actor::Actor;
use crate::error::HiveError;
use crate::hive::Hive;
use crate::ids::new_event_id;
use crate::metrics::{Refusal, StoreCall};

impl Hive {
    /// Stores an event and wakes this replica's rules engine. Once this
    /// returns Ok the event is durable and will be processed. `source` says
    /// where it came from (see [`NewEvent::source`]).
    pub async fn ingest_event(
        &self,
        trigger: &str,
        payload: Value,
        source: &str,
    ) -> Result<EventId, HiveError> {
        let event = NewEvent {
            id: new_event_id(),
            trigger: trigger.to_string(),
            payload,
            source: source.to_string(),
            received_at: Utc::now(),
        };
        self.metrics
            .time_store(StoreCall::RecordEvent, self.store.record_event(&event))
            .await?;
        self.metrics.event_received(trigger);
        tracing::info!(event_id = %event.id, %trigger, %source, "event stored");
        self.events_arrived.notify_one();
        Ok(event.id)
    }

    /// An event an operator fires by hand, of a built-in trigger type.
    pub async fn fire_event(
        &self,
        actor: &Actor,
        trigger: &str,
        payload: Value,
    ) -> Result<EventRecord, HiveError> {
        if ultron8_core::triggers::built_in(trigger).is_none() {
            let known: Vec<&str> = ultron8_core::triggers::BUILT_IN
                .iter()
                .map(|t| t.name)
                .collect();
            return Err(HiveError::invalid_argument(format!(
                "unknown trigger type {}; known: {}",
                quote(trigger),
                known.join(", ")
            )));
        }
        if let Some(error) = nul_character_error(&payload, "payload") {
            return Err(error);
        }
        let id = self
            .ingest_event(trigger, payload, &actor.to_string())
            .await?;
        self.store
            .get_event(&id)
            .await?
            .ok_or_else(|| HiveError::internal("event vanished right after it was stored"))
    }

    pub async fn list_events(&self, filter: &EventFilter) -> Result<Vec<EventRecord>, HiveError> {
        Ok(self.store.list_events(filter).await?)
    }

    pub async fn get_event(&self, id: &EventId) -> Result<EventRecord, HiveError> {
        self.store.get_event(id).await?.ok_or_else(|| {
            HiveError::not_found(format!("no event {id}; see `ultronctl event list`"))
        })
    }

    /// The largest event body accepted, in bytes.
    pub fn max_event_bytes(&self) -> usize {
        self.config.max_event_bytes
    }

    /// A body over [`Hive::max_event_bytes`], refused and counted.
    pub fn event_too_large(&self) -> HiveError {
        let limit = self.config.max_event_bytes;
        self.refuse(
            Refusal::TooLarge,
            HiveError::too_large(format!("body exceeds the limit of {limit} bytes")),
        )
    }

    /// How long a whole event body may take to arrive.
    pub fn event_body_timeout(&self) -> std::time::Duration {
        self.config.http_body_timeout
    }

    /// A body that did not arrive within [`Hive::event_body_timeout`],
    /// refused and counted: a client trickling it in would otherwise hold
    /// its connection for as long as it liked.
    pub fn event_too_slow(&self) -> HiveError {
        let limit = humantime::format_duration(self.config.http_body_timeout);
        self.refuse(
            Refusal::TooSlow,
            HiveError::request_timeout(format!(
                "the request body did not arrive within {limit}; nothing was stored"
            )),
        )
    }

    /// Refuses a webhook that is not configured, before its body is read.
    pub fn check_webhook_exists(&self, name: &str) -> Result<(), HiveError> {
        match self.config.webhooks.contains_key(name) {
            true => Ok(()),
            false => Err(self.unknown_webhook(name)),
        }
    }

    /// The names configured are not listed: the caller is not
    /// authenticated yet, and the list would tell a stranger where to aim.
    fn unknown_webhook(&self, name: &str) -> HiveError {
        self.refuse(
            Refusal::UnknownWebhook,
            HiveError::not_found(format!(
                "no webhook named {}; webhooks are configured in the hive's [webhooks] settings",
                quote(name)
            )),
        )
    }

    /// Refuses a body holding a NUL character anywhere, counted as
    /// malformed.
    fn refuse_nul_characters(&self, body: &Value, root: &str) -> Result<(), HiveError> {
        match nul_character_error(body, root) {
            None => Ok(()),
            Some(error) => Err(self.refuse(Refusal::Malformed, error)),
        }
    }

    /// A delivery to the generic webhook `name`, authenticated by bearer
    /// token or by HMAC-SHA256 of the body, stored as one `core.webhook`
    /// event `{webhook, body, headers}` carrying the headers the webhook is
    /// configured to keep. Returns the event id.
    pub async fn receive_webhook(
        &self,
        name: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<EventId, HiveError> {
        let Some(config) = self.config.webhooks.get(name) else {
            return Err(self.unknown_webhook(name));
        };
        let authorized = match (&config.token, &config.hmac_secret) {
            (Some(token), _) if bearer(headers).is_some_and(|given| same_secret(given, token)) => {
                true
            }
            (_, Some(secret)) => headers
                .get("x-ultron8-signature")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("sha256="))
                .and_then(|hex_sig| hex::decode(hex_sig).ok())
                .is_some_and(|signature| {
                    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
                    hmac::verify(&key, body, &signature).is_ok()
                }),
            _ => false,
        };
        if !authorized {
            return Err(self.refuse(
                Refusal::Unauthorized,
                HiveError::unauthenticated(format!(
                    "webhook {} needs `Authorization: Bearer <token>` or `X-Ultron8-Signature: sha256=<HMAC-SHA256 of the body>`",
                    quote(name)
                )),
            ));
        }
        let parsed: Value = serde_json::from_slice(body).map_err(|e| {
            self.refuse(
                Refusal::Malformed,
                HiveError::invalid_argument(format!("body is not valid JSON: {e}")),
            )
        })?;
        self.refuse_nul_characters(&parsed, "body")?;
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
        self.ingest_event("core.webhook", payload, &format!("webhook:{name}"))
            .await
            .map_err(|e| self.not_stored(e))
    }

    /// Refuses an Alertmanager notification without the configured bearer
    /// token, before its body is read.
    pub fn authorize_alertmanager(&self, headers: &HeaderMap) -> Result<(), HiveError> {
        match &self.config.alertmanager_token {
            Some(token) if !bearer(headers).is_some_and(|given| same_secret(given, token)) => {
                Err(self.refuse(
                    Refusal::Unauthorized,
                    HiveError::unauthenticated(
                        "the Alertmanager receiver needs `Authorization: Bearer <token>` (http_config.authorization in alertmanager.yml)",
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// An Alertmanager notification (webhook payload version 4), stored as
    /// one `alertmanager.alert` event per alert, so a resolved alert is an
    /// event of its own and can drive an undo. Returns the event ids.
    pub async fn receive_alertmanager(&self, body: &[u8]) -> Result<Vec<EventId>, HiveError> {
        let malformed =
            |message: String| self.refuse(Refusal::Malformed, HiveError::invalid_argument(message));
        let document: Value = serde_json::from_slice(body)
            .map_err(|e| malformed(format!("not an Alertmanager webhook payload: {e}")))?;
        // Checked on the whole notification first, so that no alert of it
        // is stored when one cannot be.
        self.refuse_nul_characters(&document, "")?;
        let payload: AlertmanagerPayload = serde_json::from_value(document)
            .map_err(|e| malformed(format!("not an Alertmanager webhook payload: {e}")))?;
        if payload.version != "4" {
            return Err(malformed(format!(
                "Alertmanager webhook payload version {} is not supported; expected \"4\"",
                quote(&payload.version)
            )));
        }
        if let Some(bad) = payload
            .alerts
            .iter()
            .find(|a| a.status != "firing" && a.status != "resolved")
        {
            return Err(malformed(format!(
                "alert status {} is neither \"firing\" nor \"resolved\"",
                quote(&bad.status)
            )));
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
            // Alertmanager retries the whole notification, so a retry may
            // store an alert twice (a rule's cooldown absorbs that).
            let id = self
                .ingest_event("alertmanager.alert", event, "alertmanager")
                .await
                .map_err(|e| self.not_stored(e))?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// An event that could not be stored: counted, and the sender told to
    /// retry, since nothing was acknowledged.
    fn not_stored(&self, error: HiveError) -> HiveError {
        self.metrics.event_refused(Refusal::StoreUnavailable);
        tracing::error!(%error, "cannot store an event");
        HiveError::unavailable("the hive cannot store events right now; retry")
    }

    /// Counts and logs a refused event, and returns the error to answer with.
    fn refuse(&self, reason: Refusal, error: HiveError) -> HiveError {
        self.metrics.event_refused(reason);
        tracing::warn!(reason = reason.label(), message = %error, "refused an event");
        error
    }
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

/// The error for a body holding a NUL character (see
/// [`ultron8_core::triggers::nul_character_at`]), naming where, under
/// `root` (empty: the body is the root). Postgres cannot store one, and
/// failing at the database would answer "unavailable, retry" for ever.
fn nul_character_error(body: &Value, root: &str) -> Option<HiveError> {
    let path = ultron8_core::triggers::nul_character_at(body)?;
    let path = match (root, path.as_str()) {
        ("", _) => path,
        (root, "$") => root.to_string(),
        (root, path) => format!("{root}.{path}"),
    };
    Some(HiveError::invalid_argument(format!(
        "{} holds a NUL character (\\u0000), which the hive cannot store; nothing was stored",
        elide(&path)
    )))
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
