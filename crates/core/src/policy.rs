//! Rule policies: cooldown per rendered key, concurrency, and a blast-radius
//! limit, decided from what the store observed. The hive gathers the
//! observation (across replicas, in the database); this module only decides.
//!
//! [`decide`] holds a firing for the first of these reasons, in this order,
//! and allows it otherwise:
//!
//! 1. **Cooldown**: the rule fired for the same rendered key less than
//!    `period` ago (a last firing stamped in the future, from clock skew
//!    between replicas, counts as within the period).
//! 2. **Concurrency**: `running_jobs >= max_concurrent` (so `0` holds every
//!    firing: a way to pause a rule without deleting it).
//! 3. **Blast radius, hosts**: `hosts_in_window + hosts_requested > max_hosts`.
//! 4. **Blast radius, percentage**: `(hosts_in_window + hosts_requested) * 100
//!    / matching_fleet > max_percent`, compared exactly (no integer
//!    truncation: 11 hosts of 100 is over a 10 % limit). A target that matches
//!    no drone is held, since no share of nothing can be acted on.
//!
//! Each reason is one sentence with the numbers, for the audit trail and the
//! `core.escalation` event. A policy with nothing configured always allows.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    #[serde(default)]
    pub cooldown: Option<Cooldown>,
    /// Jobs of this rule running at once.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    #[serde(default)]
    pub blast_radius: Option<BlastRadius>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cooldown {
    /// Template over the payload, e.g. `{{ labels.instance }}`; one cooldown
    /// per rendered value.
    pub key: String,
    #[serde(with = "humantime_serde")]
    pub period: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlastRadius {
    /// At most this many hosts acted on per window...
    #[serde(default)]
    pub max_hosts: Option<u32>,
    /// ...and at most this percentage of the drones the target matches.
    #[serde(default)]
    pub max_percent: Option<f64>,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

/// What the hive counted for one firing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// When this rule last fired for the same rendered cooldown key.
    pub last_fired_for_key: Option<DateTime<Utc>>,
    /// Jobs of this rule not yet finished. Counted only when the policy
    /// has `max_concurrent`; 0 otherwise.
    pub running_jobs: u32,
    /// Hosts this rule acted on within the blast-radius window, other than
    /// those this firing requests (so the two counts add up to the distinct
    /// hosts acted on, each counted once).
    pub hosts_in_window: u32,
    /// Drones the rendered target matches now.
    pub matching_fleet: u32,
    /// Hosts this firing would act on.
    pub hosts_requested: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum Decision {
    Allow,
    /// Held: recorded, and a `core.escalation` event raised.
    Hold {
        reason: String,
    },
}

impl Decision {
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// Checks a policy is well formed, returning every problem: a zero cooldown
/// period or blast-radius window, a percentage outside `(0, 100]`, an empty
/// cooldown key, a blast radius with no limit. (The cooldown key's template
/// syntax is checked with [`crate::template::check`] by the pack loader.)
pub fn validate(policy: &Policy) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    if let Some(cooldown) = &policy.cooldown {
        if cooldown.key.trim().is_empty() {
            problems.push(
                "cooldown.key is empty; use a constant such as \"all\" for one cooldown per rule"
                    .to_string(),
            );
        }
        if cooldown.period.is_zero() {
            problems.push("cooldown.period is 0; remove the cooldown instead".to_string());
        }
    }
    if let Some(blast) = &policy.blast_radius {
        if blast.window.is_zero() {
            problems.push(
                "blast_radius.window is 0; it must be a positive duration such as 1h".to_string(),
            );
        }
        if let Some(percent) = blast.max_percent
            && !(percent > 0.0 && percent <= 100.0)
        {
            problems.push(format!(
                "blast_radius.max_percent is {percent}; it must be more than 0 and at most 100"
            ));
        }
        if blast.max_hosts.is_none() && blast.max_percent.is_none() {
            problems.push(
                "blast_radius sets neither max_hosts nor max_percent, so it limits nothing"
                    .to_string(),
            );
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

pub fn decide(policy: &Policy, observed: &Observation, now: DateTime<Utc>) -> Decision {
    match hold_reason(policy, observed, now) {
        Some(reason) => Decision::Hold { reason },
        None => Decision::Allow,
    }
}

fn hold_reason(policy: &Policy, observed: &Observation, now: DateTime<Utc>) -> Option<String> {
    if let (Some(cooldown), Some(last)) = (&policy.cooldown, observed.last_fired_for_key) {
        // A negative elapsed time (another replica's clock ahead of ours)
        // must hold rather than wrap around to "long ago".
        let elapsed = (now - last).to_std().unwrap_or(Duration::ZERO);
        if elapsed < cooldown.period {
            return Some(format!(
                "Cooldown: the rule fired for this key {} ago, within its cooldown of {}.",
                whole_seconds(elapsed),
                humantime::format_duration(cooldown.period)
            ));
        }
    }

    if let Some(max) = policy.max_concurrent
        && observed.running_jobs >= max
    {
        return Some(format!(
            "Concurrency: {} {} of this rule {} running, and at most {max} may run at once.",
            observed.running_jobs,
            plural(observed.running_jobs, "job", "jobs"),
            plural(observed.running_jobs, "is", "are"),
        ));
    }

    if let Some(blast) = &policy.blast_radius {
        // u64: two u32 counts cannot overflow it, and times 100 neither.
        let total = u64::from(observed.hosts_in_window) + u64::from(observed.hosts_requested);
        let window = humantime::format_duration(blast.window);
        if let Some(max_hosts) = blast.max_hosts
            && total > u64::from(max_hosts)
        {
            return Some(format!(
                "Blast radius: {} {} acted on in the last {window} plus {} requested makes {total}, more than the limit of {max_hosts}.",
                observed.hosts_in_window,
                plural(observed.hosts_in_window, "host", "hosts"),
                observed.hosts_requested,
            ));
        }
        if let Some(max_percent) = blast.max_percent {
            let limit = percent_text(max_percent);
            if observed.matching_fleet == 0 {
                return Some(format!(
                    "Blast radius: the target matches no drones, so a limit of {limit} of them allows none."
                ));
            }
            // Compare total/fleet*100 > max without dividing, so integer
            // percentages are decided exactly; NaN fails `<=` and holds.
            let fleet = f64::from(observed.matching_fleet);
            let within = (total as f64) * 100.0 <= max_percent * fleet;
            if !within {
                let share = (total as f64) * 100.0 / fleet;
                return Some(format!(
                    "Blast radius: {} {} acted on in the last {window} plus {} requested makes {total} of {} matching drones ({}), more than the limit of {limit}.",
                    observed.hosts_in_window,
                    plural(observed.hosts_in_window, "host", "hosts"),
                    observed.hosts_requested,
                    observed.matching_fleet,
                    percent_text(share),
                ));
            }
        }
    }
    None
}

fn plural<'a>(n: u32, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// Sub-second precision in a sentence is noise ("2m 3s 120ms 5us").
fn whole_seconds(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(duration.as_secs()))
}

/// `25%`, `12.5%`, `33.3%`: one decimal at most, none when it is zero.
fn percent_text(percent: f64) -> String {
    let text = format!("{percent:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text}%")
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0)
            .single()
            .expect("valid")
    }

    fn observed() -> Observation {
        Observation {
            last_fired_for_key: None,
            running_jobs: 0,
            hosts_in_window: 0,
            matching_fleet: 10,
            hosts_requested: 1,
        }
    }

    fn cooldown(period_secs: u64) -> Option<Cooldown> {
        Some(Cooldown {
            key: "{{ labels.instance }}".into(),
            period: Duration::from_secs(period_secs),
        })
    }

    fn blast(max_hosts: Option<u32>, max_percent: Option<f64>) -> Option<BlastRadius> {
        Some(BlastRadius {
            max_hosts,
            max_percent,
            window: Duration::from_secs(3600),
        })
    }

    fn hold(reason: &str) -> Decision {
        Decision::Hold {
            reason: reason.into(),
        }
    }

    #[test]
    fn decisions() {
        let secs = |s: i64| Some(now() - chrono::Duration::seconds(s));
        let cases: Vec<(&str, Policy, Observation, Decision)> = vec![
            ("no policy", Policy::default(), observed(), Decision::Allow),
            (
                "no policy, huge numbers",
                Policy::default(),
                Observation {
                    last_fired_for_key: Some(now()),
                    running_jobs: u32::MAX,
                    hosts_in_window: u32::MAX,
                    matching_fleet: 0,
                    hosts_requested: u32::MAX,
                },
                Decision::Allow,
            ),
            (
                "cooldown, never fired",
                Policy {
                    cooldown: cooldown(600),
                    ..Policy::default()
                },
                observed(),
                Decision::Allow,
            ),
            (
                "cooldown, fired within the period",
                Policy {
                    cooldown: cooldown(600),
                    ..Policy::default()
                },
                Observation {
                    last_fired_for_key: secs(150),
                    ..observed()
                },
                hold(
                    "Cooldown: the rule fired for this key 2m 30s ago, within its cooldown of 10m.",
                ),
            ),
            (
                "cooldown, sub-second elapsed is shown in whole seconds",
                Policy {
                    cooldown: cooldown(600),
                    ..Policy::default()
                },
                Observation {
                    last_fired_for_key: Some(now() - chrono::Duration::milliseconds(1500)),
                    ..observed()
                },
                hold("Cooldown: the rule fired for this key 1s ago, within its cooldown of 10m."),
            ),
            (
                "cooldown, exactly the period ago is over",
                Policy {
                    cooldown: cooldown(600),
                    ..Policy::default()
                },
                Observation {
                    last_fired_for_key: secs(600),
                    ..observed()
                },
                Decision::Allow,
            ),
            (
                "cooldown, last firing in the future (clock skew) holds",
                Policy {
                    cooldown: cooldown(600),
                    ..Policy::default()
                },
                Observation {
                    last_fired_for_key: secs(-30),
                    ..observed()
                },
                hold("Cooldown: the rule fired for this key 0s ago, within its cooldown of 10m."),
            ),
            (
                "last firing known but no cooldown configured",
                Policy::default(),
                Observation {
                    last_fired_for_key: secs(1),
                    ..observed()
                },
                Decision::Allow,
            ),
            (
                "concurrency below the limit",
                Policy {
                    max_concurrent: Some(2),
                    ..Policy::default()
                },
                Observation {
                    running_jobs: 1,
                    ..observed()
                },
                Decision::Allow,
            ),
            (
                "concurrency at the limit",
                Policy {
                    max_concurrent: Some(2),
                    ..Policy::default()
                },
                Observation {
                    running_jobs: 2,
                    ..observed()
                },
                hold(
                    "Concurrency: 2 jobs of this rule are running, and at most 2 may run at once.",
                ),
            ),
            (
                "concurrency of one",
                Policy {
                    max_concurrent: Some(1),
                    ..Policy::default()
                },
                Observation {
                    running_jobs: 1,
                    ..observed()
                },
                hold("Concurrency: 1 job of this rule is running, and at most 1 may run at once."),
            ),
            (
                "max_concurrent 0 pauses the rule",
                Policy {
                    max_concurrent: Some(0),
                    ..Policy::default()
                },
                observed(),
                hold(
                    "Concurrency: 0 jobs of this rule are running, and at most 0 may run at once.",
                ),
            ),
            (
                "max hosts reached exactly",
                Policy {
                    blast_radius: blast(Some(5), None),
                    ..Policy::default()
                },
                Observation {
                    hosts_in_window: 3,
                    hosts_requested: 2,
                    ..observed()
                },
                Decision::Allow,
            ),
            (
                "max hosts exceeded",
                Policy {
                    blast_radius: blast(Some(5), None),
                    ..Policy::default()
                },
                Observation {
                    hosts_in_window: 4,
                    hosts_requested: 3,
                    ..observed()
                },
                hold(
                    "Blast radius: 4 hosts acted on in the last 1h plus 3 requested makes 7, more than the limit of 5.",
                ),
            ),
            (
                "max hosts, one host in window",
                Policy {
                    blast_radius: blast(Some(1), None),
                    ..Policy::default()
                },
                Observation {
                    hosts_in_window: 1,
                    hosts_requested: 1,
                    ..observed()
                },
                hold(
                    "Blast radius: 1 host acted on in the last 1h plus 1 requested makes 2, more than the limit of 1.",
                ),
            ),
            (
                "max hosts with overflowing counts",
                Policy {
                    blast_radius: blast(Some(u32::MAX), None),
                    ..Policy::default()
                },
                Observation {
                    hosts_in_window: u32::MAX,
                    hosts_requested: 1,
                    ..observed()
                },
                hold(
                    "Blast radius: 4294967295 hosts acted on in the last 1h plus 1 requested makes 4294967296, more than the limit of 4294967295.",
                ),
            ),
            (
                "percentage exactly at the limit",
                Policy {
                    blast_radius: blast(None, Some(20.0)),
                    ..Policy::default()
                },
                Observation {
                    hosts_in_window: 1,
                    hosts_requested: 1,
                    matching_fleet: 10,
                    ..observed()
                },
                Decision::Allow,
            ),
            (
                "percentage over the limit",
                Policy {
                    blast_radius: blast(None, Some(25.0)),
                    ..Policy::default()
                },
                Observation {
                    hosts_in_window: 4,
                    hosts_requested: 3,
                    matching_fleet: 20,
                    ..observed()
                },
                hold(
                    "Blast radius: 4 hosts acted on in the last 1h plus 3 requested makes 7 of 20 matching drones (35%), more than the limit of 25%.",
                ),
            ),
            (
                "percentage just over the limit is not truncated away",
                Policy {
                    blast_radius: blast(None, Some(10.0)),
                    ..Policy::default()
                },
                Observation {
                    hosts_in_window: 10,
                    hosts_requested: 1,
                    matching_fleet: 100,
                    ..observed()
                },
                hold(
                    "Blast radius: 10 hosts acted on in the last 1h plus 1 requested makes 11 of 100 matching drones (11%), more than the limit of 10%.",
                ),
            ),
            (
                "fractional percentages",
                Policy {
                    blast_radius: blast(None, Some(12.5)),
                    ..Policy::default()
                },
                Observation {
                    hosts_in_window: 0,
                    hosts_requested: 1,
                    matching_fleet: 3,
                    ..observed()
                },
                hold(
                    "Blast radius: 0 hosts acted on in the last 1h plus 1 requested makes 1 of 3 matching drones (33.3%), more than the limit of 12.5%.",
                ),
            ),
            (
                "percentage with an empty fleet holds",
                Policy {
                    blast_radius: blast(None, Some(50.0)),
                    ..Policy::default()
                },
                Observation {
                    matching_fleet: 0,
                    hosts_requested: 0,
                    ..observed()
                },
                hold(
                    "Blast radius: the target matches no drones, so a limit of 50% of them allows none.",
                ),
            ),
            (
                "an empty fleet is fine with only a host limit",
                Policy {
                    blast_radius: blast(Some(3), None),
                    ..Policy::default()
                },
                Observation {
                    matching_fleet: 0,
                    ..observed()
                },
                Decision::Allow,
            ),
            (
                "NaN percentage holds rather than allowing everything",
                Policy {
                    blast_radius: blast(None, Some(f64::NAN)),
                    ..Policy::default()
                },
                observed(),
                hold(
                    "Blast radius: 0 hosts acted on in the last 1h plus 1 requested makes 1 of 10 matching drones (10%), more than the limit of NaN%.",
                ),
            ),
            (
                "blast radius with no limits",
                Policy {
                    blast_radius: blast(None, None),
                    ..Policy::default()
                },
                Observation {
                    hosts_in_window: 1000,
                    ..observed()
                },
                Decision::Allow,
            ),
            (
                "cooldown wins over concurrency and blast radius",
                Policy {
                    cooldown: cooldown(60),
                    max_concurrent: Some(1),
                    blast_radius: blast(Some(1), Some(1.0)),
                },
                Observation {
                    last_fired_for_key: secs(10),
                    running_jobs: 5,
                    hosts_in_window: 5,
                    ..observed()
                },
                hold("Cooldown: the rule fired for this key 10s ago, within its cooldown of 1m."),
            ),
            (
                "concurrency wins over blast radius",
                Policy {
                    cooldown: cooldown(60),
                    max_concurrent: Some(1),
                    blast_radius: blast(Some(1), Some(1.0)),
                },
                Observation {
                    last_fired_for_key: secs(61),
                    running_jobs: 5,
                    hosts_in_window: 5,
                    ..observed()
                },
                hold(
                    "Concurrency: 5 jobs of this rule are running, and at most 1 may run at once.",
                ),
            ),
            (
                "host count wins over percentage",
                Policy {
                    blast_radius: blast(Some(1), Some(1.0)),
                    ..Policy::default()
                },
                Observation {
                    hosts_in_window: 5,
                    ..observed()
                },
                hold(
                    "Blast radius: 5 hosts acted on in the last 1h plus 1 requested makes 6, more than the limit of 1.",
                ),
            ),
            (
                "everything configured, all within",
                Policy {
                    cooldown: cooldown(60),
                    max_concurrent: Some(2),
                    blast_radius: blast(Some(3), Some(30.0)),
                },
                Observation {
                    last_fired_for_key: secs(3600),
                    running_jobs: 1,
                    hosts_in_window: 2,
                    matching_fleet: 10,
                    hosts_requested: 1,
                },
                Decision::Allow,
            ),
        ];
        for (name, policy, observation, want) in cases {
            assert_eq!(decide(&policy, &observation, now()), want, "{name}");
        }
    }

    #[test]
    fn validation() {
        let ok = Policy {
            cooldown: cooldown(60),
            max_concurrent: Some(1),
            blast_radius: blast(Some(3), Some(100.0)),
        };
        assert_eq!(validate(&ok), Ok(()));
        assert_eq!(validate(&Policy::default()), Ok(()));
        let bad = Policy {
            cooldown: Some(Cooldown {
                key: " ".into(),
                period: Duration::ZERO,
            }),
            max_concurrent: None,
            blast_radius: Some(BlastRadius {
                max_hosts: None,
                max_percent: None,
                window: Duration::ZERO,
            }),
        };
        assert_eq!(
            validate(&bad),
            Err(vec![
                "cooldown.key is empty; use a constant such as \"all\" for one cooldown per rule"
                    .to_string(),
                "cooldown.period is 0; remove the cooldown instead".to_string(),
                "blast_radius.window is 0; it must be a positive duration such as 1h".to_string(),
                "blast_radius sets neither max_hosts nor max_percent, so it limits nothing"
                    .to_string(),
            ])
        );
        for percent in [0.0, -1.0, 100.5, f64::NAN, f64::INFINITY] {
            let policy = Policy {
                blast_radius: blast(None, Some(percent)),
                ..Policy::default()
            };
            let problems = validate(&policy).expect_err("out of range");
            assert_eq!(problems.len(), 1, "{percent}");
            assert!(
                problems[0].starts_with("blast_radius.max_percent is "),
                "{}",
                problems[0]
            );
        }
    }

    #[test]
    fn policies_deserialize_with_human_durations() {
        let policy: Policy = serde_json::from_value(serde_json::json!({
            "cooldown": {"key": "{{ labels.instance }}", "period": "10m"},
            "max_concurrent": 2,
            "blast_radius": {"max_hosts": 5, "max_percent": 25, "window": "1h"},
        }))
        .expect("valid policy");
        assert_eq!(
            policy.cooldown.expect("cooldown").period,
            Duration::from_secs(600)
        );
        assert_eq!(policy.blast_radius.expect("blast").max_percent, Some(25.0));
        let decision = serde_json::to_value(hold("x")).expect("serializes");
        assert_eq!(
            decision,
            serde_json::json!({"decision": "hold", "reason": "x"})
        );
    }

    fn any_policy() -> impl Strategy<Value = Policy> {
        (
            proptest::option::of((0u64..10_000).prop_map(|s| Cooldown {
                key: "k".into(),
                period: Duration::from_secs(s),
            })),
            proptest::option::of(0u32..20),
            proptest::option::of((
                proptest::option::of(0u32..50),
                proptest::option::of(prop_oneof![0.0f64..=100.0, Just(10.0), Just(100.0)]),
            )),
        )
            .prop_map(|(cooldown, max_concurrent, blast)| Policy {
                cooldown,
                max_concurrent,
                blast_radius: blast.map(|(max_hosts, max_percent)| BlastRadius {
                    max_hosts,
                    max_percent,
                    window: Duration::from_secs(3600),
                }),
            })
    }

    fn any_observation() -> impl Strategy<Value = Observation> {
        (
            proptest::option::of(-100i64..20_000),
            0u32..30,
            0u32..60,
            0u32..100,
            0u32..30,
        )
            .prop_map(
                |(ago, running_jobs, hosts_in_window, matching_fleet, hosts_requested)| {
                    Observation {
                        last_fired_for_key: ago.map(|s| now() - chrono::Duration::seconds(s)),
                        running_jobs,
                        hosts_in_window,
                        matching_fleet,
                        hosts_requested,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn allow_never_exceeds_a_configured_limit(policy in any_policy(), observation in any_observation()) {
            if decide(&policy, &observation, now()) == Decision::Allow {
                if let (Some(cooldown), Some(last)) = (&policy.cooldown, observation.last_fired_for_key) {
                    prop_assert!(now() - last >= chrono::Duration::from_std(cooldown.period).expect("small"));
                }
                if let Some(max) = policy.max_concurrent {
                    prop_assert!(observation.running_jobs < max);
                }
                let total = observation.hosts_in_window + observation.hosts_requested;
                if let Some(blast) = &policy.blast_radius {
                    if let Some(max) = blast.max_hosts {
                        prop_assert!(total <= max);
                    }
                    if let Some(max) = blast.max_percent {
                        prop_assert!(observation.matching_fleet > 0);
                        prop_assert!(f64::from(total) / f64::from(observation.matching_fleet) * 100.0 <= max + 1e-9);
                    }
                }
            }
        }

        #[test]
        fn no_policy_always_allows(observation in any_observation()) {
            prop_assert_eq!(decide(&Policy::default(), &observation, now()), Decision::Allow);
        }

        #[test]
        fn a_hold_names_its_reason_in_one_sentence(policy in any_policy(), observation in any_observation()) {
            if let Decision::Hold { reason } = decide(&policy, &observation, now()) {
                prop_assert!(
                    ["Cooldown: ", "Concurrency: ", "Blast radius: "].iter().any(|p| reason.starts_with(p)),
                    "{}", reason
                );
                prop_assert!(reason.ends_with('.') && !reason.contains('\n'));
            }
        }
    }
}
