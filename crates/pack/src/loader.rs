//! `load`: every file of a pack, classified, decoded and checked against the
//! others and against what is installed.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};
use ultron8_core::triggers::{self, TriggerType};

use crate::model::{Action, Check, Installed, Pack, PackFiles, Probe, Rule, Script};
use crate::problem::{Pos, Problem, Sink};
use crate::text::suggest;
use crate::yaml::{self, Node};
use crate::{action, check, manifest, probe, rule};

const MANIFEST: &str = "pack.yaml";

/// The directories a pack may have (`workflows/` is reserved and refused
/// until it is supported).
const DIRECTORIES: &[&str] = &["actions", "rules", "scripts", "sensors", "workflows"];

/// Decodes and checks a whole pack. Either every file is valid and
/// consistent with the rest of the pack and with what is installed, or the
/// error lists every problem found, sorted by file and position.
pub fn load(files: &PackFiles, installed: &dyn Installed) -> Result<Pack, Vec<Problem>> {
    let triggers: &[TriggerType] = triggers::BUILT_IN;
    let mut problems = Vec::new();
    let layout = classify(files, &mut problems);

    // pack.yaml first: its name prefixes every reference.
    let decoded_manifest = match layout.manifest {
        Some(bytes) => {
            let mut sink = Sink::new(MANIFEST, &mut problems);
            parse_file(bytes, &mut sink).map(|node| manifest::decode(&node, installed, &mut sink))
        }
        None => {
            let hint = if files.contains_key("pack.yml") {
                " (found pack.yml: rename it to pack.yaml)"
            } else {
                ""
            };
            problems.push(Problem {
                file: MANIFEST.into(),
                line: 1,
                column: 1,
                message: format!("missing pack.yaml; every pack has one at its root{hint}"),
            });
            None
        }
    };
    let pack_name = decoded_manifest.as_ref().and_then(|m| m.name.clone());
    let manifest = decoded_manifest.and_then(|m| m.manifest);

    let scripts: Vec<Script> = layout
        .scripts
        .iter()
        .map(|(path, content)| Script {
            path: (*path).to_string(),
            sha256: hex::encode(Sha256::digest(content)),
            content: content.to_vec(),
        })
        .collect();
    let script_hashes: BTreeMap<String, String> = scripts
        .iter()
        .map(|s| (s.path.clone(), s.sha256.clone()))
        .collect();

    // Actions. A name declared twice is a problem at the second file; the
    // map keeps the first, so rules resolve deterministically.
    let action_ctx = action::Context {
        pack: pack_name.as_deref(),
        scripts: &script_hashes,
    };
    let mut actions: BTreeMap<String, Option<Action>> = BTreeMap::new();
    let mut action_files: BTreeMap<String, &str> = BTreeMap::new();
    for (path, stem, bytes) in &layout.actions {
        let mut sink = Sink::new(path, &mut problems);
        let Some(node) = parse_file(bytes, &mut sink) else {
            actions.entry((*stem).to_string()).or_insert(None);
            continue;
        };
        let decoded = action::decode(stem, &node, &action_ctx, &mut sink);
        let name = decoded.name.unwrap_or_else(|| (*stem).to_string());
        if let Some(first) = action_files.get(&name) {
            sink.at(
                decoded.name_pos,
                format!("action `{name}` is already defined in {first}"),
            );
            continue;
        }
        action_files.insert(name.clone(), path);
        actions.insert(name, decoded.action);
    }

    let rule_ctx = rule::Context {
        pack: pack_name.as_deref(),
        dependencies: manifest.as_ref().map(|m| m.dependencies.as_slice()),
        actions: &actions,
        installed,
        triggers,
    };
    let mut rules: BTreeMap<String, Option<Rule>> = BTreeMap::new();
    let mut rule_files: BTreeMap<String, &str> = BTreeMap::new();
    for (path, stem, bytes) in &layout.rules {
        let mut sink = Sink::new(path, &mut problems);
        let Some(node) = parse_file(bytes, &mut sink) else {
            continue;
        };
        let decoded = rule::decode(stem, &node, &rule_ctx, &mut sink);
        let name = decoded.name.unwrap_or_else(|| (*stem).to_string());
        if let Some(first) = rule_files.get(&name) {
            sink.at(
                decoded.name_pos,
                format!("rule `{name}` is already defined in {first}"),
            );
            continue;
        }
        rule_files.insert(name.clone(), path);
        rules.insert(name, decoded.rule);
    }

    // Sensors: the `kind` chooses the decoder. Names are shared by every
    // kind, as events and `ultronctl` name them alike.
    let check_ctx = check::Context {
        pack: pack_name.as_deref(),
        scripts: &script_hashes,
    };
    let mut checks: BTreeMap<String, Option<Check>> = BTreeMap::new();
    let mut probes: BTreeMap<String, Option<Probe>> = BTreeMap::new();
    let mut sensor_files: BTreeMap<String, &str> = BTreeMap::new();
    let mut sources: BTreeMap<String, crate::discovery_source::SourceDecl> = BTreeMap::new();
    for (path, stem, bytes) in &layout.sensors {
        let mut sink = Sink::new(path, &mut problems);
        let Some(node) = parse_file(bytes, &mut sink) else {
            continue;
        };
        let (name, name_pos) = match sensor_kind(&node, &mut sink) {
            Some(SensorKind::Check) => {
                let decoded = check::decode(stem, &node, &check_ctx, &mut sink);
                let Some(name) = decoded.name else { continue };
                if !sensor_files.contains_key(&name) {
                    checks.insert(name.clone(), decoded.check);
                }
                (name, decoded.name_pos)
            }
            Some(SensorKind::Probe) => {
                let decoded = probe::decode(pack_name.as_deref(), stem, &node, &mut sink);
                let Some(name) = decoded.name else { continue };
                if !sensor_files.contains_key(&name) {
                    probes.insert(name.clone(), decoded.probe);
                }
                (name, decoded.name_pos)
            }
            Some(SensorKind::Source) => {
                let Some(source) = crate::discovery_source::decode(stem, &node, &mut sink) else {
                    continue;
                };
                let name = source.name.clone();
                if !sensor_files.contains_key(&name) {
                    sources.insert(name.clone(), source);
                }
                (name, node.pos)
            }
            None => continue,
        };
        if let Some(first) = sensor_files.get(&name) {
            sink.at(
                name_pos,
                format!("sensor `{name}` is already defined in {first}"),
            );
            continue;
        }
        sensor_files.insert(name, path);
    }

    if !problems.is_empty() {
        problems.sort();
        problems.dedup();
        return Err(problems);
    }
    // Every decoder reports why it returns nothing, so with no problems
    // everything is here; should that ever not hold, refuse rather than
    // install a partial pack.
    let incomplete = || {
        vec![Problem {
            file: MANIFEST.into(),
            line: 1,
            column: 1,
            message: "internal error: the pack was not fully decoded; please report this".into(),
        }]
    };
    let manifest = manifest.ok_or_else(incomplete)?;
    let actions = actions
        .into_values()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(incomplete)?;
    let rules = rules
        .into_values()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(incomplete)?;
    let checks = checks
        .into_values()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(incomplete)?;
    let probes = probes
        .into_values()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(incomplete)?;
    Ok(Pack {
        manifest,
        actions,
        rules,
        scripts,
        checks,
        probes,
        sources: sources.into_values().collect(),
    })
}

