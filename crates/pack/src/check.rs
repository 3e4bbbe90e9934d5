//! `sensors/<name>.yaml` with `kind: check`: a command the drones a target
//! expression matches run on an interval, whose results cross thresholds
//! into `drone.check` events (see `ultron8_core::health`).

use std::time::Duration;

use ultron8_core::Program;

use crate::manifest::optional_string;
use crate::model::Check;
use crate::problem::{Pos, Sink};
use crate::sensor;
use crate::text::did_you_mean;
use crate::yaml::{Fields, Node, non_empty_string, sequence, string};

const KEYS: &[&str] = &[
    "kind",
    "name",
    "description",
    "targets",
    "command",
    "shell",
    "script",
    "args",
    "interval",
    "timeout",
    "failure_threshold",
    "success_threshold",
    "flap",
];

/// Left out: 10 s, or half the interval when that is shorter.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a check needs of the rest of the pack: its name and its scripts,
/// as an action does.
pub(crate) use crate::action::Context;

pub(crate) struct Decoded {
    pub name_pos: Pos,
    /// The check's name (`name`, or the file's stem), when valid.
    pub name: Option<String>,
    pub check: Option<Check>,
}

pub(crate) fn decode(stem: &str, node: &Node, ctx: &Context<'_>, sink: &mut Sink<'_>) -> Decoded {
    let before = sink.count();
    let Some(fields) = Fields::new(node, "a check", KEYS, sink) else {
        return Decoded {
            name_pos: node.pos,
            name: None,
            check: None,
        };
    };
    let (name_pos, name) = sensor::name(&fields, stem, "check", sink);
    let description = optional_string(&fields, "description", sink).unwrap_or_default();

    let targets = match fields.get("targets") {
        Some(node) => {
            non_empty_string(node, sink).and_then(|text| match ultron8_core::target::parse(text) {
                Ok(_) => Some(text.to_string()),
                Err(e) => {
                    sink.at(
                        node.pos,
                        format!("invalid target expression: {}", e.render(text)),
                    );
                    None
                }
            })
        }
        None => Some("*".to_string()),
    };

    let program = program(&fields, ctx, sink);

    let (interval, timeout) = sensor::schedule(
        &fields,
        sensor::DEFAULT_INTERVAL,
        DEFAULT_TIMEOUT,
        "check",
        sink,
    );
    let thresholds = sensor::thresholds(&fields, sink);

    let check = match (
        name.clone(),
        targets,
        program,
        interval,
        timeout,
        thresholds,
    ) {
        (
            Some(name),
            Some(targets),
            Some(program),
            Some(interval),
            Some(timeout),
            Some(thresholds),
        ) if sink.count() == before => Some(Check {
            pack: ctx.pack.unwrap_or_default().to_string(),
            name,
            description,
            targets,
            program,
            interval,
            timeout,
            thresholds,
        }),
        _ => None,
    };
    Decoded {
        name_pos,
        name,
        check,
    }
}

/// Exactly one of `command`, `shell` or `script` (+ `args`).
fn program(fields: &Fields<'_>, ctx: &Context<'_>, sink: &mut Sink<'_>) -> Option<Program> {
    let given: Vec<_> = ["command", "shell", "script"]
        .into_iter()
        .filter_map(|key| fields.entry(key))
        .collect();
    if let (Some(args), None) = (fields.entry("args"), fields.entry("script")) {
        sink.at(
            args.key_pos,
            "`args` go with `script`; a `command` lists its arguments itself",
        );
    }
    match given.as_slice() {
        [] => {
            sink.at(
                fields.pos,
                "a check needs one of `command` (argv, run without a shell), `shell` (run by /bin/sh -c) or `script` (a file of the pack under scripts/)",
            );
            None
        }
        [entry] => match entry.key.as_str() {
            "command" => argv(&entry.value, sink).map(Program::Argv),
            "shell" => non_empty_string(&entry.value, sink).map(|s| Program::Shell(s.to_string())),
            _ => script(&entry.value, fields, ctx, sink),
        },
        [first, rest @ ..] => {
            for entry in rest {
                sink.at(
                    entry.key_pos,
                    format!(
                        "give one of `command`, `shell` or `script`, not several (`{}` is already set)",
                        first.key
                    ),
                );
            }
            None
        }
    }
}

fn argv(node: &Node, sink: &mut Sink<'_>) -> Option<Vec<String>> {
    let items = sequence(node, "a list of arguments (argv)", sink)?;
    if items.is_empty() {
        sink.at(node.pos, "`command` needs at least the program to run");
        return None;
    }
    let mut argv = Vec::with_capacity(items.len());
    for item in items {
        argv.push(string(item, sink)?.to_string());
    }
    if argv[0].trim().is_empty() {
        sink.at(
            items[0].pos,
            "the program (first element) must not be empty",
        );
        return None;
    }
    Some(argv)
}

fn script(
    node: &Node,
    fields: &Fields<'_>,
    ctx: &Context<'_>,
    sink: &mut Sink<'_>,
) -> Option<Program> {
    let args = match fields.get("args") {
        Some(node) => {
            let items = sequence(node, "a list of arguments", sink)?;
            let mut args = Vec::with_capacity(items.len());
            for item in items {
                args.push(string(item, sink)?.to_string());
            }
            args
        }
        None => Vec::new(),
    };
    let written = non_empty_string(node, sink)?;
    // `script: node_check.sh` and `script: scripts/node_check.sh` both name
    // scripts/node_check.sh.
    let path = if written.starts_with("scripts/") {
        written.to_string()
    } else {
        format!("scripts/{written}")
    };
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        sink.at(
            node.pos,
            format!("`{written}` is not a plain path inside scripts/ (no `.`, `..` or `//`)"),
        );
        return None;
    }
    match ctx.scripts.get(&path) {
        Some(sha256) => Some(Program::Script {
            sha256: sha256.clone(),
            name: path,
            args,
        }),
        None => {
            sink.at(
                node.pos,
                format!(
                    "{path} does not exist in the pack{}",
                    did_you_mean(&path, ctx.scripts.keys().map(String::as_str))
                ),
            );
            None
        }
    }
}
