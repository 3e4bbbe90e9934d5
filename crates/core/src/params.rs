//! Action parameter schemas: types, required, defaults, enums and secrets.
//!
//! # Types
//!
//! | type | accepts (JSON) | on the command line (`key=value`) |
//! | --- | --- | --- |
//! | `string` | a string | the text as it is |
//! | `integer` | an integer number (`3`, not `3.0` or `"3"`) | `3`, `-7`, `+7` |
//! | `number` | any finite number | `3`, `2.5`, `1e3` (not `nan`, `inf`) |
//! | `boolean` | `true` or `false` | exactly `true` or `false` |
//! | `array` | an array | JSON: `tags=["a","b"]` |
//! | `object` | an object | JSON: `env={"A":"1"}` |
//!
//! # Validation rules
//!
//! - A JSON `null` counts as *not given*: the default applies, and a required
//!   parameter without one is missing. (A template such as
//!   `{{ labels.x | default(none) }}` can then leave a parameter out.)
//! - A required parameter that has a default is satisfied by the default.
//! - Every problem is reported, not just the first; each message starts with
//!   the parameter's name. A secret's value is never quoted in a message.
//!
//! # Masking
//!
//! [`mask_secrets`] replaces secret parameters in a parameter map;
//! [`secret_texts`] lists the forms in which their *values* can appear in
//! free text (command output, error messages), for
//! [`crate::model::redact`], the one masker the hive and the drone use;
//! [`mask_in_text`] puts the two together. Values shorter than
//! [`MIN_MASKED_LEN`] characters are not masked in text: masking a value
//! such as `1` or `ab` would mangle unrelated output and, worse, the
//! positions of the masks would reveal the secret's characters. Such short
//! secrets are still masked in parameter maps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
}

