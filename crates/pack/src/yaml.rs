//! YAML to a small tree where every node knows its position, and the
//! helpers the decoders use to read it while recording problems.
//!
//! The tree is built here from `saphyr-parser`'s events rather than by a
//! loader library, because pack files come from users: nesting is bounded
//! (a loader that recurses per level overflows the stack on `[[[[…`),
//! anchors and aliases are refused (no alias bombs, and what a file says is
//! what it means), a second document is an error rather than silently
//! ignored, and duplicate keys are reported with both positions.
//!
//! Scalars are typed by the YAML 1.2 core schema: `yes`, `on` and `no` are
//! strings, and a quoted scalar is always a string.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Tag};
use serde_json::Value as Json;

use crate::problem::{Pos, Sink};
use crate::text::{did_you_mean, list};

/// Deepest nesting of lists and mappings accepted. Real pack files use
/// perhaps 8 levels (criteria groups included); the bound keeps every
/// recursive walk over the tree, here and in the decoders, shallow.
pub(crate) const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

impl Node {
    /// What the node is, for "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "nothing".into(),
            Value::Bool(b) => format!("the boolean `{b}`"),
            Value::Int(i) => format!("the integer `{i}`"),
            Value::Float(f) => format!("the number `{f}`"),
            Value::Str(s) => format!("the string {s:?}"),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

fn pos(marker: &Marker) -> Pos {
    Pos {
        line: marker.line().max(1),
        column: marker.col() + 1,
    }
}

enum Frame {
    Seq {
        pos: Pos,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        entries: Vec<Entry>,
        seen: HashMap<String, Pos>,
        key: Option<(String, Pos)>,
    },
}

/// Parses one YAML document. Problems go to `sink`; `None` means the file
/// could not be read as YAML at all (and said why). An empty file is a
/// `Null` node at 1:1, for the caller to complain about in its own words.
pub(crate) fn parse(text: &str, sink: &mut Sink<'_>) -> Option<Node> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;

    for item in Parser::new_from_str(text) {
        let (event, span) = match item {
            Ok(ok) => ok,
            Err(e) => {
                sink.at(pos(e.marker()), format!("invalid YAML: {}", e.info()));
                return None;
            }
        };
        let at = pos(&span.start);
        let is_map = matches!(event, Event::MappingStart(..));
        let completed = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => None,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    sink.at(
                        at,
                        "a second YAML document; a pack file holds exactly one (remove the `---`)",
                    );
                    return None;
                }
                None
            }
            Event::Alias(_) => {
                sink.at(
                    at,
                    "YAML aliases (`*name`) are not supported in pack files; write the value out",
                );
                Some(Node {
                    pos: at,
                    value: Value::Null,
                })
            }
            Event::Scalar(raw, style, anchor, tag) => {
                refuse_anchor(anchor, at, sink);
                if let Some(Frame::Map {
                    key: key @ None, ..
                }) = stack.last_mut()
                {
                    // A key: kept as written, whatever its YAML type
                    // (`200: ok` has the key "200").
                    if tag.as_ref().is_some_and(|t| !t.is_yaml_core_schema()) {
                        refuse_tag(tag.as_deref(), at, sink);
                    }
                    *key = Some((raw.into_owned(), at));
                    None
                } else {
                    let value = match resolve_scalar(raw, style, tag.as_deref()) {
                        Ok(value) => value,
                        Err(message) => {
                            sink.at(at, message);
                            Value::Null
                        }
                    };
                    Some(Node { pos: at, value })
                }
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) => {
                refuse_anchor(anchor, at, sink);
                if tag.as_ref().is_some_and(|t| !t.is_yaml_core_schema()) {
                    refuse_tag(tag.as_deref(), at, sink);
                }
                if let Some(Frame::Map { key: None, .. }) = stack.last() {
                    sink.at(
                        at,
                        "mapping keys must be plain strings, not lists or mappings",
                    );
                    return None;
                }
                if stack.len() >= MAX_DEPTH {
                    sink.at(at, format!("nested more than {MAX_DEPTH} levels deep"));
                    return None;
                }
                stack.push(if is_map {
                    Frame::Map {
                        pos: at,
                        entries: Vec::new(),
                        seen: HashMap::new(),
                        key: None,
                    }
                } else {
                    Frame::Seq {
                        pos: at,
                        items: Vec::new(),
                    }
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq { pos, items }) => Some(Node {
                    pos,
                    value: Value::Seq(items),
                }),
                Some(Frame::Map { pos, entries, .. }) => Some(Node {
                    pos,
                    value: Value::Map(entries),
                }),
                None => None,
            },
        };
        if let Some(node) = completed {
            match stack.last_mut() {
                None => root = Some(node),
                Some(Frame::Seq { items, .. }) => items.push(node),
                Some(Frame::Map {
                    entries, seen, key, ..
                }) => {
                    if let Some((key, key_pos)) = key.take() {
                        if let Some(first) = seen.get(&key) {
                            sink.at(
                                key_pos,
                                format!(
                                    "duplicate key `{key}` (first at line {}, column {})",
                                    first.line, first.column
                                ),
                            );
                        } else {
                            seen.insert(key.clone(), key_pos);
                            entries.push(Entry {
                                key,
                                key_pos,
                                value: node,
                            });
                        }
                    }
                }
            }
        }
    }
    Some(root.unwrap_or(Node {
        pos: Pos::START,
        value: Value::Null,
    }))
}

