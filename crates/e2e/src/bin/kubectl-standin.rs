//! `kubectl-standin`: a recording stand-in for the few `kubectl` commands
//! the `kubernetes` pack runs, for tests. It is **not** a Kubernetes API
//! and checks nothing a cluster would (no admission, no controllers, no
//! pods): it keeps nodes in a JSON file and answers as kubectl does for
//! what the pack relies on: output lines, exit statuses, `--overwrite`,
//! `key-` removal, "already cordoned".
//!
//! Installed as `kubectl` first in a drone's `PATH`; environment:
//! - `KUBECTL_STANDIN_STATE`: the JSON state file, read and rewritten on
//!   every call: `{"nodes": {"<name>": <node object>}, "fail": {...},
//!   "pdb_blocks": {"<node>": "<namespace>/<pod>"}}`. A node object is
//!   kept as Kubernetes prints it (`metadata.annotations`,
//!   `spec.unschedulable`, `spec.taints`), empty fields left out.
//!   `fail: {"stderr": "...", "exit_code": 1, "verbs": ["taint"]}` makes
//!   every call (or those verbs') print that and exit so, changing
//!   nothing. `pdb_blocks` makes a drain of that node fail at its timeout
//!   as a PodDisruptionBudget does, unless `--disable-eviction` is given.
//! - `KUBECTL_STANDIN_LOG`: a file each call's argv is appended to, one
//!   JSON array a line.
//!
//! Supported: `get node NAME [-o json|-o jsonpath=TEMPLATE]` (JSONPath:
//! fields with `\.` escapes, `[*]`, `[N]`, `{range}...{end}`, string
//! literals; missing fields print nothing, as kubectl's printer allows),
//! `cordon NAME`, `uncordon NAME`, `drain NAME [--timeout=D]
//! [--ignore-daemonsets[=B]] [--delete-emptydir-data[=B]] [--force[=B]]
//! [--disable-eviction[=B]]`, `taint nodes NAME SPEC... [--overwrite]`,
//! `annotate node NAME K=V|K-... [--overwrite]`. Anything else is refused
//! as kubectl refuses an unknown flag or command.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use serde_json::{Map, Value, json};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Ok(log) = std::env::var("KUBECTL_STANDIN_LOG") {
        let line = format!("{}\n", Value::from(args.clone()));
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!("kubectl-standin: cannot append to {log}: {e}");
            return ExitCode::from(1);
        }
    }
    let Ok(path) = std::env::var("KUBECTL_STANDIN_STATE") else {
        eprintln!("kubectl-standin: KUBECTL_STANDIN_STATE is not set");
        return ExitCode::from(1);
    };
    let mut state: Value = match std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
    {
        Ok(state) => state,
        Err(e) => {
            eprintln!("kubectl-standin: cannot read {path}: {e}");
            return ExitCode::from(1);
        }
    };
    match run(&args, &mut state) {
        Ok(Outcome { stdout, changed }) => {
            if changed {
                let text = serde_json::to_string_pretty(&state).unwrap_or_default();
                if let Err(e) = std::fs::write(&path, text) {
                    eprintln!("kubectl-standin: cannot write {path}: {e}");
                    return ExitCode::from(1);
                }
            }
            print!("{stdout}");
            ExitCode::SUCCESS
        }
        Err(Failure { stderr, code }) => {
            eprint!("{stderr}");
            ExitCode::from(code)
        }
    }
}

struct Outcome {
    stdout: String,
    changed: bool,
}

struct Failure {
    stderr: String,
    code: u8,
}

fn fail(message: impl Into<String>) -> Failure {
    let mut stderr = message.into();
    if !stderr.ends_with('\n') {
        stderr.push('\n');
    }
    Failure { stderr, code: 1 }
}

/// The command line, split as kubectl's flag parser does for what is
/// supported: `--flag=value`, `--flag value` for flags taking a value,
/// `-o value`, `-o=value`.
struct Args {
    positional: Vec<String>,
    flags: BTreeMap<String, String>,
}

