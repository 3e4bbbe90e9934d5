//! `rules/<name>.yaml`.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};
use ultron8_core::criteria::{self, Criterion, Operator};
use ultron8_core::policy::{BlastRadius, Cooldown, Policy};
use ultron8_core::schedule::Schedule;
use ultron8_core::target;
use ultron8_core::triggers::TriggerType;

use crate::action::{fits, type_name};
use crate::manifest::optional_string;
use crate::model::{Action, Installed, Rule, RuleAction};
use crate::problem::{Pos, Sink};
use crate::templates::{self, Scope};
use crate::text::{check_name, did_you_mean, is_template, list};
use crate::yaml::{
    Fields, Node, Value, boolean, duration, expected, integer, mapping, number, sequence, string,
    to_json,
};

const KEYS: &[&str] = &[
    "name",
    "description",
    "enabled",
    "trigger",
    "trigger_parameters",
    "criteria",
    "action",
    "policy",
];
const ACTION_KEYS: &[&str] = &["ref", "target", "parameters"];
const MATCH_KEYS: &[&str] = &["path", "op", "value"];
const GROUP_KEYS: &[&str] = &["any", "all", "not"];
const POLICY_KEYS: &[&str] = &["cooldown", "max_concurrent", "blast_radius"];
const COOLDOWN_KEYS: &[&str] = &["key", "period"];
const BLAST_RADIUS_KEYS: &[&str] = &["max_hosts", "max_percent", "window"];

/// The timer triggers, whose parameters describe a [`Schedule`].
const INTERVAL: &str = "core.interval";
const CRON: &str = "core.cron";

/// The operators' names as written in rules; each parses as an
/// [`Operator`] (a unit test holds them in step).
pub(crate) const OPERATORS: &[&str] = &[
    "equals",
    "iequals",
    "nequals",
    "contains",
    "icontains",
    "startswith",
    "endswith",
    "regex",
    "iregex",
    "wildcard",
    "gt",
    "lt",
    "exists",
    "nexists",
    "in",
    "nin",
    "timediff_lt",
    "timediff_gt",
];

/// What the rest of the pack, and what is installed, look like to a rule.
pub(crate) struct Context<'a> {
    /// `None` when `pack.yaml` has no usable name.
    pub pack: Option<&'a str>,
    /// `None` when `pack.yaml` could not be read.
    pub dependencies: Option<&'a [String]>,
    /// This pack's action names; `None` for an action whose file has
    /// problems (reported there, so a rule using it stays quiet).
    pub actions: &'a BTreeMap<String, Option<Action>>,
    pub installed: &'a dyn Installed,
    pub triggers: &'a [TriggerType],
}

pub(crate) struct Decoded {
    /// Where `name` is written (the mapping's start when it is not).
    pub name_pos: Pos,
    pub name: Option<String>,
    pub rule: Option<Rule>,
}

pub(crate) fn decode(stem: &str, node: &Node, ctx: &Context<'_>, sink: &mut Sink<'_>) -> Decoded {
    let before = sink.count();
    let Some(fields) = Fields::new(node, "a rule", KEYS, sink) else {
        return Decoded {
            name_pos: node.pos,
            name: None,
            rule: None,
        };
    };

    let name = fields.required("name", sink).and_then(|node| {
        let name = string(node, sink)?;
        if let Err(why) = check_name(name) {
            sink.at(node.pos, format!("invalid rule name {name:?}: {why}"));
            return None;
        }
        if name != stem {
            sink.at(
                node.pos,
                format!(
                    "the rule is named `{name}` but its file is {}; they must match",
                    sink.file()
                ),
            );
        }
        Some(name.to_string())
    });
    let description = optional_string(&fields, "description", sink).unwrap_or_default();
    let enabled = fields.get("enabled").and_then(|n| boolean(n, sink));

    let trigger_node = fields.required("trigger", sink);
    let trigger_name = trigger_node.and_then(|n| string(n, sink));
    let trigger = match (trigger_node, trigger_name) {
        (Some(node), Some(name)) => {
            let found = ctx.triggers.iter().find(|t| t.name == name);
            if found.is_none() {
                let names = ctx.triggers.iter().map(|t| t.name);
                sink.at(
                    node.pos,
                    format!(
                        "unknown trigger type `{name}`{} (built-in: {})",
                        did_you_mean(name, names.clone()),
                        list(names)
                    ),
                );
            }
            found
        }
        _ => None,
    };
    let scope = Scope::Payload {
        trigger: trigger_name.unwrap_or("the trigger"),
        fields: trigger.and_then(|t| t.payload_fields),
    };

    let (trigger_parameters, schedule) = trigger_parameters(&fields, trigger_node, trigger, sink);

    let criteria = match fields.get("criteria") {
        Some(node) => criteria_list(node, &scope, sink),
        None => Some(Vec::new()),
    };

    let action = fields
        .required("action", sink)
        .and_then(|node| rule_action(node, ctx, &scope, sink));

    let policy = match fields.get("policy") {
        Some(node) => policy(node, &scope, sink),
        None => Some(Policy::default()),
    };

    let rule = match (
        name.clone(),
        trigger,
        trigger_parameters,
        criteria,
        action,
        policy,
    ) {
        (
            Some(name),
            Some(trigger),
            Some(trigger_parameters),
            Some(criteria),
            Some(action),
            Some(policy),
        ) if sink.count() == before => Some(Rule {
            pack: ctx.pack.unwrap_or_default().to_string(),
            name,
            description,
            enabled: enabled.unwrap_or(true),
            trigger: trigger.name.to_string(),
            trigger_parameters,
            schedule,
            criteria,
            action,
            policy,
        }),
        _ => None,
    };
    let name_pos = fields.get("name").map_or(fields.pos, |n| n.pos);
    Decoded {
        name_pos,
        name,
        rule,
    }
}

