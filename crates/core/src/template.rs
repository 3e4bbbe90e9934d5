//! Parameter and target templates (minijinja) rendered over an event's
//! payload or an action's parameters.
//!
//! A template that is exactly one expression (`"{{ labels.port }}"`) keeps
//! the expression's type (number, boolean, list, object); anything else
//! renders to a string. Undefined variables are errors, never empty strings.
//!
//! # Rules
//!
//! - **What is a template.** A string containing `{{`, `{%` or `{#`. Any
//!   other string is used exactly as written, without going through the
//!   engine (so a literal `}}` or a stray `%` needs no escaping).
//! - **Typed single expressions.** In [`render_value`], a string that is
//!   exactly one `{{ expression }}`, with only whitespace around it, yields
//!   the expression's value with its JSON type: `"{{ labels.port | int }}"`
//!   is the number `9100`, `"{{ alerts }}"` a list, `"{{ none }}"` null.
//!   Anything else (`"port {{ p }}"`, two expressions, a `{% if %}` block)
//!   renders to a string. [`render_str`] always renders to a string.
//! - **Only values are rendered.** [`render_value`] renders every string
//!   inside arrays and objects, at any depth, but not object keys.
//! - **Undefined is an error.** Printing, iterating over, filtering or
//!   looking into a missing variable or field fails with an error naming it
//!   (`` `labels.team` is undefined ``). Testing it is allowed: `{% if
//!   labels.team %}` is false, `labels.team is defined` works, and
//!   `labels.team | default("sre")` supplies a fallback.
//! - **Lookups.** `labels.instance`, `labels["app.kubernetes.io/name"]`,
//!   `alerts.0.labels` and `alerts[0].labels` all work.
//! - **Filters and functions.** minijinja's built-ins (`default`, `lower`,
//!   `upper`, `replace`, `split`, `join`, `int`, `float`, `length`, `first`,
//!   `map`, `select`, `tojson`, `range`, `dict`...) plus
//!   [`shell_quote`](#shell_quote). `tojson` is minijinja's: it escapes
//!   `<`, `>`, `&` and `'` as `\u003c`... (still valid JSON, and safe inside
//!   a single-quoted shell word).
//! - **Printing.** A value printed inside a string is spelt as in JSON:
//!   `true`, `false`, `null`, and lists and objects as compact JSON
//!   (`["-s","reload"]`), not Python's `True`/`None`/`['-s']`.
//! - **Nothing from outside.** No `include`, `import`, `extends` or macros,
//!   no file system, no environment variables, no clock.
//! - **Bounded in time, not in memory.** A render may execute at most
//!   [`FUEL`] instructions (loops over a few thousand items are fine; an
//!   endless template is stopped with an error), `range()` is capped by
//!   minijinja at 100,000 items, and one repetition (`"x" * n`) at 100 MB.
//!   Memory is not bounded: a few instructions can build a huge string
//!   (`{% set s = s ~ s %}` repeated, `| indent(1000000000)`,
//!   `"%2000000000s" | format(x)`), which minijinja offers no way to limit.
//!   Template *sources* come from installed packs, written by operators
//!   allowed to install packs (admins, who can as well run any command on
//!   every drone); event payloads only ever reach templates as data and
//!   are never rendered themselves, so a sender cannot choose a template.
//!
//! # `shell_quote`
//!
//! POSIX single-quote escaping for `shell:` runners: `{{ path | shell_quote
//! }}` turns `it's here` into `'it'\''s here'`, safe as one word in
//! `/bin/sh`. Numbers and booleans are quoted as their text; a list becomes
//! its quoted items separated by spaces (several words); `none`, objects and
//! undefined values are errors, since quoting them is always a mistake.
//!
//! # Shell scripts
//!
//! A `shell:` runner's script is rendered by [`render_shell`], which quotes
//! every printed value as `shell_quote` does: `rm -rf {{ path }}` with a
//! webhook's `path` of `/x$(id -un)` runs `rm -rf '/x$(id -un)'`, never
//! `id`. A value meant as shell syntax says so with `| safe` (`{{ cmd |
//! safe }}`, as the `core.shell` action does); `| shell_quote` still works
//! and is not quoted twice. argv runners (`command:`, `args:`) need none of
//! this: each item is one argument, never parsed by a shell.
//!
//! # Whitespace
//!
//! A template's trailing newline is kept (unlike minijinja's default), so a
//! rendered script ends like its source. `{{-` and `-}}` trim whitespace as
//! in Jinja.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Serde, ValueKind};
use minijinja::{
    Environment, Error, ErrorKind, Output, State, UndefinedBehavior, escape_formatter,
};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// 1-based line within the template, when known.
    pub line: Option<usize>,
    pub message: String,
}

/// The most instructions one render may execute.
pub const FUEL: u64 = 100_000;

/// [`render_value`] refuses JSON nested deeper than this (serde_json's own
/// parser stops at 128), so a hostile value cannot exhaust the stack.
const MAX_DEPTH: usize = 128;