const VALUE_FLAGS: &[&str] = &["output", "timeout", "grace-period"];
const BOOL_FLAGS: &[&str] = &[
    "overwrite",
    "ignore-daemonsets",
    "delete-emptydir-data",
    "force",
    "disable-eviction",
];

fn parse(args: &[String]) -> Result<Args, Failure> {
    let mut positional = Vec::new();
    let mut flags = BTreeMap::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let (name, inline) = if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (long.to_string(), None),
            }
        } else if let Some(short) = arg.strip_prefix("-o") {
            let inline = short.strip_prefix('=').unwrap_or(short);
            (
                "output".to_string(),
                (!inline.is_empty()).then(|| inline.to_string()),
            )
        } else if arg.starts_with('-') && arg.len() > 1 && !arg.ends_with('-') {
            return Err(fail(format!("error: unknown shorthand flag: {arg}")));
        } else {
            positional.push(arg.clone());
            continue;
        };
        let value = if VALUE_FLAGS.contains(&name.as_str()) {
            match inline {
                Some(v) => v,
                None => rest
                    .next()
                    .cloned()
                    .ok_or_else(|| fail(format!("error: flag needs an argument: --{name}")))?,
            }
        } else if BOOL_FLAGS.contains(&name.as_str()) {
            match inline.as_deref() {
                None | Some("true") => "true".to_string(),
                Some("false") => "false".to_string(),
                Some(other) => {
                    return Err(fail(format!(
                        "error: invalid argument \"{other}\" for \"--{name}\" flag: strconv.ParseBool: parsing \"{other}\": invalid syntax"
                    )));
                }
            }
        } else {
            return Err(fail(format!("error: unknown flag: --{name}")));
        };
        flags.insert(name, value);
    }
    Ok(Args { positional, flags })
}

impl Args {
    fn flag(&self, name: &str) -> bool {
        self.flags.get(name).is_some_and(|v| v == "true")
    }
}

fn run(argv: &[String], state: &mut Value) -> Result<Outcome, Failure> {
    let args = parse(argv)?;
    let verb = args.positional.first().cloned().unwrap_or_default();
    if let Some(failure) = state.get("fail").filter(|f| !f.is_null()) {
        let verbs = failure["verbs"].as_array();
        if verbs.is_none_or(|vs| vs.iter().any(|v| v == verb.as_str())) {
            return Err(Failure {
                stderr: format!("{}\n", failure["stderr"].as_str().unwrap_or("error")),
                code: failure["exit_code"]
                    .as_u64()
                    .and_then(|c| u8::try_from(c).ok())
                    .unwrap_or(1),
            });
        }
    }
    let pos = &args.positional;
    match verb.as_str() {
        "get" => {
            let name = node_operand(pos, 1)?;
            let node = node(state, &name)?;
            let stdout = match args.flags.get("output").map(String::as_str) {
                Some("json") => format!(
                    "{}\n",
                    serde_json::to_string_pretty(node).unwrap_or_default()
                ),
                Some(output) => match output.strip_prefix("jsonpath=") {
                    Some(template) => jsonpath(template, node)?,
                    None => {
                        return Err(fail(format!(
                            "error: unable to match a printer suitable for the output format \"{output}\""
                        )));
                    }
                },
                None => format!(
                    "NAME   STATUS\n{name}   {}\n",
                    if node["spec"]["unschedulable"] == true {
                        "Ready,SchedulingDisabled"
                    } else {
                        "Ready"
                    }
                ),
            };
            Ok(Outcome {
                stdout,
                changed: false,
            })
        }
        "cordon" | "uncordon" => {
            let name = single_name(pos)?;
            let node = node_mut(state, &name)?;
            let cordon = verb == "cordon";
            let already = (node["spec"]["unschedulable"] == true) == cordon;
            if already {
                return Ok(Outcome {
                    stdout: format!("node/{name} already {verb}ed\n"),
                    changed: false,
                });
            }
            set_unschedulable(node, cordon);
            Ok(Outcome {
                stdout: format!("node/{name} {verb}ed\n"),
                changed: true,
            })
        }
        "drain" => drain(&args, state),
        "taint" => taint(&args, state),
        "annotate" => annotate(&args, state),
        "" => Err(fail("error: kubectl-standin needs a command")),
        other => Err(fail(format!(
            "error: unknown command \"{other}\" for \"kubectl\" (kubectl-standin supports get, cordon, uncordon, drain, taint, annotate)"
        ))),
    }
}

