//! `actions/<name>.yaml`.

use std::collections::BTreeMap;

use serde_json::Value as Json;
use ultron8_core::params::{ParamSchema, ParamSpec, ParamType};

use crate::manifest::optional_string;
use crate::model::{Action, Runner, ShellProgram};
use crate::problem::{Pos, Sink};
use crate::templates::{self, Scope, Secrets, THROUGH_THE_ENVIRONMENT};
use crate::text::{check_name, check_parameter_name, did_you_mean, list};
use crate::yaml::{
    Entry, Fields, Node, boolean, duration, integer, mapping, non_empty_string, sequence, string,
    to_json,
};

const KEYS: &[&str] = &[
    "name",
    "description",
    "runner",
    "command",
    "shell",
    "script",
    "args",
    "env",
    "http",
    "timeout",
    "parameters",
];

const RUNNERS: &[&str] = &["shell", "script", "http", "noop", "escalate"];

/// The keys that configure one runner or another; each runner accepts only
/// its own, so a `command` on an http action is an error, not ignored.
const RUNNER_KEYS: &[(&str, &[&str])] = &[
    ("command", &["shell"]),
    ("shell", &["shell"]),
    ("script", &["script"]),
    ("args", &["script"]),
    ("env", &["shell", "script"]),
    ("http", &["http"]),
];

const PARAM_KEYS: &[&str] = &[
    "type",
    "required",
    "default",
    "enum",
    "secret",
    "description",
];

const PARAM_TYPES: &[(&str, ParamType)] = &[
    ("string", ParamType::String),
    ("integer", ParamType::Integer),
    ("number", ParamType::Number),
    ("boolean", ParamType::Boolean),
    ("array", ParamType::Array),
    ("object", ParamType::Object),
];

const HTTP_KEYS: &[&str] = &["method", "url", "headers", "body", "expect_status"];

const HTTP_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// What the rest of the pack needs to know while decoding an action.
pub(crate) struct Context<'a> {
    /// `None` when `pack.yaml` has no usable name.
    pub pack: Option<&'a str>,
    /// `scripts/...` path -> SHA-256, for the script runner.
    pub scripts: &'a BTreeMap<String, String>,
}

pub(crate) struct Decoded {
    /// Where `name` is written (the mapping's start when it is not).
    pub name_pos: Pos,
    /// The `name` as written, when it is a valid name.
    pub name: Option<String>,
    pub action: Option<Action>,
}

pub(crate) fn decode(stem: &str, node: &Node, ctx: &Context<'_>, sink: &mut Sink<'_>) -> Decoded {
    let before = sink.count();
    let Some(fields) = Fields::new(node, "an action", KEYS, sink) else {
        return Decoded {
            name_pos: node.pos,
            name: None,
            action: None,
        };
    };

    let name = fields.required("name", sink).and_then(|node| {
        let name = string(node, sink)?;
        if let Err(why) = check_name(name) {
            sink.at(node.pos, format!("invalid action name {name:?}: {why}"));
            return None;
        }
        if name != stem {
            sink.at(
                node.pos,
                format!(
                    "the action is named `{name}` but its file is {}; they must match",
                    sink.file()
                ),
            );
        }
        Some(name.to_string())
    });
    let reference = match (ctx.pack, &name) {
        (Some(pack), Some(name)) => format!("{pack}.{name}"),
        _ => format!("the action in {}", sink.file()),
    };

    let description = optional_string(&fields, "description", sink).unwrap_or_default();
    let timeout = fields.get("timeout").and_then(|n| duration(n, sink));

    let (parameters, parameter_names) = match fields.get("parameters") {
        Some(node) => decode_parameters(node, sink),
        None => (ParamSchema::new(), Vec::new()),
    };
    let scope = Scope::Parameters {
        action: &reference,
        names: &parameter_names,
        secrets: Secrets::Refused(
            "the hive sends an http action's secrets nowhere yet; use a shell: action",
        ),
    };

    let runner = fields.required("runner", sink).and_then(|node| {
        let kind = string(node, sink)?;
        if !RUNNERS.contains(&kind) {
            sink.at(
                node.pos,
                format!(
                    "unknown runner `{kind}`{} (runners: {})",
                    did_you_mean(kind, RUNNERS.iter().copied()),
                    list(RUNNERS.iter().copied())
                ),
            );
            return None;
        }
        for (key, runners) in RUNNER_KEYS {
            if let Some(entry) = fields.entry(key)
                && !runners.contains(&kind)
            {
                sink.at(
                    entry.key_pos,
                    format!("`{key}` is not used by the {kind} runner"),
                );
            }
        }
        match kind {
            "shell" => shell(&fields, &scope, sink),
            "script" => script(&fields, ctx, &scope, sink),
            "http" => http(&fields, &scope, sink),
            "escalate" => escalate(&fields, &parameters, sink),
            _ => Some(Runner::Noop),
        }
    });

    let action = match (name.clone(), runner) {
        (Some(name), Some(runner)) if sink.count() == before => Some(Action {
            pack: ctx.pack.unwrap_or_default().to_string(),
            name,
            description,
            runner,
            parameters,
            timeout,
        }),
        _ => None,
    };
    let name_pos = fields.get("name").map_or(fields.pos, |n| n.pos);
    Decoded {
        name_pos,
        name,
        action,
    }
}

