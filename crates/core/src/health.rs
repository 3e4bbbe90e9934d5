//! The state machine shared by drone checks and hive probes: each run is
//! healthy, unhealthy or an error; consecutive runs cross thresholds into
//! *failing* and back to *recovered*; too many changes in a window is
//! *flapping*, and nothing fires until the check settles.
//!
//! Pure: the caller owns the clock and passes `now` with every run, so the
//! drone (checks) and the hive (probes) share one tested implementation.
//!
//! # Semantics
//!
//! - A run is [`RunOutcome::Healthy`] (exit 0, probe passed),
//!   [`RunOutcome::Unhealthy`] (non-zero exit, wrong status) or
//!   [`RunOutcome::Error`]: the check could not say (it could not start,
//!   timed out, was killed, or crashed with output on stderr only; see
//!   [`classify_exit`]). An error is not a failure of what is checked: it breaks a run of
//!   unhealthy results rather than extending it, and consecutive errors
//!   have a threshold of their own (`failure_threshold` again).
//! - A check starts [`CheckState::Pending`]. `failure_threshold` consecutive
//!   unhealthy runs make it [`CheckState::Failing`] and emit
//!   [`Transition::Failing`]; `failure_threshold` consecutive errors make it
//!   [`CheckState::Error`] and emit [`Transition::Error`]. From failing or
//!   error, `success_threshold` consecutive healthy runs make it
//!   [`CheckState::Healthy`] and emit [`Transition::Recovered`]; from pending
//!   they make it healthy silently (there was nothing to recover from).
//! - Flapping: when the raw outcome changed more than `max_changes` times
//!   within `window`, the check is flapping: [`Transition::Flapping`] is
//!   emitted once, and no other transition until fewer changes remain in the
//!   window. When it settles, the thresholds are evaluated again over the
//!   runs since the last change, so a check that settled into failure fires
//!   `failing` then, and one that settled back where it was fires nothing.
//!   A rule acting on `failing` therefore never sees a flapping check.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What one run of a check or probe said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Healthy,
    Unhealthy,
    /// The check could not say: it could not start, timed out, was killed
    /// or crashed.
    Error,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Error => "error",
        }
    }
}

impl fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a finished command ended, as [`classify_exit`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandEnd {
    /// The exit code; `None` when a signal killed it.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub wrote_stdout: bool,
    pub wrote_stderr: bool,
}

/// Exit 0 is healthy and any other exit unhealthy, as a node check script
/// says; but a command that timed out, was killed by a signal, was not
/// found or not executable (126, 127), or failed with output on stderr
/// only (an interpreter's traceback, `set -e` tripping) could not say, so
/// it is an error, which no rule mistakes for the host failing.
pub fn classify_exit(end: CommandEnd) -> RunOutcome {
    if end.timed_out {
        return RunOutcome::Error;
    }
    match end.exit_code {
        None | Some(126) | Some(127) => RunOutcome::Error,
        Some(0) => RunOutcome::Healthy,
        Some(_) if end.wrote_stderr && !end.wrote_stdout => RunOutcome::Error,
        Some(_) => RunOutcome::Unhealthy,
    }
}

/// Where a check stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    /// Not enough runs yet to say.
    Pending,
    Healthy,
    Failing,
    Flapping,
    Error,
}

impl CheckState {
    pub const ALL: [CheckState; 5] = [
        Self::Pending,
        Self::Healthy,
        Self::Failing,
        Self::Flapping,
        Self::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Healthy => "healthy",
            Self::Failing => "failing",
            Self::Flapping => "flapping",
            Self::Error => "error",
        }
    }

    /// Whether an instance with a check in this state counts as unhealthy
    /// in fleet views.
    pub fn is_unhealthy(self) -> bool {
        matches!(self, Self::Failing | Self::Flapping | Self::Error)
    }
}