/// `get node NAME`, `taint nodes NAME`: the resource then the name.
fn node_operand(pos: &[String], at: usize) -> Result<String, Failure> {
    match pos.get(at).map(String::as_str) {
        Some("node" | "nodes" | "no") => pos
            .get(at + 1)
            .cloned()
            .ok_or_else(|| fail("error: kubectl-standin needs a node name")),
        Some(kind) => Err(fail(format!(
            "error: the server doesn't have a resource type \"{kind}\" (kubectl-standin knows nodes only)"
        ))),
        None => Err(fail("error: You must specify the type of resource to get.")),
    }
}

fn single_name(pos: &[String]) -> Result<String, Failure> {
    match pos {
        [_, name] => Ok(name.clone()),
        _ => Err(fail(format!(
            "error: exactly one NODE is required for {}",
            pos.first().map(String::as_str).unwrap_or_default()
        ))),
    }
}

fn not_found(name: &str) -> Failure {
    fail(format!(
        "Error from server (NotFound): nodes \"{name}\" not found"
    ))
}

fn node<'a>(state: &'a Value, name: &str) -> Result<&'a Value, Failure> {
    state["nodes"].get(name).ok_or_else(|| not_found(name))
}

fn node_mut<'a>(state: &'a mut Value, name: &str) -> Result<&'a mut Value, Failure> {
    state
        .get_mut("nodes")
        .and_then(|nodes| nodes.get_mut(name))
        .ok_or_else(|| not_found(name))
}

fn object<'a>(value: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !value[key].is_object() {
        value[key] = json!({});
    }
    match value[key].as_object_mut() {
        Some(map) => map,
        None => unreachable!("set to an object above"),
    }
}

/// As the API server prints a node: `unschedulable` only when true.
fn set_unschedulable(node: &mut Value, on: bool) {
    let spec = object(node, "spec");
    if on {
        spec.insert("unschedulable".into(), Value::Bool(true));
    } else {
        spec.remove("unschedulable");
    }
}

fn drain(args: &Args, state: &mut Value) -> Result<Outcome, Failure> {
    let name = single_name(&args.positional)?;
    let blocked = state["pdb_blocks"][&name].as_str().map(String::from);
    let node = node_mut(state, &name)?;
    let mut stdout = String::new();
    if node["spec"]["unschedulable"] == true {
        stdout.push_str(&format!("node/{name} already cordoned\n"));
    } else {
        set_unschedulable(node, true);
        stdout.push_str(&format!("node/{name} cordoned\n"));
    }
    if let Some(pod) = blocked.filter(|_| !args.flag("disable-eviction")) {
        let (namespace, pod) = pod.split_once('/').unwrap_or(("default", &pod));
        let timeout = args.flags.get("timeout").map_or("0s", String::as_str);
        // kubectl cordons before it evicts, and the cordon stays; the
        // state is written here because the call fails.
        write_state(state)?;
        print!("{stdout}");
        return Err(Failure {
            stderr: format!(
                "evicting pod {namespace}/{pod}\nerror when evicting pods/\"{pod}\" -n \"{namespace}\" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.\nThere are pending nodes to be drained:\n {name}\nerror: unable to drain node \"{name}\" due to error: error when evicting pods/\"{pod}\" -n \"{namespace}\": global timeout reached: {timeout}, continuing command...\n"
            ),
            code: 1,
        });
    }
    stdout.push_str(&format!("node/{name} drained\n"));
    Ok(Outcome {
        stdout,
        changed: true,
    })
}