fn shell(fields: &Fields<'_>, scope: &Scope<'_>, sink: &mut Sink<'_>) -> Option<Runner> {
    let env = env(fields, &scope.with_secrets(Secrets::Env), sink);
    let in_argv = scope.with_secrets(Secrets::Refused(THROUGH_THE_ENVIRONMENT));
    let in_script = scope.with_secrets(Secrets::Shell);
    // Both forms are decoded even when both are given, so that what is
    // wrong inside them is reported in the same round.
    let command = fields
        .entry("command")
        .map(|entry| argv(&entry.value, &in_argv, sink));
    let shell = fields.entry("shell").map(|entry| {
        let script = non_empty_string(&entry.value, sink)?;
        templates::check(script, entry.value.pos, &in_script, sink).then(|| script.to_string())
    });
    let program = match (command, shell) {
        (Some(_), Some(_)) => {
            let (first, second) = match (fields.entry("command"), fields.entry("shell")) {
                (Some(c), Some(s)) if c.key_pos < s.key_pos => (c, s),
                (Some(c), Some(s)) => (s, c),
                _ => return None,
            };
            sink.at(
                second.key_pos,
                format!(
                    "give either `command` (argv) or `shell` (a shell script), not both (`{}` is already set)",
                    first.key
                ),
            );
            None
        }
        (None, None) => {
            sink.at(
                fields.pos,
                "the shell runner needs `command` (argv, run without a shell) or `shell` (run by /bin/sh -c)",
            );
            None
        }
        (Some(argv), None) => argv.map(ShellProgram::Argv),
        (None, Some(script)) => script.map(ShellProgram::Script),
    };
    Some(Runner::Shell {
        program: program?,
        env: env?,
    })
}

fn argv(node: &Node, scope: &Scope<'_>, sink: &mut Sink<'_>) -> Option<Vec<String>> {
    let items = sequence(node, "a list of arguments (argv)", sink)?;
    let Some(first) = items.first() else {
        sink.at(node.pos, "`command` needs at least the program to run");
        return None;
    };
    let mut argv = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        match string(item, sink) {
            Some(arg) => {
                ok &= templates::check(arg, item.pos, scope, sink);
                argv.push(arg.to_string());
            }
            None => ok = false,
        }
    }
    if first.as_str().is_some_and(|p| p.trim().is_empty()) {
        sink.at(first.pos, "the program (first element) must not be empty");
        ok = false;
    }
    ok.then_some(argv)
}

fn script(
    fields: &Fields<'_>,
    ctx: &Context<'_>,
    scope: &Scope<'_>,
    sink: &mut Sink<'_>,
) -> Option<Runner> {
    let env = env(fields, &scope.with_secrets(Secrets::Env), sink);
    let in_args = scope.with_secrets(Secrets::Refused(THROUGH_THE_ENVIRONMENT));
    let args = match fields.get("args") {
        Some(node) => template_list(node, &in_args, sink),
        None => Some(Vec::new()),
    };
    let node = fields.required("script", sink)?;
    let path = non_empty_string(node, sink)?;
    let sha256 = script_path(path, node.pos, ctx, sink)?;
    Some(Runner::Script {
        path: path.to_string(),
        sha256,
        args: args?,
        env: env?,
    })
}

/// The SHA-256 of the pack file `path` names, or the problem with it.
fn script_path(path: &str, pos: Pos, ctx: &Context<'_>, sink: &mut Sink<'_>) -> Option<String> {
    let Some(rest) = path.strip_prefix("scripts/") else {
        sink.at(
            pos,
            format!("`script` must be a path under scripts/ in the pack (e.g. `scripts/{path}`)"),
        );
        return None;
    };
    if rest
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        sink.at(
            pos,
            format!("`{path}` is not a plain path inside scripts/ (no `.`, `..` or `//`)"),
        );
        return None;
    }
    match ctx.scripts.get(path) {
        Some(sha256) => Some(sha256.clone()),
        None => {
            sink.at(
                pos,
                format!(
                    "{path} does not exist in the pack{}",
                    did_you_mean(path, ctx.scripts.keys().map(String::as_str))
                ),
            );
            None
        }
    }
}

