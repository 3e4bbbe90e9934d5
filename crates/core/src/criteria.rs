//! Rule criteria: conditions over an event's payload, addressed by path.
//!
//! Criteria are a list (all must hold) so that YAML's duplicate-key rule can
//! never silently drop one. Groups `any`, `all` and `not` nest.
//!
//! ```yaml
//! criteria:
//!   - match: {path: status, op: equals, value: firing}
//!   - match: {path: labels.severity, op: in, value: [critical, page]}
//!   - any:
//!       - match: {path: labels.instance, op: wildcard, value: "web-*"}
//!       - match: {path: labels.job, op: regex, value: "^node(-exporter)?$"}
//!   - not:
//!       match: {path: labels.silenced, op: exists}
//! ```
//!
//! # Paths
//!
//! A path is dotted: `labels.severity`. A segment that is a number indexes
//! an array (`alerts.0.labels.instance`). Keys that themselves contain dots
//! are found too: `labels.app.kubernetes.io/name` reads the label
//! `app.kubernetes.io/name` (the shortest key that leads to a value wins).
//! A path exists when it leads to a value, even a JSON `null`. When it does
//! not, every operator is false except `nexists`, which is true.
//!
//! # Operators
//!
//! | op | true when the payload value... | criterion `value` |
//! | --- | --- | --- |
//! | `equals` | equals the value (JSON equality: `80` equals `80.0`, but not `"80"`) | any |
//! | `nequals` | exists and does not equal the value | any |
//! | `iequals` | is a string equal to the value ignoring case | string |
//! | `contains` | is a string containing the value, an array with an element equal to it, or an object with it as a key | any |
//! | `icontains` | like `contains`, ignoring case for strings | string |
//! | `startswith`, `endswith` | is a string starting/ending with the value | string |
//! | `regex`, `iregex` | is a string in which the regex finds a match (a search, like Python's `re.search`; anchor with `^...$` for a full match); `iregex` ignores case | a regex ([`regex`](https://docs.rs/regex) syntax) |
//! | `wildcard` | is a string the shell glob matches whole: `*` any run, `?` one character, `[abc]`, `[a-z]`, `[!a-z]` one character of (or outside) a class; case-sensitive; an unclosed `[` is literal | string |
//! | `gt`, `lt` | is a number greater/less than the value | number |
//! | `exists`, `nexists` | exists / does not exist | none |
//! | `in`, `nin` | equals one / none of the values (`nin` needs the path to exist) | non-empty list |
//! | `timediff_lt`, `timediff_gt` | is an RFC 3339 time less/more than the duration before now (a future time is "less than any duration ago") | duration: `10m`, `1h 30m`, or a number of seconds |
//!
//! For `gt` and `lt`, a string that parses as a number (`"80"`, `" 2.5 "`)
//! counts as that number, on either side. Other strings are never compared
//! (not even lexically: `"10" < "9"` as text would surprise), so a
//! non-numeric value makes both false. Integers compare exactly, others as
//! 64-bit floats.
//!
//! # Groups
//!
//! `any` holds when at least one member does, `all` when every member does,
//! `not` when its member does not. Empty groups are invalid.
//!
//! # Reasons
//!
//! When criteria do not match, [`Evaluation::reasons`] has one sentence per
//! failing condition, with the path, what the payload holds and what was
//! expected: `labels.severity is "warning", expected one of
//! ["critical","page"]`; `labels.team does not exist`. Inside a `not`, the
//! expectation is turned around (`expected anything but "critical"`).
//!
//! # Regexes
//!
//! Regexes are compiled when first used and kept in a small per-thread cache
//! (at most 256), since the same rules are evaluated against every event.
//! The `regex` crate runs in linear time, so no pattern can hang evaluation.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::glob::Glob;
use chrono::{DateTime, TimeDelta, Utc};
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One condition or a group of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// `path` is dotted (`labels.alertname`, `alerts.0.status`); `value` is
    /// absent for `exists`/`nexists`.
    Match {
        path: String,
        op: Operator,
        value: Option<Value>,
    },
    Any(Vec<Criterion>),
    All(Vec<Criterion>),
    Not(Box<Criterion>),
}

/// The StackStorm operator set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    Equals,
    Iequals,
    Nequals,
    Contains,
    Icontains,
    Startswith,
    Endswith,
    Regex,
    Iregex,
    Wildcard,
    Gt,
    Lt,
    Exists,
    Nexists,
    In,
    Nin,
    TimediffLt,
    TimediffGt,
}

impl Operator {
    pub const ALL: [Operator; 18] = [
        Operator::Equals,
        Operator::Iequals,
        Operator::Nequals,
        Operator::Contains,
        Operator::Icontains,
        Operator::Startswith,
        Operator::Endswith,
        Operator::Regex,
        Operator::Iregex,
        Operator::Wildcard,
        Operator::Gt,
        Operator::Lt,
        Operator::Exists,
        Operator::Nexists,
        Operator::In,
        Operator::Nin,
        Operator::TimediffLt,
        Operator::TimediffGt,
    ];

    /// The name used in rule files: `timediff_lt`.
    pub fn name(self) -> &'static str {
        match self {
            Operator::Equals => "equals",
            Operator::Iequals => "iequals",
            Operator::Nequals => "nequals",
            Operator::Contains => "contains",
            Operator::Icontains => "icontains",
            Operator::Startswith => "startswith",
            Operator::Endswith => "endswith",
            Operator::Regex => "regex",
            Operator::Iregex => "iregex",
            Operator::Wildcard => "wildcard",
            Operator::Gt => "gt",
            Operator::Lt => "lt",
            Operator::Exists => "exists",
            Operator::Nexists => "nexists",
            Operator::In => "in",
            Operator::Nin => "nin",
            Operator::TimediffLt => "timediff_lt",
            Operator::TimediffGt => "timediff_gt",
        }
    }

    /// Whether the operator compares against a `value` (all but `exists`
    /// and `nexists`).
    pub fn takes_value(self) -> bool {
        !matches!(self, Operator::Exists | Operator::Nexists)
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The outcome of evaluating a rule's criteria against a payload, with the
/// reasons a person reads in `ultronctl rule test`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub matched: bool,
    /// For a miss: one sentence per failing condition, with the path, the
    /// payload's value and the expectation (`labels.severity is "warning",
    /// expected one of ["critical","page"]`; `labels.team does not exist`).
    /// For a match: empty.
    pub reasons: Vec<String>,
}

/// Evaluates every criterion (all must hold) against `payload`. A match
/// has no reasons.
pub fn evaluate(criteria: &[Criterion], payload: &Value, now: DateTime<Utc>) -> Evaluation {
    let mut reasons = Vec::new();
    let matched = conjunction(criteria, false, payload, now, &mut reasons);
    if matched {
        reasons.clear();
    }
    Evaluation { matched, reasons }
}

/// Whether every criterion holds for `payload`: [`evaluate`]'s verdict
/// without its reasons. It stops at the first criterion that fails and
/// writes no sentence, which is what a rules engine wants for the rules that
/// miss (most of them, for most events); `evaluate` explains on demand.
pub fn matches(criteria: &[Criterion], payload: &Value, now: DateTime<Utc>) -> bool {
    criteria
        .iter()
        .all(|criterion| satisfied(criterion, false, payload, now))
}

