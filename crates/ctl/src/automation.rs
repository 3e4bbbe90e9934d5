//! Commands for actions, packs, events, rules and the audit trail.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::{Map, Value, json};
use ultron8_proto::v1;

use crate::cli::{short_ids, usage};
use crate::client::{Client, call_failed};
use crate::output::{self, Cell, Output, Table};

#[derive(Subcommand)]
pub enum ActionCommand {
    /// Installed actions: what runs them, where, and their parameters
    ///
    ///   ultronctl action list
    ///   ultronctl action list --pack linux
    #[command(verbatim_doc_comment)]
    List {
        /// Only this pack's actions
        #[arg(long)]
        pack: Option<String>,
    },
    /// One action: its runner, timeout and every parameter with its type,
    /// default, whether it is required or secret, and its description
    ///
    ///   ultronctl action get linux.restart_service
    ///   ultronctl action get core.http -o yaml
    #[command(verbatim_doc_comment)]
    Get {
        /// The action, `pack.name`
        reference: String,
    },
}

#[derive(Subcommand)]
pub enum PackCommand {
    /// Check packs as the hive would, without a hive: prints every problem
    /// as file:line:column: message, and exits 1 if there is any.
    ///
    /// Needs no config. A pack whose rules use another pack's actions
    /// needs that pack too: give its directory first, or keep it beside
    /// (packs/core for packs/linux is found on its own).
    ///
    ///   ultronctl pack validate packs/hello
    ///   ultronctl pack validate packs/core packs/linux -o json
    #[command(verbatim_doc_comment)]
    Validate {
        /// Pack directories (with pack.yaml) or .tar.gz files, dependencies first
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
    },
    /// Validate and install (or upgrade) a pack from a directory or .tar.gz.
    ///
    /// Everything is checked first; any problem rejects the whole pack,
    /// listed as file:line:column: message, and nothing is installed.
    ///
    /// Example: ultronctl pack install packs/linux
    Install {
        /// A pack directory (with pack.yaml) or a .tar.gz of one
        path: PathBuf,
    },
    /// Installed packs
    ///
    /// Example: ultronctl pack list -o wide
    List,
    /// One pack: its actions, rules and earlier versions
    ///
    /// Example: ultronctl pack show linux
    Show {
        /// The pack's name
        name: String,
    },
    /// Remove a pack, its actions and rules (its history stays)
    ///
    /// Example: ultronctl pack remove hello
    Remove {
        /// The pack's name
        name: String,
    },
}

#[derive(Subcommand)]
pub enum EventCommand {
    /// Recent events, newest first
    ///
    /// Example: ultronctl event list --trigger alertmanager.alert --limit 10
    List {
        /// Only events of this trigger type, e.g. alertmanager.alert
        #[arg(long)]
        trigger: Option<String>,
        /// At most this many events
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One event with its payload, how processing went and the rules that
    /// matched it
    ///
    /// Misses are not recorded; --explain evaluates every rule on the
    /// event's trigger again, as `rule test` does, and says why each did not
    /// match (against the rules installed now).
    ///
    /// Example: ultronctl event get 0193a3c2-7 --explain
    Get {
        /// The event's id, or any prefix of it no other event's id starts with
        id: String,
        /// Also evaluate the rules on the event's trigger again and show
        /// why each matched or not (runs nothing)
        #[arg(long)]
        explain: bool,
    },
    /// Store an event by hand; rules on its trigger act on it as on any other
    ///
    ///   ultronctl event fire core.event --payload '{"host": "web-1"}'
    ///   ultronctl event fire alertmanager.alert --payload @alert.json
    ///   curl -s https://example/alert | ultronctl event fire core.event --payload -
    #[command(verbatim_doc_comment)]
    Fire {
        /// The trigger type, e.g. core.event
        trigger: String,
        /// The payload: JSON, @FILE for a file's JSON, or - for standard input's
        #[arg(long, default_value = "{}", value_name = "JSON|@FILE|-")]
        payload: String,
    },
}

#[derive(Subcommand)]
pub enum RuleCommand {
    /// Installed rules
    ///
    /// Example: ultronctl rule list --trigger alertmanager.alert
    List {
        /// Only rules on this trigger type
        #[arg(long)]
        trigger: Option<String>,
    },
    /// One rule, as its pack wrote it (rules/NAME.yaml), and whether it is
    /// enabled now; -o json or yaml give the hive's decoded model too
    ///
    /// Example: ultronctl rule get linux.restart_on_down
    Get {
        /// The rule, `pack.name`
        name: String,
    },
    /// Let a rule act on events again
    ///
    /// Example: ultronctl rule enable linux.restart_on_down
    Enable {
        /// The rule, `pack.name`
        name: String,
    },
    /// Stop a rule from acting (it stays installed)
    ///
    /// Example: ultronctl rule disable linux.restart_on_down
    Disable {
        /// The rule, `pack.name`
        name: String,
    },
    /// Show which rules an event matches, why the others do not, and the
    /// exact parameters and hosts that would run. Runs nothing.
    ///
    /// The file holds either {"trigger": ..., "payload": {...}} or just the
    /// payload, with --trigger.
    ///
    ///   ultronctl rule test --event alert.json
    ///   ultronctl rule test --event payload.json --trigger core.event --rule hello.greet
    #[command(verbatim_doc_comment)]
    Test {
        /// Event file (JSON); `-` reads standard input
        #[arg(long)]
        event: PathBuf,
        /// The trigger type, when the file holds only the payload
        #[arg(long)]
        trigger: Option<String>,
        /// Test only this rule
        #[arg(long)]
        rule: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Audit records, newest first. Times are RFC 3339 or a duration ago (15m, 2h, 7d)
    ///
    ///   ultronctl audit list --since 1h --status failed
    ///   ultronctl audit list --rule linux.restart_on_down --limit 20
    #[command(verbatim_doc_comment)]
    List {
        /// Records at or after this time, e.g. 2h or 2026-11-22T01:00:00Z
        #[arg(long, value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// Records before this time
        #[arg(long, value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        /// Rule, `pack.name`
        #[arg(long)]
        rule: Option<String>,
        /// Pack action, `pack.name`
        #[arg(long)]
        action: Option<String>,
        /// Drone id
        #[arg(long)]
        drone: Option<String>,
        /// Execution status (succeeded, failed, timed_out, ...)
        #[arg(long)]
        status: Option<String>,
        /// Event id
        #[arg(long)]
        event: Option<String>,
        /// Job id
        #[arg(long)]
        job: Option<String>,
        /// At most this many records
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Records older than this record id (the last id of the previous page)
        #[arg(long)]
        before: Option<String>,
    },
    /// The whole chain for one event or job: event, rule evaluations,
    /// firings, jobs, executions and results
    ///
    /// Example: ultronctl audit show 0193a3c2-7
    Show {
        /// An event id or a job id, or any unique prefix of one
        id: String,
    },
}

/// `key=value` words to a JSON object of strings; the hive converts each
/// to the parameter's declared type.
pub fn parse_parameters(words: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut map = Map::new();
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            bail!("parameter {word:?} is not key=value");
        };
        if key.is_empty() {
            bail!("parameter {word:?} has an empty name");
        }
        map.insert(key.to_string(), Value::String(value.to_string()));
    }
    Ok(map)
}

pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let ago = humantime::parse_duration(text)
        .map_err(|_| format!("{text:?} is neither an RFC 3339 time nor a duration like 15m"))?;
    chrono::Duration::from_std(ago)
        .map(|d| Utc::now() - d)
        .map_err(|e| e.to_string())
}

pub async fn action(
    client: &mut Client,
    command: ActionCommand,
    out: &Output,
) -> anyhow::Result<u8> {
    match command {
        ActionCommand::List { pack } => {
            let actions = client
                .list_actions(v1::ListActionsRequest {
                    pack: pack.unwrap_or_default(),
                })
                .await
                .map_err(call_failed)?
                .into_inner()
                .actions;
            if out.is_data() {
                out.data(&actions.iter().map(action_json).collect::<Vec<_>>())?;
            } else if actions.is_empty() {
                eprintln!(
                    "No actions installed. Install a pack with `ultronctl pack install packs/core`."
                );
            } else {
                let mut table =
                    Table::new(&["ACTION", "RUNNER", "RUNS ON", "PARAMETERS", "DESCRIPTION"])
                        .wide_only(&["RUNS ON"]);
                for a in &actions {
                    table.row(vec![
                        Cell::text(&a.reference),
                        Cell::text(&a.runner),
                        Cell::text(runs_on(a)),
                        Cell::text(
                            a.parameters
                                .iter()
                                .map(|p| {
                                    if p.required {
                                        format!("{}*", p.name)
                                    } else {
                                        p.name.clone()
                                    }
                                })
                                .collect::<Vec<_>>()
                                .join(" "),
                        ),
                        Cell::text(&a.description),
                    ]);
                }
                out.table(&table);
                eprintln!("* required. Parameters in full: ultronctl action get ACTION");
            }
        }
        ActionCommand::Get { reference } => {
            let action = client
                .get_action(v1::GetActionRequest { reference })
                .await
                .map_err(call_failed)?
                .into_inner();
            if out.is_data() {
                out.data(&action_json(&action))?;
            } else {
                print!("{}", describe_action(&action, out));
            }
        }
    }
    Ok(0)
}

fn runs_on(a: &v1::ActionInfo) -> &'static str {
    if a.runs_on_drones {
        "drones"
    } else {
        "the hive"
    }
}

fn action_json(a: &v1::ActionInfo) -> Value {
    let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    json!({
        "reference": a.reference,
        "pack": a.pack,
        "name": a.name,
        "description": a.description,
        "runner": a.runner,
        "runs_on_drones": a.runs_on_drones,
        "timeout": (a.timeout_ms > 0).then(|| humantime::format_duration(std::time::Duration::from_millis(a.timeout_ms)).to_string()),
        "parameters": a.parameters.iter().map(|p| json!({
            "name": p.name,
            "type": p.r#type,
            "required": p.required,
            "default": (!p.default_json.is_empty()).then(|| parse(&p.default_json)),
            "secret": p.secret,
            "enum": (!p.allowed_json.is_empty()).then(|| p.allowed_json.iter().map(|v| parse(v)).collect::<Vec<_>>()),
            "description": p.description,
        })).collect::<Vec<_>>(),
    })
}