impl ParamType {
    /// The type's name with its article, for messages: `an integer`.
    pub fn describe(self) -> &'static str {
        match self {
            ParamType::String => "a string",
            ParamType::Integer => "an integer",
            ParamType::Number => "a number",
            ParamType::Boolean => "a boolean",
            ParamType::Array => "an array",
            ParamType::Object => "an object",
        }
    }

    /// Whether a JSON value is of this type. `integer` takes JSON integers
    /// only; `number` takes any number (serde_json never holds NaN or
    /// infinities, so every number here is finite).
    pub fn accepts(self, value: &Value) -> bool {
        match self {
            ParamType::String => value.is_string(),
            ParamType::Integer => value.is_i64() || value.is_u64(),
            ParamType::Number => value.is_number(),
            ParamType::Boolean => value.is_boolean(),
            ParamType::Array => value.is_array(),
            ParamType::Object => value.is_object(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    #[serde(rename = "type")]
    pub kind: ParamType,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<Value>,
    #[serde(default, rename = "enum")]
    pub allowed: Option<Vec<Value>>,
    /// Masked in every output, log and audit record.
    #[serde(default)]
    pub secret: bool,
    #[serde(default)]
    pub description: String,
}

pub type ParamSchema = BTreeMap<String, ParamSpec>;

/// What the placeholder shows instead of a secret.
pub const MASK: &str = crate::model::REDACTED;

/// Secret values shorter than this many characters are not masked inside
/// free text; see the module documentation.
pub const MIN_MASKED_LEN: usize = crate::model::MIN_REDACTED_LEN;

/// Checks a schema is consistent, returning every problem, each starting
/// with the parameter's name: names are identifiers (`[A-Za-z_][A-Za-z0-9_]*`,
/// so they work in templates and as `key=value` words), an `enum` is not
/// empty and its values have the parameter's type, and a default has the
/// type and is one of the `enum` values.
pub fn check_schema(schema: &ParamSchema) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for (name, spec) in schema {
        if !is_identifier(name) {
            problems.push(format!(
                "{name:?}: a parameter name must be a letter or _ followed by letters, digits or _"
            ));
        }
        if let Some(allowed) = &spec.allowed {
            if allowed.is_empty() {
                problems.push(format!(
                    "{name}: enum is empty, so no value would be accepted"
                ));
            }
            for value in allowed {
                if !spec.kind.accepts(value) {
                    problems.push(format!(
                        "{name}: enum value {} is not {}",
                        describe_value(value, spec.secret),
                        spec.kind.describe()
                    ));
                }
            }
        }
        if let Some(default) = spec.default.as_ref().filter(|v| !v.is_null()) {
            if !spec.kind.accepts(default) {
                problems.push(format!(
                    "{name}: the default is {}, expected {}",
                    describe_value(default, spec.secret),
                    spec.kind.describe()
                ));
            } else if let Some(allowed) = &spec.allowed
                && !allowed.contains(default)
            {
                problems.push(format!("{name}: the default is not one of the enum values"));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Checks `given` against `schema`: unknown names, missing required ones,
/// wrong types, values outside the enum; fills in defaults. Returns every
/// problem, each naming its parameter.
pub fn validate(
    schema: &ParamSchema,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<String>> {
    let mut problems = Vec::new();

    let mut unknown: Vec<&String> = given
        .keys()
        .filter(|name| !schema.contains_key(*name))
        .collect();
    unknown.sort();
    for name in unknown {
        let mut message = format!("{name}: unknown parameter");
        if schema.is_empty() {
            message.push_str("; this action takes no parameters");
        } else {
            if let Some(close) = closest(name, schema.keys()) {
                message.push_str(&format!(" (did you mean {close}?)"));
            }
            let known: Vec<&str> = schema.keys().map(String::as_str).collect();
            message.push_str(&format!("; known parameters: {}", known.join(", ")));
        }
        problems.push(message);
    }

    let mut out = Map::new();
    for (name, spec) in schema {
        let value = match given.get(name).filter(|v| !v.is_null()) {
            Some(value) => value,
            None => match spec.default.as_ref().filter(|v| !v.is_null()) {
                Some(default) => {
                    out.insert(name.clone(), default.clone());
                    continue;
                }
                None => {
                    if spec.required {
                        problems.push(format!("{name}: required, and not given"));
                    }
                    continue;
                }
            },
        };
        if !spec.kind.accepts(value) {
            problems.push(format!(
                "{name}: expected {}, got {}",
                spec.kind.describe(),
                describe_value(value, spec.secret)
            ));
            continue;
        }
        if let Some(allowed) = &spec.allowed
            && !allowed.contains(value)
        {
            problems.push(if spec.secret {
                format!(
                    "{name}: the value is not one of the {} allowed values",
                    allowed.len()
                )
            } else {
                let choices: Vec<String> = allowed.iter().map(Value::to_string).collect();
                format!(
                    "{name}: {} is not one of {}",
                    describe_value(value, false),
                    choices.join(", ")
                )
            });
            continue;
        }
        out.insert(name.clone(), value.clone());
    }

    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Parses a `key=value` word from the command line into the parameter's
/// type (`count=3` is an integer, `tags=["a"]` an array). The error does not
/// name the parameter (the caller does) and never quotes a secret.
pub fn parse_cli_value(spec: &ParamSpec, text: &str) -> Result<Value, String> {
    let shown = || {
        if spec.secret {
            "the value".to_string()
        } else {
            crate::echo::quote(text)
        }
    };
    match spec.kind {
        ParamType::String => Ok(Value::String(text.to_string())),
        ParamType::Integer => {
            if let Ok(n) = text.parse::<i64>() {
                Ok(Value::from(n))
            } else if let Ok(n) = text.parse::<u64>() {
                Ok(Value::from(n))
            } else {
                Err(format!("expected an integer such as 3, got {}", shown()))
            }
        }
        ParamType::Number => {
            if let Ok(n) = text.parse::<i64>() {
                return Ok(Value::from(n));
            }
            // Rust's float parser accepts `nan`, `inf` and `infinity`, which
            // JSON cannot carry.
            let number = text
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && !text.trim().is_empty())
                .and_then(serde_json::Number::from_f64);
            number
                .map(Value::Number)
                .ok_or_else(|| format!("expected a number such as 2.5, got {}", shown()))
        }
        ParamType::Boolean => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("expected true or false, got {}", shown())),
        },
        ParamType::Array | ParamType::Object => {
            let (what, example) = if spec.kind == ParamType::Array {
                ("a JSON array", r#"["a","b"]"#)
            } else {
                ("a JSON object", r#"{"key":"value"}"#)
            };
            match serde_json::from_str::<Value>(text) {
                Ok(value) if spec.kind.accepts(&value) => Ok(value),
                Ok(value) => Err(format!(
                    "expected {what} such as {example}, got {}",
                    describe_value(&value, spec.secret)
                )),
                // serde_json's message has the column, which matters in a
                // long JSON word; it never echoes the input.
                Err(error) => Err(format!("expected {what} such as {example}: {error}")),
            }
        }
    }
}

/// Converts string values given for non-string parameters (as typed on a
/// command line, `count=3`) to the parameter's type with
/// [`parse_cli_value`]. Values already of another JSON type, and unknown
/// names, are left for [`validate`] to judge.
pub fn coerce_strings(
    schema: &ParamSchema,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<String>> {
    let mut problems = Vec::new();
    let mut coerced = Map::new();
    for (name, value) in given {
        let converted = match (schema.get(name), value) {
            (Some(spec), Value::String(text)) if spec.kind != ParamType::String => {
                parse_cli_value(spec, text).map_err(|e| format!("{name}: {e}"))
            }
            _ => Ok(value.clone()),
        };
        match converted {
            Ok(value) => {
                coerced.insert(name.clone(), value);
            }
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() {
        Ok(coerced)
    } else {
        Err(problems)
    }
}

/// A copy with every secret parameter replaced by [`MASK`].
pub fn mask_secrets(schema: &ParamSchema, params: &Map<String, Value>) -> Map<String, Value> {
    params
        .iter()
        .map(|(name, value)| {
            let secret = schema.get(name).is_some_and(|spec| spec.secret);
            let shown = if secret && !value.is_null() {
                Value::String(MASK.to_string())
            } else {
                value.clone()
            };
            (name.clone(), shown)
        })
        .collect()
}

/// The texts in which the secret parameters' values can appear in free
/// text: a string value as it is and as it appears inside a JSON string
/// (escaped); a number's decimal text; for arrays and objects, their JSON
/// text and every string or number inside them. Booleans and nulls have
/// none. Values shorter than [`MIN_MASKED_LEN`] are left out (see the
/// module documentation).
pub fn secret_texts(schema: &ParamSchema, params: &Map<String, Value>) -> Vec<String> {
    let mut secrets: Vec<String> = Vec::new();
    for (name, value) in params {
        if schema.get(name).is_some_and(|spec| spec.secret) {
            secret_forms(value, &mut secrets);
            if value.is_array() || value.is_object() {
                secrets.push(value.to_string());
            }
        }
    }
    secrets.retain(|s| s.chars().count() >= MIN_MASKED_LEN);
    secrets.sort();
    secrets.dedup();
    secrets
}

/// Replaces every occurrence of a secret parameter's value in `text` with
/// [`MASK`]: [`secret_texts`] masked by [`crate::model::redact`].
pub fn mask_in_text(schema: &ParamSchema, params: &Map<String, Value>, text: &str) -> String {
    crate::model::redact(text, &secret_texts(schema, params))
}

fn secret_forms(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => {
            out.push(s.clone());
            // The same secret echoed inside JSON (`"pa\"ss"`), without quotes.
            let escaped = Value::String(s.clone()).to_string();
            let inner = &escaped[1..escaped.len() - 1];
            if inner != s {
                out.push(inner.to_string());
            }
        }
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|item| secret_forms(item, out)),
        Value::Object(map) => map.values().for_each(|item| secret_forms(item, out)),
        Value::Bool(_) | Value::Null => {}
    }
}

/// `the string "web-1"`, `the number 3.5`, `an array`; secrets show only
/// their type.
fn describe_value(value: &Value, secret: bool) -> String {
    const MAX: usize = 40;
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(_) if secret => "a boolean".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(_) if secret => "a number".to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(_) if secret => "a string".to_string(),
        Value::String(s) => {
            let shown: String = s.chars().take(MAX).collect();
            let ellipsis = if shown.len() < s.len() { "..." } else { "" };
            format!("the string {shown:?}{ellipsis}")
        }
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The known name within edit distance 2 of a misspelt one, if exactly one
/// is closest.
fn closest<'a>(name: &str, known: impl Iterator<Item = &'a String>) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    let mut tie = false;
    for candidate in known {
        let distance = edit_distance(name, candidate);
        match best {
            _ if distance > 2 => {}
            Some((d, _)) if distance > d => {}
            Some((d, _)) if distance == d => tie = true,
            _ => {
                best = Some((distance, candidate));
                tie = false;
            }
        }
    }
    if tie {
        None
    } else {
        best.map(|(_, name)| name)
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn cli_strings_become_the_declared_type_and_bad_ones_are_named() {
        let schema: ParamSchema = [
            ("count".to_string(), spec(ParamType::Integer)),
            ("name".to_string(), spec(ParamType::String)),
            ("force".to_string(), spec(ParamType::Boolean)),
        ]
        .into();
        let given = json!({"count": "3", "name": "42", "force": true, "other": "x"});
        let coerced = coerce_strings(&schema, given.as_object().expect("object")).expect("coerce");
        assert_eq!(coerced["count"], 3);
        assert_eq!(coerced["name"], "42");
        assert_eq!(coerced["force"], true);
        assert_eq!(coerced["other"], "x");
        let bad = json!({"count": "three"});
        let problems =
            coerce_strings(&schema, bad.as_object().expect("object")).expect_err("not a number");
        assert!(problems[0].starts_with("count:"), "{problems:?}");
    }

    fn spec(kind: ParamType) -> ParamSpec {
        ParamSpec {
            kind,
            required: false,
            default: None,
            allowed: None,
            secret: false,
            description: String::new(),
        }
    }

    fn schema() -> ParamSchema {
        let mut schema = ParamSchema::new();
        schema.insert(
            "service".into(),
            ParamSpec {
                required: true,
                ..spec(ParamType::String)
            },
        );
        schema.insert(
            "count".into(),
            ParamSpec {
                default: Some(json!(1)),
                ..spec(ParamType::Integer)
            },
        );
        schema.insert("ratio".into(), spec(ParamType::Number));
        schema.insert(
            "force".into(),
            ParamSpec {
                default: Some(json!(false)),
                ..spec(ParamType::Boolean)
            },
        );
        schema.insert("tags".into(), spec(ParamType::Array));
        schema.insert("env".into(), spec(ParamType::Object));
        schema.insert(
            "mode".into(),
            ParamSpec {
                allowed: Some(vec![json!("restart"), json!("reload")]),
                ..spec(ParamType::String)
            },
        );
        schema.insert(
            "token".into(),
            ParamSpec {
                secret: true,
                allowed: None,
                ..spec(ParamType::String)
            },
        );
        schema
    }

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    type Case = (&'static str, Value, Result<Value, Vec<String>>);

    #[test]
    fn validation_table() {
        let known = "; known parameters: count, env, force, mode, ratio, service, tags, token";
        let cases: Vec<Case> = vec![
            (
                "only required, defaults filled",
                json!({"service": "nginx"}),
                Ok(json!({"service": "nginx", "count": 1, "force": false})),
            ),
            (
                "everything given",
                json!({"service": "nginx", "count": 3, "ratio": 0.5, "force": true, "tags": ["a"], "env": {"A": "1"}, "mode": "reload", "token": "s3cret"}),
                Ok(
                    json!({"service": "nginx", "count": 3, "ratio": 0.5, "force": true, "tags": ["a"], "env": {"A": "1"}, "mode": "reload", "token": "s3cret"}),
                ),
            ),
            (
                "number accepts integers",
                json!({"service": "x", "ratio": 2}),
                Ok(json!({"service": "x", "ratio": 2, "count": 1, "force": false})),
            ),
            (
                "null counts as not given",
                json!({"service": "x", "count": null, "tags": null}),
                Ok(json!({"service": "x", "count": 1, "force": false})),
            ),
            (
                "missing required",
                json!({}),
                Err(vec!["service: required, and not given".into()]),
            ),
            (
                "null required",
                json!({"service": null}),
                Err(vec!["service: required, and not given".into()]),
            ),
            (
                "unknown name with a suggestion",
                json!({"service": "x", "servce": "y"}),
                Err(vec![format!(
                    "servce: unknown parameter (did you mean service?){known}"
                )]),
            ),
            (
                "unknown name, nothing close",
                json!({"service": "x", "zzz": 1}),
                Err(vec![format!("zzz: unknown parameter{known}")]),
            ),
            (
                "integer rejects a float",
                json!({"service": "x", "count": 3.0}),
                Err(vec![
                    "count: expected an integer, got the number 3.0".into(),
                ]),
            ),
            (
                "integer rejects a string",
                json!({"service": "x", "count": "3"}),
                Err(vec![
                    "count: expected an integer, got the string \"3\"".into(),
                ]),
            ),
            (
                "number rejects a string",
                json!({"service": "x", "ratio": "0.5"}),
                Err(vec![
                    "ratio: expected a number, got the string \"0.5\"".into(),
                ]),
            ),
            (
                "boolean rejects a string",
                json!({"service": "x", "force": "true"}),
                Err(vec![
                    "force: expected a boolean, got the string \"true\"".into(),
                ]),
            ),
            (
                "string rejects a number",
                json!({"service": 80}),
                Err(vec!["service: expected a string, got the number 80".into()]),
            ),
            (
                "array rejects an object",
                json!({"service": "x", "tags": {}}),
                Err(vec!["tags: expected an array, got an object".into()]),
            ),
            (
                "object rejects an array",
                json!({"service": "x", "env": []}),
                Err(vec!["env: expected an object, got an array".into()]),
            ),
            (
                "enum",
                json!({"service": "x", "mode": "stop"}),
                Err(vec![
                    "mode: the string \"stop\" is not one of \"restart\", \"reload\"".into(),
                ]),
            ),
            (
                "secret type mismatch does not echo the value",
                json!({"service": "x", "token": 1234}),
                Err(vec!["token: expected a string, got a number".into()]),
            ),
            (
                "long strings are shortened",
                json!({"service": "x", "count": "a".repeat(100)}),
                Err(vec![format!(
                    "count: expected an integer, got the string \"{}\"...",
                    "a".repeat(40)
                )]),
            ),
            (
                "every problem, unknown first then by name",
                json!({"count": "x", "force": 1, "mode": "stop", "b_unknown": 1, "a_unknown": 2}),
                Err(vec![
                    format!("a_unknown: unknown parameter{known}"),
                    format!("b_unknown: unknown parameter{known}"),
                    "count: expected an integer, got the string \"x\"".into(),
                    "force: expected a boolean, got the number 1".into(),
                    "mode: the string \"stop\" is not one of \"restart\", \"reload\"".into(),
                    "service: required, and not given".into(),
                ]),
            ),
        ];
        for (name, given, want) in cases {
            let got = validate(&schema(), &map(given));
            let want = want.map(map);
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn validation_edge_cases() {
        assert_eq!(
            validate(&ParamSchema::new(), &map(json!({"x": 1}))),
            Err(vec![
                "x: unknown parameter; this action takes no parameters".into()
            ])
        );
        assert_eq!(validate(&ParamSchema::new(), &Map::new()), Ok(Map::new()));

        let mut s = ParamSchema::new();
        s.insert("big".into(), spec(ParamType::Integer));
        assert_eq!(
            validate(&s, &map(json!({"big": u64::MAX}))),
            Ok(map(json!({"big": u64::MAX})))
        );
        assert_eq!(
            validate(&s, &map(json!({"big": i64::MIN}))),
            Ok(map(json!({"big": i64::MIN})))
        );

        // Required with a default: the default satisfies it.
        let mut s = ParamSchema::new();
        s.insert(
            "n".into(),
            ParamSpec {
                required: true,
                default: Some(json!(5)),
                ..spec(ParamType::Integer)
            },
        );
        assert_eq!(validate(&s, &Map::new()), Ok(map(json!({"n": 5}))));

        // A secret outside its enum is not echoed.
        let mut s = ParamSchema::new();
        s.insert(
            "pin".into(),
            ParamSpec {
                secret: true,
                allowed: Some(vec![json!("1111"), json!("2222")]),
                ..spec(ParamType::String)
            },
        );
        assert_eq!(
            validate(&s, &map(json!({"pin": "9999"}))),
            Err(vec![
                "pin: the value is not one of the 2 allowed values".into()
            ])
        );

        // A tie between two close names suggests neither.
        let mut s = ParamSchema::new();
        s.insert("ab".into(), spec(ParamType::String));
        s.insert("ac".into(), spec(ParamType::String));
        assert_eq!(
            validate(&s, &map(json!({"aa": "x"}))),
            Err(vec![
                "aa: unknown parameter; known parameters: ab, ac".into()
            ])
        );
    }

    #[test]
    fn schema_checks() {
        assert_eq!(check_schema(&schema()), Ok(()));
        let mut s = ParamSchema::new();
        s.insert("bad-name".into(), spec(ParamType::String));
        s.insert(
            "empty_enum".into(),
            ParamSpec {
                allowed: Some(vec![]),
                ..spec(ParamType::String)
            },
        );
        s.insert(
            "enum_type".into(),
            ParamSpec {
                allowed: Some(vec![json!(1), json!("a")]),
                ..spec(ParamType::Integer)
            },
        );
        s.insert(
            "default_type".into(),
            ParamSpec {
                default: Some(json!("3")),
                ..spec(ParamType::Integer)
            },
        );
        s.insert(
            "default_enum".into(),
            ParamSpec {
                default: Some(json!("c")),
                allowed: Some(vec![json!("a")]),
                ..spec(ParamType::String)
            },
        );
        s.insert(
            "secret_default".into(),
            ParamSpec {
                default: Some(json!(1)),
                secret: true,
                ..spec(ParamType::String)
            },
        );
        s.insert(
            "null_default".into(),
            ParamSpec {
                default: Some(Value::Null),
                ..spec(ParamType::String)
            },
        );
        s.insert("_ok9".into(), spec(ParamType::String));
        assert_eq!(
            check_schema(&s),
            Err(vec![
                "\"bad-name\": a parameter name must be a letter or _ followed by letters, digits or _".to_string(),
                "default_enum: the default is not one of the enum values".to_string(),
                "default_type: the default is the string \"3\", expected an integer".to_string(),
                "empty_enum: enum is empty, so no value would be accepted".to_string(),
                "enum_type: enum value the string \"a\" is not an integer".to_string(),
                "secret_default: the default is a number, expected a string".to_string(),
            ])
        );
        for bad in ["", "1a", "a b", "a=b", "a.b", "é"] {
            assert!(!is_identifier(bad), "{bad:?}");
        }
    }

    #[test]
    fn cli_values() {
        let secret_int = ParamSpec {
            secret: true,
            ..spec(ParamType::Integer)
        };
        let cases: Vec<(ParamSpec, &str, Result<Value, &str>)> = vec![
            (
                spec(ParamType::String),
                "hello world",
                Ok(json!("hello world")),
            ),
            (spec(ParamType::String), "", Ok(json!(""))),
            (spec(ParamType::String), "3", Ok(json!("3"))),
            (spec(ParamType::String), "a=b", Ok(json!("a=b"))),
            (spec(ParamType::Integer), "3", Ok(json!(3))),
            (spec(ParamType::Integer), "-7", Ok(json!(-7))),
            (spec(ParamType::Integer), "+7", Ok(json!(7))),
            (
                spec(ParamType::Integer),
                "18446744073709551615",
                Ok(json!(u64::MAX)),
            ),
            (
                spec(ParamType::Integer),
                "3.0",
                Err("expected an integer such as 3, got \"3.0\""),
            ),
            (
                spec(ParamType::Integer),
                " 3",
                Err("expected an integer such as 3, got \" 3\""),
            ),
            (
                spec(ParamType::Integer),
                "",
                Err("expected an integer such as 3, got \"\""),
            ),
            (
                spec(ParamType::Integer),
                "99999999999999999999999",
                Err("expected an integer such as 3, got \"99999999999999999999999\""),
            ),
            (
                secret_int,
                "abc",
                Err("expected an integer such as 3, got the value"),
            ),
            (spec(ParamType::Number), "3", Ok(json!(3))),
            (spec(ParamType::Number), "2.5", Ok(json!(2.5))),
            (spec(ParamType::Number), "-0.5", Ok(json!(-0.5))),
            (spec(ParamType::Number), "1e3", Ok(json!(1000.0))),
            (
                spec(ParamType::Number),
                "nan",
                Err("expected a number such as 2.5, got \"nan\""),
            ),
            (
                spec(ParamType::Number),
                "inf",
                Err("expected a number such as 2.5, got \"inf\""),
            ),
            (
                spec(ParamType::Number),
                "-infinity",
                Err("expected a number such as 2.5, got \"-infinity\""),
            ),
            (
                spec(ParamType::Number),
                "1e999",
                Err("expected a number such as 2.5, got \"1e999\""),
            ),
            (
                spec(ParamType::Number),
                "x",
                Err("expected a number such as 2.5, got \"x\""),
            ),
            (spec(ParamType::Boolean), "true", Ok(json!(true))),
            (spec(ParamType::Boolean), "false", Ok(json!(false))),
            (
                spec(ParamType::Boolean),
                "True",
                Err("expected true or false, got \"True\""),
            ),
            (
                spec(ParamType::Boolean),
                "yes",
                Err("expected true or false, got \"yes\""),
            ),
            (
                spec(ParamType::Boolean),
                "1",
                Err("expected true or false, got \"1\""),
            ),
            (spec(ParamType::Array), r#"["a", 1]"#, Ok(json!(["a", 1]))),
            (spec(ParamType::Array), "[]", Ok(json!([]))),
            (
                spec(ParamType::Array),
                r#"{"a":1}"#,
                Err(r#"expected a JSON array such as ["a","b"], got an object"#),
            ),
            (
                spec(ParamType::Array),
                "a,b",
                Err(
                    r#"expected a JSON array such as ["a","b"]: expected value at line 1 column 1"#,
                ),
            ),
            (
                spec(ParamType::Array),
                "[1,",
                Err(
                    r#"expected a JSON array such as ["a","b"]: EOF while parsing a value at line 1 column 3"#,
                ),
            ),
            (
                spec(ParamType::Object),
                r#"{"A":"1"}"#,
                Ok(json!({"A": "1"})),
            ),
            (
                spec(ParamType::Object),
                "[1]",
                Err(r#"expected a JSON object such as {"key":"value"}, got an array"#),
            ),
            (
                spec(ParamType::Object),
                "3",
                Err(r#"expected a JSON object such as {"key":"value"}, got the number 3"#),
            ),
        ];
        for (spec, text, want) in cases {
            assert_eq!(
                parse_cli_value(&spec, text),
                want.map_err(str::to_string),
                "{:?} {text:?}",
                spec.kind
            );
        }
    }

    #[test]
    fn masking_params() {
        let params = map(json!({"service": "nginx", "token": "hunter22", "count": 2}));
        assert_eq!(
            mask_secrets(&schema(), &params),
            map(json!({"service": "nginx", "token": MASK, "count": 2}))
        );
        // Unknown names pass through (validation reports them); a null
        // secret stays null, since there is nothing to hide.
        let params = map(json!({"other": "x", "token": null}));
        assert_eq!(mask_secrets(&schema(), &params), params);
    }

    fn secret_schema() -> ParamSchema {
        let mut s = ParamSchema::new();
        for (name, kind) in [
            ("password", ParamType::String),
            ("short", ParamType::String),
            ("pin", ParamType::Integer),
            ("creds", ParamType::Object),
            ("flag", ParamType::Boolean),
        ] {
            s.insert(
                name.into(),
                ParamSpec {
                    secret: true,
                    ..spec(kind)
                },
            );
        }
        s.insert("public".into(), spec(ParamType::String));
        s
    }

    #[test]
    fn masking_text() {
        let schema = secret_schema();
        let cases: Vec<(Value, &str, &str)> = vec![
            (
                json!({"password": "hunter22"}),
                "login hunter22 ok, again hunter22",
                "login ******** ok, again ********",
            ),
            (
                json!({"password": "hunter22"}),
                "nothing here",
                "nothing here",
            ),
            (json!({"password": "hunter22"}), "", ""),
            (
                json!({"password": "pa\"ss"}),
                r#"{"p":"pa\"ss"} and pa"ss"#,
                r#"{"p":"********"} and ********"#,
            ),
            (
                json!({"short": "abc"}),
                "abc is too short to mask",
                "abc is too short to mask",
            ),
            (
                json!({"short": "abcd"}),
                "abcd is masked",
                "******** is masked",
            ),
            (json!({"short": "éééé"}), "xééééx", "x********x"),
            (json!({"pin": 123456}), "pin=123456", "pin=********"),
            (json!({"pin": 12}), "pin=12", "pin=12"),
            (
                json!({"flag": true}),
                "true is not masked",
                "true is not masked",
            ),
            (
                json!({"public": "nginx-public"}),
                "nginx-public",
                "nginx-public",
            ),
            (
                json!({"creds": {"user": "admin", "pass": "s3cr3t!!"}}),
                r#"user admin pass s3cr3t!! json {"pass":"s3cr3t!!","user":"admin"}"#,
                "user ******** pass ******** json ********",
            ),
            // The longer of two overlapping secrets wins, and a secret inside
            // another is masked once.
            (
                json!({"password": "secretvalue", "short": "secret"}),
                "secretvalue secret",
                "******** ********",
            ),
            // A secret made of mask characters does not re-mask the mask.
            (
                json!({"password": "****"}),
                "**** and ****",
                "******** and ********",
            ),
        ];
        for (params, text, want) in cases {
            assert_eq!(
                mask_in_text(&schema, &map(params.clone()), text),
                want,
                "{params} {text:?}"
            );
        }
    }

    #[test]
    fn params_deserialize_from_pack_yaml_shape() {
        let spec: ParamSpec = serde_json::from_value(json!({
            "type": "string", "required": true, "enum": ["a", "b"], "secret": true, "description": "d"
        }))
        .expect("valid");
        assert_eq!(spec.kind, ParamType::String);
        assert_eq!(spec.allowed, Some(vec![json!("a"), json!("b")]));
        assert!(spec.required && spec.secret);
    }

    proptest! {
        #[test]
        fn masked_text_never_contains_a_long_secret(
            secret in "[a-z]{4,12}",
            before in "[a-z ]{0,20}",
            after in "[a-z ]{0,20}",
        ) {
            let params = map(json!({"password": secret.clone()}));
            let text = format!("{before}{secret}{after}");
            let masked = mask_in_text(&secret_schema(), &params, &text);
            // Every part between masks is untouched text, in which each
            // place the secret started was masked.
            prop_assert!(masked.contains(MASK));
            for part in masked.split(MASK) {
                prop_assert!(!part.contains(&secret), "{:?} in {:?}", secret, masked);
            }
        }

        #[test]
        fn validate_never_panics_and_output_fits_the_schema(given in proptest::collection::btree_map(
            prop_oneof![Just("service".to_string()), Just("count".to_string()), Just("mode".to_string()), "[a-z]{1,6}"],
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
                "[a-z]{0,8}".prop_map(Value::from),
                Just(json!(["a"])),
                Just(json!({"a": 1})),
            ],
            0..6,
        )) {
            let given: Map<String, Value> = given.into_iter().collect();
            let schema = schema();
            match validate(&schema, &given) {
                Ok(out) => {
                    for (name, value) in &out {
                        let spec = schema.get(name).expect("only known names");
                        prop_assert!(spec.kind.accepts(value));
                        if let Some(allowed) = &spec.allowed {
                            prop_assert!(allowed.contains(value));
                        }
                    }
                    for (name, spec) in &schema {
                        if spec.required {
                            prop_assert!(out.contains_key(name));
                        }
                    }
                }
                Err(problems) => {
                    prop_assert!(!problems.is_empty());
                    for problem in problems {
                        let name = problem.split(':').next().unwrap_or_default();
                        prop_assert!(given.contains_key(name) || schema.contains_key(name), "{}", problem);
                    }
                }
            }
        }

        #[test]
        fn cli_parsing_round_trips_typed_values(n in any::<i64>(), b in any::<bool>()) {
            prop_assert_eq!(parse_cli_value(&spec(ParamType::Integer), &n.to_string()), Ok(json!(n)));
            prop_assert_eq!(parse_cli_value(&spec(ParamType::Number), &n.to_string()), Ok(json!(n)));
            prop_assert_eq!(parse_cli_value(&spec(ParamType::Boolean), &b.to_string()), Ok(json!(b)));
        }

        #[test]
        fn cli_parsing_never_panics(text in "\\PC{0,30}") {
            for kind in [ParamType::String, ParamType::Integer, ParamType::Number, ParamType::Boolean, ParamType::Array, ParamType::Object] {
                let _ = parse_cli_value(&spec(kind), &text);
            }
        }
    }
}