fn write_state(state: &Value) -> Result<(), Failure> {
    let path = std::env::var("KUBECTL_STANDIN_STATE").unwrap_or_default();
    let text = serde_json::to_string_pretty(state).unwrap_or_default();
    std::fs::write(&path, text)
        .map_err(|e| fail(format!("kubectl-standin: cannot write {path}: {e}")))
}

fn taint(args: &Args, state: &mut Value) -> Result<Outcome, Failure> {
    let name = node_operand(&args.positional, 1)?;
    let specs = &args.positional[3.min(args.positional.len())..];
    if specs.is_empty() {
        return Err(fail("error: at least one taint update is required"));
    }
    let overwrite = args.flag("overwrite");
    let node = node_mut(state, &name)?;
    let mut taints: Vec<Value> = node["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut removed_any = false;
    for spec in specs {
        if let Some(removal) = spec.strip_suffix('-') {
            let (key, effect) = match removal.split_once(':') {
                Some((key, effect)) => (key.split('=').next().unwrap_or(key), Some(effect)),
                None => (removal, None),
            };
            let before = taints.len();
            taints.retain(|t| !(t["key"] == key && effect.is_none_or(|e| t["effect"] == e)));
            if taints.len() == before {
                return Err(fail(format!("error: taint {removal:?} not found")));
            }
            removed_any = true;
            continue;
        }
        let (key_value, effect) = spec.rsplit_once(':').ok_or_else(|| {
            fail(format!(
                "error: invalid taint spec: {spec}, unknown taint effect"
            ))
        })?;
        if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
            return Err(fail(format!(
                "error: invalid taint effect: {effect}, unsupported taint effect"
            )));
        }
        let (key, value) = key_value.split_once('=').unwrap_or((key_value, ""));
        let mut taint = json!({"key": key, "effect": effect});
        if !value.is_empty() {
            taint["value"] = json!(value);
        }
        match taints
            .iter_mut()
            .find(|t| t["key"] == key && t["effect"] == effect)
        {
            Some(_) if !overwrite => {
                return Err(fail(format!(
                    "error: node {name} already has {key} taint(s) with same effect(s) and --overwrite is false"
                )));
            }
            Some(existing) => *existing = taint,
            None => taints.push(taint),
        }
    }
    let spec = object(node, "spec");
    if taints.is_empty() {
        spec.remove("taints");
    } else {
        spec.insert("taints".into(), Value::Array(taints));
    }
    let word = if removed_any { "untainted" } else { "tainted" };
    Ok(Outcome {
        stdout: format!("node/{name} {word}\n"),
        changed: true,
    })
}

fn annotate(args: &Args, state: &mut Value) -> Result<Outcome, Failure> {
    let name = node_operand(&args.positional, 1)?;
    let changes = &args.positional[3.min(args.positional.len())..];
    if changes.is_empty() {
        return Err(fail("error: at least one annotation update is required"));
    }
    let overwrite = args.flag("overwrite");
    let node = node_mut(state, &name)?;
    let mut current: Map<String, Value> = node["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for change in changes {
        if let Some((key, value)) = change.split_once('=') {
            if let Some(old) = current.get(key).and_then(Value::as_str)
                && old != value
                && !overwrite
            {
                return Err(fail(format!(
                    "error: --overwrite is false but found the following declared annotation(s): '{key}' already has a value ({old})"
                )));
            }
            current.insert(key.to_string(), json!(value));
        } else if let Some(key) = change.strip_suffix('-') {
            current.remove(key);
        } else {
            return Err(fail(format!("error: invalid annotation format: {change}")));
        }
    }
    let metadata = object(node, "metadata");
    if current.is_empty() {
        metadata.remove("annotations");
    } else {
        metadata.insert("annotations".into(), Value::Object(current));
    }
    Ok(Outcome {
        stdout: format!("node/{name} annotated\n"),
        changed: true,
    })
}

// --- JSONPath, the subset kubectl's printer is used with by the pack --------

enum Piece {
    Text(String),
    Path(Vec<Step>),
    Range(Vec<Step>, Vec<Piece>),
}