/// [`eval`] without reasons, short-circuiting; the same push-down of `not`.
fn satisfied(criterion: &Criterion, negated: bool, payload: &Value, now: DateTime<Utc>) -> bool {
    match criterion {
        Criterion::Match { path, op, value } => {
            apply(*op, lookup(payload, path), value.as_ref(), now).holds != negated
        }
        Criterion::All(members) | Criterion::Any(members) if members.is_empty() => negated,
        Criterion::All(members) if negated => members
            .iter()
            .any(|member| satisfied(member, true, payload, now)),
        Criterion::All(members) => members
            .iter()
            .all(|member| satisfied(member, false, payload, now)),
        Criterion::Any(members) if negated => members
            .iter()
            .all(|member| satisfied(member, true, payload, now)),
        Criterion::Any(members) => members
            .iter()
            .any(|member| satisfied(member, false, payload, now)),
        Criterion::Not(member) => satisfied(member, !negated, payload, now),
    }
}

/// Checks a criterion is well formed: the value suits the operator (a
/// list for `in`, a number for `gt`, a compiling regex, a duration for
/// `timediff_*`, no value for `exists`). Returns the problem in words.
/// Every problem in a group is reported, separated by `; `.
pub fn validate(criterion: &Criterion) -> Result<(), String> {
    let mut problems = Vec::new();
    validate_into(criterion, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn validate_into(criterion: &Criterion, problems: &mut Vec<String>) {
    match criterion {
        Criterion::Match { path, op, value } => {
            if let Err(problem) = validate_match(path, *op, value.as_ref()) {
                problems.push(format!(
                    "{} {op}: {problem}",
                    if path.is_empty() {
                        "(empty path)"
                    } else {
                        path
                    }
                ));
            }
        }
        Criterion::Any(members) | Criterion::All(members) => {
            if members.is_empty() {
                let group = if matches!(criterion, Criterion::Any(_)) {
                    "any"
                } else {
                    "all"
                };
                problems.push(format!(
                    "an empty `{group}` group; give it at least one condition"
                ));
            }
            members
                .iter()
                .for_each(|member| validate_into(member, problems));
        }
        Criterion::Not(member) => validate_into(member, problems),
    }
}

fn validate_match(path: &str, op: Operator, value: Option<&Value>) -> Result<(), String> {
    if path.is_empty() {
        return Err("the path is empty".into());
    }
    if path.split('.').any(str::is_empty) {
        return Err("the path has an empty segment (a leading, trailing or doubled `.`)".into());
    }
    let Some(value) = value else {
        return if op.takes_value() {
            Err("needs a value".into())
        } else {
            Ok(())
        };
    };
    let shown = show(value);
    match op {
        Operator::Exists | Operator::Nexists => {
            Err(format!("takes no value, but was given {shown}"))
        }
        Operator::Equals | Operator::Nequals | Operator::Contains => Ok(()),
        Operator::Iequals
        | Operator::Icontains
        | Operator::Startswith
        | Operator::Endswith
        | Operator::Wildcard => match value {
            Value::String(_) => Ok(()),
            _ => Err(format!("needs a string, got {shown}")),
        },
        Operator::Regex | Operator::Iregex => match value {
            Value::String(pattern) => compile(pattern, op == Operator::Iregex)
                .map(drop)
                .map_err(|error| format!("the regex {shown} does not compile: {error}")),
            _ => Err(format!("needs a regex string, got {shown}")),
        },
        Operator::Gt | Operator::Lt => match number(value) {
            Some(_) => Ok(()),
            None => Err(format!("needs a number, got {shown}")),
        },
        Operator::In | Operator::Nin => match value {
            Value::Array(items) if items.is_empty() => {
                Err("needs a non-empty list of values".into())
            }
            Value::Array(_) => Ok(()),
            _ => Err(format!(
                "needs a list of values such as [\"critical\",\"page\"], got {shown}"
            )),
        },
        Operator::TimediffLt | Operator::TimediffGt => duration(value).map(drop),
    }
}

/// True when every member holds (under `negated`); keeps going after a
/// failure so that every failing condition is reported.
fn conjunction(
    members: &[Criterion],
    negated: bool,
    payload: &Value,
    now: DateTime<Utc>,
    reasons: &mut Vec<String>,
) -> bool {
    let mut all = true;
    for member in members {
        all &= eval(member, negated, payload, now, reasons);
    }
    all
}

/// True when at least one member holds (under `negated`); when none does,
/// the reasons of every member.
fn disjunction(
    members: &[Criterion],
    negated: bool,
    payload: &Value,
    now: DateTime<Utc>,
    reasons: &mut Vec<String>,
) -> bool {
    let mut own = Vec::new();
    for member in members {
        if eval(member, negated, payload, now, &mut own) {
            return true;
        }
    }
    reasons.extend(own);
    false
}

/// Evaluates one criterion; `negated` is true under an odd number of
/// `not`s, which are pushed down to the leaves (De Morgan: `not all` is
/// `any not`) so that each leaf's reason states what was really expected.
fn eval(
    criterion: &Criterion,
    negated: bool,
    payload: &Value,
    now: DateTime<Utc>,
    reasons: &mut Vec<String>,
) -> bool {
    match criterion {
        Criterion::Match { path, op, value } => {
            let actual = lookup(payload, path);
            let outcome = apply(*op, actual, value.as_ref(), now);
            let holds = outcome.holds != negated;
            if !holds {
                reasons.push(reason(
                    path,
                    *op,
                    value.as_ref(),
                    actual,
                    negated,
                    &outcome,
                    now,
                ));
            }
            holds
        }
        // Empty groups fail validation. Should one get here anyway, it never
        // matches (an empty `all` would otherwise match every event), and so
        // its negation always does.
        Criterion::All(members) | Criterion::Any(members) if members.is_empty() => {
            if !negated {
                let group = if matches!(criterion, Criterion::Any(_)) {
                    "any"
                } else {
                    "all"
                };
                reasons.push(format!("an empty `{group}` group matches nothing"));
            }
            negated
        }
        Criterion::All(members) if negated => disjunction(members, true, payload, now, reasons),
        Criterion::All(members) => conjunction(members, false, payload, now, reasons),
        Criterion::Any(members) if negated => conjunction(members, true, payload, now, reasons),
        Criterion::Any(members) => disjunction(members, false, payload, now, reasons),
        Criterion::Not(member) => eval(member, !negated, payload, now, reasons),
    }
}

/// The value at a dotted path, if there is one.
fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return None;
    }
    let segments: Vec<&str> = path.split('.').collect();
    // Trying keys with dots backtracks; a payload with keys `a`, `a.a`,
    // `a.a.a`... at every level would make that exponential in the path's
    // length, so the number of keys tried is capped.
    let mut budget = 10_000u32;
    lookup_segments(value, &segments, &mut budget)
}

fn lookup_segments<'a>(value: &'a Value, segments: &[&str], budget: &mut u32) -> Option<&'a Value> {
    let Some(first) = segments.first() else {
        return Some(value);
    };
    *budget = budget.checked_sub(1)?;
    match value {
        Value::Array(items) => {
            // Only plain decimal indexes: `+1` or `01` are not how anyone
            // writes an index and would hide typos.
            let canonical = !first.is_empty()
                && first.bytes().all(|b| b.is_ascii_digit())
                && (*first == "0" || !first.starts_with('0'));
            let index: usize = if canonical {
                first.parse().ok()?
            } else {
                return None;
            };
            lookup_segments(items.get(index)?, &segments[1..], budget)
        }
        Value::Object(map) => {
            // The shortest key first; then keys containing dots.
            let mut key = String::new();
            for (taken, segment) in segments.iter().enumerate() {
                if taken > 0 {
                    key.push('.');
                }
                key.push_str(segment);
                if let Some(child) = map.get(&key)
                    && let Some(found) = lookup_segments(child, &segments[taken + 1..], budget)
                {
                    return Some(found);
                }
            }
            None
        }
        _ => None,
    }
}