/// Checks syntax; returns the top-level variable names the template reads
/// (so an installer can report names that cannot exist). A string that is
/// not a template (see the module documentation) reads nothing.
pub fn check(source: &str) -> Result<BTreeSet<String>, TemplateError> {
    if !is_template(source) {
        return Ok(BTreeSet::new());
    }
    let env = environment();
    let template = env
        .template_from_str(source)
        .map_err(|e| convert_error(&e, 0))?;
    let globals: BTreeSet<&str> = env.globals().map(|(name, _)| name).collect();
    Ok(template
        .undeclared_variables(false)
        .into_iter()
        .filter(|name| !globals.contains(name.as_str()))
        .collect())
}

/// Renders a string template to a string.
pub fn render_str(source: &str, context: &Value) -> Result<String, TemplateError> {
    if !is_template(source) {
        return Ok(source.to_string());
    }
    let template = environment()
        .template_from_str(source)
        .map_err(|e| convert_error(&e, 0))?;
    template
        .render(Serde(context))
        .map_err(|e| convert_error(&e, 0))
}

/// Renders a script for `/bin/sh -c` (a `shell:` runner): every value
/// printed is quoted as shell words, as by `shell_quote` (a list becomes
/// several words), so a parameter or a webhook field can never inject
/// shell syntax; only the template's own text is shell. `| safe` prints a
/// value as it is, on purpose and visibly (`{{ cmd | safe }}`);
/// `| shell_quote` is accepted and not quoted twice.
pub fn render_shell(source: &str, context: &Value) -> Result<String, TemplateError> {
    if !is_template(source) {
        return Ok(source.to_string());
    }
    let template = shell_environment()
        .template_from_str(source)
        .map_err(|e| convert_error(&e, 0))?;
    template
        .render(Serde(context))
        .map_err(|e| convert_error(&e, 0))
}

/// A `shell:` script rendered by [`render_shell_script`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellScript {
    pub text: String,
    /// The hive's secrets the script reads (`{{ secret.NAME }}`), each
    /// through the environment variable [`crate::secrets::env_var`] names.
    pub secrets: BTreeSet<String>,
}

/// [`render_shell`] with the hive's secrets: `{{ secret.NAME }}` prints
/// the quoted expansion `"$ULTRON8_SECRET_NAME"`, never the value, and the
/// names read are returned so the command can ask the drone to fill those
/// variables. The reference is one shell word, like any value printed
/// here; filters apply to the reference, not the value, so use it bare.
/// A context key `secret` is hidden by the secrets (the pack loader
/// refuses a parameter of that name).
pub fn render_shell_script(source: &str, context: &Value) -> Result<ShellScript, TemplateError> {
    if !is_template(source) {
        return Ok(ShellScript {
            text: source.to_string(),
            secrets: BTreeSet::new(),
        });
    }
    let template = shell_environment()
        .template_from_str(source)
        .map_err(|e| convert_error(&e, 0))?;
    let references = std::sync::Arc::new(SecretReferences::default());
    let context = minijinja::context! {
        secret => minijinja::Value::from_dyn_object(references.clone()),
        ..minijinja::Value::from(Serde(context))
    };
    let text = template.render(context).map_err(|e| convert_error(&e, 0))?;
    let secrets = references
        .used
        .lock()
        .map(|used| used.clone())
        .unwrap_or_default();
    Ok(ShellScript { text, secrets })
}

/// The secret an `env:` value names when it is exactly one
/// `{{ secret.NAME }}` (whitespace around allowed), which is the one way an
/// environment variable takes a secret.
pub fn whole_secret_reference(source: &str) -> Option<String> {
    let (expression, _) = single_expression(source)?;
    let name = expression.trim().strip_prefix("secret.")?;
    crate::secrets::check_name(name).ok()?;
    Some(name.to_string())
}

/// The secrets a template names as `secret.NAME` or `secret["NAME"]`, for
/// messages about where secrets may not go. A scan of the text, not of
/// the syntax tree, and so only for messages: whether a template reads
/// `secret` at all is [`check`]'s answer.
pub fn secret_references(source: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = source;
    while let Some(at) = rest.find("secret") {
        let before = &rest[..at];
        let word_start = before
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        rest = &rest[at + "secret".len()..];
        if !word_start {
            continue;
        }
        let name: String = if let Some(tail) = rest.strip_prefix('.') {
            tail.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        } else if let Some(tail) = rest.strip_prefix("[\"").or(rest.strip_prefix("['")) {
            tail.chars()
                .take_while(|c| *c != '"' && *c != '\'')
                .collect()
        } else {
            continue;
        };
        if !name.is_empty() {
            names.insert(name);
        }
    }
    names
}

/// The `secret` of [`render_shell_script`]: looking a name up prints a
/// reference to its environment variable and records the name.
#[derive(Debug, Default)]
struct SecretReferences {
    used: std::sync::Mutex<BTreeSet<String>>,
}

impl minijinja::value::Object for SecretReferences {
    fn get_value(self: &std::sync::Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        let name = key.as_str()?;
        crate::secrets::check_name(name).ok()?;
        if let Ok(mut used) = self.used.lock() {
            used.insert(name.to_string());
        }
        Some(minijinja::Value::from_safe_string(format!(
            "\"${}\"",
            crate::secrets::env_var(name)
        )))
    }