/// The parameters as written, and the schedule they describe for timers.
fn trigger_parameters(
    fields: &Fields<'_>,
    trigger_node: Option<&Node>,
    trigger: Option<&TriggerType>,
    sink: &mut Sink<'_>,
) -> (Option<Map<String, Json>>, Option<Schedule>) {
    let node = fields.get("trigger_parameters");
    let given = match node {
        Some(node) => match mapping(node, "a mapping of trigger parameters", sink) {
            Some(entries) => entries,
            None => return (None, None),
        },
        None => &[],
    };
    let Some(trigger) = trigger else {
        // Unknown trigger (already reported): nothing to check against.
        return (None, None);
    };

    let mut ok = true;
    let mut json = Map::new();
    for entry in given {
        if !trigger.parameters.contains(&entry.key.as_str()) {
            let message = if trigger.parameters.is_empty() {
                format!(
                    "{} takes no trigger_parameters (found `{}`)",
                    trigger.name, entry.key
                )
            } else {
                format!(
                    "`{}` is not a parameter of {}{} (parameters: {})",
                    entry.key,
                    trigger.name,
                    did_you_mean(&entry.key, trigger.parameters.iter().copied()),
                    list(trigger.parameters.iter().copied())
                )
            };
            sink.at(entry.key_pos, message);
            ok = false;
        }
        match to_json(&entry.value, sink) {
            Some(value) => {
                json.insert(entry.key.clone(), value);
            }
            None => ok = false,
        }
    }

    let get = |key: &str| given.iter().find(|e| e.key == key).map(|e| &e.value);
    // A timer without its parameter: point at what is there to fix.
    let missing_at = node
        .map(|n| n.pos)
        .or(trigger_node.map(|n| n.pos))
        .unwrap_or(fields.pos);
    let schedule = match trigger.name {
        INTERVAL => match get("every") {
            Some(every) => duration(every, sink).map(Schedule::Interval),
            None => {
                sink.at(
                    missing_at,
                    "core.interval needs `trigger_parameters: {every: <duration>}`, e.g. `every: 5m`",
                );
                None
            }
        },
        CRON => match get("schedule") {
            Some(expression_node) => {
                let expression = string(expression_node, sink);
                let timezone = match get("timezone") {
                    Some(tz) => string(tz, sink).map(|tz| Some(tz.to_string())),
                    None => Some(None),
                };
                match (expression, timezone) {
                    (Some(expression), Some(timezone)) => Some(Schedule::Cron {
                        expression: expression.to_string(),
                        timezone,
                    }),
                    _ => None,
                }
            }
            None => {
                sink.at(
                    missing_at,
                    "core.cron needs `trigger_parameters: {schedule: <cron>}`, e.g. `schedule: \"*/5 * * * *\"`",
                );
                None
            }
        },
        _ => return (ok.then_some(json), None),
    };
    let Some(schedule) = schedule else {
        return (None, None);
    };
    // Point at the value at fault: check the expression on its own first,
    // then with the time zone.
    let (first, first_at) = match &schedule {
        Schedule::Cron { expression, .. } => (
            Schedule::Cron {
                expression: expression.clone(),
                timezone: None,
            },
            get("schedule"),
        ),
        Schedule::Interval(_) => (schedule.clone(), get("every")),
    };
    for (candidate, at) in [(&first, first_at), (&schedule, get("timezone"))] {
        if let Err(e) = candidate.check() {
            sink.at(
                at.map_or(missing_at, |n| n.pos),
                format!("invalid schedule: {e}"),
            );
            return (None, None);
        }
    }
    (ok.then_some(json), Some(schedule))
}