impl fmt::Display for CheckState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown check state {0:?}: expected pending, healthy, failing, flapping or error")]
pub struct UnknownCheckState(pub String);

impl FromStr for CheckState {
    type Err = UnknownCheckState;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| UnknownCheckState(text.to_owned()))
    }
}

/// A change worth telling the rules engine about: the `state` of a
/// `drone.check` or `probe.*` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    Failing,
    Recovered,
    Flapping,
    Error,
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failing => "failing",
            Self::Recovered => "recovered",
            Self::Flapping => "flapping",
            Self::Error => "error",
        }
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Transition {
    type Err = UnknownCheckState;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [Self::Failing, Self::Recovered, Self::Flapping, Self::Error]
            .into_iter()
            .find(|transition| transition.as_str() == text)
            .ok_or_else(|| UnknownCheckState(text.to_owned()))
    }
}

/// Flap detection: more than `max_changes` changes of outcome within
/// `window` is flapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlapDetection {
    pub max_changes: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

/// The thresholds of one check or probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Consecutive unhealthy runs (or errors) before failing (or error).
    pub failure_threshold: u32,
    /// Consecutive healthy runs before recovered.
    pub success_threshold: u32,
    pub flap: Option<FlapDetection>,
}

impl Default for Thresholds {
    /// Three failures to fail, one success to recover, and flapping at more
    /// than 5 changes in 10 minutes.
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            success_threshold: 1,
            flap: Some(FlapDetection {
                max_changes: 5,
                window: Duration::from_secs(600),
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdError {
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("flap.window must be longer than zero")]
    EmptyWindow,
}

impl Thresholds {
    /// Refuses thresholds the machine cannot honour: zero counts would fire
    /// before any run, and an empty window never sees a change.
    pub fn validate(&self) -> Result<(), ThresholdError> {
        if self.failure_threshold == 0 {
            return Err(ThresholdError::Zero("failure_threshold"));
        }
        if self.success_threshold == 0 {
            return Err(ThresholdError::Zero("success_threshold"));
        }
        if let Some(flap) = &self.flap
            && flap.window.is_zero()
        {
            return Err(ThresholdError::EmptyWindow);
        }
        Ok(())
    }
}

/// One check's memory of its runs. Serializable, so a drone can keep it
/// across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracker {
    thresholds: Thresholds,
    /// The state as of the last settled evaluation (never `Flapping`).
    settled: CheckState,
    flapping: bool,
    /// The outcome of the last run and how many runs in a row had it.
    last: Option<RunOutcome>,
    consecutive: u32,
    /// When the outcome changed, oldest first, within the flap window.
    changes: VecDeque<DateTime<Utc>>,
    /// When `state()` last changed.
    since: Option<DateTime<Utc>>,
}

impl Tracker {
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            settled: CheckState::Pending,
            flapping: false,
            last: None,
            consecutive: 0,
            changes: VecDeque::new(),
            since: None,
        }
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// Takes new thresholds (a pack upgrade) keeping what was observed.
    pub fn set_thresholds(&mut self, thresholds: Thresholds) {
        self.thresholds = thresholds;
    }

    pub fn state(&self) -> CheckState {
        if self.flapping {
            CheckState::Flapping
        } else {
            self.settled
        }
    }

    /// How many runs in a row had the last outcome.
    pub fn consecutive(&self) -> u32 {
        self.consecutive
    }

    pub fn last_outcome(&self) -> Option<RunOutcome> {
        self.last
    }

    /// When the state last changed; `None` before the first change.
    pub fn since(&self) -> Option<DateTime<Utc>> {
        self.since
    }