    fn enumerate(self: &std::sync::Arc<Self>) -> minijinja::value::Enumerator {
        // Which secrets exist is the hive's to know, not a template's.
        minijinja::value::Enumerator::NonEnumerable
    }
}

/// Renders every string inside `value`, recursively, keeping the type of
/// single-expression templates.
pub fn render_value(value: &Value, context: &Value) -> Result<Value, TemplateError> {
    render_value_at(value, context, 0)
}

fn render_value_at(value: &Value, context: &Value, depth: usize) -> Result<Value, TemplateError> {
    if depth > MAX_DEPTH {
        return Err(TemplateError {
            line: None,
            message: format!("the value is nested more than {MAX_DEPTH} deep"),
        });
    }
    match value {
        Value::String(source) => match single_expression(source) {
            Some((expression, lines_before)) => evaluate(expression, lines_before, context),
            None => render_str(source, context).map(Value::String),
        },
        Value::Array(items) => items
            .iter()
            .map(|item| render_value_at(item, context, depth + 1))
            .collect(),
        Value::Object(map) => map
            .iter()
            .map(|(key, item)| Ok((key.clone(), render_value_at(item, context, depth + 1)?)))
            .collect::<Result<serde_json::Map<_, _>, _>>()
            .map(Value::Object),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(value.clone()),
    }
}

fn is_template(source: &str) -> bool {
    source.contains("{{") || source.contains("{%") || source.contains("{#")
}

/// `"  {{ expr }} "` → `(" expr ", lines before it)`; `None` for anything
/// that is not exactly one expression.
fn single_expression(source: &str) -> Option<(&str, usize)> {
    let start = source.len() - source.trim_start().len();
    let trimmed = source.trim();
    let mut inner = trimmed.strip_prefix("{{")?.strip_suffix("}}")?;
    let mut offset = start + 2;
    // `{{-` and `-}}` are whitespace control, not a minus sign, in Jinja.
    if let Some(rest) = inner.strip_prefix('-') {
        inner = rest;
        offset += 1;
    }
    inner = inner.strip_suffix('-').unwrap_or(inner);
    // `{{ a }} {{ b }}` also starts and ends with braces. A delimiter inside
    // a string literal (`{{ "}}" }}`) falls back to string rendering, which
    // gives the same result for a string.
    if ["{{", "}}", "{%", "%}", "{#", "#}"]
        .iter()
        .any(|d| inner.contains(d))
    {
        return None;
    }
    Some((inner, source[..offset].matches('\n').count()))
}

fn evaluate(
    expression: &str,
    lines_before: usize,
    context: &Value,
) -> Result<Value, TemplateError> {
    let env = environment();
    let compiled = env
        .compile_expression(expression)
        .map_err(|e| convert_error(&e, lines_before))?;
    let value = compiled
        .eval(Serde(context))
        .map_err(|e| convert_error(&e, lines_before))?;
    to_json(&value, 0).map_err(|problem| TemplateError {
        line: Some(lines_before + 1),
        message: format!(
            "{{{{ {} }}}}: {problem} (line {})",
            expression.trim(),
            lines_before + 1
        ),
    })
}

/// A minijinja value as JSON. Undefined values anywhere inside are errors,
/// as are functions and other values JSON cannot hold.
fn to_json(value: &minijinja::Value, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("the value is nested more than {MAX_DEPTH} deep"));
    }
    match value.kind() {
        ValueKind::Undefined => Err("the value is undefined".to_string()),
        ValueKind::None => Ok(Value::Null),
        ValueKind::Bool => Ok(Value::Bool(value.is_true())),
        ValueKind::Number => number_to_json(value),
        ValueKind::String => Ok(Value::String(
            value.as_str().unwrap_or_default().to_string(),
        )),
        ValueKind::Bytes => Ok(Value::String(
            String::from_utf8_lossy(value.as_bytes().unwrap_or_default()).into_owned(),
        )),
        ValueKind::Seq | ValueKind::Iterable => value
            .try_iter()
            .map_err(|e| e.to_string())?
            .map(|item| to_json(&item, depth + 1))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        ValueKind::Map => {
            let mut map = serde_json::Map::new();
            for key in value.try_iter().map_err(|e| e.to_string())? {
                let item = value.get_item(&key).map_err(|e| e.to_string())?;
                let key = match key.as_str() {
                    Some(text) => text.to_string(),
                    None => key.to_string(),
                };
                map.insert(key, to_json(&item, depth + 1)?);
            }
            Ok(Value::Object(map))
        }
        ValueKind::Plain => Err(format!("{value} is a function or object, not data")),
        ValueKind::Invalid => Err(value.to_string()),
        // ValueKind is non-exhaustive.
        _ => Err(format!("{value} is not data")),
    }
}