fn criteria_list(node: &Node, scope: &Scope<'_>, sink: &mut Sink<'_>) -> Option<Vec<Criterion>> {
    let items = sequence(
        node,
        "a list of criteria (`- {path: ..., op: ..., value: ...}`)",
        sink,
    )?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        match criterion(item, scope, sink) {
            Some(c) => out.push(c),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn criterion(node: &Node, scope: &Scope<'_>, sink: &mut Sink<'_>) -> Option<Criterion> {
    let Value::Map(entries) = &node.value else {
        expected(
            node,
            "a criterion (`{path, op, value}`, or `any`, `all` or `not`)",
            sink,
        );
        return None;
    };
    let is_group_key = |key: &str| GROUP_KEYS.contains(&key);
    let groups = entries.iter().filter(|e| is_group_key(&e.key)).count();
    let matches = entries
        .iter()
        .filter(|e| MATCH_KEYS.contains(&e.key.as_str()))
        .count();
    if groups > 0 && matches > 0 {
        sink.at(
            node.pos,
            "a criterion is either a match (`path`, `op`, `value`) or one group (`any`, `all` or `not`), not both",
        );
        return None;
    }
    if groups == 0 {
        return match_criterion(node, scope, sink);
    }

    let fields = Fields::new(node, "a criterion group", GROUP_KEYS, sink)?;
    if groups > 1 {
        sink.at(
            node.pos,
            "a group holds exactly one of `any`, `all` or `not`; nest them to combine",
        );
        return None;
    }
    let entry = fields.entries.iter().find(|e| is_group_key(&e.key))?;
    match entry.key.as_str() {
        "not" => {
            let inner = criterion(&entry.value, scope, sink)?;
            Some(Criterion::Not(Box::new(inner)))
        }
        key => {
            let items = sequence(
                &entry.value,
                &format!("a list of criteria under `{key}`"),
                sink,
            )?;
            if items.is_empty() {
                sink.at(
                    entry.value.pos,
                    format!("`{key}` needs at least one criterion"),
                );
                return None;
            }
            let mut inner = Vec::with_capacity(items.len());
            let mut ok = true;
            for item in items {
                match criterion(item, scope, sink) {
                    Some(c) => inner.push(c),
                    None => ok = false,
                }
            }
            if !ok {
                return None;
            }
            Some(if key == "any" {
                Criterion::Any(inner)
            } else {
                Criterion::All(inner)
            })
        }
    }
}

fn match_criterion(node: &Node, scope: &Scope<'_>, sink: &mut Sink<'_>) -> Option<Criterion> {
    let before = sink.count();
    let fields = Fields::new(node, "a criterion", MATCH_KEYS, sink)?;

    let path = fields.required("path", sink).and_then(|node| {
        let path = string(node, sink)?;
        if path.is_empty() || path.split('.').any(str::is_empty) {
            sink.at(
                node.pos,
                format!("invalid path {path:?}: dotted field names, e.g. `labels.alertname`"),
            );
            return None;
        }
        if let Scope::Payload {
            trigger,
            fields: Some(payload),
        } = scope
        {
            let top = path.split('.').next().unwrap_or(path);
            if !payload.contains(&top) {
                sink.at(
                    node.pos,
                    format!(
                        "`{top}` is not in the payload of {trigger} (fields: {})",
                        list(payload.iter().copied())
                    ),
                );
            }
        }
        Some(path.to_string())
    });

    let op = fields.required("op", sink).and_then(|node| {
        let name = string(node, sink)?;
        match serde_json::from_value::<Operator>(Json::String(name.to_string())) {
            Ok(op) => Some(op),
            Err(_) => {
                sink.at(
                    node.pos,
                    format!(
                        "unknown operator `{name}`{} (operators: {})",
                        did_you_mean(name, OPERATORS.iter().copied()),
                        list(OPERATORS.iter().copied())
                    ),
                );
                None
            }
        }
    });

    // `value: null` is a value (equals null); only a missing key is `None`.
    let value = match fields.entry("value") {
        Some(entry) => Some(to_json(&entry.value, sink)?),
        None => None,
    };

    let (path, op) = (path?, op?);
    if sink.count() != before {
        return None;
    }
    let criterion = Criterion::Match { path, op, value };
    if let Err(why) = criteria::validate(&criterion) {
        sink.at(node.pos, format!("invalid criterion: {why}"));
        return None;
    }
    Some(criterion)
}

fn rule_action(
    node: &Node,
    ctx: &Context<'_>,
    scope: &Scope<'_>,
    sink: &mut Sink<'_>,
) -> Option<RuleAction> {
    let before = sink.count();
    let fields = Fields::new(node, "the action to run", ACTION_KEYS, sink)?;

    let reference_node = fields.required("ref", sink);
    let reference = reference_node.and_then(|n| string(n, sink));
    let action = match (reference_node, reference) {
        (Some(node), Some(reference)) => resolve(reference, node.pos, ctx, sink),
        _ => None,
    };

    let target = match fields.get("target") {
        Some(node) => string(node, sink).and_then(|text| {
            if !templates::check(text, node.pos, scope, sink) {
                return None;
            }
            if !is_template(text)
                && let Err(e) = target::parse(text)
            {
                sink.at(
                    node.pos,
                    format!(
                        "invalid target expression: {} at column {} of the target",
                        e.message, e.column
                    ),
                );
                return None;
            }
            Some(text.to_string())
        }),
        None => {
            if let Some(action) = &action
                && action.runs_on_drones()
            {
                sink.at(
                    fields.pos,
                    format!(
                        "missing `target`: {} runs on drones ({} runner); say which, e.g. `target: \"{{{{ labels.instance }}}}\"`",
                        action.reference(),
                        action.runner.kind()
                    ),
                );
            }
            None
        }
    };

    let parameters = fields.get("parameters");
    let mut values = Map::new();
    if let Some(node) = parameters
        && let Some(entries) = mapping(node, "a mapping of parameter values", sink)
    {
        for entry in entries {
            let spec = match &action {
                Some(action) => match action.parameters.get(&entry.key) {
                    Some(spec) => Some(spec),
                    None => {
                        let known = if action.parameters.is_empty() {
                            "it has no parameters".to_string()
                        } else {
                            format!(
                                "parameters: {}",
                                list(action.parameters.keys().map(String::as_str))
                            )
                        };
                        sink.at(
                            entry.key_pos,
                            format!(
                                "`{}` is not a parameter of {} ({known})",
                                entry.key,
                                action.reference()
                            ),
                        );
                        None
                    }
                },
                None => None,
            };
            let templated = check_value_templates(&entry.value, scope, sink);
            let Some(value) = to_json(&entry.value, sink) else {
                continue;
            };
            if let Some(spec) = spec
                && !templated
            {
                if !fits(spec.kind, &value) {
                    sink.at(
                        entry.value.pos,
                        format!(
                            "`{}` must be {}, found {}",
                            entry.key,
                            type_name(spec.kind),
                            entry.value.describe()
                        ),
                    );
                } else if let Some(allowed) = &spec.allowed
                    && !allowed.contains(&value)
                {
                    let shown: Vec<String> = allowed.iter().map(Json::to_string).collect();
                    sink.at(
                        entry.value.pos,
                        format!(
                            "`{}` must be one of {}, found {value}",
                            entry.key,
                            shown.join(", ")
                        ),
                    );
                }
            }
            values.insert(entry.key.clone(), value);
        }
    }

    if let Some(action) = &action {
        let missing: Vec<&str> = action
            .parameters
            .iter()
            .filter(|(name, spec)| {
                spec.required && spec.default.is_none() && !values.contains_key(*name)
            })
            .map(|(name, _)| name.as_str())
            .collect();
        if !missing.is_empty() {
            let at = parameters.map_or(fields.pos, |n| n.pos);
            let plural = if missing.len() == 1 { "" } else { "s" };
            sink.at(
                at,
                format!(
                    "missing required parameter{plural} of {}: {}",
                    action.reference(),
                    list(missing.iter().copied())
                ),
            );
        }
    }

    let reference = reference?;
    if sink.count() != before {
        return None;
    }
    Some(RuleAction {
        reference: reference.to_string(),
        target,
        parameters: values,
    })
}

/// Checks every string inside a parameter value as a template; returns
/// whether any of them is one (such a value's type is only known when it
/// renders).
fn check_value_templates(node: &Node, scope: &Scope<'_>, sink: &mut Sink<'_>) -> bool {
    match &node.value {
        Value::Str(text) => {
            templates::check(text, node.pos, scope, sink);
            is_template(text)
        }
        // Every item is checked, not just up to the first template.
        Value::Seq(items) => {
            let mut any = false;
            for item in items {
                any |= check_value_templates(item, scope, sink);
            }
            any
        }
        Value::Map(entries) => {
            let mut any = false;
            for entry in entries {
                any |= check_value_templates(&entry.value, scope, sink);
            }
            any
        }
        _ => false,
    }
}

/// The action `reference` names, reporting why there is none. `None` also
/// when the action is this pack's but its own file has problems.
fn resolve(reference: &str, pos: Pos, ctx: &Context<'_>, sink: &mut Sink<'_>) -> Option<Action> {
    let Some((pack, name)) = reference
        .split_once('.')
        .filter(|(p, n)| check_name(p).is_ok() && check_name(n).is_ok())
    else {
        sink.at(
            pos,
            format!("invalid action reference {reference:?}: write `pack.action`, e.g. `linux.restart_service`"),
        );
        return None;
    };
    let this_pack = ctx.pack?;
    if pack == this_pack {
        return match ctx.actions.get(name) {
            Some(action) => action.clone(),
            None => {
                sink.at(
                    pos,
                    format!(
                        "this pack has no action `{name}`{}",
                        did_you_mean(name, ctx.actions.keys().map(String::as_str))
                    ),
                );
                None
            }
        };
    }
    let Some(action) = ctx.installed.action(reference) else {
        sink.at(
            pos,
            format!("unknown action `{reference}`: pack `{pack}` is not installed or has no action `{name}`"),
        );
        return None;
    };
    if let Some(dependencies) = ctx.dependencies
        && !dependencies.iter().any(|d| d == pack)
    {
        sink.at(
            pos,
            format!("`{reference}` is from pack `{pack}`, which is not in this pack's `dependencies`; add it there"),
        );
    }
    Some(action)
}

fn policy(node: &Node, scope: &Scope<'_>, sink: &mut Sink<'_>) -> Option<Policy> {
    let before = sink.count();
    let fields = Fields::new(node, "a policy", POLICY_KEYS, sink)?;

    let cooldown = fields.get("cooldown").and_then(|node| {
        let cooldown = Fields::new(node, "a cooldown", COOLDOWN_KEYS, sink)?;
        let key = cooldown.required("key", sink).and_then(|node| {
            let key = string(node, sink)?;
            templates::check(key, node.pos, scope, sink).then(|| key.to_string())
        });
        let period = cooldown
            .required("period", sink)
            .and_then(|n| duration(n, sink));
        Some(Cooldown {
            key: key?,
            period: period?,
        })
    });

    let max_concurrent = fields.get("max_concurrent").and_then(|node| {
        let n = integer(node, sink)?;
        match u32::try_from(n) {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                sink.at(
                    node.pos,
                    format!("`max_concurrent` must be at least 1, found {n}"),
                );
                None
            }
        }
    });

    let blast_radius = fields.get("blast_radius").and_then(|node| {
        let radius = Fields::new(node, "a blast radius", BLAST_RADIUS_KEYS, sink)?;
        let max_hosts = radius.get("max_hosts").and_then(|node| {
            let n = integer(node, sink)?;
            match u32::try_from(n) {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    sink.at(node.pos, format!("`max_hosts` must be at least 1, found {n}"));
                    None
                }
            }
        });
        let max_percent = radius.get("max_percent").and_then(|node| {
            let p = number(node, sink)?;
            if p > 0.0 && p <= 100.0 {
                Some(p)
            } else {
                sink.at(
                    node.pos,
                    format!("`max_percent` must be more than 0 and at most 100, found {p}"),
                );
                None
            }
        });
        if radius.get("max_hosts").is_none() && radius.get("max_percent").is_none() {
            sink.at(
                radius.pos,
                "a blast radius needs `max_hosts`, `max_percent` or both; without them it limits nothing",
            );
        }
        let window = radius.required("window", sink).and_then(|n| duration(n, sink));
        Some(BlastRadius {
            max_hosts,
            max_percent,
            window: window?,
        })
    });

    if sink.count() != before {
        return None;
    }
    Some(Policy {
        cooldown,
        max_concurrent,
        blast_radius,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operator_name_parses() {
        for name in OPERATORS {
            let parsed = serde_json::from_value::<Operator>(Json::String((*name).to_string()));
            assert!(parsed.is_ok(), "{name} is not an Operator");
        }
    }
}
