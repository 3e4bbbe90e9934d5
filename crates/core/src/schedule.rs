//! Timer schedules: fixed intervals and 5-field cron expressions with a
//! time zone. Pure: given a schedule and an instant, the next fire time.
//!
//! # Intervals
//!
//! An interval of at least one second fires at every multiple of the
//! interval since the Unix epoch (1970-01-01T00:00:00Z), so every hive
//! replica computes the same ticks without talking to the others. `5m` fires
//! at :00, :05, :10...; `1d` at midnight UTC; `7d` on Thursdays (the epoch
//! was a Thursday). Use cron for anything tied to a local calendar.
//!
//! # Cron
//!
//! Exactly five fields: `minute hour day-of-month month day-of-week`.
//! Six- and seven-field forms (with seconds or years) are refused rather
//! than guessed at, because `0 */5 * * * *` means "every five minutes" in
//! one dialect and "every five hours" in another. Also accepted: names
//! (`MON`, `JAN`), ranges and steps (`1-5`, `*/15`, `10-50/10`), the
//! extensions `L` (last day), `W` (nearest weekday), `#` (nth weekday),
//! `+` (day-of-month AND day-of-week, instead of cron's usual OR), and the
//! nicknames `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`,
//! `@hourly`. An expression that can never fire (`0 0 30 2 *`) is refused.
//!
//! The expression is evaluated on the wall clock of `timezone`, an IANA
//! name (`Europe/Paris`; default `UTC`). Across daylight-saving changes:
//!
//! - **Spring forward** (a local hour is skipped): a job whose minute and
//!   hour are single values and fall in the gap runs once, at the first
//!   instant after the gap. In Europe/Paris on 2025-03-30, `30 2 * * *`
//!   runs at 03:00 local (01:00 UTC); on other days at 02:30. Jobs with a
//!   wildcard, range or step in the minute or hour field skip the times that
//!   do not exist.
//! - **Fall back** (a local hour happens twice): a single-valued job runs
//!   once, at the first of the two instants (`30 2 * * *` at 02:30 +02:00 in
//!   Paris on 2025-10-26); jobs with a wildcard, range or step run at every
//!   real instant, in both passes of the repeated hour.
//!
//! This is the behaviour of Vixie cron and of the Open Cron Pattern
//! Specification, implemented by the `croner` crate.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Interval(#[serde(with = "humantime_serde")] Duration),
    /// 5-field cron (`*/5 * * * *`) evaluated in `timezone` (IANA name, default UTC).
    Cron {
        expression: String,
        timezone: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(pub String);

const NICKNAMES: &[&str] = &[
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@hourly",
];

impl Schedule {
    /// Validates the expression and time zone.
    pub fn check(&self) -> Result<(), ScheduleError> {
        match self {
            Schedule::Interval(every) => check_interval(*every),
            Schedule::Cron {
                expression,
                timezone,
            } => {
                let cron = parse_cron(expression)?;
                let tz = parse_timezone(timezone.as_deref())?;
                // A pattern no date satisfies (30 February) parses fine; find
                // out now rather than when the timer loop first asks.
                let probe = Utc
                    .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
                    .single()
                    .unwrap_or_default();
                match cron.find_next_occurrence(&probe.with_timezone(&tz), false) {
                    Ok(_) => Ok(()),
                    Err(CronError::TimeSearchLimitExceeded) => Err(ScheduleError(format!(
                        "cron expression {expression:?} never fires: no date matches it"
                    ))),
                    Err(error) => Err(ScheduleError(format!(
                        "cron expression {expression:?}: {error}"
                    ))),
                }
            }
        }
    }

    /// The first fire time strictly after `after`. Interval ticks are
    /// aligned to the Unix epoch, so every replica computes the same ticks.
    pub fn next_after(&self, after: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        match self {
            Schedule::Interval(every) => {
                check_interval(*every)?;
                next_interval_tick(*every, after)
            }
            Schedule::Cron {
                expression,
                timezone,
            } => {
                let cron = parse_cron(expression)?;
                let tz = parse_timezone(timezone.as_deref())?;
                cron.find_next_occurrence(&after.with_timezone(&tz), false)
                    .map(|next| next.with_timezone(&Utc))
                    .map_err(|error| match error {
                        CronError::TimeSearchLimitExceeded => ScheduleError(format!(
                            "cron expression {expression:?} does not fire after {}",
                            after.to_rfc3339()
                        )),
                        other => ScheduleError(format!("cron expression {expression:?}: {other}")),
                    })
            }
        }
    }
}

fn check_interval(every: Duration) -> Result<(), ScheduleError> {
    if every.is_zero() {
        return Err(ScheduleError("the interval must be more than 0".into()));
    }
    if every < Duration::from_secs(1) {
        return Err(ScheduleError(format!(
            "the interval {} is too short: it must be at least 1s",
            humantime::format_duration(every)
        )));
    }
    Ok(())
}

fn next_interval_tick(
    every: Duration,
    after: DateTime<Utc>,
) -> Result<DateTime<Utc>, ScheduleError> {
    const NANOS_PER_SEC: i128 = 1_000_000_000;
    let period = every.as_nanos() as i128;
    let at =
        i128::from(after.timestamp()) * NANOS_PER_SEC + i128::from(after.timestamp_subsec_nanos());
    // Euclidean division so instants before the epoch round towards the
    // past too, keeping ticks at exact multiples on both sides.
    let next = (at.div_euclid(period) + 1) * period;
    let secs = i64::try_from(next.div_euclid(NANOS_PER_SEC)).ok();
    let nanos = u32::try_from(next.rem_euclid(NANOS_PER_SEC)).ok();
    secs.zip(nanos)
        .and_then(|(secs, nanos)| DateTime::from_timestamp(secs, nanos))
        .ok_or_else(|| {
            ScheduleError(format!(
                "the next {} tick after {} is beyond the supported range of dates",
                humantime::format_duration(every),
                after.to_rfc3339()
            ))
        })
}

fn parse_cron(expression: &str) -> Result<Cron, ScheduleError> {
    let trimmed = expression.trim();
    if trimmed.starts_with('@') {
        if !NICKNAMES.iter().any(|n| n.eq_ignore_ascii_case(trimmed)) {
            return Err(ScheduleError(format!(
                "unknown cron nickname {trimmed:?}; known: {}",
                NICKNAMES.join(", ")
            )));
        }
    } else {
        let fields = trimmed.split_whitespace().count();
        match fields {
            5 => {}
            6 | 7 => {
                return Err(ScheduleError(format!(
                    "cron expression {expression:?} has {fields} fields; only the 5-field form \
                     (minute hour day-of-month month day-of-week) is supported, without seconds or years"
                )));
            }
            _ => {
                return Err(ScheduleError(format!(
                    "cron expression {expression:?} has {fields} fields; expected 5: \
                     minute hour day-of-month month day-of-week"
                )));
            }
        }
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(trimmed)
        .map_err(|error| ScheduleError(format!("invalid cron expression {expression:?}: {error}")))
}

fn parse_timezone(name: Option<&str>) -> Result<Tz, ScheduleError> {
    let Some(name) = name else { return Ok(Tz::UTC) };
    Tz::from_str(name).map_err(|_| {
        let suggestion = chrono_tz::TZ_VARIANTS
            .iter()
            .find(|tz| tz.name().eq_ignore_ascii_case(name))
            .map(|tz| format!("did you mean {}?", tz.name()))
            .unwrap_or_else(|| {
                "use an IANA name such as Europe/Paris, America/New_York or UTC".to_string()
            });
        ScheduleError(format!("unknown time zone {name:?}; {suggestion}"))
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("valid RFC 3339")
            .with_timezone(&Utc)
    }

    fn cron(expression: &str, timezone: Option<&str>) -> Schedule {
        Schedule::Cron {
            expression: expression.into(),
            timezone: timezone.map(str::to_string),
        }
    }

    fn every(secs: u64) -> Schedule {
        Schedule::Interval(Duration::from_secs(secs))
    }

    /// The next `n` fire times after `start`, as RFC 3339 in UTC.
    fn run(schedule: &Schedule, start: &str, n: usize) -> Vec<String> {
        let mut at = utc(start);
        (0..n)
            .map(|_| {
                at = schedule.next_after(at).expect("fires");
                at.to_rfc3339()
            })
            .collect()
    }

    #[test]
    fn checks() {
        let ok: Vec<Schedule> = vec![
            every(1),
            every(300),
            Schedule::Interval(Duration::from_millis(1500)),
            cron("*/5 * * * *", None),
            cron("  0 9 * * MON-FRI  ", Some("Europe/Paris")),
            cron("0 0 L * *", Some("America/New_York")),
            cron("0 0 * * 5#2", Some("UTC")),
            cron("0 0 29 2 *", None),
            cron("@daily", None),
            cron("@HOURLY", Some("Asia/Tokyo")),
        ];
        for schedule in ok {
            assert_eq!(schedule.check(), Ok(()), "{schedule:?}");
        }

        let bad: Vec<(Schedule, &str)> = vec![
            (
                Schedule::Interval(Duration::ZERO),
                "the interval must be more than 0",
            ),
            (
                Schedule::Interval(Duration::from_millis(500)),
                "the interval 500ms is too short: it must be at least 1s",
            ),
            (
                cron("0 */5 * * * *", None),
                "cron expression \"0 */5 * * * *\" has 6 fields; only the 5-field form (minute hour day-of-month month day-of-week) is supported, without seconds or years",
            ),
            (
                cron("0 0 12 * * ? 2030", None),
                "cron expression \"0 0 12 * * ? 2030\" has 7 fields; only the 5-field form (minute hour day-of-month month day-of-week) is supported, without seconds or years",
            ),
            (
                cron("* * * *", None),
                "cron expression \"* * * *\" has 4 fields; expected 5: minute hour day-of-month month day-of-week",
            ),
            (
                cron("", None),
                "cron expression \"\" has 0 fields; expected 5: minute hour day-of-month month day-of-week",
            ),
            (
                cron("@reboot", None),
                "unknown cron nickname \"@reboot\"; known: @yearly, @annually, @monthly, @weekly, @daily, @hourly",
            ),
            (
                cron("61 * * * *", None),
                "invalid cron expression \"61 * * * *\": Component error: Number out of bounds.",
            ),
            (
                cron("0 0 30 2 *", None),
                "cron expression \"0 0 30 2 *\" never fires: no date matches it",
            ),
            (
                cron("0 0 31 4 *", None),
                "cron expression \"0 0 31 4 *\" never fires: no date matches it",
            ),
            (
                cron("0 9 * * *", Some("Europe/Pariss")),
                "unknown time zone \"Europe/Pariss\"; use an IANA name such as Europe/Paris, America/New_York or UTC",
            ),
            (
                cron("0 9 * * *", Some("europe/paris")),
                "unknown time zone \"europe/paris\"; did you mean Europe/Paris?",
            ),
            (
                cron("0 9 * * *", Some("")),
                "unknown time zone \"\"; use an IANA name such as Europe/Paris, America/New_York or UTC",
            ),
            (
                cron("0 9 * * *", Some("+02:00")),
                "unknown time zone \"+02:00\"; use an IANA name such as Europe/Paris, America/New_York or UTC",
            ),
        ];
        for (schedule, want) in bad {
            assert_eq!(
                schedule.check(),
                Err(ScheduleError(want.into())),
                "{schedule:?}"
            );
        }
        // Parse errors from the cron crate are passed on, with the expression.
        for expression in ["0/5 * * * *", "a b c d e", "* * * 13 *", "1-x * * * *"] {
            let error = cron(expression, None).check().expect_err(expression).0;
            assert!(
                error.starts_with(&format!("invalid cron expression {expression:?}: ")),
                "{error}"
            );
        }
    }

    #[test]
    fn intervals_tick_on_multiples_of_the_interval_since_the_epoch() {
        let cases: Vec<(Schedule, &str, &str)> = vec![
            (
                every(300),
                "2025-06-01T12:03:10Z",
                "2025-06-01T12:05:00+00:00",
            ),
            (
                every(300),
                "2025-06-01T12:05:00Z",
                "2025-06-01T12:10:00+00:00",
            ),
            (
                every(300),
                "2025-06-01T12:04:59.999999999Z",
                "2025-06-01T12:05:00+00:00",
            ),
            (
                every(300),
                "2025-06-01T12:05:00.000000001Z",
                "2025-06-01T12:10:00+00:00",
            ),
            (
                every(1),
                "2025-06-01T12:00:00.5Z",
                "2025-06-01T12:00:01+00:00",
            ),
            (
                every(7),
                "1970-01-01T00:00:00Z",
                "1970-01-01T00:00:07+00:00",
            ),
            (
                every(86_400),
                "2025-06-01T23:59:59Z",
                "2025-06-02T00:00:00+00:00",
            ),
            // The epoch was a Thursday, so weekly ticks land on Thursdays.
            (
                every(7 * 86_400),
                "2025-06-01T00:00:00Z",
                "2025-06-05T00:00:00+00:00",
            ),
            // Before the epoch too.
            (
                every(60),
                "1969-12-31T23:58:30Z",
                "1969-12-31T23:59:00+00:00",
            ),
            (
                every(60),
                "1969-12-31T23:59:00Z",
                "1970-01-01T00:00:00+00:00",
            ),
            (
                Schedule::Interval(Duration::from_millis(1500)),
                "1970-01-01T00:00:02Z",
                "1970-01-01T00:00:03+00:00",
            ),
            (
                Schedule::Interval(Duration::from_millis(1500)),
                "1970-01-01T00:00:03Z",
                "1970-01-01T00:00:04.500+00:00",
            ),
        ];
        for (schedule, after, want) in cases {
            assert_eq!(
                schedule.next_after(utc(after)).map(|t| t.to_rfc3339()),
                Ok(want.to_string()),
                "{after}"
            );
        }
        assert_eq!(
            Schedule::Interval(Duration::ZERO).next_after(utc("2025-01-01T00:00:00Z")),
            Err(ScheduleError("the interval must be more than 0".into()))
        );
        let huge = Schedule::Interval(Duration::from_secs(u64::MAX));
        let error = huge
            .next_after(utc("2025-01-01T00:00:00Z"))
            .expect_err("out of range");
        assert!(
            error.0.contains("beyond the supported range of dates"),
            "{error}"
        );
    }

    #[test]
    fn cron_in_utc_and_in_a_time_zone() {
        assert_eq!(
            run(&cron("*/15 * * * *", None), "2025-06-01T12:07:00Z", 3),
            [
                "2025-06-01T12:15:00+00:00",
                "2025-06-01T12:30:00+00:00",
                "2025-06-01T12:45:00+00:00"
            ]
        );
        // Strictly after: a fire time is not returned again.
        assert_eq!(
            run(&cron("*/15 * * * *", None), "2025-06-01T12:15:00Z", 1),
            ["2025-06-01T12:30:00+00:00"]
        );
        assert_eq!(
            run(&cron("* * * * *", None), "2025-06-01T12:15:00.5Z", 1),
            ["2025-06-01T12:16:00+00:00"]
        );
        // 09:00 Paris on weekdays: 08:00 UTC in winter, 07:00 UTC in summer.
        // 2025-01-03 is a Friday.
        assert_eq!(
            run(
                &cron("0 9 * * 1-5", Some("Europe/Paris")),
                "2025-01-03T09:00:00Z",
                2
            ),
            ["2025-01-06T08:00:00+00:00", "2025-01-07T08:00:00+00:00"]
        );
        assert_eq!(
            run(
                &cron("0 9 * * MON-FRI", Some("Europe/Paris")),
                "2025-07-01T00:00:00Z",
                1
            ),
            ["2025-07-01T07:00:00+00:00"]
        );
        assert_eq!(
            run(&cron("0 0 L * *", None), "2024-02-01T00:00:00Z", 1),
            ["2024-02-29T00:00:00+00:00"]
        );
        assert_eq!(
            run(&cron("0 0 29 2 *", None), "2025-01-01T00:00:00Z", 1),
            ["2028-02-29T00:00:00+00:00"]
        );
        assert_eq!(
            run(&cron("@weekly", None), "2025-06-01T00:00:00Z", 1),
            ["2025-06-08T00:00:00+00:00"]
        );
        assert_eq!(
            run(
                &cron("0 12 * * *", Some("Asia/Kolkata")),
                "2025-06-01T00:00:00Z",
                1
            ),
            ["2025-06-01T06:30:00+00:00"]
        );
    }

    #[test]
    fn a_fixed_time_job_in_the_spring_forward_gap_runs_at_the_end_of_the_gap() {
        // Paris, 2025-03-30: 02:00 CET becomes 03:00 CEST.
        assert_eq!(
            run(
                &cron("30 2 * * *", Some("Europe/Paris")),
                "2025-03-29T00:00:00Z",
                3
            ),
            [
                "2025-03-29T01:30:00+00:00", // 02:30 CET
                "2025-03-30T01:00:00+00:00", // 03:00 CEST: 02:30 does not exist
                "2025-03-31T00:30:00+00:00", // 02:30 CEST
            ]
        );
        // New York, 2025-03-09: 02:00 EST becomes 03:00 EDT.
        assert_eq!(
            run(
                &cron("30 2 * * *", Some("America/New_York")),
                "2025-03-08T00:00:00Z",
                3
            ),
            [
                "2025-03-08T07:30:00+00:00",
                "2025-03-09T07:00:00+00:00",
                "2025-03-10T06:30:00+00:00"
            ]
        );
        // Jobs with a wildcard or step in the hour skip the missing times.
        assert_eq!(
            run(
                &cron("30 * * * *", Some("Europe/Paris")),
                "2025-03-30T00:00:00Z",
                3
            ),
            [
                "2025-03-30T00:30:00+00:00", // 01:30 CET
                "2025-03-30T01:30:00+00:00", // 03:30 CEST
                "2025-03-30T02:30:00+00:00", // 04:30 CEST
            ]
        );
    }

    #[test]
    fn a_fixed_time_job_in_the_fall_back_overlap_runs_once() {
        // Paris, 2025-10-26: 03:00 CEST becomes 02:00 CET, so 02:30 happens twice.
        assert_eq!(
            run(
                &cron("30 2 * * *", Some("Europe/Paris")),
                "2025-10-25T12:00:00Z",
                3
            ),
            [
                "2025-10-26T00:30:00+00:00", // the first 02:30 (CEST)
                "2025-10-27T01:30:00+00:00", // 02:30 CET
                "2025-10-28T01:30:00+00:00",
            ]
        );
        // New York, 2025-11-02: 02:00 EDT becomes 01:00 EST.
        assert_eq!(
            run(
                &cron("30 1 * * *", Some("America/New_York")),
                "2025-11-01T12:00:00Z",
                2
            ),
            ["2025-11-02T05:30:00+00:00", "2025-11-03T06:30:00+00:00"]
        );
        // A stepped job fires at each real instant, in both passes.
        assert_eq!(
            run(
                &cron("*/30 * * * *", Some("Europe/Paris")),
                "2025-10-26T00:10:00Z",
                5
            ),
            [
                "2025-10-26T00:30:00+00:00", // 02:30 CEST
                "2025-10-26T01:00:00+00:00", // 02:00 CET
                "2025-10-26T01:30:00+00:00", // 02:30 CET
                "2025-10-26T02:00:00+00:00", // 03:00 CET
                "2025-10-26T02:30:00+00:00",
            ]
        );
    }

    #[test]
    fn next_after_reports_invalid_schedules_instead_of_panicking() {
        let at = utc("2025-01-01T00:00:00Z");
        for schedule in [
            cron("0 0 30 2 *", None),
            cron("nope", None),
            cron("* * * * *", Some("Mars/Olympus")),
        ] {
            assert!(schedule.next_after(at).is_err(), "{schedule:?}");
        }
    }

    #[test]
    fn schedules_deserialize() {
        let interval: Schedule =
            serde_json::from_value(serde_json::json!({"interval": "5m"})).expect("valid");
        assert_eq!(interval, every(300));
        let cron_schedule: Schedule = serde_json::from_value(
            serde_json::json!({"cron": {"expression": "0 9 * * *", "timezone": "Europe/Paris"}}),
        )
        .expect("valid");
        assert_eq!(cron_schedule, cron("0 9 * * *", Some("Europe/Paris")));
    }

    proptest! {
        #[test]
        fn interval_ticks_are_aligned_and_within_one_period(
            secs in 1u64..100_000,
            at in -2_000_000_000i64..4_000_000_000,
            nanos in 0u32..1_000_000_000,
        ) {
            let after = DateTime::from_timestamp(at, nanos).expect("in range");
            let next = every(secs).next_after(after).expect("in range");
            prop_assert!(next > after);
            prop_assert!(next - after <= chrono::Duration::seconds(secs as i64));
            prop_assert_eq!(next.timestamp_subsec_nanos(), 0);
            prop_assert_eq!(next.timestamp().rem_euclid(secs as i64), 0);
        }

        #[test]
        fn cron_fire_times_are_strictly_later_and_match(
            minute_step in prop::sample::select(vec![1u32, 5, 15, 30]),
            at in 0i64..4_000_000_000,
            zone in prop::sample::select(vec!["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe"]),
        ) {
            let schedule = cron(&format!("*/{minute_step} * * * *"), Some(zone));
            let after = DateTime::from_timestamp(at, 0).expect("in range");
            let next = schedule.next_after(after).expect("fires");
            prop_assert!(next > after);
            prop_assert!(next - after <= chrono::Duration::minutes(i64::from(minute_step)));
            prop_assert_eq!(next.timestamp() % 60, 0);
        }
    }
}