enum Step {
    Field(String),
    All,
    Index(usize),
}

fn jsonpath(template: &str, root: &Value) -> Result<String, Failure> {
    let mut rest = template;
    let pieces = pieces(&mut rest, false)?;
    let mut out = String::new();
    render(&pieces, root, &mut out);
    Ok(out)
}

fn bad(template: &str, why: &str) -> Failure {
    fail(format!("error: error parsing jsonpath {template}, {why}"))
}

/// Parses until the end, or until `{end}` when `in_range`.
fn pieces(rest: &mut &str, in_range: bool) -> Result<Vec<Piece>, Failure> {
    let mut out = Vec::new();
    loop {
        let Some(open) = rest.find('{') else {
            if in_range {
                return Err(bad(rest, "unclosed range"));
            }
            if !rest.is_empty() {
                out.push(Piece::Text(rest.to_string()));
            }
            *rest = "";
            return Ok(out);
        };
        if open > 0 {
            out.push(Piece::Text(rest[..open].to_string()));
        }
        let body_start = &rest[open + 1..];
        let close = closing_brace(body_start).ok_or_else(|| bad(rest, "unclosed action"))?;
        let body = body_start[..close].trim();
        *rest = &body_start[close + 1..];
        if body == "end" {
            if in_range {
                return Ok(out);
            }
            return Err(bad(body, "not in range, nothing to end"));
        }
        if let Some(path) = body.strip_prefix("range ") {
            let steps = path_steps(path.trim())?;
            let inner = pieces(rest, true)?;
            out.push(Piece::Range(steps, inner));
        } else if let Some(literal) = body.strip_prefix('"').and_then(|b| b.strip_suffix('"')) {
            out.push(Piece::Text(unescape(literal)));
        } else {
            out.push(Piece::Path(path_steps(body)?));
        }
    }
}

/// The `}` closing an action, skipping those inside a string literal.
fn closing_brace(text: &str) -> Option<usize> {
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => in_string = !in_string,
            '}' if !in_string => return Some(i),
            _ => {}
        }
    }
    None
}

fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn path_steps(path: &str) -> Result<Vec<Step>, Failure> {
    let path = path.strip_prefix('@').unwrap_or(path);
    let Some(path) = path.strip_prefix('.') else {
        return Err(bad(path, "a path starts with ."));
    };
    let mut steps = Vec::new();
    let mut field = String::new();
    let mut chars = path.chars().peekable();
    let flush = |field: &mut String, steps: &mut Vec<Step>| {
        if !field.is_empty() {
            steps.push(Step::Field(std::mem::take(field)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => field.extend(chars.next()),
            '.' => flush(&mut field, &mut steps),
            '[' => {
                flush(&mut field, &mut steps);
                let mut index = String::new();
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                    index.push(c);
                }
                if index == "*" {
                    steps.push(Step::All);
                } else {
                    let n = index
                        .parse()
                        .map_err(|_| bad(path, "kubectl-standin supports [*] and [N] only"))?;
                    steps.push(Step::Index(n));
                }
            }
            other => field.push(other),
        }
    }
    flush(&mut field, &mut steps);
    Ok(steps)
}

/// Every value the steps reach; a missing field reaches none.
fn select<'a>(steps: &[Step], value: &'a Value) -> Vec<&'a Value> {
    let mut current = vec![value];
    for step in steps {
        current = current
            .into_iter()
            .flat_map(|v| -> Vec<&Value> {
                match step {
                    Step::Field(name) => v.get(name.as_str()).into_iter().collect(),
                    Step::Index(i) => v.get(*i).into_iter().collect(),
                    Step::All => match v {
                        Value::Array(items) => items.iter().collect(),
                        Value::Object(map) => map.values().collect(),
                        _ => Vec::new(),
                    },
                }
            })
            .collect();
    }
    current
}