/// An operator's verdict on a leaf, with a note when it is false for a
/// reason the sentence would not otherwise show.
struct Outcome {
    holds: bool,
    note: Option<String>,
}

impl Outcome {
    fn from(holds: bool) -> Self {
        Outcome { holds, note: None }
    }

    fn because(note: impl Into<String>) -> Self {
        Outcome {
            holds: false,
            note: Some(note.into()),
        }
    }
}

fn apply(
    op: Operator,
    actual: Option<&Value>,
    expected: Option<&Value>,
    now: DateTime<Utc>,
) -> Outcome {
    let Some(actual) = actual else {
        return Outcome::from(op == Operator::Nexists);
    };
    match op {
        Operator::Exists => return Outcome::from(true),
        Operator::Nexists => return Outcome::from(false),
        _ => {}
    }
    let Some(expected) = expected else {
        return Outcome::because(format!(
            "the criterion has no value to compare with; `{op}` needs one"
        ));
    };
    match op {
        Operator::Exists | Operator::Nexists => Outcome::from(false),
        Operator::Equals => Outcome::from(json_eq(actual, expected)),
        Operator::Nequals => Outcome::from(!json_eq(actual, expected)),
        Operator::Iequals => with_strings(actual, expected, |a, e| {
            a.to_lowercase() == e.to_lowercase()
        }),
        Operator::Contains => match (actual, expected) {
            (Value::String(a), Value::String(e)) => Outcome::from(a.contains(e.as_str())),
            (Value::String(_), _) => Outcome::because("a string can only contain a string"),
            (Value::Array(items), _) => {
                Outcome::from(items.iter().any(|item| json_eq(item, expected)))
            }
            (Value::Object(map), Value::String(key)) => Outcome::from(map.contains_key(key)),
            _ => Outcome::because("not a string, array or object"),
        },
        Operator::Icontains => match (actual, expected) {
            (Value::String(a), Value::String(e)) => {
                Outcome::from(a.to_lowercase().contains(&e.to_lowercase()))
            }
            (Value::Array(items), Value::String(e)) => {
                let e = e.to_lowercase();
                Outcome::from(
                    items
                        .iter()
                        .any(|item| item.as_str().is_some_and(|s| s.to_lowercase() == e)),
                )
            }
            (Value::Object(map), Value::String(e)) => {
                let e = e.to_lowercase();
                Outcome::from(map.keys().any(|key| key.to_lowercase() == e))
            }
            (_, Value::String(_)) => Outcome::because("not a string, array or object"),
            _ => Outcome::because("the criterion's value is not a string"),
        },
        Operator::Startswith => with_strings(actual, expected, |a, e| a.starts_with(e)),
        Operator::Endswith => with_strings(actual, expected, |a, e| a.ends_with(e)),
        Operator::Regex | Operator::Iregex => match (actual, expected) {
            (Value::String(a), Value::String(pattern)) => {
                match compile(pattern, op == Operator::Iregex) {
                    Ok(regex) => Outcome::from(regex.is_match(a)),
                    Err(error) => Outcome::because(format!("the regex does not compile: {error}")),
                }
            }
            (_, Value::String(_)) => Outcome::because("not a string"),
            _ => Outcome::because("the criterion's value is not a string"),
        },
        Operator::Wildcard => with_strings(actual, expected, wildcard_match),
        Operator::Gt | Operator::Lt => match (number(actual), number(expected)) {
            (Some(a), Some(e)) => {
                let ordering = a.compare(e);
                Outcome::from(if op == Operator::Gt {
                    ordering.is_gt()
                } else {
                    ordering.is_lt()
                })
            }
            (None, _) => Outcome::because("not a number"),
            (_, None) => Outcome::because("the criterion's value is not a number"),
        },
        Operator::In => match expected {
            Value::Array(items) => Outcome::from(items.iter().any(|item| json_eq(actual, item))),
            _ => Outcome::because("the criterion's value is not a list"),
        },
        Operator::Nin => match expected {
            Value::Array(items) => Outcome::from(!items.iter().any(|item| json_eq(actual, item))),
            _ => Outcome::because("the criterion's value is not a list"),
        },
        Operator::TimediffLt | Operator::TimediffGt => {
            let limit = match duration(expected) {
                Ok(limit) => TimeDelta::from_std(limit).unwrap_or(TimeDelta::MAX),
                Err(problem) => {
                    return Outcome::because(format!(
                        "the criterion's value is not a duration: {problem}"
                    ));
                }
            };
            match time(actual) {
                Some(at) => {
                    let age = now.signed_duration_since(at);
                    Outcome::from(if op == Operator::TimediffLt {
                        age < limit
                    } else {
                        age > limit
                    })
                }
                None => Outcome::because("not an RFC 3339 time"),
            }
        }
    }
}

fn with_strings(actual: &Value, expected: &Value, test: impl Fn(&str, &str) -> bool) -> Outcome {
    match (actual, expected) {
        (Value::String(a), Value::String(e)) => Outcome::from(test(a, e)),
        (_, Value::String(_)) => Outcome::because("not a string"),
        _ => Outcome::because("the criterion's value is not a string"),
    }
}

/// JSON equality, where numbers compare by value (`80` equals `80.0`), not
/// by how they were written.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => match (number(a), number(b)) {
            (Some(x), Some(y)) => x.compare(y).is_eq(),
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, value)| y.get(key).is_some_and(|other| json_eq(value, other)))
        }
        _ => a == b,
    }
}

#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn compare(self, other: Num) -> std::cmp::Ordering {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a.cmp(&b),
            // Both finite (see `number`), so the comparison is total.
            (a, b) => a
                .as_f64()
                .partial_cmp(&b.as_f64())
                .unwrap_or(std::cmp::Ordering::Equal),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Num::Int(n) => n as f64,
            Num::Float(f) => f,
        }
    }
}

/// A JSON number, or a string that parses as one (surrounding whitespace
/// ignored). Never NaN or infinite.
fn number(value: &Value) -> Option<Num> {
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(Num::Int(i128::from(i)))
            } else if let Some(u) = n.as_u64() {
                Some(Num::Int(i128::from(u)))
            } else {
                n.as_f64().filter(|f| f.is_finite()).map(Num::Float)
            }
        }
        Value::String(s) => {
            let s = s.trim();
            if let Ok(i) = s.parse::<i128>() {
                return Some(Num::Int(i));
            }
            // Rust accepts "nan", "inf" and "infinity"; they are not numbers
            // anyone writes in an alert.
            s.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Num::Float)
        }
        _ => None,
    }
}

/// A `timediff_*` limit: a humantime string (`10m`, `1h 30m`) or a
/// non-negative number of seconds.
fn duration(value: &Value) -> Result<Duration, String> {
    match value {
        Value::String(text) => humantime::parse_duration(text.trim()).map_err(|error| {
            format!(
                "needs a duration such as \"10m\" or a number of seconds, got {} ({error})",
                show(value)
            )
        }),
        Value::Number(n) => n
            .as_f64()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .ok_or_else(|| format!("needs a non-negative number of seconds, got {n}")),
        _ => Err(format!(
            "needs a duration such as \"10m\" or a number of seconds, got {}",
            show(value)
        )),
    }
}

fn time(value: &Value) -> Option<DateTime<Utc>> {
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s.trim()).ok())
        .map(|t| t.with_timezone(&Utc))
}