fn refuse_anchor(anchor: usize, at: Pos, sink: &mut Sink<'_>) {
    if anchor != 0 {
        sink.at(at, "YAML anchors (`&name`) are not supported in pack files");
    }
}

fn refuse_tag(tag: Option<&Tag>, at: Pos, sink: &mut Sink<'_>) {
    let shown = tag.map(ToString::to_string).unwrap_or_default();
    sink.at(
        at,
        format!("YAML tags (`{shown}`) are not supported in pack files"),
    );
}

/// Types a scalar by the YAML 1.2 core schema, honouring core tags
/// (`!!str 123` is a string).
fn resolve_scalar(
    raw: Cow<'_, str>,
    style: ScalarStyle,
    tag: Option<&Tag>,
) -> Result<Value, String> {
    if let Some(tag) = tag {
        if !tag.is_yaml_core_schema() {
            return Err(format!(
                "YAML tags (`{tag}`) are not supported in pack files"
            ));
        }
        if tag.suffix == "str" {
            return Ok(Value::Str(raw.into_owned()));
        }
        let value = resolve_plain(&raw);
        let fits = matches!(
            (tag.suffix.as_str(), &value),
            ("null", Value::Null)
                | ("bool", Value::Bool(_))
                | ("int", Value::Int(_))
                | ("float", Value::Float(_) | Value::Int(_))
        );
        return match (fits, value) {
            (true, Value::Int(i)) if tag.suffix == "float" => Ok(Value::Float(i as f64)),
            (true, value) => Ok(value),
            (false, _) => Err(format!("`{raw}` is not a valid `!!{}`", tag.suffix)),
        };
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::Str(raw.into_owned()));
    }
    Ok(resolve_plain(&raw))
}

