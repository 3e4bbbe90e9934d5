//! The ids that travel between the hive's records, the wire and the CLI,
//! as types of their own, so that an execution id can never be passed where
//! a job id is wanted. Each holds the text that is stored and shown
//! (uuid v7 for jobs, executions and events; the name a drone joined with
//! for drones) and serializes as that text, so nothing stored changes.
//!
//! The core makes none of them: ids are minted where the clock and the
//! random source are (the hive and its store), and a drone's id is checked
//! by [`crate::target::validate_drone_id`] when it joins.

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(text: impl Into<String>) -> Self {
                $name(text.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> Self {
                $name(text)
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                $name(text.to_string())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        /// So maps keyed by the id can be looked up with a `&str`.
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

text_id! {
    /// One request: an ad-hoc run over N hosts, or one rule firing.
    JobId
}

text_id! {
    /// One action on one drone (or on the hive, for `http` and `noop`).
    ExecutionId
}

text_id! {
    /// A drone, by the name it joined with; also the pseudo-drone `@hive`
    /// that hive-side executions name.
    DroneId
}

text_id! {
    /// One occurrence of a trigger type.
    EventId
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn ids_serialize_as_their_text() {
        let job = JobId::new("0193a3c2-7c4e-7d43-9c2a-5b8e0f1d2a3b");
        assert_eq!(
            serde_json::to_string(&job).expect("serialize"),
            "\"0193a3c2-7c4e-7d43-9c2a-5b8e0f1d2a3b\""
        );
        let back: JobId =
            serde_json::from_str("\"0193a3c2-7c4e-7d43-9c2a-5b8e0f1d2a3b\"").expect("parse");
        assert_eq!(back, job);
        assert_eq!(job.to_string(), job.as_str());
    }

    #[test]
    fn a_map_keyed_by_id_is_looked_up_by_text() {
        let mut seen: BTreeMap<DroneId, u32> = BTreeMap::new();
        seen.insert(DroneId::new("web-1"), 1);
        assert_eq!(seen.get("web-1"), Some(&1));
        assert!(DroneId::new("web-1") == "web-1");
    }
}