const REGEX_CACHE_SIZE: usize = 256;

thread_local! {
    /// Compiled regexes by (pattern, ignore case).
    static REGEX_CACHE: RefCell<HashMap<(String, bool), Regex>> = RefCell::new(HashMap::new());
}

fn compile(pattern: &str, ignore_case: bool) -> Result<Regex, String> {
    let key = (pattern.to_string(), ignore_case);
    if let Some(regex) = REGEX_CACHE.with(|cache| cache.borrow().get(&key).cloned()) {
        return Ok(regex);
    }
    let regex = RegexBuilder::new(pattern)
        .case_insensitive(ignore_case)
        .build()
        .map_err(|error| {
            // The regex crate's message is a multi-line diagram; its last line
            // says what is wrong.
            let text = error.to_string();
            let last = text
                .lines()
                .rev()
                .find(|line| !line.trim().is_empty())
                .unwrap_or_default();
            last.trim().trim_start_matches("error: ").to_string()
        })?;
    REGEX_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() >= REGEX_CACHE_SIZE {
            // Rules are few; a full cache means patterns churn, and starting
            // over is as good as any eviction order.
            cache.clear();
        }
        cache.insert(key, regex.clone());
    });
    Ok(regex)
}

/// Whole-string glob match; see [`crate::glob`].
fn wildcard_match(text: &str, pattern: &str) -> bool {
    Glob::lenient(pattern).matches(text, false)
}