fn number_to_json(value: &minijinja::Value) -> Result<Value, String> {
    if value.is_integer() {
        if let Ok(n) = i64::try_from(value.clone()) {
            return Ok(Value::from(n));
        }
        if let Ok(n) = u64::try_from(value.clone()) {
            return Ok(Value::from(n));
        }
        return Err(format!("{value} is too large for a JSON integer"));
    }
    let n = f64::try_from(value.clone()).map_err(|e| e.to_string())?;
    serde_json::Number::from_f64(n)
        .map(Value::Number)
        .ok_or_else(|| format!("{n} is not a finite number"))
}

fn convert_error(error: &Error, lines_before: usize) -> TemplateError {
    let line = error.line().map(|line| line + lines_before);
    let mut message = match error.kind() {
        ErrorKind::OutOfFuel => {
            format!("the template ran for more than {FUEL} steps and was stopped")
        }
        kind => match error.detail() {
            Some(detail) => format!("{kind}: {detail}"),
            None => kind.to_string(),
        },
    };
    if let Some(line) = line {
        message.push_str(&format!(" (line {line})"));
    }
    TemplateError { line, message }
}

fn environment() -> &'static Environment<'static> {
    static ENVIRONMENT: OnceLock<Environment<'static>> = OnceLock::new();
    ENVIRONMENT.get_or_init(|| new_environment(format_value))
}

/// The environment of [`render_shell`]: the same, printing values quoted.
fn shell_environment() -> &'static Environment<'static> {
    static ENVIRONMENT: OnceLock<Environment<'static>> = OnceLock::new();
    ENVIRONMENT.get_or_init(|| new_environment(format_shell_word))
}

type Formatter = fn(&mut Output, &mut State, &minijinja::Value) -> Result<(), Error>;

fn new_environment(formatter: Formatter) -> Environment<'static> {
    let mut env = Environment::new();
    // SemiStrict, not Strict: printing, iterating and filtering an
    // undefined value fail, but `{% if labels.team %}` may test an
    // optional field, as people expect from Jinja.
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_fuel(Some(FUEL));
    // Debug mode is what names the undefined expression in an error
    // (`labels.team` is undefined). Its other cost, a copy of the
    // template and the variables it used attached to each error, is paid
    // only on errors, and never printed.
    env.set_debug(true);
    env.set_formatter(formatter);
    if let Ok(syntax) = SyntaxConfig::builder().keep_trailing_newline(true).build() {
        env.set_syntax(syntax);
    }
    // `debug()` would dump the whole context (secrets included) into a
    // command line.
    env.remove_global("debug");
    env.add_filter("shell_quote", shell_quote);
    env
}

/// Prints a value into a shell script: as is when marked safe (`| safe`,
/// `| shell_quote`), else quoted as `shell_quote` quotes it; `none` and
/// objects, which `shell_quote` refuses, are quoted as their JSON text.
fn format_shell_word(
    out: &mut Output,
    _state: &mut State,
    value: &minijinja::Value,
) -> Result<(), Error> {
    if value.is_safe() {
        return out
            .write_str(value.as_str().unwrap_or_default())
            .map_err(Error::from);
    }
    let quoted = match value.kind() {
        ValueKind::None | ValueKind::Map => {
            let json = to_json(value, 0)
                .map_err(|problem| Error::new(ErrorKind::InvalidOperation, problem))?;
            quote_word(minijinja::Value::from(json.to_string()))?
        }
        _ => shell_quote(value.clone())?
            .as_str()
            .unwrap_or_default()
            .to_string(),
    };
    out.write_str(&quoted)?;
    Ok(())
}

/// Prints values as JSON spells them (`true`, `null`, `["a", 1]`) rather
/// than as Python does (`True`, `None`, `['a', 1]`), so that a printed value
/// reads the same as the typed one and a printed list or object is valid
/// JSON for a command that takes it.
fn format_value(
    out: &mut Output,
    state: &mut State,
    value: &minijinja::Value,
) -> Result<(), Error> {
    match value.kind() {
        ValueKind::None => out.write_str("null")?,
        ValueKind::Bool => out.write_str(if value.is_true() { "true" } else { "false" })?,
        ValueKind::Seq | ValueKind::Map | ValueKind::Iterable => {
            let json = to_json(value, 0)
                .map_err(|problem| Error::new(ErrorKind::InvalidOperation, problem))?;
            out.write_str(&json.to_string())?;
        }
        _ => escape_formatter(out, state, value)?,
    }
    Ok(())
}

/// The `shell_quote` filter: see the module documentation. Its result is
/// marked safe, so [`render_shell`] does not quote it again.
fn shell_quote(value: minijinja::Value) -> Result<minijinja::Value, Error> {
    let quoted = match value.kind() {
        ValueKind::Seq | ValueKind::Iterable => {
            let words = value
                .try_iter()?
                .map(quote_word)
                .collect::<Result<Vec<_>, _>>()?;
            words.join(" ")
        }
        _ => quote_word(value)?,
    };
    Ok(minijinja::Value::from_safe_string(quoted))
}