    /// Records one run at `now` and returns the transition it caused, if
    /// any. `now` is expected not to go backwards; if it does, changes in
    /// the window are judged by their order, not their times.
    pub fn observe(&mut self, outcome: RunOutcome, now: DateTime<Utc>) -> Option<Transition> {
        let before = self.state();
        if self.last == Some(outcome) {
            self.consecutive = self.consecutive.saturating_add(1);
        } else {
            if self.last.is_some() {
                self.changes.push_back(now);
            }
            self.last = Some(outcome);
            self.consecutive = 1;
        }

        let transition = match self.thresholds.flap {
            Some(flap) => {
                let window =
                    chrono::Duration::from_std(flap.window).unwrap_or(chrono::Duration::MAX);
                while let Some(first) = self.changes.front() {
                    if now.signed_duration_since(*first) > window {
                        self.changes.pop_front();
                    } else {
                        break;
                    }
                }
                let flapping = self.changes.len() > flap.max_changes as usize;
                if flapping {
                    let started = !self.flapping;
                    self.flapping = true;
                    started.then_some(Transition::Flapping)
                } else {
                    self.flapping = false;
                    self.settle()
                }
            }
            None => {
                self.changes.clear();
                self.settle()
            }
        };
        if self.state() != before {
            self.since = Some(now);
        }
        transition
    }