/// The kinds of `sensors/*.yaml`. Another kind is one more variant, its
/// decoder in its own file.
enum SensorKind {
    Check,
    Probe,
    Source,
}

const SENSOR_KINDS: &[&str] = &["check", "probe", "source"];

/// The `kind` of a sensor file, or the problem with it.
fn sensor_kind(node: &Node, sink: &mut Sink<'_>) -> Option<SensorKind> {
    let yaml::Value::Map(entries) = &node.value else {
        yaml::expected(node, "a sensor (a mapping with a `kind`)", sink);
        return None;
    };
    let Some(entry) = entries.iter().find(|e| e.key == "kind") else {
        sink.at(
            node.pos,
            format!(
                "missing required key `kind` (kinds: {})",
                crate::text::list(SENSOR_KINDS.iter().copied())
            ),
        );
        return None;
    };
    let kind = yaml::string(&entry.value, sink)?;
    match kind {
        "check" => Some(SensorKind::Check),
        "probe" => Some(SensorKind::Probe),
        "source" => Some(SensorKind::Source),
        other => {
            sink.at(
                entry.value.pos,
                format!(
                    "unknown sensor kind `{other}`{} (kinds: {})",
                    crate::text::did_you_mean(other, SENSOR_KINDS.iter().copied()),
                    crate::text::list(SENSOR_KINDS.iter().copied())
                ),
            );
            None
        }
    }
}