fn quote_word(value: minijinja::Value) -> Result<String, Error> {
    let text = match value.kind() {
        ValueKind::String => value.as_str().unwrap_or_default().to_string(),
        ValueKind::Number | ValueKind::Bool => value.to_string(),
        ValueKind::Undefined => {
            return Err(Error::new(
                ErrorKind::UndefinedError,
                "shell_quote was given an undefined value",
            ));
        }
        kind => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("shell_quote cannot quote {kind}"),
            ));
        }
    };
    Ok(format!("'{}'", text.replace('\'', r"'\''")))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn context() -> Value {
        json!({
            "status": "firing",
            "labels": {"alertname": "DiskFull", "instance": "web-1:9100", "port": 9100, "app.kubernetes.io/name": "web"},
            "annotations": {"summary": "disk full"},
            "alerts": [{"labels": {"instance": "web-1"}}, {"labels": {"instance": "web-2"}}],
            "ratio": 0.5,
            "ok": true,
            "nothing": null,
            "path": "/var/log/it's here",
            "params": {"service": "nginx", "args": ["-s", "reload"]},
            "evil": "{{ 7 * 7 }}{% for i in range(99999) %}{% endfor %}",
        })
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn values_printed_into_a_shell_script_are_quoted_unless_marked_safe() {
        let context = json!({
            "path": "/x$(id -un)",
            "it": "it's",
            "count": 5,
            "flags": ["-n", "1 2"],
            "cmd": "uptime; id",
            "nothing": null,
        });
        for (source, rendered) in [
            ("rm -rf {{ path }}", "rm -rf '/x$(id -un)'"),
            ("echo {{ it }}", r"echo 'it'\''s'"),
            ("head -n {{ count + 1 }}", "head -n '6'"),
            ("ls {{ flags }}", "ls '-n' '1 2'"),
            ("echo {{ path | shell_quote }}", "echo '/x$(id -un)'"),
            ("{{ cmd | safe }}", "uptime; id"),
            ("echo {{ nothing }}", "echo 'null'"),
            ("--sort=-{{ it }}", r"--sort=-'it'\''s'"),
            ("plain text $(stays) shell", "plain text $(stays) shell"),
        ] {
            assert_eq!(
                render_shell(source, &context).as_deref(),
                Ok(rendered),
                "{source}"
            );
        }
        // The other renderers are unchanged.
        assert_eq!(
            render_str("rm -rf {{ path }}", &context).as_deref(),
            Ok("rm -rf /x$(id -un)")
        );
    }

    #[test]
    fn a_secret_renders_as_a_reference_to_its_variable_never_its_value() {
        let context = json!({ "user": "app", "secret": "a parameter value" });
        let script = render_shell_script(
            "curl -u {{ user }}:{{ secret.db_password }} https://db\nexport T={{ secret['api_token'] }}\n",
            &context,
        )
        .expect("renders");
        assert_eq!(
            script.text,
            "curl -u 'app':\"$ULTRON8_SECRET_db_password\" https://db\nexport T=\"$ULTRON8_SECRET_api_token\"\n"
        );
        assert_eq!(script.secrets, names(&["api_token", "db_password"]));
        // No secret read, none listed; a script that is no template is as is.
        let plain = render_shell_script("echo {{ user }}", &context).expect("renders");
        assert_eq!(plain.secrets, names(&[]));
        assert_eq!(
            render_shell_script("echo $HOME", &context)
                .expect("plain")
                .text,
            "echo $HOME"
        );
        // A name that cannot be a secret's is undefined, so an error.
        assert!(render_shell_script("echo {{ secret['no-such'] }}", &context).is_err());
        assert!(render_shell_script("{% for s in secret %}{{ s }}{% endfor %}", &context).is_err());
    }

    #[test]
    fn the_reference_runs_as_one_word_holding_the_value() {
        let script =
            render_shell_script("printf '%s|' {{ secret.s }}", &json!({})).expect("renders");
        let output = std::process::Command::new("/bin/sh")
            .args(["-c", &script.text])
            .env("ULTRON8_SECRET_s", "two words $(id) *")
            .output()
            .expect("run sh");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "two words $(id) *|"
        );
    }

    #[test]
    fn secrets_are_found_whole_in_env_values_and_named_anywhere() {
        assert_eq!(
            whole_secret_reference("{{ secret.db_password }}").as_deref(),
            Some("db_password")
        );
        assert_eq!(
            whole_secret_reference(" {{- secret.x1 -}} ").as_deref(),
            Some("x1")
        );
        for not_whole in [
            "Bearer {{ secret.token }}",
            "{{ secret.token | upper }}",
            "{{ secret }}",
            "{{ token }}",
            "secret.token",
        ] {
            assert_eq!(whole_secret_reference(not_whole), None, "{not_whole}");
        }
        assert_eq!(
            secret_references("{{ secret.a }} {{ secret['b'] }} {{ my_secret.c }} {{ secret }}"),
            names(&["a", "b"])
        );
    }

    #[test]
    fn a_rendered_shell_word_is_one_argument_whatever_it_holds() {
        let hostile = "a b'c\"d$(e)`f`;g|h&i\nj*";
        let script = render_shell("printf %s {{ x }}", &json!({ "x": hostile })).expect("renders");
        let output = std::process::Command::new("/bin/sh")
            .args(["-c", &script])
            .output()
            .expect("run sh");
        assert_eq!(String::from_utf8_lossy(&output.stdout), hostile);
    }

    #[test]
    fn check_reports_syntax_errors_with_their_line() {
        let cases: Vec<(&str, Option<usize>, &str)> = vec![
            (
                "{{ x }",
                Some(1),
                "syntax error: unexpected `}`, expected end of variable block (line 1)",
            ),
            (
                "a\nb\n{% if %}",
                Some(3),
                "syntax error: unexpected end of block (line 3)",
            ),
            (
                "{% for x in y %}",
                Some(1),
                "syntax error: unexpected end of input, expected end of block (line 1)",
            ),
            (
                "{{ x | }}",
                Some(1),
                "syntax error: unexpected end of variable block, expected identifier (line 1)",
            ),
            (
                "{% include 'other' %}",
                Some(1),
                "syntax error: unknown statement include (line 1)",
            ),
            (
                "{% import 'other' as o %}",
                Some(1),
                "syntax error: unknown statement import (line 1)",
            ),
            (
                "{% extends 'base' %}",
                Some(1),
                "syntax error: unknown statement extends (line 1)",
            ),
            (
                "{% macro m() %}{% endmacro %}",
                Some(1),
                "syntax error: unknown statement macro (line 1)",
            ),
            (
                "{# unclosed",
                Some(1),
                "syntax error: unexpected end of comment (line 1)",
            ),
        ];
        for (source, line, message) in cases {
            let error = check(source).expect_err(source);
            assert_eq!(
                error,
                TemplateError {
                    line,
                    message: message.into()
                },
                "{source:?}"
            );
        }
    }

    #[test]
    fn check_lists_top_level_variables() {
        let cases: Vec<(&str, BTreeSet<String>)> = vec![
            ("plain text, no template", names(&[])),
            ("a }} b %} c", names(&[])),
            ("{{ labels.instance }}", names(&["labels"])),
            (
                "{{ labels.x }} on {{ annotations.summary | upper }}",
                names(&["annotations", "labels"]),
            ),
            (
                "{% for a in alerts %}{{ a.labels.instance }}{{ loop.index }}{% endfor %}",
                names(&["alerts"]),
            ),
            ("{% set x = status %}{{ x }}", names(&["status"])),
            (
                "{{ range(3) | join(',') }} {{ dict(a=1) }} {{ namespace() }}",
                names(&[]),
            ),
            (
                "{% if labels.team is defined %}{{ labels.team }}{% endif %}",
                names(&["labels"]),
            ),
            ("{{ params['service'] }}", names(&["params"])),
            ("{# a comment with {{ x }} #}", names(&[])),
            ("{{ nope }}", names(&["nope"])),
        ];
        for (source, want) in cases {
            assert_eq!(check(source), Ok(want), "{source:?}");
        }
    }

    #[test]
    fn render_str_table() {
        let cases: Vec<(&str, &str)> = vec![
            ("no template here", "no template here"),
            ("literal }} and %} and {x}", "literal }} and %} and {x}"),
            ("", ""),
            (
                "{{ labels.alertname }} on {{ labels.instance }}",
                "DiskFull on web-1:9100",
            ),
            ("{{ labels.port }}", "9100"),
            ("{{ ratio }}", "0.5"),
            ("{{ ok }}", "true"),
            ("{{ labels['app.kubernetes.io/name'] }}", "web"),
            ("{{ alerts.1.labels.instance }}", "web-2"),
            ("{{ alerts[0].labels.instance }}", "web-1"),
            ("{{ labels.instance | split(':') | first }}", "web-1"),
            ("{{ labels.instance | replace(':9100', '') }}", "web-1"),
            ("{{ labels.team | default('sre') }}", "sre"),
            ("{% if labels.team %}team{% else %}none{% endif %}", "none"),
            (
                "{% if labels.team is defined %}yes{% else %}no{% endif %}",
                "no",
            ),
            (
                "{{ alerts | map(attribute='labels.instance') | join(',') }}",
                "web-1,web-2",
            ),
            ("{{ alerts | length }}", "2"),
            (
                "{{ labels | tojson }}",
                r#"{"alertname": "DiskFull", "app.kubernetes.io/name": "web", "instance": "web-1:9100", "port": 9100}"#,
            ),
            (
                "{{ \"it's <b>\" | tojson }}",
                r#""it\u0027s \u003cb\u003e""#,
            ),
            ("{{ path | shell_quote }}", r"'/var/log/it'\''s here'"),
            (
                "systemctl reload {{ params.service | shell_quote }}",
                "systemctl reload 'nginx'",
            ),
            (
                "nginx {{ params.args | shell_quote }}",
                "nginx '-s' 'reload'",
            ),
            ("{{ labels.port | shell_quote }}", "'9100'"),
            ("{{ '' | shell_quote }}", "''"),
            ("{{ nothing }}", "null"),
            ("{{ ok }} {{ not ok }} {{ none }}", "true false null"),
            ("{{ params.args }}", r#"["-s","reload"]"#),
            ("{{ annotations }}", r#"{"summary":"disk full"}"#),
            ("{{ range(2) }}", "[0,1]"),
            ("{{ [1, 'a', none, true] }}", r#"[1,"a",null,true]"#),
            ("line one\n{{ status }}\n", "line one\nfiring\n"),
            ("{{- '  x  ' -}}  ", "  x  "),
            (
                "{% raw %}{{ not rendered }}{% endraw %}",
                "{{ not rendered }}",
            ),
            // Payload data is never rendered as a template.
            (
                "{{ evil }}",
                "{{ 7 * 7 }}{% for i in range(99999) %}{% endfor %}",
            ),
        ];
        for (source, want) in cases {
            assert_eq!(
                render_str(source, &context()),
                Ok(want.to_string()),
                "{source:?}"
            );
        }
    }

    #[test]
    fn undefined_values_are_errors_naming_them() {
        let cases: Vec<(&str, &str)> = vec![
            (
                "{{ labels.team }}",
                "undefined value: `labels.team` is undefined (line 1)",
            ),
            (
                "x {{ nope }}",
                "undefined value: `nope` is undefined (line 1)",
            ),
            (
                "a\n\n{{ labels.team.name }}",
                "undefined value: `labels.team` is undefined (line 3)",
            ),
            (
                "{{ nope | upper }}",
                "undefined value: `nope` is undefined (line 1)",
            ),
            (
                "{% for x in nope %}{% endfor %}",
                "undefined value: `nope` is undefined (line 1)",
            ),
            (
                "{{ alerts.5.labels }}",
                "undefined value: `alerts[5]` is undefined (line 1)",
            ),
        ];
        for (source, want) in cases {
            let error = render_str(source, &context()).expect_err(source);
            assert_eq!(error.message, want, "{source:?}");
            assert!(error.line.is_some());
        }
        let error = render_str("{{ nope | shell_quote }}", &context()).expect_err("undefined");
        assert!(
            error.message.starts_with("undefined value:"),
            "{}",
            error.message
        );
    }

    #[test]
    fn render_value_keeps_the_type_of_single_expressions() {
        let cases: Vec<(Value, Value)> = vec![
            (json!("{{ labels.port }}"), json!(9100)),
            (json!("  {{ labels.port }}\n"), json!(9100)),
            (json!("{{- labels.port -}}"), json!(9100)),
            (json!("{{ ratio }}"), json!(0.5)),
            (json!("{{ ok }}"), json!(true)),
            (json!("{{ nothing }}"), json!(null)),
            (json!("{{ none }}"), json!(null)),
            (json!("{{ labels.team | default(none) }}"), json!(null)),
            (
                json!("{{ alerts | map(attribute='labels.instance') | list }}"),
                json!(["web-1", "web-2"]),
            ),
            (json!("{{ annotations }}"), json!({"summary": "disk full"})),
            (json!("{{ range(3) }}"), json!([0, 1, 2])),
            (json!("{{ labels.instance }}"), json!("web-1:9100")),
            (json!("{{ labels.port | string }}"), json!("9100")),
            (json!("{{ '9100' | int }}"), json!(9100)),
            (
                json!("{{ dict(a=[1, {'b': none}]) }}"),
                json!({"a": [1, {"b": null}]}),
            ),
            (json!("port {{ labels.port }}"), json!("port 9100")),
            (
                json!("{{ labels.port }}{{ labels.port }}"),
                json!("91009100"),
            ),
            (json!("{{ labels.port }} {{ ok }}"), json!("9100 true")),
            (json!("{{ '}}' }}"), json!("}}")),
            (
                json!("{% if ok %}{{ labels.port }}{% endif %}"),
                json!("9100"),
            ),
            (json!("not a template"), json!("not a template")),
            (json!(42), json!(42)),
            (json!(null), json!(null)),
            (
                json!({"service": "{{ params.service }}", "{{ key }}": ["{{ labels.port }}", {"deep": "{{ ok }}"}], "n": 1}),
                json!({"service": "nginx", "{{ key }}": [9100, {"deep": true}], "n": 1}),
            ),
        ];
        for (value, want) in cases {
            assert_eq!(
                render_value(&value, &context()),
                Ok(want.clone()),
                "{value}"
            );
        }
    }

    #[test]
    fn render_value_errors() {
        let cases: Vec<(Value, &str)> = vec![
            (
                json!("{{ labels.team }}"),
                "{{ labels.team }}: the value is undefined (line 1)",
            ),
            (
                json!("{{ [labels.team] }}"),
                "{{ [labels.team] }}: the value is undefined (line 1)",
            ),
            (
                json!("{{ labels.team.name }}"),
                "undefined value: `labels.team` is undefined (line 1)",
            ),
            (
                json!("\n\n{{ labels.team.name }}"),
                "undefined value: `labels.team` is undefined (line 3)",
            ),
            (
                json!({"a": ["ok", "{{ nope | upper }}"]}),
                "undefined value: `nope` is undefined (line 1)",
            ),
            (
                json!("{{ range }}"),
                "{{ range }}: minijinja::functions::builtins::range is a function or object, not data (line 1)",
            ),
            (
                json!("{{ 1 + }}"),
                "syntax error: unexpected end of input, expected expression (line 1)",
            ),
            (
                json!("{{ 2 ** 70 }}"),
                "{{ 2 ** 70 }}: 1180591620717411303424 is too large for a JSON integer (line 1)",
            ),
            (
                json!("{{ 2 ** 200 | int }}"),
                "invalid operation: unable to calculate 2 ** 200 (line 1)",
            ),
        ];
        for (value, want) in cases {
            let error = render_value(&value, &context()).expect_err("fails");
            assert_eq!(error.message, want, "{value}");
        }
    }

    #[test]
    fn runaway_templates_are_stopped() {
        let cases = [
            "{% for i in range(100000) %}{{ i }}{% endfor %}",
            "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
            "{% set ns = namespace(n=0) %}{% for i in range(99999) %}{% set ns.n = ns.n + 1 %}{% endfor %}",
        ];
        for source in cases {
            let error = render_str(source, &context()).expect_err(source);
            assert!(
                error
                    .message
                    .starts_with("the template ran for more than 100000 steps"),
                "{}",
                error.message
            );
        }
        let error = render_str("{{ range(1000000) | length }}", &context()).expect_err("too large");
        assert!(
            error.message.contains("range has too many elements"),
            "{}",
            error.message
        );
        // A realistic loop fits comfortably.
        let many: Vec<Value> = (0..2000)
            .map(|i| json!({"labels": {"instance": format!("web-{i}")}}))
            .collect();
        let rendered = render_str(
            "{% for a in alerts %}{{ a.labels.instance }} {% endfor %}",
            &json!({"alerts": many}),
        )
        .expect("fits in the fuel");
        assert!(rendered.ends_with("web-1999 "));
    }

    #[test]
    fn hostile_input_is_an_error_not_a_crash() {
        let deep = format!("{{{{ {}1{} }}}}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(check(&deep).is_err());
        assert!(render_value(&json!(deep), &context()).is_err());

        let mut value = json!("x");
        for _ in 0..200 {
            value = json!([value]);
        }
        let error = render_value(&value, &context()).expect_err("too deep");
        assert_eq!(error.message, "the value is nested more than 128 deep");

        // The debug() function would print the whole context.
        assert!(render_str("{{ debug() }}", &context()).is_err());
        // A context that is not an object has no variables.
        assert!(render_str("{{ x }}", &json!(null)).is_err());
        assert_eq!(render_str("{{ 1 + 1 }}", &json!([1, 2])), Ok("2".into()));
    }

    #[test]
    fn the_documented_filters_exist() {
        let documented = [
            "default",
            "lower",
            "upper",
            "replace",
            "split",
            "join",
            "int",
            "float",
            "length",
            "first",
            "map",
            "select",
            "tojson",
            "shell_quote",
            "trim",
            "list",
            "unique",
            "sort",
        ];
        for filter in documented {
            let rendered = render_str(&format!("{{{{ x | {filter} }}}}"), &json!({"x": ["a"]}));
            if let Err(error) = &rendered {
                assert!(
                    !error.message.contains("unknown filter"),
                    "{filter}: {error}"
                );
            }
        }
        for function in ["range(2)", "dict(a=1)"] {
            assert!(
                render_str(&format!("{{{{ {function} }}}}"), &json!({})).is_ok(),
                "{function}"
            );
        }
        let error = render_str("{{ x | no_such_filter }}", &json!({"x": 1})).expect_err("unknown");
        assert_eq!(
            error.message,
            "unknown filter: filter no_such_filter is unknown (line 1)"
        );
    }

    /// What `sh` would make of a quoted word: strips the quoting again.
    fn unquote(word: &str) -> Option<String> {
        let mut out = String::new();
        let mut rest = word;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('\'') {
                let end = after.find('\'')?;
                out.push_str(&after[..end]);
                rest = &after[end + 1..];
            } else if let Some(after) = rest.strip_prefix("\\'") {
                out.push('\'');
                rest = after;
            } else {
                return None;
            }
        }
        Some(out)
    }

    proptest! {
        #[test]
        fn shell_quote_round_trips_through_sh_rules(text in "\\PC{0,40}") {
            let quoted = render_str("{{ x | shell_quote }}", &json!({"x": text.clone()})).expect("quotes");
            prop_assert_eq!(unquote(&quoted), Some(text));
        }

        #[test]
        fn strings_without_delimiters_pass_through(text in "[^{]{0,40}") {
            prop_assert_eq!(render_str(&text, &context()), Ok(text.clone()));
            prop_assert_eq!(render_value(&json!(text.clone()), &context()), Ok(json!(text)));
        }

        #[test]
        fn rendering_arbitrary_sources_never_panics(source in "[{}%#a-z0-9 .|()'\\-\\[\\]]{0,40}") {
            let _ = check(&source);
            let _ = render_str(&source, &context());
            let _ = render_value(&json!(source), &context());
        }

        #[test]
        fn a_single_expression_keeps_any_json_value(value in arb_json()) {
            let rendered = render_value(&json!("{{ v }}"), &json!({"v": value.clone()}));
            prop_assert_eq!(rendered, Ok(value));
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(Value::from),
            "\\PC{0,10}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 20, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
