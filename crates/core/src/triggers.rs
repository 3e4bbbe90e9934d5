//! Built-in trigger types and the shape of their payloads, so rules can be
//! checked at install time (a template reading a field the trigger never
//! sends is an error then, not a surprise at 3 a.m.).
//!
//! | trigger | raised by | payload fields | trigger parameters |
//! | --- | --- | --- | --- |
//! | `core.webhook` | a POST to a named webhook | `webhook`, `body`, `headers` | |
//! | `alertmanager.alert` | Prometheus Alertmanager, one event per alert | `status`, `labels`, `annotations`, `starts_at`, `ends_at`, `fingerprint`, `generator_url`, `receiver`, `group_labels`, `common_labels`, `external_url` | |
//! | `core.interval` | a fixed-interval timer | `fired_at`, `schedule` | `every` |
//! | `core.cron` | a cron timer | `fired_at`, `schedule` | `schedule`, `timezone` |
//! | `core.escalation` | a policy holding a rule's firing | `rule`, `reason`, `event_id`, `target`, `action` | |
//! | `core.event` | `ultronctl event fire` | free-form | |
//! | `fleet.service` | the hive's discovery, when a service's healthy count changes | `service`, `instances`, `healthy`, `unhealthy` | |
//! | `probe.failed`, `probe.recovered`, `probe.flapping`, `probe.error` | a probe's transition on one target | `probe`, `target`, `address`, `service`, `source`, `state`, `consecutive`, `detail`, `latency_ms` | |
//! | `drone.check` | a drone's check changing state (`crate::checks`) | `check`, `drone`, `state`, `consecutive`, `output`, `labels`, `at_ms` | |
//!
//! Only top-level field names are declared: `core.webhook`'s `body` is
//! whatever the sender posted, so `body.anything` cannot be checked, but
//! `bdoy.anything` can.

/// A built-in trigger type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerType {
    pub name: &'static str,
    pub description: &'static str,
    /// Top-level payload fields; `None` when the payload is free-form
    /// (webhooks, manually fired events), so nothing can be checked.
    pub payload_fields: Option<&'static [&'static str]>,
    /// Whether rules on this trigger take `trigger_parameters` (timers).
    pub parameters: &'static [&'static str],
}

impl TriggerType {
    /// Whether `field` is a top-level payload field of this trigger. A
    /// free-form payload accepts every name.
    pub fn has_payload_field(&self, field: &str) -> bool {
        self.payload_fields
            .is_none_or(|fields| fields.contains(&field))
    }

    /// Whether `name` is a `trigger_parameters` key this trigger takes.
    pub fn has_parameter(&self, name: &str) -> bool {
        self.parameters.contains(&name)
    }
}

/// `core.webhook`: a POST to `/webhooks/<name>`.
pub const WEBHOOK: &str = "core.webhook";
/// `alertmanager.alert`: one event per alert of an Alertmanager notification.
pub const ALERTMANAGER_ALERT: &str = "alertmanager.alert";
/// `core.interval`: a fixed-interval timer.
pub const INTERVAL: &str = "core.interval";
/// `core.cron`: a cron timer.
pub const CRON: &str = "core.cron";
/// `core.escalation`: a policy held a rule's firing.
pub const ESCALATION: &str = "core.escalation";
/// `fleet.service`: a service's count of healthy instances changed (see
/// [`crate::discovery::service_changes`]); `unhealthy` lists the names of
/// its instances that are not healthy.
pub const FLEET_SERVICE: &str = "fleet.service";
/// `core.event`: fired by hand with `ultronctl event fire`.
pub const EVENT: &str = "core.event";
/// `probe.failed`: a probe's target crossed its failure threshold.
pub const PROBE_FAILED: &str = "probe.failed";
/// `probe.recovered`: a failing (or erroring) target passed its success
/// threshold.
pub const PROBE_RECOVERED: &str = "probe.recovered";
/// `probe.flapping`: a target's answers changed too often to act on.
pub const PROBE_FLAPPING: &str = "probe.flapping";
/// `probe.error`: a probe could not judge a target (a bad address).
pub const PROBE_ERROR: &str = "probe.error";

/// The payload of every `probe.*` event.
const PROBE_FIELDS: &[&str] = &[
    "probe",
    "target",
    "address",
    "service",
    "source",
    "state",
    "consecutive",
    "detail",
    "latency_ms",
];
/// `drone.check`: a check on a drone became failing, recovered, flapping or
/// error (one event per transition, never per run).
pub const DRONE_CHECK: &str = "drone.check";