/// The sentence for a leaf that did not hold.
fn reason(
    path: &str,
    op: Operator,
    expected: Option<&Value>,
    actual: Option<&Value>,
    negated: bool,
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> String {
    // `exists` and `nexists` say it all with the path.
    let wants_existence = (op == Operator::Exists) != negated;
    if !op.takes_value() {
        return match actual {
            None => format!("{path} does not exist"),
            Some(value) if !wants_existence => {
                format!("{path} is {}, expected it not to exist", show(value))
            }
            Some(value) => format!("{path} is {}, expected it to exist", show(value)),
        };
    }
    let expectation = expectation(op, expected, negated);
    let mut sentence = match actual {
        None => format!("{path} does not exist, {expectation}"),
        Some(value) => {
            let age = match op {
                Operator::TimediffLt | Operator::TimediffGt => {
                    time(value).map(|at| age_text(now, at))
                }
                _ => None,
            };
            match age {
                Some(age) => format!("{path} is {} ({age}), {expectation}", show(value)),
                None => format!("{path} is {}, {expectation}", show(value)),
            }
        }
    };
    if let Some(note) = &outcome.note {
        sentence.push_str(&format!(" ({note})"));
    }
    sentence
}

/// `expected one of ["critical","page"]`, or its opposite under `not`.
fn expectation(op: Operator, expected: Option<&Value>, negated: bool) -> String {
    let v = expected.map(show).unwrap_or_else(|| "a value".into());
    let limit = || {
        expected
            .and_then(|value| duration(value).ok())
            .map(|d| humantime::format_duration(d).to_string())
            .unwrap_or_else(|| v.clone())
    };
    let (yes, no) = match op {
        Operator::Equals => (v.clone(), format!("anything but {v}")),
        Operator::Nequals => (format!("anything but {v}"), v.clone()),
        Operator::Iequals => (
            format!("{v} ignoring case"),
            format!("anything but {v} ignoring case"),
        ),
        Operator::Contains => (
            format!("it to contain {v}"),
            format!("it not to contain {v}"),
        ),
        Operator::Icontains => (
            format!("it to contain {v} ignoring case"),
            format!("it not to contain {v} ignoring case"),
        ),
        Operator::Startswith => (
            format!("it to start with {v}"),
            format!("it not to start with {v}"),
        ),
        Operator::Endswith => (
            format!("it to end with {v}"),
            format!("it not to end with {v}"),
        ),
        Operator::Regex => (
            format!("a match for the regex {v}"),
            format!("no match for the regex {v}"),
        ),
        Operator::Iregex => (
            format!("a match for the regex {v} ignoring case"),
            format!("no match for the regex {v} ignoring case"),
        ),
        Operator::Wildcard => (
            format!("a match for the pattern {v}"),
            format!("no match for the pattern {v}"),
        ),
        Operator::Gt => (format!("more than {v}"), format!("at most {v}")),
        Operator::Lt => (format!("less than {v}"), format!("at least {v}")),
        Operator::In => (format!("one of {v}"), format!("none of {v}")),
        Operator::Nin => (format!("none of {v}"), format!("one of {v}")),
        Operator::TimediffLt => (
            format!("less than {} ago", limit()),
            format!("at least {} ago", limit()),
        ),
        Operator::TimediffGt => (
            format!("more than {} ago", limit()),
            format!("at most {} ago", limit()),
        ),
        Operator::Exists => ("it to exist".into(), "it not to exist".into()),
        Operator::Nexists => ("it not to exist".into(), "it to exist".into()),
    };
    format!("expected {}", if negated { no } else { yes })
}

fn age_text(now: DateTime<Utc>, at: DateTime<Utc>) -> String {
    let age = now.signed_duration_since(at);
    let whole = |delta: TimeDelta| {
        let secs = delta.num_seconds().unsigned_abs();
        humantime::format_duration(Duration::from_secs(secs)).to_string()
    };
    if age < TimeDelta::zero() {
        format!("in {}", whole(-age))
    } else {
        format!("{} ago", whole(age))
    }
}

/// Compact JSON, shortened so a huge payload value cannot flood the
/// reasons.
fn show(value: &Value) -> String {
    const MAX: usize = 80;
    let text = value.to_string();
    if text.chars().count() <= MAX {
        return text;
    }
    let mut short: String = text.chars().take(MAX - 3).collect();
    short.push_str("...");
    short
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0)
            .single()
            .expect("valid")
    }

    fn payload() -> Value {
        json!({
            "status": "firing",
            "labels": {
                "alertname": "DiskFull",
                "severity": "warning",
                "instance": "web-12:9100",
                "app.kubernetes.io/name": "web",
                "app": {"tier": "front"},
                "port": "9100",
                "empty": "",
            },
            "annotations": {"summary": "Disk /var is 95% full"},
            "value": 95.5,
            "count": 3,
            "big": 18446744073709551615u64,
            "nothing": null,
            "ok": true,
            "tags": ["prod", "EU", 42, {"k": "v"}],
            "starts_at": "2025-06-01T11:55:00Z",
            "old": "2025-06-01T10:00:00+02:00",
            "future": "2025-06-01T12:05:00Z",
            "zero": "0001-01-01T00:00:00Z",
            "alerts": [
                {"labels": {"instance": "db-1"}},
                {"labels": {"instance": "db-2"}},
            ],
        })
    }

    fn leaf(path: &str, op: Operator, value: Option<Value>) -> Criterion {
        Criterion::Match {
            path: path.into(),
            op,
            value,
        }
    }

    fn m(path: &str, op: Operator, value: Value) -> Criterion {
        leaf(path, op, Some(value))
    }

    fn holds(criterion: &Criterion) -> bool {
        evaluate(std::slice::from_ref(criterion), &payload(), now()).matched
    }

    #[test]
    fn operator_table() {
        use Operator::*;
        let cases: Vec<(&str, Operator, Option<Value>, bool)> = vec![
            // equals / nequals
            ("status", Equals, Some(json!("firing")), true),
            ("status", Equals, Some(json!("Firing")), false),
            ("count", Equals, Some(json!(3)), true),
            ("count", Equals, Some(json!(3.0)), true),
            ("count", Equals, Some(json!("3")), false),
            ("labels.port", Equals, Some(json!(9100)), false),
            ("labels.port", Equals, Some(json!("9100")), true),
            ("ok", Equals, Some(json!(true)), true),
            ("nothing", Equals, Some(json!(null)), true),
            (
                "tags",
                Equals,
                Some(json!(["prod", "EU", 42.0, {"k": "v"}])),
                true,
            ),
            ("labels.app", Equals, Some(json!({"tier": "front"})), true),
            ("big", Equals, Some(json!(18446744073709551615u64)), true),
            ("big", Equals, Some(json!(18446744073709551614u64)), false),
            ("missing", Equals, Some(json!(null)), false),
            ("status", Nequals, Some(json!("resolved")), true),
            ("status", Nequals, Some(json!("firing")), false),
            ("count", Nequals, Some(json!("3")), true),
            ("missing", Nequals, Some(json!("x")), false),
            // iequals
            ("status", Iequals, Some(json!("FIRING")), true),
            ("labels.alertname", Iequals, Some(json!("diskfull")), true),
            ("labels.alertname", Iequals, Some(json!("disk")), false),
            ("count", Iequals, Some(json!("3")), false),
            ("missing", Iequals, Some(json!("x")), false),
            // contains / icontains
            ("annotations.summary", Contains, Some(json!("/var")), true),
            ("annotations.summary", Contains, Some(json!("/VAR")), false),
            ("annotations.summary", Contains, Some(json!("")), true),
            ("tags", Contains, Some(json!("prod")), true),
            ("tags", Contains, Some(json!(42)), true),
            ("tags", Contains, Some(json!({"k": "v"})), true),
            ("tags", Contains, Some(json!("eu")), false),
            ("labels", Contains, Some(json!("severity")), true),
            ("labels", Contains, Some(json!("team")), false),
            ("count", Contains, Some(json!(3)), false),
            ("status", Contains, Some(json!(3)), false),
            (
                "annotations.summary",
                Icontains,
                Some(json!("DISK /VAR")),
                true,
            ),
            ("tags", Icontains, Some(json!("eu")), true),
            ("tags", Icontains, Some(json!("e")), false),
            ("labels", Icontains, Some(json!("SEVERITY")), true),
            ("count", Icontains, Some(json!("3")), false),
            // startswith / endswith
            ("labels.instance", Startswith, Some(json!("web-")), true),
            ("labels.instance", Startswith, Some(json!("db-")), false),
            ("labels.instance", Endswith, Some(json!(":9100")), true),
            ("labels.instance", Endswith, Some(json!(":9200")), false),
            ("count", Startswith, Some(json!("3")), false),
            // regex / iregex: a search, not a full match
            ("labels.instance", Regex, Some(json!("web-\\d+")), true),
            ("labels.instance", Regex, Some(json!("\\d+:9100")), true),
            ("labels.instance", Regex, Some(json!("^\\d+")), false),
            (
                "labels.instance",
                Regex,
                Some(json!("^web-\\d+:\\d+$")),
                true,
            ),
            ("labels.instance", Regex, Some(json!("WEB")), false),
            ("labels.instance", Iregex, Some(json!("WEB")), true),
            ("labels.instance", Regex, Some(json!("(")), false),
            ("count", Regex, Some(json!("3")), false),
            ("labels.empty", Regex, Some(json!("^$")), true),
            // wildcard: whole string
            ("labels.instance", Wildcard, Some(json!("web-*")), true),
            ("labels.instance", Wildcard, Some(json!("web-*:91??")), true),
            (
                "labels.instance",
                Wildcard,
                Some(json!("web-1[0-9]:*")),
                true,
            ),
            (
                "labels.instance",
                Wildcard,
                Some(json!("web-1[!2]:*")),
                false,
            ),
            ("labels.instance", Wildcard, Some(json!("web")), false),
            ("labels.instance", Wildcard, Some(json!("WEB-*")), false),
            ("labels.instance", Wildcard, Some(json!("*")), true),
            ("labels.empty", Wildcard, Some(json!("*")), true),
            ("labels.empty", Wildcard, Some(json!("?")), false),
            // gt / lt
            ("value", Gt, Some(json!(90)), true),
            ("value", Gt, Some(json!(95.5)), false),
            ("value", Lt, Some(json!(100)), true),
            ("value", Gt, Some(json!("90")), true),
            ("labels.port", Gt, Some(json!(9000)), true),
            ("labels.port", Lt, Some(json!("10000")), true),
            ("count", Gt, Some(json!(2)), true),
            ("count", Lt, Some(json!(3)), false),
            ("big", Gt, Some(json!(18446744073709551614u64)), true),
            ("status", Gt, Some(json!(1)), false),
            ("status", Lt, Some(json!(1)), false),
            ("ok", Gt, Some(json!(0)), false),
            ("missing", Lt, Some(json!(1)), false),
            // exists / nexists
            ("labels.severity", Exists, None, true),
            ("nothing", Exists, None, true),
            ("labels.team", Exists, None, false),
            ("labels.team", Nexists, None, true),
            ("labels.severity", Nexists, None, false),
            // in / nin
            (
                "labels.severity",
                In,
                Some(json!(["critical", "warning"])),
                true,
            ),
            (
                "labels.severity",
                In,
                Some(json!(["critical", "page"])),
                false,
            ),
            ("count", In, Some(json!([1, 2, 3])), true),
            ("count", In, Some(json!(["3"])), false),
            (
                "labels.severity",
                Nin,
                Some(json!(["critical", "page"])),
                true,
            ),
            ("labels.severity", Nin, Some(json!(["warning"])), false),
            ("missing", In, Some(json!([null])), false),
            ("missing", Nin, Some(json!(["x"])), false),
            // timediff
            ("starts_at", TimediffLt, Some(json!("10m")), true),
            ("starts_at", TimediffLt, Some(json!("5m")), false),
            ("starts_at", TimediffLt, Some(json!(600)), true),
            ("starts_at", TimediffLt, Some(json!(299.5)), false),
            ("starts_at", TimediffGt, Some(json!("1m")), true),
            ("starts_at", TimediffGt, Some(json!("1h")), false),
            ("old", TimediffGt, Some(json!("3h 59m")), true),
            ("old", TimediffGt, Some(json!("4h")), false),
            ("future", TimediffLt, Some(json!("1s")), true),
            ("future", TimediffGt, Some(json!("0s")), false),
            ("zero", TimediffGt, Some(json!("1000d")), true),
            ("status", TimediffLt, Some(json!("10m")), false),
            ("count", TimediffLt, Some(json!("10m")), false),
            ("missing", TimediffLt, Some(json!("10m")), false),
            // paths
            (
                "alerts.0.labels.instance",
                Equals,
                Some(json!("db-1")),
                true,
            ),
            (
                "alerts.1.labels.instance",
                Equals,
                Some(json!("db-2")),
                true,
            ),
            ("alerts.2.labels.instance", Exists, None, false),
            ("alerts.01.labels.instance", Exists, None, false),
            ("alerts.-1.labels.instance", Exists, None, false),
            ("alerts.x", Exists, None, false),
            (
                "labels.app.kubernetes.io/name",
                Equals,
                Some(json!("web")),
                true,
            ),
            ("labels.app.tier", Equals, Some(json!("front")), true),
            ("status.length", Exists, None, false),
            ("tags.3.k", Equals, Some(json!("v")), true),
            ("", Exists, None, false),
            ("labels..severity", Exists, None, false),
        ];
        for (path, op, value, want) in cases {
            let criterion = leaf(path, op, value.clone());
            assert_eq!(holds(&criterion), want, "{path} {op} {value:?}");
            // A `not` always flips a leaf.
            assert_eq!(
                holds(&Criterion::Not(Box::new(criterion))),
                !want,
                "not {path} {op} {value:?}"
            );
        }
    }

    #[test]
    fn every_operator_is_false_on_a_missing_path_except_nexists() {
        for op in Operator::ALL {
            let value = match op {
                Operator::Exists | Operator::Nexists => None,
                Operator::In | Operator::Nin => Some(json!([null, "x"])),
                Operator::Gt | Operator::Lt => Some(json!(0)),
                Operator::TimediffLt | Operator::TimediffGt => Some(json!("1m")),
                _ => Some(json!("x")),
            };
            assert_eq!(
                holds(&leaf("no.such.path", op, value)),
                op == Operator::Nexists,
                "{op}"
            );
        }
    }

    #[test]
    fn groups() {
        let yes = || m("status", Operator::Equals, json!("firing"));
        let no = || m("status", Operator::Equals, json!("resolved"));
        let not = |c: Criterion| Criterion::Not(Box::new(c));
        let cases: Vec<(Criterion, bool)> = vec![
            (Criterion::Any(vec![no(), yes()]), true),
            (Criterion::Any(vec![no(), no()]), false),
            (Criterion::Any(vec![yes()]), true),
            (Criterion::All(vec![yes(), yes()]), true),
            (Criterion::All(vec![yes(), no()]), false),
            (not(yes()), false),
            (not(no()), true),
            (not(not(yes())), true),
            (not(Criterion::Any(vec![no(), no()])), true),
            (not(Criterion::Any(vec![no(), yes()])), false),
            (not(Criterion::All(vec![yes(), no()])), true),
            (not(Criterion::All(vec![yes(), yes()])), false),
            (
                Criterion::All(vec![Criterion::Any(vec![no(), not(no())]), not(not(yes()))]),
                true,
            ),
            // Empty groups are invalid; evaluation never lets them match.
            (Criterion::Any(vec![]), false),
            (Criterion::All(vec![]), false),
            (not(Criterion::Any(vec![])), true),
            (not(Criterion::All(vec![])), true),
        ];
        for (criterion, want) in cases {
            assert_eq!(holds(&criterion), want, "{criterion:?}");
        }
        assert!(
            evaluate(&[], &payload(), now()).matched,
            "a rule with no criteria matches every event"
        );
    }

    #[test]
    fn reasons() {
        use Operator::*;
        let not = |c: Criterion| Criterion::Not(Box::new(c));
        let cases: Vec<(Vec<Criterion>, Vec<&str>)> = vec![
            (
                vec![m("labels.severity", In, json!(["critical", "page"]))],
                vec![r#"labels.severity is "warning", expected one of ["critical","page"]"#],
            ),
            (
                vec![leaf("labels.team", Exists, None)],
                vec!["labels.team does not exist"],
            ),
            (
                vec![leaf("labels.severity", Nexists, None)],
                vec![r#"labels.severity is "warning", expected it not to exist"#],
            ),
            (
                vec![not(leaf("labels.severity", Exists, None))],
                vec![r#"labels.severity is "warning", expected it not to exist"#],
            ),
            (
                vec![not(leaf("labels.team", Nexists, None))],
                vec!["labels.team does not exist"],
            ),
            (
                vec![m("labels.team", Equals, json!("sre"))],
                vec![r#"labels.team does not exist, expected "sre""#],
            ),
            (
                vec![m("status", Equals, json!("resolved"))],
                vec![r#"status is "firing", expected "resolved""#],
            ),
            (
                vec![not(m("status", Equals, json!("firing")))],
                vec![r#"status is "firing", expected anything but "firing""#],
            ),
            (
                vec![m("status", Nequals, json!("firing"))],
                vec![r#"status is "firing", expected anything but "firing""#],
            ),
            (
                vec![m("status", Iequals, json!("x"))],
                vec![r#"status is "firing", expected "x" ignoring case"#],
            ),
            (
                vec![m("count", Iequals, json!("3"))],
                vec![r#"count is 3, expected "3" ignoring case (not a string)"#],
            ),
            (
                vec![m("status", Contains, json!("z"))],
                vec![r#"status is "firing", expected it to contain "z""#],
            ),
            (
                vec![m("status", Icontains, json!("z"))],
                vec![r#"status is "firing", expected it to contain "z" ignoring case"#],
            ),
            (
                vec![not(m("status", Contains, json!("fir")))],
                vec![r#"status is "firing", expected it not to contain "fir""#],
            ),
            (
                vec![m("status", Startswith, json!("re"))],
                vec![r#"status is "firing", expected it to start with "re""#],
            ),
            (
                vec![m("status", Endswith, json!("ed"))],
                vec![r#"status is "firing", expected it to end with "ed""#],
            ),
            (
                vec![m("status", Regex, json!("^res"))],
                vec![r#"status is "firing", expected a match for the regex "^res""#],
            ),
            (
                vec![m("status", Iregex, json!("^RES"))],
                vec![r#"status is "firing", expected a match for the regex "^RES" ignoring case"#],
            ),
            (
                vec![not(m("status", Regex, json!("fir")))],
                vec![r#"status is "firing", expected no match for the regex "fir""#],
            ),
            (
                vec![m("status", Regex, json!("("))],
                vec![
                    r#"status is "firing", expected a match for the regex "(" (the regex does not compile: unclosed group)"#,
                ],
            ),
            (
                vec![m("status", Wildcard, json!("res*"))],
                vec![r#"status is "firing", expected a match for the pattern "res*""#],
            ),
            (
                vec![m("value", Gt, json!(99))],
                vec!["value is 95.5, expected more than 99"],
            ),
            (
                vec![m("value", Lt, json!(50))],
                vec!["value is 95.5, expected less than 50"],
            ),
            (
                vec![not(m("value", Gt, json!(50)))],
                vec!["value is 95.5, expected at most 50"],
            ),
            (
                vec![not(m("value", Lt, json!(99)))],
                vec!["value is 95.5, expected at least 99"],
            ),
            (
                vec![m("status", Gt, json!(1))],
                vec![r#"status is "firing", expected more than 1 (not a number)"#],
            ),
            (
                vec![m("status", Nin, json!(["firing"]))],
                vec![r#"status is "firing", expected none of ["firing"]"#],
            ),
            (
                vec![not(m("status", In, json!(["firing"])))],
                vec![r#"status is "firing", expected none of ["firing"]"#],
            ),
            (
                vec![m("starts_at", TimediffLt, json!("1m"))],
                vec![r#"starts_at is "2025-06-01T11:55:00Z" (5m ago), expected less than 1m ago"#],
            ),
            (
                vec![m("starts_at", TimediffGt, json!(3600))],
                vec![r#"starts_at is "2025-06-01T11:55:00Z" (5m ago), expected more than 1h ago"#],
            ),
            (
                vec![m("future", TimediffGt, json!("1m"))],
                vec![r#"future is "2025-06-01T12:05:00Z" (in 5m), expected more than 1m ago"#],
            ),
            (
                vec![not(m("starts_at", TimediffLt, json!("10m")))],
                vec![r#"starts_at is "2025-06-01T11:55:00Z" (5m ago), expected at least 10m ago"#],
            ),
            (
                vec![m("status", TimediffLt, json!("10m"))],
                vec![r#"status is "firing", expected less than 10m ago (not an RFC 3339 time)"#],
            ),
            (
                vec![m("annotations", Equals, json!("x"))],
                vec![r#"annotations is {"summary":"Disk /var is 95% full"}, expected "x""#],
            ),
            (
                vec![leaf("status", Equals, None)],
                vec![
                    r#"status is "firing", expected a value (the criterion has no value to compare with; `equals` needs one)"#,
                ],
            ),
            // Every failing leaf, in order; the passing ones say nothing.
            (
                vec![
                    m("status", Equals, json!("firing")),
                    m("labels.severity", Equals, json!("critical")),
                    leaf("labels.team", Exists, None),
                ],
                vec![
                    r#"labels.severity is "warning", expected "critical""#,
                    "labels.team does not exist",
                ],
            ),
            // A failed `any` reports each of its members.
            (
                vec![Criterion::Any(vec![
                    m("status", Equals, json!("resolved")),
                    leaf("labels.team", Exists, None),
                ])],
                vec![
                    r#"status is "firing", expected "resolved""#,
                    "labels.team does not exist",
                ],
            ),
            // `not all` fails only when all hold: every member is reported, turned around.
            (
                vec![not(Criterion::All(vec![
                    m("status", Equals, json!("firing")),
                    leaf("labels.severity", Exists, None),
                ]))],
                vec![
                    r#"status is "firing", expected anything but "firing""#,
                    r#"labels.severity is "warning", expected it not to exist"#,
                ],
            ),
            // `not any` fails on the members that hold.
            (
                vec![not(Criterion::Any(vec![
                    m("status", Equals, json!("resolved")),
                    m("count", Equals, json!(3)),
                ]))],
                vec!["count is 3, expected anything but 3"],
            ),
            (
                vec![Criterion::Any(vec![])],
                vec!["an empty `any` group matches nothing"],
            ),
            (
                vec![Criterion::All(vec![])],
                vec!["an empty `all` group matches nothing"],
            ),
        ];
        for (criteria, want) in cases {
            let evaluation = evaluate(&criteria, &payload(), now());
            assert!(!evaluation.matched, "{criteria:?}");
            assert_eq!(evaluation.reasons, want, "{criteria:?}");
        }
        let matched = evaluate(&[m("status", Equals, json!("firing"))], &payload(), now());
        assert_eq!(
            matched,
            Evaluation {
                matched: true,
                reasons: vec![]
            }
        );
    }

    #[test]
    fn dotted_keys_cannot_make_lookups_explode() {
        // Every level has keys `a`, `a.a`, `a.a.a`...; the path never
        // resolves, and there are exponentially many ways to try.
        fn level(depth: usize) -> Value {
            let mut map = serde_json::Map::new();
            if depth > 0 {
                for n in 1..=4 {
                    map.insert(vec!["a"; n].join("."), level(depth - 1));
                }
            }
            Value::Object(map)
        }
        let payload = level(8);
        let path = format!("{}.missing", vec!["a"; 40].join("."));
        // Resolving it once per candidate key split would take 4^40 steps:
        // this returns only if resolution is linear in the path.
        let evaluation = evaluate(&[leaf(&path, Operator::Exists, None)], &payload, now());
        assert!(!evaluation.matched);
        // A deep but honest path still resolves.
        assert!(holds(&m(
            "labels.app.kubernetes.io/name",
            Operator::Equals,
            json!("web")
        )));
    }

    #[test]
    fn long_values_are_shortened_in_reasons() {
        let long = "x".repeat(500);
        let evaluation = evaluate(
            &[m("s", Operator::Equals, json!("y"))],
            &json!({"s": long}),
            now(),
        );
        let reason = &evaluation.reasons[0];
        assert!(reason.len() < 150, "{reason}");
        assert!(
            reason.starts_with(&format!("s is \"{}...", "x".repeat(76))),
            "{reason}"
        );
    }

    #[test]
    fn validation() {
        use Operator::*;
        let valid = vec![
            m("status", Equals, json!("firing")),
            m("count", Equals, json!(3)),
            m("tags", Contains, json!(42)),
            m("a", Iequals, json!("x")),
            m("a", Regex, json!("^web-\\d+$")),
            m("a", Iregex, json!("(?x) web")),
            m("a", Wildcard, json!("web-[0-9]*")),
            m("a", Gt, json!(80)),
            m("a", Lt, json!("2.5")),
            m("a", In, json!(["x"])),
            m("a", Nin, json!([1, 2])),
            m("a", TimediffLt, json!("10m")),
            m("a", TimediffGt, json!("1h 30m")),
            m("a", TimediffGt, json!(90)),
            m("a", TimediffGt, json!(0.5)),
            leaf("a", Exists, None),
            leaf("alerts.0.labels", Nexists, None),
            Criterion::Any(vec![
                leaf("a", Exists, None),
                Criterion::Not(Box::new(leaf("b", Exists, None))),
            ]),
        ];
        for criterion in valid {
            assert_eq!(validate(&criterion), Ok(()), "{criterion:?}");
        }

        let invalid: Vec<(Criterion, &str)> = vec![
            (
                leaf("a", Exists, Some(json!(true))),
                "a exists: takes no value, but was given true",
            ),
            (
                leaf("a", Nexists, Some(json!("x"))),
                r#"a nexists: takes no value, but was given "x""#,
            ),
            (leaf("a", Equals, None), "a equals: needs a value"),
            (leaf("a", TimediffLt, None), "a timediff_lt: needs a value"),
            (
                m("a", In, json!("critical")),
                r#"a in: needs a list of values such as ["critical","page"], got "critical""#,
            ),
            (
                m("a", Nin, json!([])),
                "a nin: needs a non-empty list of values",
            ),
            (
                m("a", Gt, json!("eighty")),
                r#"a gt: needs a number, got "eighty""#,
            ),
            (m("a", Lt, json!(null)), "a lt: needs a number, got null"),
            (
                m("a", Gt, json!("nan")),
                r#"a gt: needs a number, got "nan""#,
            ),
            (
                m("a", Regex, json!("(")),
                r#"a regex: the regex "(" does not compile: unclosed group"#,
            ),
            (
                m("a", Iregex, json!(5)),
                "a iregex: needs a regex string, got 5",
            ),
            (
                m("a", Wildcard, json!(5)),
                "a wildcard: needs a string, got 5",
            ),
            (
                m("a", Iequals, json!(["x"])),
                r#"a iequals: needs a string, got ["x"]"#,
            ),
            (
                m("a", Startswith, json!(1)),
                "a startswith: needs a string, got 1",
            ),
            (
                m("a", TimediffLt, json!("soon")),
                r#"a timediff_lt: needs a duration such as "10m" or a number of seconds, got "soon" (expected number at 0)"#,
            ),
            (
                m("a", TimediffGt, json!(-5)),
                "a timediff_gt: needs a non-negative number of seconds, got -5",
            ),
            (
                m("a", TimediffGt, json!(true)),
                r#"a timediff_gt: needs a duration such as "10m" or a number of seconds, got true"#,
            ),
            (
                leaf("", Exists, None),
                "(empty path) exists: the path is empty",
            ),
            (
                leaf("a..b", Exists, None),
                "a..b exists: the path has an empty segment (a leading, trailing or doubled `.`)",
            ),
            (
                leaf(".a", Exists, None),
                ".a exists: the path has an empty segment (a leading, trailing or doubled `.`)",
            ),
            (
                Criterion::Any(vec![]),
                "an empty `any` group; give it at least one condition",
            ),
            (
                Criterion::All(vec![]),
                "an empty `all` group; give it at least one condition",
            ),
            (
                Criterion::Not(Box::new(Criterion::All(vec![]))),
                "an empty `all` group; give it at least one condition",
            ),
            (
                Criterion::All(vec![
                    leaf("a", Exists, None),
                    Criterion::Any(vec![
                        m("b", Gt, json!("x")),
                        Criterion::Not(Box::new(m("c", In, json!(1)))),
                    ]),
                ]),
                r#"b gt: needs a number, got "x"; c in: needs a list of values such as ["critical","page"], got 1"#,
            ),
        ];
        for (criterion, want) in invalid {
            assert_eq!(validate(&criterion), Err(want.to_string()), "{criterion:?}");
        }
    }

    #[test]
    fn criteria_deserialize_from_rule_files() {
        let criteria: Vec<Criterion> = serde_json::from_value(json!([
            {"match": {"path": "status", "op": "equals", "value": "firing"}},
            {"match": {"path": "labels.team", "op": "nexists"}},
            {"any": [{"match": {"path": "a", "op": "timediff_lt", "value": "10m"}}]},
            {"not": {"match": {"path": "b", "op": "in", "value": [1]}}},
        ]))
        .expect("valid criteria");
        assert_eq!(criteria[1], leaf("labels.team", Operator::Nexists, None));
        assert_eq!(
            criteria[2],
            Criterion::Any(vec![m("a", Operator::TimediffLt, json!("10m"))])
        );
        for criterion in &criteria {
            assert_eq!(validate(criterion), Ok(()));
        }
        for op in Operator::ALL {
            assert_eq!(
                serde_json::to_value(op).expect("serializes"),
                json!(op.name())
            );
        }
    }

    #[test]
    fn wildcards() {
        let cases: Vec<(&str, &str, bool)> = vec![
            ("", "", true),
            ("", "*", true),
            ("", "**", true),
            ("a", "", false),
            ("abc", "a*c", true),
            ("abc", "a*b", false),
            ("abc", "*b*", true),
            ("abc", "a?c", true),
            ("ac", "a?c", false),
            ("a]", "a]", true),
            ("a", "[]a]", true),
            ("]", "[]]", true),
            ("b", "[!a]", true),
            ("a", "[!a]", false),
            ("a", "[^a]", false),
            ("-", "[a-]", true),
            ("x", "[a-]", false),
            ("[", "[", true),
            ("[ab", "[ab", true),
            ("*", "[*]", true),
            ("x", "[*]", false),
            ("é", "?", true),
            (
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaab",
                "*a*a*a*a*a*a*a*a*b",
                true,
            ),
            (
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "*a*a*a*a*a*a*a*a*b",
                false,
            ),
        ];
        for (text, pattern, want) in cases {
            assert_eq!(wildcard_match(text, pattern), want, "{text:?} {pattern:?}");
        }
    }

    #[test]
    fn the_regex_cache_stays_small_and_correct() {
        for i in 0..600 {
            let pattern = format!("^x{i}$");
            assert!(
                compile(&pattern, false)
                    .expect("compiles")
                    .is_match(&format!("x{i}"))
            );
        }
        assert!(REGEX_CACHE.with(|cache| cache.borrow().len()) <= REGEX_CACHE_SIZE);
        assert!(compile("A", true).expect("compiles").is_match("a"));
        assert!(!compile("A", false).expect("compiles").is_match("a"));
    }

    /// A reference glob matcher: plain recursion, exponential but simple.
    fn reference_glob(text: &[char], pattern: &[char]) -> bool {
        match pattern.first() {
            None => text.is_empty(),
            Some('*') => (0..=text.len()).any(|skip| reference_glob(&text[skip..], &pattern[1..])),
            Some('?') => !text.is_empty() && reference_glob(&text[1..], &pattern[1..]),
            Some(c) => text.first() == Some(c) && reference_glob(&text[1..], &pattern[1..]),
        }
    }

    fn arb_criterion() -> impl Strategy<Value = Criterion> {
        let leaf = prop_oneof![
            Just(m("status", Operator::Equals, json!("firing"))),
            Just(m("status", Operator::Equals, json!("resolved"))),
            Just(leaf("labels.team", Operator::Exists, None)),
            Just(leaf("labels.team", Operator::Nexists, None)),
            Just(m("value", Operator::Gt, json!(90))),
            Just(m("tags", Operator::Contains, json!("EU"))),
        ];
        leaf.prop_recursive(4, 24, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 1..3).prop_map(Criterion::Any),
                proptest::collection::vec(inner.clone(), 1..3).prop_map(Criterion::All),
                inner.prop_map(|c| Criterion::Not(Box::new(c))),
            ]
        })
    }

    /// The obvious recursive semantics, to check the De Morgan push-down.
    fn naive(criterion: &Criterion) -> bool {
        match criterion {
            Criterion::Match { .. } => holds(criterion),
            Criterion::Any(members) => members.iter().any(naive),
            Criterion::All(members) => members.iter().all(naive),
            Criterion::Not(member) => !naive(member),
        }
    }

    proptest! {
        #[test]
        fn groups_follow_boolean_logic(criterion in arb_criterion()) {
            let criteria = std::slice::from_ref(&criterion);
            let evaluation = evaluate(criteria, &payload(), now());
            prop_assert_eq!(evaluation.matched, naive(&criterion));
            prop_assert_eq!(evaluation.reasons.is_empty(), evaluation.matched);
            prop_assert_eq!(matches(criteria, &payload(), now()), evaluation.matched);
            prop_assert_eq!(validate(&criterion), Ok(()));
        }

        #[test]
        fn wildcard_agrees_with_the_reference(pattern in "[ab*?]{0,8}", text in "[ab]{0,10}") {
            let t: Vec<char> = text.chars().collect();
            let p: Vec<char> = pattern.chars().collect();
            prop_assert_eq!(wildcard_match(&text, &pattern), reference_glob(&t, &p));
        }

        #[test]
        fn evaluation_never_panics(
            path in "[a-z0-9.]{0,12}",
            op in proptest::sample::select(Operator::ALL.to_vec()),
            value in prop_oneof![
                Just(None),
                Just(Some(json!(null))),
                any::<i64>().prop_map(|n| Some(json!(n))),
                any::<f64>().prop_map(|f| Some(json!(f))),
                "\\PC{0,10}".prop_map(|s| Some(json!(s))),
                Just(Some(json!(["a", 1]))),
            ],
        ) {
            let criterion = leaf(&path, op, value);
            let _ = validate(&criterion);
            let evaluation = evaluate(std::slice::from_ref(&criterion), &payload(), now());
            prop_assert_eq!(evaluation.reasons.is_empty(), evaluation.matched);
            prop_assert_eq!(
                matches(std::slice::from_ref(&criterion), &payload(), now()),
                evaluation.matched
            );
        }

        #[test]
        fn numbers_and_their_strings_compare_alike(a in -1_000_000i64..1_000_000, b in -1_000_000i64..1_000_000) {
            let p = json!({"n": a, "s": a.to_string()});
            for path in ["n", "s"] {
                for (op, want) in [(Operator::Gt, a > b), (Operator::Lt, a < b)] {
                    for value in [json!(b), json!(b.to_string())] {
                        let e = evaluate(&[m(path, op, value.clone())], &p, now());
                        prop_assert_eq!(e.matched, want, "{} {} {}", path, op, value);
                    }
                }
            }
        }
    }
}
