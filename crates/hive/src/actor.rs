//! Who did something, as the audit trail and job records name them.

use std::fmt;

/// The author of a job, an audit record or an event. `Display` gives the
/// strings already stored (`operator:alice`, `drone:web-1`,
/// `rule:pack.name`, `hive`), so records written before this type existed
/// read the same.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_display_as_the_strings_already_stored() {
        assert_eq!(
            Actor::Operator("alice".into()).to_string(),
            "operator:alice"
        );
        assert_eq!(Actor::Drone("web-1".into()).to_string(), "drone:web-1");
        assert_eq!(
            Actor::Rule("linux.restart".into()).to_string(),
            "rule:linux.restart"
        );
        assert_eq!(Actor::Hive.to_string(), "hive");
        assert_eq!(Actor::Operator("alice".into()).name(), "alice");
    }
}