fn http(fields: &Fields<'_>, scope: &Scope<'_>, sink: &mut Sink<'_>) -> Option<Runner> {
    let node = fields.required("http", sink)?;
    let http = Fields::new(node, "an HTTP request", HTTP_KEYS, sink)?;

    let method = http.required("method", sink).and_then(|node| {
        let method = string(node, sink)?;
        let upper = method.to_ascii_uppercase();
        if HTTP_METHODS.contains(&upper.as_str()) {
            Some(upper)
        } else {
            sink.at(
                node.pos,
                format!(
                    "`{method}` is not an HTTP method this runner sends (methods: {})",
                    list(HTTP_METHODS.iter().copied())
                ),
            );
            None
        }
    });

    let url = http.required("url", sink).and_then(|node| {
        let url = non_empty_string(node, sink)?;
        // A URL written out must be http(s). One that starts with a template
        // (a generic webhook action's `{{ url }}`) can only be judged once
        // rendered, by the hive, before it sends anything.
        let trimmed = url.trim_start();
        let lower = trimmed.to_ascii_lowercase();
        if !(lower.starts_with("https://") || lower.starts_with("http://") || trimmed.starts_with("{{")) {
            sink.at(
                node.pos,
                "the URL must start with `https://` or `http://` (or with a template, checked when it renders)",
            );
            return None;
        }
        templates::check(url, node.pos, scope, sink).then(|| url.to_string())
    });

    let headers = match http.get("headers") {
        Some(node) => string_map(
            node,
            "a mapping of header names to values",
            scope,
            sink,
            |name| {
                (!name.is_empty() && name.bytes().all(is_token_byte))
                    .then_some(())
                    .ok_or_else(|| format!("invalid header name {name:?}"))
            },
        ),
        None => Some(BTreeMap::new()),
    };

    let body = match http.get("body") {
        Some(node) => string(node, sink)
            .filter(|body| templates::check(body, node.pos, scope, sink))
            .map(|body| Some(body.to_string())),
        None => Some(None),
    };

    let expect_status = match http.get("expect_status") {
        Some(node) => expect_status(node, sink),
        None => Some(Vec::new()),
    };

    Some(Runner::Http {
        method: method?,
        url: url?,
        headers: headers?,
        body: body?,
        expect_status: expect_status?,
    })
}