fn resolve_plain(raw: &str) -> Value {
    match raw {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let unsigned = raw.strip_prefix(['-', '+']).unwrap_or(raw);
    let negative = raw.starts_with('-');
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") {
        return Value::Float(if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if let Some(hex) = raw.strip_prefix("0x") {
        if !hex.is_empty()
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
            && let Ok(i) = i64::from_str_radix(hex, 16)
        {
            return Value::Int(i);
        }
        return Value::Str(raw.to_string());
    }
    if let Some(oct) = raw.strip_prefix("0o") {
        if !oct.is_empty()
            && oct.bytes().all(|b| (b'0'..=b'7').contains(&b))
            && let Ok(i) = i64::from_str_radix(oct, 8)
        {
            return Value::Int(i);
        }
        return Value::Str(raw.to_string());
    }
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return match raw.parse::<i64>() {
            Ok(i) => Value::Int(i),
            // Out of range for an integer: still a number, as YAML says.
            Err(_) => raw
                .parse::<f64>()
                .map_or_else(|_| Value::Str(raw.to_string()), Value::Float),
        };
    }
    if is_core_float(unsigned)
        && let Ok(f) = raw.parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::Str(raw.to_string())
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, the core schema's
/// float (sign already removed). Rust's own float parser accepts more
/// (`inf`, `1e`), which YAML reads as strings.
fn is_core_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => digits(frac),
        Some((int, frac)) => digits(int) && (frac.is_empty() || digits(frac)),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

// ---------------------------------------------------------------------------
// Reading the tree.

/// Records "expected X, found Y" at the node.
pub(crate) fn expected(node: &Node, what: &str, sink: &mut Sink<'_>) {
    sink.at(
        node.pos,
        format!("expected {what}, found {}", node.describe()),
    );
}

/// The keys of one mapping, checked against the keys it may have.
pub(crate) struct Fields<'n> {
    pub pos: Pos,
    pub entries: &'n [Entry],
}

impl<'n> Fields<'n> {
    /// Reports a node that is not a mapping (`what` names it: "an action",
    /// "a parameter"), and every key not in `known`, with a suggestion when
    /// it looks like a typo of one.
    pub fn new(node: &'n Node, what: &str, known: &[&str], sink: &mut Sink<'_>) -> Option<Self> {
        let Value::Map(entries) = &node.value else {
            if node.value == Value::Null && node.pos == Pos::START {
                sink.at(
                    node.pos,
                    format!("the file is empty; expected {what} (a mapping)"),
                );
            } else {
                expected(node, &format!("{what} (a mapping)"), sink);
            }
            return None;
        };
        for entry in entries {
            if !known.contains(&entry.key.as_str()) {
                let hint = did_you_mean(&entry.key, known.iter().copied());
                let message = if hint.is_empty() {
                    format!(
                        "unknown key `{}` (expected one of: {})",
                        entry.key,
                        list(known.iter().copied())
                    )
                } else {
                    format!("unknown key `{}`{hint}", entry.key)
                };
                sink.at(entry.key_pos, message);
            }
        }
        Some(Fields {
            pos: node.pos,
            entries,
        })
    }

    pub fn entry(&self, key: &str) -> Option<&'n Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// The value of `key`; an explicit `null` (or `key:` with nothing after
    /// it) counts as absent.
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entry(key)
            .map(|e| &e.value)
            .filter(|n| n.value != Value::Null)
    }

    /// The value of `key`, reporting its absence at the mapping.
    pub fn required(&self, key: &str, sink: &mut Sink<'_>) -> Option<&'n Node> {
        match self.entry(key) {
            None => {
                sink.at(self.pos, format!("missing required key `{key}`"));
                None
            }
            Some(entry) if entry.value.value == Value::Null => {
                // An empty value has no position of its own worth showing.
                sink.at(entry.key_pos, format!("`{key}` must have a value"));
                None
            }
            Some(entry) => Some(&entry.value),
        }
    }
}

pub(crate) fn string<'n>(node: &'n Node, sink: &mut Sink<'_>) -> Option<&'n str> {
    match &node.value {
        Value::Str(s) => Some(s),
        _ => {
            expected(node, "a string", sink);
            None
        }
    }
}

/// A string that must not be blank (commands, URLs, paths).
pub(crate) fn non_empty_string<'n>(node: &'n Node, sink: &mut Sink<'_>) -> Option<&'n str> {
    let s = string(node, sink)?;
    if s.trim().is_empty() {
        sink.at(node.pos, "must not be empty");
        return None;
    }
    Some(s)
}

pub(crate) fn boolean(node: &Node, sink: &mut Sink<'_>) -> Option<bool> {
    match node.value {
        Value::Bool(b) => Some(b),
        _ => {
            expected(node, "`true` or `false`", sink);
            None
        }
    }
}

pub(crate) fn integer(node: &Node, sink: &mut Sink<'_>) -> Option<i64> {
    match node.value {
        Value::Int(i) => Some(i),
        _ => {
            expected(node, "an integer", sink);
            None
        }
    }
}

pub(crate) fn number(node: &Node, sink: &mut Sink<'_>) -> Option<f64> {
    match node.value {
        Value::Int(i) => Some(i as f64),
        Value::Float(f) if f.is_finite() => Some(f),
        _ => {
            expected(node, "a number", sink);
            None
        }
    }
}

pub(crate) fn sequence<'n>(node: &'n Node, what: &str, sink: &mut Sink<'_>) -> Option<&'n [Node]> {
    match &node.value {
        Value::Seq(items) => Some(items),
        _ => {
            expected(node, what, sink);
            None
        }
    }
}

pub(crate) fn mapping<'n>(node: &'n Node, what: &str, sink: &mut Sink<'_>) -> Option<&'n [Entry]> {
    match &node.value {
        Value::Map(entries) => Some(entries),
        _ => {
            expected(node, what, sink);
            None
        }
    }
}

/// A positive duration written the humantime way: `30s`, `5m`, `1h 30m`.
pub(crate) fn duration(node: &Node, sink: &mut Sink<'_>) -> Option<Duration> {
    let Value::Str(s) = &node.value else {
        expected(node, "a duration such as `30s`, `5m` or `1h`", sink);
        return None;
    };
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => {
            sink.at(node.pos, "must be longer than zero");
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            sink.at(
                node.pos,
                format!("invalid duration {s:?} ({e}); write e.g. `30s`, `5m` or `1h`"),
            );
            None
        }
    }
}

