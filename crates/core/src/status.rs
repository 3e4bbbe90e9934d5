//! The execution state machine.
//!
//! An execution only ever moves forward: `requested → dispatched → running →`
//! one terminal state. Steps may be skipped (a drone can report its result
//! before the hive has recorded the dispatch), but a terminal state is final,
//! so a duplicate or late report can never overwrite a result.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    Requested,
    Dispatched,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Rejected,
    Expired,
    Lost,
    Canceled,
}

impl ExecutionStatus {
    pub const ALL: [ExecutionStatus; 10] = [
        ExecutionStatus::Requested,
        ExecutionStatus::Dispatched,
        ExecutionStatus::Running,
        ExecutionStatus::Succeeded,
        ExecutionStatus::Failed,
        ExecutionStatus::TimedOut,
        ExecutionStatus::Rejected,
        ExecutionStatus::Expired,
        ExecutionStatus::Lost,
        ExecutionStatus::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Requested => "requested",
            ExecutionStatus::Dispatched => "dispatched",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Succeeded => "succeeded",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::TimedOut => "timed_out",
            ExecutionStatus::Rejected => "rejected",
            ExecutionStatus::Expired => "expired",
            ExecutionStatus::Lost => "lost",
            ExecutionStatus::Canceled => "canceled",
        }
    }

    /// Whether no further status change can happen.
    pub fn is_terminal(self) -> bool {
        self.stage() == 3
    }

    /// Whether an execution in state `self` may move to `next`.
    ///
    /// Forward moves only; `expired` only before the drone picked the
    /// request up (a running command is never declared expired).
    pub fn can_transition_to(self, next: ExecutionStatus) -> bool {
        if next == ExecutionStatus::Expired {
            return matches!(
                self,
                ExecutionStatus::Requested | ExecutionStatus::Dispatched
            );
        }
        next.stage() > self.stage()
    }

    fn stage(self) -> u8 {
        match self {
            ExecutionStatus::Requested => 0,
            ExecutionStatus::Dispatched => 1,
            ExecutionStatus::Running => 2,
            _ => 3,
        }
    }
}

impl fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown execution status {0:?}; expected one of requested, dispatched, running, succeeded, failed, timed_out, rejected, expired, lost, canceled"
)]
pub struct UnknownStatus(pub String);

impl FromStr for ExecutionStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ExecutionStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_are_final() {
        for from in ExecutionStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in ExecutionStatus::ALL {
                assert!(
                    !from.can_transition_to(to),
                    "{from} -> {to} must be refused"
                );
            }
        }
    }

    #[test]
    fn the_normal_path_is_allowed() {
        use ExecutionStatus::*;
        assert!(Requested.can_transition_to(Dispatched));
        assert!(Dispatched.can_transition_to(Running));
        assert!(Running.can_transition_to(Succeeded));
        // A fast drone may report before the hive records the dispatch.
        assert!(Requested.can_transition_to(Running));
        assert!(Requested.can_transition_to(Failed));
    }

    #[test]
    fn no_moving_backwards_or_standing_still() {
        use ExecutionStatus::*;
        assert!(!Running.can_transition_to(Dispatched));
        assert!(!Dispatched.can_transition_to(Requested));
        assert!(!Running.can_transition_to(Running));
    }

    #[test]
    fn a_running_command_never_expires() {
        use ExecutionStatus::*;
        assert!(Requested.can_transition_to(Expired));
        assert!(Dispatched.can_transition_to(Expired));
        assert!(!Running.can_transition_to(Expired));
    }

    #[test]
    fn names_round_trip() {
        for status in ExecutionStatus::ALL {
            assert_eq!(status.as_str().parse::<ExecutionStatus>(), Ok(status));
        }
        assert!("done".parse::<ExecutionStatus>().is_err());
    }
}