/// The pack's files by role.
#[derive(Default)]
struct Layout<'a> {
    manifest: Option<&'a [u8]>,
    /// (path, stem, contents)
    actions: Vec<(&'a str, &'a str, &'a [u8])>,
    rules: Vec<(&'a str, &'a str, &'a [u8])>,
    sensors: Vec<(&'a str, &'a str, &'a [u8])>,
    scripts: Vec<(&'a str, &'a [u8])>,
}

/// Sorts files into roles and reports every file that has none, so that
/// nothing in a pack is silently ignored (except top-level documentation
/// such as README.md or LICENSE).
fn classify<'a>(files: &'a PackFiles, problems: &mut Vec<Problem>) -> Layout<'a> {
    let mut layout = Layout::default();
    let mut unknown_dirs = BTreeSet::new();
    for (path, bytes) in files {
        let mut report = |message: String| {
            problems.push(Problem {
                file: path.clone(),
                line: 1,
                column: 1,
                message,
            });
        };
        let parts: Vec<&str> = path.split('/').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            report("not a plain relative path inside the pack".into());
            continue;
        }
        match parts.as_slice() {
            [MANIFEST] => layout.manifest = Some(bytes),
            [file] => {
                if file.ends_with(".yaml") || file.ends_with(".yml") {
                    report(format!(
                        "unexpected file `{file}`: a pack's configuration is pack.yaml, actions/*.yaml, rules/*.yaml and sensors/*.yaml"
                    ));
                }
                // Anything else at the top is documentation (README.md,
                // LICENSE, CHANGELOG.md) and is not installed.
            }
            [dir @ ("actions" | "rules" | "sensors"), file] => {
                let Some(stem) = file.strip_suffix(".yaml") else {
                    let hint = match file.strip_suffix(".yml") {
                        Some(stem) => format!("; rename it to {dir}/{stem}.yaml"),
                        None => String::new(),
                    };
                    report(format!(
                        "unexpected file in {dir}/: expected {dir}/<name>.yaml{hint}"
                    ));
                    continue;
                };
                let entry = (path.as_str(), stem, bytes.as_slice());
                match *dir {
                    "actions" => layout.actions.push(entry),
                    "rules" => layout.rules.push(entry),
                    _ => layout.sensors.push(entry),
                }
            }
            [dir @ ("actions" | "rules" | "sensors"), ..] => {
                report(format!(
                    "{dir}/ holds <name>.yaml files only, not subdirectories"
                ));
            }
            ["scripts", _, ..] => layout.scripts.push((path.as_str(), bytes.as_slice())),
            ["workflows", ..] => {
                report("workflows are not supported yet; remove this file from the pack".into());
            }
            [dir, ..] => {
                // One problem per unknown directory, at its first file.
                if unknown_dirs.insert(*dir) {
                    let hint = suggest(dir, DIRECTORIES.iter().copied())
                        .map(|d| format!(" (did you mean `{d}/`?)"))
                        .unwrap_or_default();
                    report(format!(
                        "unknown directory `{dir}/`{hint} (a pack has pack.yaml, actions/, rules/, sensors/ and scripts/)"
                    ));
                }
            }
            [] => {}
        }
    }
    layout
}

/// UTF-8 text, parsed as YAML. `None` when the file cannot be read at all
/// (the problem is in the sink).
fn parse_file(bytes: &[u8], sink: &mut Sink<'_>) -> Option<Node> {
    match std::str::from_utf8(bytes) {
        Ok(text) => yaml::parse(text, sink),
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            // The prefix is valid UTF-8 by definition.
            let prefix = std::str::from_utf8(valid).unwrap_or_default();
            let line = prefix.matches('\n').count() + 1;
            let column = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            sink.at(Pos { line, column }, "not valid UTF-8 text");
            None
        }
    }
}