fn expect_status(node: &Node, sink: &mut Sink<'_>) -> Option<Vec<u16>> {
    let items = sequence(node, "a list of HTTP status codes", sink)?;
    if items.is_empty() {
        sink.at(
            node.pos,
            "list at least one status, or leave `expect_status` out to accept any 2xx",
        );
        return None;
    }
    let mut codes = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        match integer(item, sink) {
            Some(code @ 100..=599) => codes.push(code as u16),
            Some(code) => {
                sink.at(
                    item.pos,
                    format!("{code} is not an HTTP status code (100-599)"),
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    ok.then_some(codes)
}

/// `!#$%&'*+-.^_`|~`, digits and letters: RFC 9110's `token`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn env(
    fields: &Fields<'_>,
    scope: &Scope<'_>,
    sink: &mut Sink<'_>,
) -> Option<BTreeMap<String, String>> {
    match fields.get("env") {
        Some(node) => string_map(
            node,
            "a mapping of variable names to values",
            scope,
            sink,
            |name| {
                let mut chars = name.chars();
                let valid = chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
                valid
                .then_some(())
                .ok_or_else(|| format!("invalid environment variable name {name:?} (letters, digits and `_`, not starting with a digit)"))
            },
        ),
        None => Some(BTreeMap::new()),
    }
}

/// A mapping of checked names to string templates.
fn string_map(
    node: &Node,
    what: &str,
    scope: &Scope<'_>,
    sink: &mut Sink<'_>,
    check_key: impl Fn(&str) -> Result<(), String>,
) -> Option<BTreeMap<String, String>> {
    let entries = mapping(node, what, sink)?;
    let mut out = BTreeMap::new();
    let mut ok = true;
    for Entry {
        key,
        key_pos,
        value,
    } in entries
    {
        if let Err(why) = check_key(key) {
            sink.at(*key_pos, why);
            ok = false;
        }
        match string(value, sink) {
            Some(text) => {
                ok &= templates::check(text, value.pos, scope, sink);
                out.insert(key.clone(), text.to_string());
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn template_list(node: &Node, scope: &Scope<'_>, sink: &mut Sink<'_>) -> Option<Vec<String>> {
    let items = sequence(node, "a list of strings", sink)?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        match string(item, sink) {
            Some(text) => {
                ok &= templates::check(text, item.pos, scope, sink);
                out.push(text.to_string());
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// The schema, and the names of every parameter declared (even those whose
/// spec is broken, so templates using them are not reported twice).
fn decode_parameters(node: &Node, sink: &mut Sink<'_>) -> (ParamSchema, Vec<String>) {
    let mut schema = ParamSchema::new();
    let mut names = Vec::new();
    let Some(entries) = mapping(node, "a mapping of parameter names to their specs", sink) else {
        return (schema, names);
    };
    for entry in entries {
        names.push(entry.key.clone());
        if let Err(why) = check_parameter_name(&entry.key) {
            sink.at(
                entry.key_pos,
                format!("invalid parameter name {:?}: {why}", entry.key),
            );
        }
        if let Some(spec) = decode_parameter(&entry.value, sink) {
            schema.insert(entry.key.clone(), spec);
        }
    }
    (schema, names)
}

fn decode_parameter(node: &Node, sink: &mut Sink<'_>) -> Option<ParamSpec> {
    let before = sink.count();
    let fields = Fields::new(node, "a parameter spec", PARAM_KEYS, sink)?;

    let kind = fields.required("type", sink).and_then(|node| {
        let name = string(node, sink)?;
        let found = PARAM_TYPES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t);
        if found.is_none() {
            let names = PARAM_TYPES.iter().map(|(n, _)| *n);
            sink.at(
                node.pos,
                format!(
                    "unknown parameter type `{name}`{} (types: {})",
                    did_you_mean(name, names.clone()),
                    list(names)
                ),
            );
        }
        found
    });
    let required = fields.get("required").and_then(|n| boolean(n, sink));
    let secret = fields.get("secret").and_then(|n| boolean(n, sink));
    let description = optional_string(&fields, "description", sink).unwrap_or_default();

    let allowed = fields.get("enum").and_then(|node| {
        let items = sequence(node, "a list of allowed values", sink)?;
        if items.is_empty() {
            sink.at(node.pos, "`enum` must list at least one value");
            return None;
        }
        let mut values = Vec::with_capacity(items.len());
        for item in items {
            let value = to_json(item, sink)?;
            if let Some(kind) = kind
                && !fits(kind, &value)
            {
                sink.at(
                    item.pos,
                    format!("expected {}, found {}", type_name(kind), item.describe()),
                );
            }
            values.push(value);
        }
        Some(values)
    });

    let default = fields.get("default").and_then(|node| {
        let value = to_json(node, sink)?;
        if let Some(kind) = kind
            && !fits(kind, &value)
        {
            sink.at(
                node.pos,
                format!("the default must be {}, found {}", type_name(kind), node.describe()),
            );
        } else if let Some(allowed) = &allowed
            && !allowed.contains(&value)
        {
            sink.at(node.pos, format!("the default {value} is not one of the `enum` values"));
        }
        if required == Some(true) {
            sink.at(
                node.pos,
                "a required parameter cannot have a default (drop `required: true` or the default)",
            );
        }
        // An empty default only means "optional"; anything else would be a
        // secret stored in the pack in clear text.
        if secret == Some(true) && value != Json::String(String::new()) {
            sink.at(
                node.pos,
                "a secret parameter's default must be empty (\"\"): any other value would be stored in the pack in clear text",
            );
        }
        Some((node.pos, value))
    });

    if sink.count() != before {
        return None;
    }
    Some(ParamSpec {
        kind: kind?,
        required: required.unwrap_or(false),
        default: default.map(|(_, v)| v),
        allowed,
        secret: secret.unwrap_or(false),
        description,
    })
}

/// Whether a literal value has the parameter's type.
pub(crate) fn fits(kind: ParamType, value: &Json) -> bool {
    match kind {
        ParamType::String => value.is_string(),
        ParamType::Integer => value.is_i64() || value.is_u64(),
        ParamType::Number => value.is_number(),
        ParamType::Boolean => value.is_boolean(),
        ParamType::Array => value.is_array(),
        ParamType::Object => value.is_object(),
    }
}

pub(crate) fn type_name(kind: ParamType) -> &'static str {
    match kind {
        ParamType::String => "a string",
        ParamType::Integer => "an integer",
        ParamType::Number => "a number",
        ParamType::Boolean => "a boolean",
        ParamType::Array => "a list",
        ParamType::Object => "a mapping",
    }
}

/// `runner: escalate`: the escalation's reason is the action's `reason`
/// parameter, which must be a string.
fn escalate(fields: &Fields<'_>, parameters: &ParamSchema, sink: &mut Sink<'_>) -> Option<Runner> {
    match parameters.get("reason") {
        Some(spec) if spec.kind == ParamType::String => Some(Runner::Escalate),
        Some(_) => {
            sink.at(
                fields.get("parameters").map_or(fields.pos, |n| n.pos),
                "the escalate runner's `reason` parameter must be a string",
            );
            None
        }
        None => {
            sink.at(
                fields.pos,
                "the escalate runner needs a `reason` parameter (type: string): the escalation says why",
            );
            None
        }
    }
}