pub const BUILT_IN: &[TriggerType] = &[
    TriggerType {
        name: WEBHOOK,
        description: "An HTTP POST to a named webhook: its name, JSON body and headers.",
        payload_fields: Some(&["webhook", "body", "headers"]),
        parameters: &[],
    },
    TriggerType {
        name: ALERTMANAGER_ALERT,
        description: "One alert of a Prometheus Alertmanager notification, firing or resolved.",
        payload_fields: Some(&[
            "status",
            "labels",
            "annotations",
            "starts_at",
            "ends_at",
            "fingerprint",
            "generator_url",
            "receiver",
            "group_labels",
            "common_labels",
            "external_url",
        ]),
        parameters: &[],
    },
    TriggerType {
        name: INTERVAL,
        description: "A timer firing at a fixed interval, aligned to the Unix epoch.",
        payload_fields: Some(&["fired_at", "schedule"]),
        parameters: &["every"],
    },
    TriggerType {
        name: CRON,
        description: "A timer firing on a 5-field cron schedule in a time zone.",
        payload_fields: Some(&["fired_at", "schedule"]),
        parameters: &["schedule", "timezone"],
    },
    TriggerType {
        name: ESCALATION,
        description: "A rule's firing held by its policy, for a person or another rule to handle.",
        payload_fields: Some(&["rule", "reason", "event_id", "target", "action"]),
        parameters: &[],
    },
    TriggerType {
        name: EVENT,
        description: "An event fired by hand with `ultronctl event fire`, with any payload.",
        payload_fields: None,
        parameters: &[],
    },
    TriggerType {
        name: PROBE_FAILED,
        description: "A probe's target failed `failure_threshold` times in a row.",
        payload_fields: Some(PROBE_FIELDS),
        parameters: &[],
    },
    TriggerType {
        name: PROBE_RECOVERED,
        description: "A failing probe target passed `success_threshold` times in a row.",
        payload_fields: Some(PROBE_FIELDS),
        parameters: &[],
    },
    TriggerType {
        name: PROBE_FLAPPING,
        description: "A probe target's answers changed too often to act on; nothing fires until it settles.",
        payload_fields: Some(PROBE_FIELDS),
        parameters: &[],
    },
    TriggerType {
        name: PROBE_ERROR,
        description: "A probe could not judge a target `failure_threshold` times in a row.",
        payload_fields: Some(PROBE_FIELDS),
        parameters: &[],
    },
    TriggerType {
        name: DRONE_CHECK,
        description: "A check on a drone changed state: failing, recovered, flapping or error.",
        payload_fields: Some(&[
            "check",
            "drone",
            "state",
            "consecutive",
            "output",
            "labels",
            "at_ms",
        ]),
        parameters: &[],
    },
    TriggerType {
        name: FLEET_SERVICE,
        description: "A service's count of healthy instances changed.",
        payload_fields: Some(&["service", "instances", "healthy", "unhealthy"]),
        parameters: &[],
    },
];

pub fn built_in(name: &str) -> Option<&'static TriggerType> {
    BUILT_IN.iter().find(|t| t.name == name)
}