/// `action get` for people: what the action is, its parameters, and how
/// to run it.
pub fn describe_action(a: &v1::ActionInfo, out: &Output) -> String {
    let mut text = format!(
        "{}  ({} action, runs on {})\n",
        a.reference,
        a.runner,
        runs_on(a)
    );
    if !a.description.is_empty() {
        text.push_str(&format!("{}\n", a.description));
    }
    if a.timeout_ms > 0 {
        text.push_str(&format!(
            "timeout: {}\n",
            humantime::format_duration(std::time::Duration::from_millis(a.timeout_ms))
        ));
    }
    if a.parameters.is_empty() {
        text.push_str("parameters: none\n");
    } else {
        text.push('\n');
        let mut table = Table::new(&[
            "PARAMETER",
            "TYPE",
            "REQUIRED",
            "DEFAULT",
            "SECRET",
            "DESCRIPTION",
        ]);
        for p in &a.parameters {
            let mut kind = p.r#type.clone();
            if !p.allowed_json.is_empty() {
                kind = format!("{kind}: {}", p.allowed_json.join("|"));
            }
            table.row(vec![
                Cell::text(&p.name),
                Cell::text(kind),
                Cell::text(if p.required { "yes" } else { "no" }),
                Cell::text(if p.default_json.is_empty() {
                    "-".to_string()
                } else {
                    p.default_json.clone()
                }),
                Cell::text(if p.secret { "secret" } else { "" }),
                Cell::text(&p.description),
            ]);
        }
        text.push_str(&out.render(&table));
    }
    let mut example = format!("ultronctl run {}", a.reference);
    for p in a.parameters.iter().filter(|p| p.required) {
        example.push_str(&format!(" {}=<{}>", p.name, p.r#type));
    }
    if a.runs_on_drones {
        example.push_str(" -t TARGET");
    }
    text.push_str(&format!("\nrun it: {example}\n"));
    text
}

/// A pack the hive refused, as the error ultronctl exits with: the hive's
/// message, then every problem on a line of its own.
fn pack_refused(refusal: v1::PackRefusal) -> anyhow::Error {
    let mut text = refusal.message;
    text.push(':');
    for problem in &refusal.problems {
        text.push('\n');
        text.push_str(problem);
    }
    anyhow::anyhow!(text)
}

pub async fn pack(client: &mut Client, command: PackCommand, out: &Output) -> anyhow::Result<u8> {
    match command {
        PackCommand::Validate { dirs } => return validate(&dirs, out),
        PackCommand::Install { path } => {
            let tarball = pack_tarball(&path)?;
            let response = client
                .install_pack(v1::InstallPackRequest {
                    tarball,
                    problems_in_response: true,
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            if let Some(refusal) = response.refusal {
                return Err(pack_refused(refusal));
            }
            let pack = response.pack.unwrap_or_default();
            if out.is_data() {
                out.data(&pack_json(&pack))?;
            } else if response.previous_version == pack.version {
                println!(
                    "reinstalled {} {} ({} actions, {} rules{})",
                    pack.name,
                    pack.version,
                    pack.actions.len(),
                    pack.rules.len(),
                    sensors_count(&pack)
                );
            } else if response.previous_version.is_empty() {
                println!(
                    "installed {} {} ({} actions, {} rules{})",
                    pack.name,
                    pack.version,
                    pack.actions.len(),
                    pack.rules.len(),
                    sensors_count(&pack)
                );
            } else {
                println!(
                    "upgraded {} {} -> {} ({} actions, {} rules{})",
                    pack.name,
                    response.previous_version,
                    pack.version,
                    pack.actions.len(),
                    pack.rules.len(),
                    sensors_count(&pack)
                );
            }
        }
        PackCommand::List => {
            let packs = client
                .list_packs(v1::ListPacksRequest {})
                .await
                .map_err(call_failed)?
                .into_inner()
                .packs;
            if out.is_data() {
                out.data(&packs.iter().map(pack_json).collect::<Vec<_>>())?;
            } else if packs.is_empty() {
                eprintln!(
                    "No packs installed. Install one with `ultronctl pack install packs/core`."
                );
            } else {
                let mut table = Table::new(&[
                    "PACK",
                    "VERSION",
                    "ACTIONS",
                    "RULES",
                    "INSTALLED",
                    "BY",
                    "DESCRIPTION",
                ])
                .wide_only(&["BY"]);
                for p in &packs {
                    table.row(vec![
                        Cell::text(&p.name),
                        Cell::text(&p.version),
                        Cell::text(p.actions.len().to_string()),
                        Cell::text(p.rules.len().to_string()),
                        Cell::text(output::ago(p.installed_at_ms)),
                        Cell::text(&p.installed_by),
                        Cell::text(&p.description),
                    ]);
                }
                out.table(&table);
            }
        }
        PackCommand::Show { name } => {
            let pack = client
                .get_pack(v1::GetPackRequest { name })
                .await
                .map_err(call_failed)?
                .into_inner();
            if out.is_data() {
                out.data(&pack_json(&pack))?;
            } else {
                println!("{} {}  {}", pack.name, pack.version, pack.description);
                println!(
                    "installed {} by {}",
                    output::ago(pack.installed_at_ms),
                    pack.installed_by
                );
                if !pack.previous_versions.is_empty() {
                    println!("earlier versions: {}", pack.previous_versions.join(", "));
                }
                println!("actions:");
                for action in &pack.actions {
                    println!("  {action}");
                }
                println!("rules:");
                for rule in &pack.rules {
                    println!("  {rule}");
                }
                let checks = pack_checks(&pack);
                if !checks.is_empty() {
                    println!("checks:");
                    for check in checks {
                        println!("  {check}");
                    }
                }
            }
        }
        PackCommand::Remove { name } => {
            client
                .remove_pack(v1::RemovePackRequest { name: name.clone() })
                .await
                .map_err(call_failed)?;
            if out.is_data() {
                out.data(&json!({ "removed": name }))?;
            } else {
                println!("removed {name}");
            }
        }
    }
    Ok(0)
}

/// The pack's checks (`sensors/`, kind `check`), read from its content
/// as `pack.name  every 30s on <targets>`.
fn pack_checks(p: &v1::PackInfo) -> Vec<String> {
    let content: Value = serde_json::from_str(&p.content_json).unwrap_or(Value::Null);
    content["checks"]
        .as_array()
        .map(|checks| {
            checks
                .iter()
                .map(|c| {
                    format!(
                        "{}.{}  every {} on {}",
                        c["pack"].as_str().unwrap_or_default(),
                        c["name"].as_str().unwrap_or_default(),
                        c["interval"].as_str().unwrap_or_default(),
                        c["targets"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// ", 2 checks" for a pack with checks; nothing for one without.
/// The pack's sensors, as install prints them: ", 1 check, 2 probes".
fn sensors_count(p: &v1::PackInfo) -> String {
    let content: Value = serde_json::from_str(&p.content_json).unwrap_or(Value::Null);
    [
        ("checks", "check"),
        ("probes", "probe"),
        ("sources", "source"),
    ]
    .into_iter()
    .filter_map(
        |(key, one)| match content[key].as_array().map_or(0, Vec::len) {
            0 => None,
            1 => Some(format!(", 1 {one}")),
            n => Some(format!(", {n} {one}s")),
        },
    )
    .collect()
}

fn pack_json(p: &v1::PackInfo) -> Value {
    json!({
        "name": p.name,
        "version": p.version,
        "description": p.description,
        "installed_by": p.installed_by,
        "installed_at": output::time(p.installed_at_ms),
        "actions": p.actions,
        "rules": p.rules,
        "previous_versions": p.previous_versions,
        "content": serde_json::from_str::<Value>(&p.content_json).unwrap_or(Value::Null),
    })
}

/// A directory is packed into a .tar.gz here; a file is sent as it is.
pub fn pack_tarball(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.is_dir() {
        if !path.join("pack.yaml").exists() {
            bail!(
                "{} has no pack.yaml; is it a pack directory?",
                path.display()
            );
        }
        let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut builder = tar::Builder::new(encoder);
        builder.follow_symlinks(false);
        builder
            .append_dir_all(".", path)
            .with_context(|| format!("cannot pack {}", path.display()))?;
        let encoder = builder.into_inner().context("cannot finish the tarball")?;
        encoder.finish().context("cannot compress the pack")
    } else {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

/// Exit status of `pack validate` when a pack has problems.
pub const EXIT_INVALID_PACK: u8 = 1;

/// One pack `pack validate` checked.
#[derive(Debug, serde::Serialize)]
pub struct Validated {
    /// Where it was read from.
    pub path: String,
    /// `name version`, when it loaded.
    pub pack: Option<String>,
    /// Read as a dependency of another, not named on the command line.
    pub dependency: bool,
    /// Every problem, its file given from `path`.
    pub problems: Vec<ValidationProblem>,
}

#[derive(Debug, serde::Serialize)]
pub struct ValidationProblem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for ValidationProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// `pack validate`: every pack in `paths` loaded by the hive's own loader
/// (`ultron8_pack::load`), each seeing the ones before it, and the
/// dependencies it names found beside it, as installed.
pub fn validate(paths: &[PathBuf], out: &Output) -> anyhow::Result<u8> {
    let mut loaded: Vec<ultron8_pack::Pack> = Vec::new();
    let mut results: Vec<Validated> = Vec::new();
    for path in paths {
        validate_one(path, false, &mut loaded, &mut results, &mut Vec::new())?;
    }
    let problems: usize = results.iter().map(|r| r.problems.len()).sum();
    if out.is_data() {
        out.data(&results)?;
    } else {
        for result in &results {
            for problem in &result.problems {
                println!("{problem}");
            }
            match (&result.pack, result.dependency) {
                (Some(pack), false) => eprintln!("{}: {pack} is valid", result.path),
                (Some(pack), true) => {
                    eprintln!(
                        "{}: {pack} is valid (a dependency, found beside)",
                        result.path
                    )
                }
                (None, _) => eprintln!(
                    "{}: {} problem{}",
                    result.path,
                    result.problems.len(),
                    if result.problems.len() == 1 { "" } else { "s" }
                ),
            }
        }
    }
    Ok(if problems > 0 { EXIT_INVALID_PACK } else { 0 })
}

/// The packs a manifest says it depends on, read loosely: only to find
/// them beside it; the loader checks the manifest itself.
fn declared_dependencies(files: &ultron8_pack::PackFiles) -> Vec<String> {
    files
        .get("pack.yaml")
        .and_then(|bytes| serde_norway::from_slice::<Value>(bytes).ok())
        .and_then(|manifest| manifest.get("dependencies").cloned())
        .and_then(|deps| deps.as_array().cloned())
        .map(|deps| {
            deps.iter()
                .filter_map(|d| d.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn validate_one(
    path: &Path,
    dependency: bool,
    loaded: &mut Vec<ultron8_pack::Pack>,
    results: &mut Vec<Validated>,
    visiting: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let files = if path.is_dir() {
        ultron8_pack::read_dir(path)
    } else {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        ultron8_pack::read_tarball(&bytes)
    }
    .with_context(|| format!("cannot read the pack at {}", path.display()))?;
    visiting.push(path.to_path_buf());
    // Dependencies not loaded yet are looked for beside the pack.
    for name in declared_dependencies(&files) {
        if loaded.iter().any(|p| p.manifest.name == name) {
            continue;
        }
        let beside = path.parent().map(|parent| parent.join(&name));
        if let Some(beside) = beside
            && beside.join("pack.yaml").is_file()
            && !visiting.contains(&beside)
        {
            validate_one(&beside, true, loaded, results, visiting)?;
        }
    }
    visiting.pop();
    let shown = path.display().to_string();
    let result = match ultron8_pack::load(&files, &*loaded) {
        Ok(pack) => {
            let name = format!("{} {}", pack.manifest.name, pack.manifest.version);
            loaded.push(pack);
            Validated {
                path: shown,
                pack: Some(name),
                dependency,
                problems: Vec::new(),
            }
        }
        Err(problems) => Validated {
            problems: problems
                .into_iter()
                .map(|p| ValidationProblem {
                    file: path.join(&p.file).display().to_string(),
                    line: p.line,
                    column: p.column,
                    message: p.message,
                })
                .collect(),
            path: shown,
            pack: None,
            dependency,
        },
    };
    results.push(result);
    Ok(())
}

/// `--payload`: JSON as given, `@FILE` for a file's, `-` for standard
/// input's. A payload that is not JSON is a usage error.
pub fn read_payload(given: &str, stdin: &mut dyn Read) -> anyhow::Result<String> {
    let (text, from) = if given == "-" {
        let mut text = String::new();
        stdin
            .read_to_string(&mut text)
            .context("cannot read the payload from standard input")?;
        (text, "standard input".to_string())
    } else if let Some(file) = given.strip_prefix('@') {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the payload from {file}"))?;
        (text, file.to_string())
    } else {
        (given.to_string(), "--payload".to_string())
    };
    if let Err(e) = serde_json::from_str::<Value>(&text) {
        return Err(usage(format!(
            "the payload from {from} is not valid JSON: {e} (give JSON, @FILE or -)"
        )));
    }
    Ok(text)
}

pub async fn event(client: &mut Client, command: EventCommand, out: &Output) -> anyhow::Result<u8> {
    match command {
        EventCommand::List { trigger, limit } => {
            let events = client
                .list_events(v1::ListEventsRequest {
                    trigger: trigger.unwrap_or_default(),
                    limit,
                    before_id: String::new(),
                })
                .await
                .map_err(call_failed)?
                .into_inner()
                .events;
            if out.is_data() {
                out.data(&events.iter().map(event_json).collect::<Vec<_>>())?;
            } else {
                let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
                let short = short_ids(client, v1::IdKind::Event, &ids, out).await;
                let mut table =
                    Table::new(&["EVENT", "RECEIVED", "TRIGGER", "SOURCE", "STATE", "ERROR"]);
                for (e, short) in events.iter().zip(short) {
                    table.row(vec![
                        Cell::id(&e.id, short),
                        Cell::text(output::ago(e.received_at_ms)),
                        Cell::text(&e.trigger),
                        Cell::text(&e.source),
                        Cell::state(&e.state),
                        Cell::text(&e.error),
                    ]);
                }
                out.table(&table);
            }
        }
        EventCommand::Get { id, explain } => {
            let event = client
                .get_event(v1::GetEventRequest { id })
                .await
                .map_err(call_failed)?
                .into_inner();
            if !explain {
                print_event(&event, out)?;
                return Ok(0);
            }
            let results = client
                .test_rules(v1::TestRulesRequest {
                    trigger: event.trigger.clone(),
                    payload_json: event.payload_json.clone(),
                    rule: String::new(),
                })
                .await
                .map_err(call_failed)?
                .into_inner()
                .results;
            if out.is_data() {
                let mut view = event_json(&event);
                view["explain"] = Value::Array(results.iter().map(rule_test_json).collect());
                out.data(&view)?;
            } else {
                print_event(&event, out)?;
                println!();
                println!("the rules on {} now:", event.trigger);
                print_rule_tests(&results, &event.trigger, out);
            }
        }
        EventCommand::Fire { trigger, payload } => {
            let payload = read_payload(&payload, &mut std::io::stdin())?;
            let event = client
                .fire_event(v1::FireEventRequest {
                    trigger,
                    payload_json: payload,
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            if out.is_data() {
                out.data(&event_json(&event))?;
            } else {
                println!("{}", event.id);
                eprintln!(
                    "event stored; see what it caused with: ultronctl audit show {}",
                    event.id
                );
            }
        }
    }
    Ok(0)
}

fn event_json(e: &v1::EventInfo) -> Value {
    json!({
        "id": e.id,
        "trigger": e.trigger,
        "source": e.source,
        "received_at": output::time(e.received_at_ms),
        "state": e.state,
        "error": Some(&e.error).filter(|s| !s.is_empty()),
        "matched_rules": e.matched_rules,
        "payload": serde_json::from_str::<Value>(&e.payload_json).unwrap_or(Value::Null),
    })
}

fn print_event(e: &v1::EventInfo, out: &Output) -> anyhow::Result<()> {
    if out.is_data() {
        return out.data(&event_json(e));
    }
    println!(
        "event {}  {}  from {}  {}",
        e.id,
        e.trigger,
        e.source,
        output::ago(e.received_at_ms)
    );
    println!(
        "state: {}{}",
        out.state(&e.state),
        if e.error.is_empty() {
            String::new()
        } else {
            format!(" ({})", e.error)
        }
    );
    if e.state != "pending" {
        if e.matched_rules.is_empty() {
            println!("matched: no rule (see why with --explain)");
        } else {
            println!("matched: {}", e.matched_rules.join(", "));
        }
    }
    let payload: Value = serde_json::from_str(&e.payload_json).unwrap_or(Value::Null);
    println!("{}", serde_json::to_string_pretty(&payload)?);
    Ok(())
}

/// `rule get` for people: the rule's file as its pack wrote it, after a
/// comment saying where it is from and whether it is enabled now (an
/// operator may have changed that). Comments keep it valid YAML.
pub fn describe_rule(rule: &v1::RuleInfo) -> anyhow::Result<String> {
    let state = if rule.enabled { "enabled" } else { "disabled" };
    let mut text = format!(
        "# {}: {state}; pack {}, rules/{}.yaml\n",
        rule.name,
        rule.pack,
        rule.name
            .strip_prefix(&format!("{}.", rule.pack))
            .unwrap_or(&rule.name)
    );
    if rule.source.is_empty() {
        // Installed before the hive kept the files: the decoded rule.
        text.push_str(
            "# (installed before the hive kept rule files: the rule as the hive decoded it)\n",
        );
        let definition: Value = serde_json::from_str(&rule.definition_json).unwrap_or(Value::Null);
        text.push_str(&serde_norway::to_string(&definition)?);
    } else {
        text.push_str(&rule.source);
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

pub async fn rule(client: &mut Client, command: RuleCommand, out: &Output) -> anyhow::Result<u8> {
    match command {
        RuleCommand::List { trigger } => {
            let rules = client
                .list_rules(v1::ListRulesRequest {
                    trigger: trigger.unwrap_or_default(),
                })
                .await
                .map_err(call_failed)?
                .into_inner()
                .rules;
            if out.is_data() {
                out.data(&rules.iter().map(rule_json).collect::<Vec<_>>())?;
            } else {
                let mut table =
                    Table::new(&["RULE", "ENABLED", "TRIGGER", "ACTION", "DESCRIPTION"]);
                for r in &rules {
                    table.row(vec![
                        Cell::text(&r.name),
                        Cell::state(if r.enabled { "yes" } else { "no" }),
                        Cell::text(&r.trigger),
                        Cell::text(&r.action),
                        Cell::text(&r.description),
                    ]);
                }
                out.table(&table);
            }
        }
        RuleCommand::Get { name } => {
            let rule = client
                .get_rule(v1::GetRuleRequest { name })
                .await
                .map_err(call_failed)?
                .into_inner();
            if out.is_data() {
                out.data(&rule_json(&rule))?;
            } else {
                print!("{}", describe_rule(&rule)?);
            }
        }
        RuleCommand::Enable { name } => {
            let rule = client
                .set_rule_enabled(v1::SetRuleEnabledRequest {
                    name: name.clone(),
                    enabled: true,
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            if out.is_data() {
                out.data(&rule_json(&rule))?;
            } else {
                println!("enabled {name}");
            }
        }
        RuleCommand::Disable { name } => {
            let rule = client
                .set_rule_enabled(v1::SetRuleEnabledRequest {
                    name: name.clone(),
                    enabled: false,
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            if out.is_data() {
                out.data(&rule_json(&rule))?;
            } else {
                println!("disabled {name}");
            }
        }
        RuleCommand::Test {
            event,
            trigger,
            rule,
        } => {
            let text = if event == Path::new("-") {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("cannot read the event from standard input")?;
                text
            } else {
                std::fs::read_to_string(&event)
                    .with_context(|| format!("cannot read {}", event.display()))?
            };
            let document: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", event.display()))?;
            let (trigger, payload) = match (&document, trigger) {
                (Value::Object(map), None)
                    if map.contains_key("trigger") && map.contains_key("payload") =>
                {
                    (
                        map["trigger"]
                            .as_str()
                            .map(String::from)
                            .context("\"trigger\" must be a string")?,
                        map["payload"].clone(),
                    )
                }
                (_, Some(trigger)) => (trigger, document.clone()),
                (_, None) => {
                    return Err(usage(
                        "the file holds only a payload; say which trigger with --trigger (e.g. alertmanager.alert)",
                    ));
                }
            };
            let results = client
                .test_rules(v1::TestRulesRequest {
                    trigger: trigger.clone(),
                    payload_json: payload.to_string(),
                    rule: rule.unwrap_or_default(),
                })
                .await
                .map_err(call_failed)?
                .into_inner()
                .results;
            if out.is_data() {
                out.data(&results.iter().map(rule_test_json).collect::<Vec<_>>())?;
            } else {
                print_rule_tests(&results, &trigger, out);
            }
        }
    }
    Ok(0)
}

fn rule_test_json(r: &v1::RuleTest) -> Value {
    json!({
        "rule": r.rule, "enabled": r.enabled, "matched": r.matched, "reasons": r.reasons,
        "error": Some(&r.error).filter(|e| !e.is_empty()),
        "action": r.action, "target": Some(&r.target).filter(|t| !t.is_empty()), "drones": r.drones,
        "parameters": serde_json::from_str::<Value>(&r.parameters_json).ok(),
    })
}

fn print_rule_tests(results: &[v1::RuleTest], trigger: &str, out: &Output) {
    if results.is_empty() {
        println!("no rules on trigger {trigger}");
        return;
    }
    for r in results {
        let state = match (r.matched, r.error.is_empty()) {
            (true, true) => "MATCH".to_string(),
            (true, false) => format!("MATCH, but it {}", out.state("failed")),
            (false, _) => "no match".to_string(),
        };
        let disabled = if r.enabled {
            ""
        } else {
            " (disabled: would not run)"
        };
        println!("{}  {state}{disabled}", r.rule);
        for reason in &r.reasons {
            println!("  - {reason}");
        }
        if !r.error.is_empty() {
            println!("  ! {}", r.error);
        } else if r.matched {
            println!(
                "  would run {} on {}",
                r.action,
                if r.drones.is_empty() {
                    "the hive".to_string()
                } else {
                    r.drones.join(", ")
                }
            );
            if !r.target.is_empty() {
                println!("  target: {}", r.target);
            }
            println!("  parameters: {}", r.parameters_json);
        }
    }
}

fn rule_json(r: &v1::RuleInfo) -> Value {
    json!({
        "name": r.name, "pack": r.pack, "trigger": r.trigger, "enabled": r.enabled, "action": r.action,
        "description": r.description,
        "definition": serde_json::from_str::<Value>(&r.definition_json).unwrap_or(Value::Null),
        "source": Some(&r.source).filter(|s| !s.is_empty()),
    })
}

pub async fn audit(client: &mut Client, command: AuditCommand, out: &Output) -> anyhow::Result<u8> {
    match command {
        AuditCommand::List {
            since,
            until,
            rule,
            action,
            drone,
            status,
            event,
            job,
            limit,
            before,
        } => {
            let request = v1::ListAuditRequest {
                since_ms: since.map_or(0, |t| t.timestamp_millis()),
                until_ms: until.map_or(0, |t| t.timestamp_millis()),
                rule: rule.unwrap_or_default(),
                action: action.unwrap_or_default(),
                drone: drone.unwrap_or_default(),
                status: status.unwrap_or_default(),
                event: event.unwrap_or_default(),
                job: job.unwrap_or_default(),
                limit,
                before_id: before.unwrap_or_default(),
            };
            let entries = client
                .list_audit(request)
                .await
                .map_err(call_failed)?
                .into_inner()
                .entries;
            print_audit(client, &entries, out).await?;
            if !out.is_data()
                && entries.len() as u32 == limit.max(1)
                && let Some(last) = entries.last()
            {
                eprintln!("more may follow: --before {}", last.id);
            }
        }
        AuditCommand::Show { id } => {
            let (id, event) = audit_subject(client, &id).await?;
            let chain = audit_chain(client, &id).await?;
            if chain.is_empty() && event.is_none() {
                bail!(
                    "no audit records for {id}; give an event id (ultronctl event list) or a job id (ultronctl job list)"
                );
            }
            if out.is_data() {
                out.data(
                    &json!({ "event": event.as_ref().map(event_json), "records": audit_json(&chain) }),
                )?;
            } else {
                if let Some(e) = &event {
                    println!(
                        "event {}  {} from {}  {}  ({})",
                        e.id,
                        e.trigger,
                        e.source,
                        output::ago(e.received_at_ms),
                        out.state(&e.state)
                    );
                    if !e.error.is_empty() {
                        println!("error: {}", e.error);
                    }
                }
                print_audit(client, &chain, out).await?;
            }
        }
    }
    Ok(0)
}

/// What `audit show ID` is about: the event `id` (or a prefix of it)
/// names, else the job it names; the id in full, and the event if it is
/// one. A prefix that is ambiguous among events or jobs is refused.
async fn audit_subject(
    client: &mut Client,
    id: &str,
) -> anyhow::Result<(String, Option<v1::EventInfo>)> {
    match client
        .get_event(v1::GetEventRequest { id: id.to_string() })
        .await
    {
        Ok(event) => {
            let event = event.into_inner();
            return Ok((event.id.clone(), Some(event)));
        }
        Err(status) if status.code() != tonic::Code::NotFound => {
            return Err(call_failed(status));
        }
        Err(_) => {}
    }
    match client
        .get_job(v1::GetJobRequest { id: id.to_string() })
        .await
    {
        Ok(job) => Ok((job.into_inner().id, None)),
        Err(status) if status.code() == tonic::Code::NotFound => bail!(
            "no event or job {id}; give an event id (ultronctl event list) or a job id (ultronctl job list)"
        ),
        Err(status) => Err(call_failed(status)),
    }
}

/// Every record linked to an event or a job: the event's evaluations and
/// firings, and for every job involved its submission and results.
async fn audit_chain(client: &mut Client, id: &str) -> anyhow::Result<Vec<v1::AuditEntry>> {
    let query = |event: &str, job: &str| v1::ListAuditRequest {
        event: event.to_string(),
        job: job.to_string(),
        limit: 1000,
        ..Default::default()
    };
    let mut records = client
        .list_audit(query(id, ""))
        .await
        .map_err(call_failed)?
        .into_inner()
        .entries;
    let mut jobs: Vec<String> = records
        .iter()
        .map(|r| r.job_id.clone())
        .filter(|j| !j.is_empty())
        .collect();
    if records.is_empty() {
        jobs.push(id.to_string());
    }
    jobs.sort();
    jobs.dedup();
    for job in jobs {
        records.extend(
            client
                .list_audit(query("", &job))
                .await
                .map_err(call_failed)?
                .into_inner()
                .entries,
        );
    }
    records.sort_by(|a, b| a.id.cmp(&b.id));
    records.dedup_by(|a, b| a.id == b.id);
    Ok(records)
}

fn audit_json(entries: &[v1::AuditEntry]) -> Vec<Value> {
    entries
        .iter()
        .map(|e| {
            let opt = |s: &String| Some(s.clone()).filter(|s| !s.is_empty());
            json!({
                "id": e.id, "at": output::time(e.at_ms), "actor": e.actor, "kind": e.kind,
                "event_id": opt(&e.event_id), "rule": opt(&e.rule), "action": opt(&e.action),
                "job_id": opt(&e.job_id), "execution_id": opt(&e.execution_id), "drone_id": opt(&e.drone_id),
                "status": opt(&e.status),
                "detail": serde_json::from_str::<Value>(&e.detail_json).unwrap_or(Value::Null),
            })
        })
        .collect()
}

async fn print_audit(
    client: &mut Client,
    entries: &[v1::AuditEntry],
    out: &Output,
) -> anyhow::Result<()> {
    if out.is_data() {
        return out.data(&audit_json(entries));
    }
    let mut jobs: Vec<String> = entries
        .iter()
        .map(|e| e.job_id.clone())
        .filter(|j| !j.is_empty())
        .collect();
    jobs.sort();
    jobs.dedup();
    let short: std::collections::HashMap<String, String> = jobs
        .iter()
        .cloned()
        .zip(short_ids(client, v1::IdKind::Job, &jobs, out).await)
        .collect();
    let mut table = Table::new(&[
        "TIME", "ACTOR", "WHAT", "RULE", "ACTION", "DRONE", "STATUS", "JOB", "DETAIL",
    ])
    .wide_only(&["ACTION"]);
    for e in entries {
        table.row(vec![
            Cell::text(
                output::time(e.at_ms)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default(),
            ),
            Cell::text(&e.actor),
            Cell::text(&e.kind),
            Cell::text(&e.rule),
            Cell::text(&e.action),
            Cell::text(&e.drone_id),
            Cell::state(&e.status),
            Cell::id(
                &e.job_id,
                short
                    .get(&e.job_id)
                    .cloned()
                    .unwrap_or_else(|| e.job_id.clone()),
            ),
            // Cut short in a table, whole with -o wide.
            Cell::abbreviated(&e.detail_json, summarize(&e.detail_json)),
        ]);
    }
    out.table(&table);
    Ok(())
}

/// The detail, short enough for a table cell.
fn summarize(detail_json: &str) -> String {
    output::truncate(detail_json, 80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_pack_prints_every_problem_on_its_own_line() {
        let problems: Vec<String> = (0..500)
            .map(|i| format!("actions/a{i}.yaml:1:7: unknown runner"))
            .collect();
        let error = pack_refused(v1::PackRefusal {
            message: "the pack has 500 problems; nothing was installed".into(),
            problems: problems.clone(),
        });
        let text = format!("{error:#}");
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("the pack has 500 problems; nothing was installed:")
        );
        assert_eq!(lines.collect::<Vec<_>>(), problems);
    }

    #[test]
    fn a_payload_is_json_a_file_or_standard_input() {
        let mut nothing: &[u8] = b"";
        assert_eq!(
            read_payload(r#"{"host": "web-1"}"#, &mut nothing).expect("inline"),
            r#"{"host": "web-1"}"#
        );
        let mut stdin: &[u8] = br#"{"from": "stdin"}"#;
        assert_eq!(
            read_payload("-", &mut stdin).expect("stdin"),
            r#"{"from": "stdin"}"#
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("alert.json");
        std::fs::write(&file, r#"{"labels": {"alertname": "Down"}}"#).expect("write");
        let given = format!("@{}", file.display());
        assert!(
            read_payload(&given, &mut nothing)
                .expect("file")
                .contains("Down")
        );
        let error = read_payload("{not json", &mut nothing).expect_err("not JSON");
        assert_eq!(crate::cli::exit_status(&error), 2, "{error:#}");
        let missing = read_payload("@/no/such/file.json", &mut nothing).expect_err("missing");
        assert!(format!("{missing:#}").contains("/no/such/file.json"));
    }

    #[test]
    fn a_rule_is_shown_as_its_pack_wrote_it() {
        let rule = v1::RuleInfo {
            name: "hello.greet".into(),
            pack: "hello".into(),
            enabled: false,
            source: "name: greet\ntrigger: core.webhook\n".into(),
            definition_json: r#"{"name": "greet"}"#.into(),
            ..Default::default()
        };
        assert_eq!(
            describe_rule(&rule).expect("describe"),
            "# hello.greet: disabled; pack hello, rules/greet.yaml\nname: greet\ntrigger: core.webhook\n"
        );
        // Installed before the hive kept files: the decoded rule, as YAML.
        let older = v1::RuleInfo {
            source: String::new(),
            ..rule
        };
        let text = describe_rule(&older).expect("describe");
        assert!(text.ends_with("name: greet\n"), "{text}");
    }

    #[test]
    fn an_action_is_described_with_its_parameters_and_how_to_run_it() {
        let action = v1::ActionInfo {
            reference: "linux.restart_service".into(),
            runner: "shell".into(),
            runs_on_drones: true,
            description: "Restart a systemd service".into(),
            timeout_ms: 60_000,
            parameters: vec![
                v1::ActionParameter {
                    name: "service".into(),
                    r#type: "string".into(),
                    required: true,
                    description: "Unit name".into(),
                    ..Default::default()
                },
                v1::ActionParameter {
                    name: "token".into(),
                    r#type: "string".into(),
                    secret: true,
                    default_json: r#""********""#.into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let text = describe_action(&action, &Output::plain(crate::output::Format::Table));
        assert!(
            text.starts_with("linux.restart_service  (shell action, runs on drones)\n"),
            "{text}"
        );
        assert!(text.contains("timeout: 1m"), "{text}");
        assert!(text.contains(" service "), "{text}");
        assert!(text.contains("secret"), "{text}");
        assert!(
            text.ends_with(
                "run it: ultronctl run linux.restart_service service=<string> -t TARGET\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn parameters_are_key_value_words() {
        let map = parse_parameters(&["service=nginx".into(), "count=3".into(), "empty=".into()])
            .expect("parse");
        assert_eq!(map["service"], "nginx");
        assert_eq!(map["count"], "3");
        assert_eq!(map["empty"], "");
        assert!(parse_parameters(&["oops".into()]).is_err());
        assert!(parse_parameters(&["=x".into()]).is_err());
    }

    #[test]
    fn times_are_rfc3339_or_durations_ago() {
        let at = parse_time("2026-01-02T03:04:05Z").expect("rfc3339");
        assert_eq!(at.to_rfc3339(), "2026-01-02T03:04:05+00:00");
        let ago = parse_time("2h").expect("duration");
        let delta = Utc::now() - ago;
        assert!(
            delta.num_minutes() >= 119 && delta.num_minutes() <= 121,
            "{delta}"
        );
        assert!(parse_time("yesterday").is_err());
    }
}
