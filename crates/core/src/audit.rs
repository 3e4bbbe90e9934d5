//! The audit trail's vocabulary: who did something ([`Actor`]) and what
//! ([`AuditVerb`]). Both read and write as the strings already stored
//! (`operator:alice`, `rule.fired`), so records written before these types
//! existed read the same, and other tools reading the table see text.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The author of a job, an audit record or an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    /// An ultronctl user, by the name in their certificate.
    Operator(String),
    /// A drone, by its id.
    Drone(String),
    /// A rule, by its reference `pack.name`.
    Rule(String),
    /// The hive itself (sweepers, hive-side actions, escalations).
    Hive,
}

impl Actor {
    /// The operator's name, the drone's id or the rule's reference, without
    /// the kind (`hive` for the hive).
    pub fn name(&self) -> &str {
        match self {
            Actor::Operator(name) | Actor::Drone(name) | Actor::Rule(name) => name,
            Actor::Hive => "hive",
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Operator(name) => write!(f, "operator:{name}"),
            Actor::Drone(id) => write!(f, "drone:{id}"),
            Actor::Rule(reference) => write!(f, "rule:{reference}"),
            Actor::Hive => f.write_str("hive"),
        }
    }
}

/// Text that names no actor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} names no actor (expected operator:NAME, drone:ID, rule:PACK.NAME or hive)")]
pub struct UnknownActor(String);

impl FromStr for Actor {
    type Err = UnknownActor;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let named = |name: &str| (!name.is_empty()).then(|| name.to_string());
        let actor = match text.split_once(':') {
            None if text == "hive" => Some(Actor::Hive),
            Some(("operator", name)) => named(name).map(Actor::Operator),
            Some(("drone", id)) => named(id).map(Actor::Drone),
            Some(("rule", reference)) => named(reference).map(Actor::Rule),
            _ => None,
        };
        actor.ok_or_else(|| UnknownActor(text.to_string()))
    }
}

impl Serialize for Actor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

macro_rules! verbs {
    ($($(#[$doc:meta])* $variant:ident => $text:literal,)*) => {
        /// What an audit record records, as a dotted `noun.verb`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum AuditVerb {
            $($(#[$doc])* $variant,)*
        }

        impl AuditVerb {
            pub const ALL: &'static [AuditVerb] = &[$(AuditVerb::$variant,)*];

            /// The text stored and shown.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(AuditVerb::$variant => $text,)*
                }
            }
        }

        impl FromStr for AuditVerb {
            type Err = UnknownVerb;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text => Ok(AuditVerb::$variant),)*
                    other => Err(UnknownVerb(other.to_string())),
                }
            }
        }
    };
}

verbs! {
    /// An operator submitted a job (a command or an action).
    JobSubmitted => "job.submitted",
    /// An operator asked to cancel a job's executions (all, or one drone's).
    JobCancelRequested => "job.cancel_requested",
    /// An execution reached a terminal state with a result.
    ExecutionFinished => "execution.finished",
    /// A drone's own policy (`[policy]` in its drone.toml) refused to run
    /// a request that verified; the execution ended `failed` with the
    /// reason, and the record names the rule.
    ExecutionRefused => "execution.refused",
    /// An execution no drone picked up before its expiry.
    ExecutionExpired => "execution.expired",
    /// A drone joined with a token.
    DroneEnrolled => "drone.enrolled",
    /// An operator's call was refused: their role does not allow it.
    OperatorDenied => "operator.denied",
    /// An operator took a drone out of the fleet (its record and history
    /// stay; joining again brings it back).
    DroneRemoved => "drone.removed",
    /// A drone refused a request that names no execution of its own.
    DroneRefusedRequest => "drone.refused_request",
    /// An operator created a join token.
    JoinTokenCreated => "join_token.created",
    /// An admin had the hive issue an operator certificate.
    OperatorCreated => "operator.created",
    /// An admin revoked an operator's certificates.
    OperatorRevoked => "operator.revoked",
    PackInstalled => "pack.installed",
    PackRemoved => "pack.removed",
    RuleEnabled => "rule.enabled",
    RuleDisabled => "rule.disabled",
    /// A rule matched an event and its job was created.
    RuleFired => "rule.fired",
    /// A rule matched an event and its policy held the firing.
    RuleHeld => "rule.held",
    /// A rule matched an event but its action could not be prepared.
    RuleFailed => "rule.failed",
    /// A rule did not match an event. Written by hives before the rules
    /// engine stopped recording misses; read from older trails, never
    /// written.
    RuleEvaluated => "rule.evaluated",
    /// An operator created or replaced a secret (the record never holds
    /// its value).
    SecretSet => "secret.set",
    /// An operator deleted a secret.
    SecretDeleted => "secret.deleted",
    /// An operator read a secret's value back (`ultronctl secret get`).
    SecretRevealed => "secret.revealed",
    /// A drone fetched the secrets of an execution it was about to run.
    SecretsDelivered => "secret.delivered",
    /// An admin added a discovery source (`ultronctl source add`).
    SourceAdded => "source.added",
    /// An admin removed a discovery source and its instances.
    SourceRemoved => "source.removed",
}

impl fmt::Display for AuditVerb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that is no audit verb.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is no audit record kind")]
pub struct UnknownVerb(String);

impl Serialize for AuditVerb {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AuditVerb {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_read_and_write_as_the_strings_already_stored() {
        for (actor, text) in [
            (Actor::Operator("alice".into()), "operator:alice"),
            (Actor::Drone("web-1".into()), "drone:web-1"),
            (Actor::Rule("linux.restart".into()), "rule:linux.restart"),
            (Actor::Hive, "hive"),
        ] {
            assert_eq!(actor.to_string(), text);
            assert_eq!(text.parse::<Actor>(), Ok(actor.clone()));
            assert_eq!(
                serde_json::to_value(&actor).expect("serialize"),
                serde_json::json!(text)
            );
        }
        for bad in ["", "operator:", "alice", "robot:r2", "hive:x"] {
            assert!(bad.parse::<Actor>().is_err(), "{bad:?}");
        }
        // A name may itself hold a colon; only the first one separates.
        assert_eq!(
            "operator:ops:night".parse::<Actor>(),
            Ok(Actor::Operator("ops:night".into()))
        );
    }

    #[test]
    fn every_verb_round_trips_through_its_text() {
        for verb in AuditVerb::ALL {
            assert_eq!(verb.as_str().parse::<AuditVerb>(), Ok(*verb));
            let (noun, action) = verb.as_str().split_once('.').expect("noun.verb");
            assert!(!noun.is_empty() && !action.is_empty());
        }
        assert!("rule.exploded".parse::<AuditVerb>().is_err());
    }
}