/// Where `value` holds a NUL character (U+0000), in a string or a key, as
/// a dotted path (`body.labels.instance`, `alerts.1.labels.alertname`;
/// `$` for the value itself); `None` when it holds none. Postgres refuses
/// NUL in JSON, so an event carrying one could never be stored: intake
/// refuses it as the sender's mistake instead of failing as if the
/// database were down, which a sender would retry for ever.
pub fn nul_character_at(value: &serde_json::Value) -> Option<String> {
    fn walk(value: &serde_json::Value, path: &mut Vec<String>) -> bool {
        match value {
            serde_json::Value::String(text) => text.contains('\0'),
            serde_json::Value::Array(items) => items.iter().enumerate().any(|(index, item)| {
                path.push(index.to_string());
                let found = walk(item, path);
                if !found {
                    path.pop();
                }
                found
            }),
            serde_json::Value::Object(fields) => fields.iter().any(|(key, item)| {
                // Shown escaped: the path goes into a message.
                path.push(key.escape_debug().to_string());
                let found = key.contains('\0') || walk(item, path);
                if !found {
                    path.pop();
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = Vec::new();
    walk(value, &mut path).then(|| {
        if path.is_empty() {
            "$".to_string()
        } else {
            path.join(".")
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn a_nul_character_is_found_where_it_is() {
        use serde_json::json;
        assert_eq!(nul_character_at(&json!({"a": ["x", {"b": "ok"}]})), None);
        assert_eq!(
            nul_character_at(&json!({"a": ["x", {"b": "o\u{0}k"}]})),
            Some("a.1.b".to_string())
        );
        assert_eq!(
            nul_character_at(&json!({"labels": {"bad\u{0}key": 1}})),
            Some("labels.bad\\0key".to_string())
        );
        assert_eq!(nul_character_at(&json!("\u{0}")), Some("$".to_string()));
        assert_eq!(nul_character_at(&json!([1, 2, null, true])), None);
    }

    type Row = (
        &'static str,
        Option<&'static [&'static str]>,
        &'static [&'static str],
    );

    #[test]
    fn every_documented_trigger_exists_with_its_fields_and_parameters() {
        let table: &[Row] = &[
            (WEBHOOK, Some(&["webhook", "body", "headers"]), &[]),
            (
                ALERTMANAGER_ALERT,
                Some(&[
                    "status",
                    "labels",
                    "annotations",
                    "starts_at",
                    "ends_at",
                    "fingerprint",
                    "generator_url",
                    "receiver",
                    "group_labels",
                    "common_labels",
                    "external_url",
                ]),
                &[],
            ),
            (INTERVAL, Some(&["fired_at", "schedule"]), &["every"]),
            (
                CRON,
                Some(&["fired_at", "schedule"]),
                &["schedule", "timezone"],
            ),
            (
                ESCALATION,
                Some(&["rule", "reason", "event_id", "target", "action"]),
                &[],
            ),
            (EVENT, None, &[]),
            (PROBE_FAILED, Some(PROBE_FIELDS), &[]),
            (PROBE_RECOVERED, Some(PROBE_FIELDS), &[]),
            (PROBE_FLAPPING, Some(PROBE_FIELDS), &[]),
            (
                FLEET_SERVICE,
                Some(&["service", "instances", "healthy", "unhealthy"]),
                &[],
            ),
            (PROBE_ERROR, Some(PROBE_FIELDS), &[]),
            (
                DRONE_CHECK,
                Some(&[
                    "check",
                    "drone",
                    "state",
                    "consecutive",
                    "output",
                    "labels",
                    "at_ms",
                ]),
                &[],
            ),
        ];
        assert_eq!(BUILT_IN.len(), table.len());
        for (name, fields, parameters) in table {
            let trigger = built_in(name).unwrap_or_else(|| panic!("{name} is missing"));
            assert_eq!(trigger.name, *name);
            let got: Option<BTreeSet<&str>> =
                trigger.payload_fields.map(|f| f.iter().copied().collect());
            let want: Option<BTreeSet<&str>> = fields.map(|f| f.iter().copied().collect());
            assert_eq!(got, want, "{name}");
            assert_eq!(trigger.parameters, *parameters, "{name}");
        }
    }

    #[test]
    fn unknown_names_are_not_built_in() {
        for name in [
            "",
            "core",
            "core.webhooks",
            "CORE.WEBHOOK",
            "alertmanager",
            "st2.webhook",
        ] {
            assert_eq!(built_in(name), None, "{name}");
        }
    }

    #[test]
    fn names_and_fields_are_unique_and_descriptions_are_one_line() {
        let names: BTreeSet<&str> = BUILT_IN.iter().map(|t| t.name).collect();
        assert_eq!(names.len(), BUILT_IN.len());
        for trigger in BUILT_IN {
            let description = trigger.description;
            assert!(
                !description.is_empty() && !description.contains('\n'),
                "{}",
                trigger.name
            );
            assert!(
                description.len() <= 100,
                "{}: keep it to one short line",
                trigger.name
            );
            if let Some(fields) = trigger.payload_fields {
                let unique: BTreeSet<&str> = fields.iter().copied().collect();
                assert_eq!(unique.len(), fields.len(), "{}", trigger.name);
            }
        }
    }

    #[test]
    fn field_and_parameter_lookups() {
        let alert = built_in(ALERTMANAGER_ALERT).expect("built in");
        assert!(alert.has_payload_field("labels"));
        assert!(
            !alert.has_payload_field("alerts"),
            "one event per alert, not per notification"
        );
        let event = built_in(EVENT).expect("built in");
        assert!(event.has_payload_field("anything"));
        let cron = built_in(CRON).expect("built in");
        assert!(cron.has_parameter("timezone"));
        assert!(!cron.has_parameter("every"));
    }
}
