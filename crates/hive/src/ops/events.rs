//! Events: storing them (from webhooks, Alertmanager, timers and operators)
//! and reading them back. An event is acknowledged only once it is stored;
//! a refused one is counted under its reason and never stored.

use axum::http::HeaderMap;
use chrono::Utc;
use ring::hmac;
use serde_json::{Map, Value, json};
use ultron8_core::echo::quote;
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
            idempotency_key: None,
        };
        self.metrics
            .time_store(StoreCall::RecordEvent, self.store.record_event(&event))
            .await?;
        self.metrics.event_received(trigger);
        tracing::info!(event_id = %event.id, %trigger, %source, "event stored");
        self.events_arrived.notify_one();
        Ok(event.id)
    }

    /// Stores several events of `trigger` from `source` together, all or
    /// none, each with its payload and idempotency key; an event whose key
    /// is stored already is not stored again (see
    /// [`ultron8_store::Store::record_events`]). Returns the id each is
    /// stored under, and wakes the engine if any is new.
    pub async fn ingest_events(
        &self,
        trigger: &str,
        source: &str,
        items: Vec<(Value, Option<String>)>,
    ) -> Result<Vec<EventId>, HiveError> {
        let received_at = Utc::now();
        let events: Vec<NewEvent> = items
            .into_iter()
            .map(|(payload, idempotency_key)| NewEvent {
                id: new_event_id(),
                trigger: trigger.to_string(),
                payload,
                source: source.to_string(),
                received_at,
                idempotency_key,
            })
            .collect();
        let ids = self
            .metrics
            .time_store(StoreCall::RecordEvent, self.store.record_events(&events))
            .await?;
        let mut new = 0;
        for (event, id) in events.iter().zip(&ids) {
            if event.id == *id {
                new += 1;
                self.metrics.event_received(trigger);
                tracing::info!(event_id = %id, %trigger, %source, "event stored");
            } else {
                tracing::info!(event_id = %id, %trigger, %source, "event already stored; not stored again");
            }
        }
        if new > 0 {
            self.events_arrived.notify_one();
        }
        Ok(ids)
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

    /// A delivery to the generic webhook `name`, authenticated by bearer
    /// token or by a fresh HMAC-SHA256 signature (see [`check_signature`]),
    /// stored as one `core.webhook`
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
        let by_token = config
            .token
            .as_ref()
            .is_some_and(|token| bearer(headers).is_some_and(|given| same_secret(given, token)));
        let signed = headers.contains_key(SIGNATURE) || headers.contains_key(TIMESTAMP);
        let refusal = match &config.hmac_secret {
            _ if by_token => None,
            Some(secret) if signed => check_signature(
                secret,
                config.timestamp_tolerance,
                headers,
                body,
                Utc::now(),
            )
            .err(),
            // Neither credential was offered: say what the webhook takes.
            _ => Some(format!("needs {}", credentials(config))),
        };
        if let Some(problem) = refusal {
            return Err(self.refuse(
                Refusal::Unauthorized,
                HiveError::unauthenticated(format!("webhook {}: {problem}", quote(name))),
            ));
        }
        let parsed = ultron8_core::intake::webhook_body(body).map_err(|message| {
            self.refuse(Refusal::Malformed, HiveError::invalid_argument(message))
        })?;
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
    ///
    /// Alertmanager sends a notification again, whole, until it is
    /// acknowledged, and repeats a still-firing alert every
    /// `repeat_interval`. So the alerts are stored together, all or none,
    /// and each under an idempotency key ([`alert_key`]): an alert already
    /// stored is not stored again, and the answer names the event it is.
    pub async fn receive_alertmanager(&self, body: &[u8]) -> Result<Vec<EventId>, HiveError> {
        let alerts = ultron8_core::intake::alertmanager(body).map_err(|message| {
            self.refuse(Refusal::Malformed, HiveError::invalid_argument(message))
        })?;
        let items = alerts
            .into_iter()
            .map(|alert| {
                (
                    alert.payload,
                    alert.identity.map(|identity| alert_key(&identity)),
                )
            })
            .collect();
        self.ingest_events("alertmanager.alert", "alertmanager", items)
            .await
            .map_err(|e| self.not_stored(e))
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

/// The headers of an HMAC-signed webhook request.
const SIGNATURE: &str = "x-ultron8-signature";
const TIMESTAMP: &str = "x-ultron8-timestamp";

/// What an HMAC-signed request must carry, for refusals.
const SIGNED_HEADERS: &str = "`X-Ultron8-Timestamp: <unix seconds>` and \
    `X-Ultron8-Signature: sha256=<hex HMAC-SHA256 of \"<timestamp>.<body>\">`";

/// The credentials a webhook accepts, for refusals.
fn credentials(config: &crate::config::WebhookConfig) -> String {
    const BEARER: &str = "`Authorization: Bearer <token>`";
    match (&config.token, &config.hmac_secret) {
        (Some(_), Some(_)) => format!("{BEARER}, or {SIGNED_HEADERS}"),
        (None, Some(_)) => SIGNED_HEADERS.to_string(),
        _ => BEARER.to_string(),
    }
}

/// Checks an HMAC-signed webhook request, as Stripe and Slack sign theirs:
/// the signature covers `<timestamp>.<body>`, and the timestamp must be
/// within `tolerance` of `now`, either way. A signature over the body alone
/// could be captured and sent again for ever; this one only within the
/// tolerance. The signature is checked before the time, so that only a
/// sender holding the secret learns that its clock is off. Err says what
/// is wrong, naming the header.
fn check_signature(
    secret: &str,
    tolerance: std::time::Duration,
    headers: &HeaderMap,
    body: &[u8],
    now: chrono::DateTime<Utc>,
) -> Result<(), String> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let Some(timestamp) = header(TIMESTAMP) else {
        return Err(format!(
            "no X-Ultron8-Timestamp header; an HMAC-signed request sends {SIGNED_HEADERS}"
        ));
    };
    let Some(signature) = header(SIGNATURE) else {
        return Err(format!(
            "no X-Ultron8-Signature header; an HMAC-signed request sends {SIGNED_HEADERS}"
        ));
    };
    let Ok(sent_at) = timestamp.trim().parse::<i64>() else {
        return Err(format!(
            "X-Ultron8-Timestamp {} is not a time in unix seconds (such as {})",
            quote(timestamp),
            now.timestamp()
        ));
    };
    let given = signature
        .strip_prefix("sha256=")
        .and_then(|hex_sig| hex::decode(hex_sig).ok())
        .unwrap_or_default();
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.as_bytes());
    context.update(b".");
    context.update(body);
    let expected = context.sign();
    if !same_bytes(expected.as_ref(), &given) {
        return Err(
            "X-Ultron8-Signature does not match; it is sha256=<hex HMAC-SHA256 of \"<timestamp>.<body>\"> \
             with the webhook's secret, where <timestamp> is X-Ultron8-Timestamp as sent"
                .to_string(),
        );
    }
    let skew = now.timestamp().abs_diff(sent_at);
    if skew > tolerance.as_secs() {
        return Err(format!(
            "X-Ultron8-Timestamp is {} away from the hive's clock, outside the tolerance of {}: \
             a replayed request, or a sender whose clock needs setting",
            humantime::format_duration(std::time::Duration::from_secs(skew)),
            humantime::format_duration(tolerance)
        ));
    }
    Ok(())
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
    same_bytes(given.as_bytes(), expected.as_bytes())
}

fn same_bytes(given: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    given.ct_eq(expected).into()
}

/// The idempotency key of an alert with this identity (see
/// [`ultron8_core::intake::alertmanager`]). Hashed, as a group key holds
/// label sets of any length.
fn alert_key(identity: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, identity.as_bytes());
    format!("alertmanager:{}", hex::encode(digest.as_ref()))
}

/// The error for a body holding a NUL character (see
/// [`ultron8_core::intake::nul_character_message`]). Postgres cannot store
/// one, and failing at the database would answer "unavailable, retry" for
/// ever.
fn nul_character_error(body: &Value, root: &str) -> Option<HiveError> {
    ultron8_core::intake::nul_character_message(body, root).map(HiveError::invalid_argument)
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