    /// Applies the thresholds to the current run of outcomes.
    fn settle(&mut self) -> Option<Transition> {
        let last = self.last?;
        let (next, transition) = match last {
            RunOutcome::Unhealthy if self.consecutive >= self.thresholds.failure_threshold => {
                (CheckState::Failing, Transition::Failing)
            }
            RunOutcome::Error if self.consecutive >= self.thresholds.failure_threshold => {
                (CheckState::Error, Transition::Error)
            }
            RunOutcome::Healthy if self.consecutive >= self.thresholds.success_threshold => {
                (CheckState::Healthy, Transition::Recovered)
            }
            _ => return None,
        };
        if next == self.settled {
            return None;
        }
        let was = std::mem::replace(&mut self.settled, next);
        match (was, next) {
            // Healthy from nothing known is not a recovery.
            (CheckState::Pending, CheckState::Healthy) => None,
            _ => Some(transition),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RunOutcome::{Error as E, Healthy as H, Unhealthy as U};
    use proptest::prelude::*;

    fn at(second: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + second, 0).expect("in range")
    }

    fn thresholds(failure: u32, success: u32, flap: Option<(u32, u64)>) -> Thresholds {
        Thresholds {
            failure_threshold: failure,
            success_threshold: success,
            flap: flap.map(|(max_changes, seconds)| FlapDetection {
                max_changes,
                window: Duration::from_secs(seconds),
            }),
        }
    }

    /// Runs `outcomes` one second apart and returns the transitions with the
    /// index of the run that caused each.
    fn run(tracker: &mut Tracker, outcomes: &[RunOutcome]) -> Vec<(usize, Transition)> {
        outcomes
            .iter()
            .enumerate()
            .filter_map(|(index, outcome)| {
                tracker
                    .observe(*outcome, at(index as i64))
                    .map(|transition| (index, transition))
            })
            .collect()
    }

    #[test]
    fn fails_once_at_the_threshold_and_recovers_once() {
        let mut tracker = Tracker::new(thresholds(4, 2, None));
        let fired = run(&mut tracker, &[H, U, U, U, U, U, U, H, H, H]);
        assert_eq!(
            fired,
            vec![(4, Transition::Failing), (8, Transition::Recovered)]
        );
        assert_eq!(tracker.state(), CheckState::Healthy);
        assert_eq!(tracker.since(), Some(at(8)));
    }

    #[test]
    fn healthy_from_pending_is_silent_and_a_broken_run_resets_the_count() {
        let mut tracker = Tracker::new(thresholds(3, 1, None));
        assert_eq!(tracker.state(), CheckState::Pending);
        assert_eq!(run(&mut tracker, &[H, U, U, H, U, U, H]), vec![]);
        assert_eq!(tracker.state(), CheckState::Healthy);
    }

    #[test]
    fn errors_are_their_own_state_and_not_failures() {
        let mut tracker = Tracker::new(thresholds(2, 1, None));
        // Errors interleaved with failures never reach two of either.
        assert_eq!(run(&mut tracker, &[U, E, U, E, U]), vec![]);
        let mut tracker = Tracker::new(thresholds(2, 1, None));
        let fired = run(&mut tracker, &[E, E, E, H]);
        assert_eq!(
            fired,
            vec![(1, Transition::Error), (3, Transition::Recovered)]
        );
        let mut tracker = Tracker::new(thresholds(2, 1, None));
        let fired = run(&mut tracker, &[U, U, E, E, U, U]);
        assert_eq!(
            fired,
            vec![
                (1, Transition::Failing),
                (3, Transition::Error),
                (5, Transition::Failing)
            ]
        );
    }

    #[test]
    fn a_flapping_check_fires_flapping_once_and_nothing_else() {
        let mut tracker = Tracker::new(thresholds(1, 1, Some((3, 60))));
        let fired = run(&mut tracker, &[H, U, H, U, H, U, H, U, H, U]);
        // Changes at runs 1, 2, 3 are within bounds: failing and recovered
        // fire; the fourth change makes it flapping, and then silence.
        assert_eq!(
            fired,
            vec![
                (1, Transition::Failing),
                (2, Transition::Recovered),
                (3, Transition::Failing),
                (4, Transition::Flapping)
            ]
        );
        assert_eq!(tracker.state(), CheckState::Flapping);
    }

    #[test]
    fn a_flapping_check_that_settles_into_failure_fires_failing_then() {
        let mut tracker = Tracker::new(thresholds(2, 2, Some((2, 10))));
        let mut outcomes = vec![H, H, U, H, U, H];
        // Then it stays unhealthy; the changes age out of the 10 s window.
        outcomes.extend(std::iter::repeat_n(U, 15));
        let fired = run(&mut tracker, &outcomes);
        // Changes at runs 2..=6; the one at run 2 ages out of the 10 s
        // window at run 13, the one at 4 at run 15, leaving two: settled,
        // ten unhealthy runs in a row, failing.
        assert_eq!(
            fired,
            vec![(4, Transition::Flapping), (15, Transition::Failing)]
        );
        assert_eq!(tracker.state(), CheckState::Failing);
    }

    #[test]
    fn a_flapping_check_that_settles_where_it_was_fires_nothing() {
        let mut tracker = Tracker::new(thresholds(3, 1, Some((2, 10))));
        let mut outcomes = vec![H, U, H, U, H];
        outcomes.extend(std::iter::repeat_n(H, 15));
        let fired = run(&mut tracker, &outcomes);
        assert_eq!(fired, vec![(3, Transition::Flapping)]);
        assert_eq!(tracker.state(), CheckState::Healthy);
    }

    #[test]
    fn classifies_how_commands_end() {
        let end = |exit_code, timed_out, wrote_stdout, wrote_stderr| CommandEnd {
            exit_code,
            timed_out,
            wrote_stdout,
            wrote_stderr,
        };
        assert_eq!(classify_exit(end(Some(0), false, false, true)), H);
        assert_eq!(classify_exit(end(Some(1), false, false, false)), U);
        assert_eq!(classify_exit(end(Some(2), false, true, true)), U);
        assert_eq!(classify_exit(end(Some(1), false, false, true)), E);
        assert_eq!(classify_exit(end(Some(127), false, false, false)), E);
        assert_eq!(classify_exit(end(Some(126), false, true, false)), E);
        assert_eq!(classify_exit(end(None, false, true, false)), E);
        assert_eq!(classify_exit(end(Some(0), true, true, false)), E);
    }

    #[test]
    fn thresholds_refuse_zero() {
        assert_eq!(
            thresholds(0, 1, None).validate(),
            Err(ThresholdError::Zero("failure_threshold"))
        );
        assert_eq!(
            thresholds(1, 0, None).validate(),
            Err(ThresholdError::Zero("success_threshold"))
        );
        assert_eq!(
            thresholds(1, 1, Some((1, 0))).validate(),
            Err(ThresholdError::EmptyWindow)
        );
        assert_eq!(Thresholds::default().validate(), Ok(()));
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for state in CheckState::ALL {
            assert_eq!(state.as_str().parse::<CheckState>(), Ok(state));
        }
        assert!("down".parse::<CheckState>().is_err());
    }

    fn outcome() -> impl Strategy<Value = RunOutcome> {
        prop_oneof![Just(H), Just(U), Just(E)]
    }

    fn any_thresholds() -> impl Strategy<Value = Thresholds> {
        (1u32..5, 1u32..5, proptest::option::of((0u32..6, 1u64..30)))
            .prop_map(|(failure, success, flap)| thresholds(failure, success, flap))
    }

    proptest! {
        /// Whatever the runs: failing, recovered and error never fire twice
        /// in a row (a settle back to where the check was is silent),
        /// recovered only follows failing or error, `flapping` fires only on
        /// entering flapping and nothing else fires while flapping, and the
        /// state agrees with what fired.
        #[test]
        fn transitions_are_well_formed(
            thresholds in any_thresholds(),
            runs in proptest::collection::vec((outcome(), 0i64..20), 0..120),
        ) {
            let mut tracker = Tracker::new(thresholds);
            let mut now = 0;
            let mut last_settled: Option<Transition> = None;
            for (outcome, gap) in runs {
                now += gap;
                let was = tracker.state();
                let fired = tracker.observe(outcome, at(now));
                match fired {
                    Some(Transition::Flapping) => {
                        prop_assert_ne!(was, CheckState::Flapping);
                        prop_assert_eq!(tracker.state(), CheckState::Flapping);
                    }
                    Some(transition) => {
                        prop_assert_ne!(Some(transition), last_settled);
                        let expected = match transition {
                            Transition::Recovered => {
                                prop_assert!(matches!(
                                    last_settled,
                                    Some(Transition::Failing | Transition::Error)
                                ));
                                CheckState::Healthy
                            }
                            Transition::Failing => CheckState::Failing,
                            _ => CheckState::Error,
                        };
                        prop_assert_eq!(tracker.state(), expected);
                        last_settled = Some(transition);
                    }
                    None => {}
                }
                if tracker.state() == CheckState::Flapping {
                    prop_assert!(matches!(fired, None | Some(Transition::Flapping)));
                }
            }
        }

        /// A check that stays unhealthy fires `failing` exactly once, at the
        /// threshold, whatever came before it has aged out.
        #[test]
        fn a_steady_failure_fires_once(
            failure in 1u32..6,
            extra in 0usize..40,
        ) {
            let mut tracker = Tracker::new(thresholds(failure, 1, Some((3, 60))));
            let outcomes = vec![U; failure as usize + extra];
            let fired = run(&mut tracker, &outcomes);
            prop_assert_eq!(fired, vec![(failure as usize - 1, Transition::Failing)]);
        }

        /// The tracker survives a round trip through JSON (a drone keeps
        /// it on disk) and behaves the same afterwards.
        #[test]
        fn round_trips_through_json(
            thresholds in any_thresholds(),
            before in proptest::collection::vec(outcome(), 0..30),
            after in proptest::collection::vec(outcome(), 0..30),
        ) {
            let mut tracker = Tracker::new(thresholds);
            run(&mut tracker, &before);
            let json = serde_json::to_string(&tracker).expect("serializes");
            let mut restored: Tracker = serde_json::from_str(&json).expect("deserializes");
            prop_assert_eq!(&restored, &tracker);
            for (index, outcome) in after.iter().enumerate() {
                let now = at(before.len() as i64 + index as i64);
                prop_assert_eq!(tracker.observe(*outcome, now), restored.observe(*outcome, now));
            }
        }
    }
}