fn render(pieces: &[Piece], value: &Value, out: &mut String) {
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Path(steps) => {
                let printed: Vec<String> = select(steps, value)
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                out.push_str(&printed.join(" "));
            }
            Piece::Range(steps, inner) => {
                for item in select(steps, value) {
                    render(inner, item, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(state: &mut Value, args: &[&str]) -> Result<String, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        run(&args, state).map(|o| o.stdout).map_err(|f| f.stderr)
    }

    fn cluster() -> Value {
        json!({"nodes": {"n1": {
            "metadata": {"name": "n1", "annotations": {"a.b/c": "x"}},
            "spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}, {"key": "e", "effect": "NoExecute"}]}
        }}})
    }

    #[test]
    fn jsonpath_reads_escaped_fields_ranges_and_missing_fields_as_kubectl_prints_them() {
        let mut state = cluster();
        let get = |state: &mut Value, template: &str| {
            call(
                state,
                &["get", "node", "n1", "-o", &format!("jsonpath={template}")],
            )
            .unwrap()
        };
        assert_eq!(get(&mut state, r"{.metadata.annotations.a\.b/c}"), "x");
        assert_eq!(get(&mut state, "{.spec.unschedulable}"), "");
        assert_eq!(
            get(
                &mut state,
                r#"{range .spec.taints[*]}{.key}:{.effect}={.value}{"\n"}{end}"#
            ),
            "k:NoSchedule=v\ne:NoExecute=\n"
        );
        assert_eq!(get(&mut state, "{.spec.taints[1].key}"), "e");
        assert_eq!(get(&mut state, "name={.metadata.name}"), "name=n1");
        assert!(
            call(&mut state, &["get", "node", "n2", "-o", "json"])
                .unwrap_err()
                .contains("NotFound")
        );
    }

    #[test]
    fn taint_refuses_a_duplicate_without_overwrite_and_removes_by_key_and_effect() {
        let mut state = cluster();
        let err = call(&mut state, &["taint", "nodes", "n1", "k=w:NoSchedule"]).unwrap_err();
        assert!(err.contains("--overwrite is false"), "{err}");
        call(
            &mut state,
            &["taint", "nodes", "n1", "k=w:NoSchedule", "--overwrite"],
        )
        .unwrap();
        assert_eq!(state["nodes"]["n1"]["spec"]["taints"][0]["value"], "w");
        let err = call(&mut state, &["taint", "nodes", "n1", "k:NoExecute-"]).unwrap_err();
        assert!(err.contains("not found"), "{err}");
        assert_eq!(
            call(&mut state, &["taint", "nodes", "n1", "k:NoSchedule-"]).unwrap(),
            "node/n1 untainted\n"
        );
        call(&mut state, &["taint", "nodes", "n1", "e-"]).unwrap();
        assert_eq!(state["nodes"]["n1"]["spec"].get("taints"), None);
    }

    #[test]
    fn cordon_says_already_and_annotate_needs_overwrite_to_change_a_value() {
        let mut state = cluster();
        assert_eq!(
            call(&mut state, &["cordon", "n1"]).unwrap(),
            "node/n1 cordoned\n"
        );
        assert_eq!(
            call(&mut state, &["cordon", "n1"]).unwrap(),
            "node/n1 already cordoned\n"
        );
        assert_eq!(
            call(&mut state, &["uncordon", "n1"]).unwrap(),
            "node/n1 uncordoned\n"
        );
        assert_eq!(state["nodes"]["n1"]["spec"].get("unschedulable"), None);
        let err = call(&mut state, &["annotate", "node", "n1", "a.b/c=y"]).unwrap_err();
        assert!(err.contains("--overwrite is false"), "{err}");
        call(
            &mut state,
            &["annotate", "node", "n1", "--overwrite", "a.b/c=y"],
        )
        .unwrap();
        call(&mut state, &["annotate", "node", "n1", "a.b/c-"]).unwrap();
        assert_eq!(state["nodes"]["n1"]["metadata"].get("annotations"), None);
        let err = call(&mut state, &["drain", "n1", "--bogus"]).unwrap_err();
        assert!(err.contains("unknown flag: --bogus"), "{err}");
    }
}