/// The node as JSON. Mapping keys are strings already; what JSON cannot
/// hold (NaN, infinities) is a problem.
pub(crate) fn to_json(node: &Node, sink: &mut Sink<'_>) -> Option<Json> {
    Some(match &node.value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => match serde_json::Number::from_f64(*f) {
            Some(n) => Json::Number(n),
            None => {
                sink.at(
                    node.pos,
                    format!("`{f}` cannot be stored (only finite numbers can)"),
                );
                return None;
            }
        },
        Value::Str(s) => Json::String(s.clone()),
        Value::Seq(items) => {
            let mut out = Vec::with_capacity(items.len());
            let mut ok = true;
            for item in items {
                match to_json(item, sink) {
                    Some(v) => out.push(v),
                    None => ok = false,
                }
            }
            if !ok {
                return None;
            }
            Json::Array(out)
        }
        Value::Map(entries) => {
            let mut out = serde_json::Map::new();
            let mut ok = true;
            for entry in entries {
                match to_json(&entry.value, sink) {
                    Some(v) => {
                        out.insert(entry.key.clone(), v);
                    }
                    None => ok = false,
                }
            }
            if !ok {
                return None;
            }
            Json::Object(out)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Problem;

    fn parse_ok(text: &str) -> Node {
        let mut problems = Vec::new();
        let node = parse(text, &mut Sink::new("t.yaml", &mut problems));
        assert!(problems.is_empty(), "{problems:?}");
        node.expect("parsed")
    }

    fn parse_err(text: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        let _ = parse(text, &mut Sink::new("t.yaml", &mut problems));
        assert!(!problems.is_empty(), "expected a problem for {text:?}");
        problems
    }

    fn scalar(text: &str) -> Value {
        let node = parse_ok(&format!("k: {text}\n"));
        let Value::Map(entries) = node.value else {
            panic!("not a map")
        };
        entries[0].value.value.clone()
    }

    #[test]
    fn core_schema_scalars() {
        assert_eq!(scalar("42"), Value::Int(42));
        assert_eq!(scalar("-7"), Value::Int(-7));
        assert_eq!(scalar("0x1F"), Value::Int(31));
        assert_eq!(scalar("0o17"), Value::Int(15));
        assert_eq!(scalar("1.5"), Value::Float(1.5));
        assert_eq!(scalar("1e3"), Value::Float(1000.0));
        assert_eq!(scalar(".5"), Value::Float(0.5));
        assert_eq!(scalar("-.inf"), Value::Float(f64::NEG_INFINITY));
        assert_eq!(scalar("true"), Value::Bool(true));
        assert_eq!(scalar("False"), Value::Bool(false));
        assert_eq!(scalar("~"), Value::Null);
        assert_eq!(scalar(""), Value::Null);
        // YAML 1.1's booleans are strings in 1.2: no Norway problem.
        assert_eq!(scalar("no"), Value::Str("no".into()));
        assert_eq!(scalar("yes"), Value::Str("yes".into()));
        assert_eq!(scalar("1.2.0"), Value::Str("1.2.0".into()));
        assert_eq!(scalar("inf"), Value::Str("inf".into()));
        assert_eq!(scalar("1e"), Value::Str("1e".into()));
        assert_eq!(scalar("0x"), Value::Str("0x".into()));
        assert_eq!(scalar("'42'"), Value::Str("42".into()));
        assert_eq!(scalar("\"true\""), Value::Str("true".into()));
        assert_eq!(scalar("!!str 42"), Value::Str("42".into()));
        assert_eq!(scalar("!!float 42"), Value::Float(42.0));
        assert_eq!(
            scalar("123456789012345678901234567890"),
            Value::Float(123456789012345678901234567890.0)
        );
    }

    #[test]
    fn positions_are_one_based() {
        let node = parse_ok("a: 1\nb:\n  - x\n  - {c: d}\n");
        assert_eq!(node.pos, Pos { line: 1, column: 1 });
        let Value::Map(entries) = &node.value else {
            panic!()
        };
        assert_eq!(entries[1].key, "b");
        assert_eq!(entries[1].key_pos, Pos { line: 2, column: 1 });
        let Value::Seq(items) = &entries[1].value.value else {
            panic!()
        };
        assert_eq!(items[0].pos, Pos { line: 3, column: 5 });
        assert_eq!(items[1].pos, Pos { line: 4, column: 5 });
        let Value::Map(inner) = &items[1].value else {
            panic!()
        };
        assert_eq!(inner[0].value.pos, Pos { line: 4, column: 9 });
    }

    #[test]
    fn refusals() {
        let p = parse_err("a: 1\nb: [1, 2\n");
        assert!(p[0].message.starts_with("invalid YAML"), "{p:?}");
        let p = parse_err("a: 1\na: 2\n");
        assert_eq!(
            (p[0].line, p[0].column, p[0].message.as_str()),
            (2, 1, "duplicate key `a` (first at line 1, column 1)")
        );
        let p = parse_err("a: &x 1\nb: *x\n");
        assert!(p.iter().any(|p| p.message.contains("anchors")), "{p:?}");
        assert!(p.iter().any(|p| p.message.contains("aliases")), "{p:?}");
        let p = parse_err("a: !custom 1\n");
        assert!(p[0].message.contains("tags"), "{p:?}");
        let p = parse_err("a: 1\n---\nb: 2\n");
        assert_eq!(p[0].line, 2);
        assert!(p[0].message.contains("second YAML document"), "{p:?}");
        let p = parse_err("? [a]\n: 1\n");
        assert!(p[0].message.contains("keys must be plain strings"), "{p:?}");
        let p = parse_err("a: !!int nope\n");
        assert!(p[0].message.contains("!!int"), "{p:?}");
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let flow = "[".repeat(100_000);
        parse_err(&flow);
        let block = "- ".repeat(100_000) + "x\n";
        let p = parse_err(&block);
        assert!(
            p.iter().any(|p| p.message.contains("nested more than")),
            "{p:?}"
        );
    }

    #[test]
    fn empty_file_is_a_null_at_the_start() {
        let node = parse_ok("");
        assert_eq!(node.value, Value::Null);
        assert_eq!(node.pos, Pos::START);
        let node = parse_ok("# only a comment\n");
        assert_eq!(node.value, Value::Null);
    }

    #[test]
    fn a_leading_byte_order_mark_is_ignored() {
        let node = parse_ok("\u{feff}a: 1\n");
        assert!(matches!(node.value, Value::Map(_)));
    }
}
