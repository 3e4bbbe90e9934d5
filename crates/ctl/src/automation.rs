//! Commands for packs, events, rules and the audit trail.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::{Map, Value, json};
use ultron8_proto::v1;

use crate::client::{Client, call_failed};
use crate::output::{self, Format, print_json};

#[derive(Subcommand)]
pub enum PackCommand {
    /// Validate and install (or upgrade) a pack from a directory or .tar.gz.
    ///
    /// Everything is checked first; any problem rejects the whole pack,
    /// listed as file:line:column: message, and nothing is installed.
    Install {
        /// A pack directory (with pack.yaml) or a .tar.gz of one
        path: PathBuf,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Installed packs
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// One pack: its actions, rules and earlier versions
    Show {
        name: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Remove a pack, its actions and rules (its history stays)
    Remove { name: String },
}

#[derive(Subcommand)]
pub enum EventCommand {
    /// Recent events, newest first
    List {
        /// Only events of this trigger type, e.g. alertmanager.alert
        #[arg(long)]
        trigger: Option<String>,
        /// At most this many events
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// One event with its payload, how processing went and the rules that
    /// matched it
    ///
    /// Misses are not recorded; --explain evaluates every rule on the
    /// event's trigger again, as `rule test` does, and says why each did not
    /// match (against the rules installed now).
    ///
    /// Example: ultronctl event get 0193a3c2-... --explain
    Get {
        id: String,
        /// Also evaluate the rules on the event's trigger again and show
        /// why each matched or not (runs nothing)
        #[arg(long)]
        explain: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Store an event by hand; rules on its trigger act on it as on any other
    ///
    /// Example: ultronctl event fire core.event --payload '{"host": "web-1"}'
    Fire {
        trigger: String,
        /// The payload, as JSON
        #[arg(long, default_value = "{}")]
        payload: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
}

#[derive(Subcommand)]
pub enum RuleCommand {
    /// Installed rules
    List {
        /// Only rules on this trigger type
        #[arg(long)]
        trigger: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// One rule's definition
    Get {
        name: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Let a rule act on events again
    Enable { name: String },
    /// Stop a rule from acting (it stays installed)
    Disable { name: String },
    /// Show which rules an event matches, why the others do not, and the
    /// exact parameters and hosts that would run. Runs nothing.
    ///
    /// The file holds either {"trigger": ..., "payload": {...}} or just the
    /// payload, with --trigger.
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
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Audit records, newest first. Times are RFC 3339 or a duration ago (15m, 2h, 7d)
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
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// The whole chain for one event or job: event, rule evaluations,
    /// firings, jobs, executions and results
    Show {
        /// An event id or a job id
        id: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
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

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let ago = humantime::parse_duration(text)
        .map_err(|_| format!("{text:?} is neither an RFC 3339 time nor a duration like 15m"))?;
    chrono::Duration::from_std(ago)
        .map(|d| Utc::now() - d)
        .map_err(|e| e.to_string())
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

pub async fn pack(client: &mut Client, command: PackCommand) -> anyhow::Result<u8> {
    match command {
        PackCommand::Install { path, output } => {
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
            if output == Format::Json {
                print_json(&pack_json(&pack))?;
            } else if response.previous_version == pack.version {
                println!(
                    "reinstalled {} {} ({} actions, {} rules)",
                    pack.name,
                    pack.version,
                    pack.actions.len(),
                    pack.rules.len()
                );
            } else if response.previous_version.is_empty() {
                println!(
                    "installed {} {} ({} actions, {} rules)",
                    pack.name,
                    pack.version,
                    pack.actions.len(),
                    pack.rules.len()
                );
            } else {
                println!(
                    "upgraded {} {} -> {} ({} actions, {} rules)",
                    pack.name,
                    response.previous_version,
                    pack.version,
                    pack.actions.len(),
                    pack.rules.len()
                );
            }
        }
        PackCommand::List { output } => {
            let packs = client
                .list_packs(v1::ListPacksRequest {})
                .await
                .map_err(call_failed)?
                .into_inner()
                .packs;
            if output == Format::Json {
                print_json(&packs.iter().map(pack_json).collect::<Vec<_>>())?;
            } else if packs.is_empty() {
                eprintln!(
                    "No packs installed. Install one with `ultronctl pack install packs/core`."
                );
            } else {
                let mut table = output::table(&[
                    "PACK",
                    "VERSION",
                    "ACTIONS",
                    "RULES",
                    "INSTALLED",
                    "BY",
                    "DESCRIPTION",
                ]);
                for p in &packs {
                    table.add_row(vec![
                        p.name.clone(),
                        p.version.clone(),
                        p.actions.len().to_string(),
                        p.rules.len().to_string(),
                        output::ago(p.installed_at_ms),
                        p.installed_by.clone(),
                        p.description.clone(),
                    ]);
                }
                println!("{table}");
            }
        }
        PackCommand::Show { name, output } => {
            let pack = client
                .get_pack(v1::GetPackRequest { name })
                .await
                .map_err(call_failed)?
                .into_inner();
            if output == Format::Json {
                print_json(&pack_json(&pack))?;
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
            }
        }
        PackCommand::Remove { name } => {
            client
                .remove_pack(v1::RemovePackRequest { name: name.clone() })
                .await
                .map_err(call_failed)?;
            println!("removed {name}");
        }
    }
    Ok(0)
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

pub async fn event(client: &mut Client, command: EventCommand) -> anyhow::Result<u8> {
    match command {
        EventCommand::List {
            trigger,
            limit,
            output,
        } => {
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
            if output == Format::Json {
                print_json(&events.iter().map(event_json).collect::<Vec<_>>())?;
            } else {
                let mut table =
                    output::table(&["EVENT", "RECEIVED", "TRIGGER", "SOURCE", "STATE", "ERROR"]);
                for e in &events {
                    table.add_row(vec![
                        e.id.clone(),
                        output::ago(e.received_at_ms),
                        e.trigger.clone(),
                        e.source.clone(),
                        e.state.clone(),
                        e.error.clone(),
                    ]);
                }
                println!("{table}");
            }
        }
        EventCommand::Get {
            id,
            explain,
            output,
        } => {
            let event = client
                .get_event(v1::GetEventRequest { id })
                .await
                .map_err(call_failed)?
                .into_inner();
            if !explain {
                print_event(&event, output)?;
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
            if output == Format::Json {
                let mut view = event_json(&event);
                view["explain"] = Value::Array(results.iter().map(rule_test_json).collect());
                print_json(&view)?;
            } else {
                print_event(&event, output)?;
                println!();
                println!("the rules on {} now:", event.trigger);
                print_rule_tests(&results, &event.trigger);
            }
        }
        EventCommand::Fire {
            trigger,
            payload,
            output,
        } => {
            serde_json::from_str::<Value>(&payload).context("--payload is not valid JSON")?;
            let event = client
                .fire_event(v1::FireEventRequest {
                    trigger,
                    payload_json: payload,
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            if output == Format::Json {
                print_json(&event_json(&event))?;
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

fn print_event(e: &v1::EventInfo, output: Format) -> anyhow::Result<()> {
    if output == Format::Json {
        return print_json(&event_json(e));
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
        e.state,
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

pub async fn rule(client: &mut Client, command: RuleCommand) -> anyhow::Result<u8> {
    match command {
        RuleCommand::List { trigger, output } => {
            let rules = client
                .list_rules(v1::ListRulesRequest {
                    trigger: trigger.unwrap_or_default(),
                })
                .await
                .map_err(call_failed)?
                .into_inner()
                .rules;
            if output == Format::Json {
                print_json(&rules.iter().map(rule_json).collect::<Vec<_>>())?;
            } else {
                let mut table =
                    output::table(&["RULE", "ENABLED", "TRIGGER", "ACTION", "DESCRIPTION"]);
                for r in &rules {
                    table.add_row(vec![
                        r.name.clone(),
                        if r.enabled { "yes".into() } else { "no".into() },
                        r.trigger.clone(),
                        r.action.clone(),
                        r.description.clone(),
                    ]);
                }
                println!("{table}");
            }
        }
        RuleCommand::Get { name, output } => {
            let rule = client
                .get_rule(v1::GetRuleRequest { name })
                .await
                .map_err(call_failed)?
                .into_inner();
            if output == Format::Json {
                print_json(&rule_json(&rule))?;
            } else {
                println!(
                    "{}  ({}; trigger {}; action {})",
                    rule.name,
                    if rule.enabled { "enabled" } else { "disabled" },
                    rule.trigger,
                    rule.action
                );
                if !rule.description.is_empty() {
                    println!("{}", rule.description);
                }
                let definition: Value =
                    serde_json::from_str(&rule.definition_json).unwrap_or(Value::Null);
                println!("{}", serde_json::to_string_pretty(&definition)?);
            }
        }
        RuleCommand::Enable { name } => {
            client
                .set_rule_enabled(v1::SetRuleEnabledRequest {
                    name: name.clone(),
                    enabled: true,
                })
                .await
                .map_err(call_failed)?;
            println!("enabled {name}");
        }
        RuleCommand::Disable { name } => {
            client
                .set_rule_enabled(v1::SetRuleEnabledRequest {
                    name: name.clone(),
                    enabled: false,
                })
                .await
                .map_err(call_failed)?;
            println!("disabled {name}");
        }
        RuleCommand::Test {
            event,
            trigger,
            rule,
            output,
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
                (_, None) => bail!(
                    "the file holds only a payload; say which trigger with --trigger (e.g. alertmanager.alert)"
                ),
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
            if output == Format::Json {
                print_json(&results.iter().map(rule_test_json).collect::<Vec<_>>())?;
            } else {
                print_rule_tests(&results, &trigger);
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

fn print_rule_tests(results: &[v1::RuleTest], trigger: &str) {
    if results.is_empty() {
        println!("no rules on trigger {trigger}");
        return;
    }
    for r in results {
        let state = match (r.matched, r.error.is_empty()) {
            (true, true) => "MATCH",
            (true, false) => "MATCH, but it cannot run",
            (false, _) => "no match",
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
    })
}

pub async fn audit(client: &mut Client, command: AuditCommand) -> anyhow::Result<u8> {
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
            output,
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
            print_audit(&entries, output)?;
            if output == Format::Table
                && entries.len() as u32 == limit.max(1)
                && let Some(last) = entries.last()
            {
                eprintln!("more may follow: --before {}", last.id);
            }
        }
        AuditCommand::Show { id, output } => {
            let chain = audit_chain(client, &id).await?;
            let event = client
                .get_event(v1::GetEventRequest { id: id.clone() })
                .await
                .ok()
                .map(|r| r.into_inner());
            if chain.is_empty() && event.is_none() {
                bail!(
                    "no audit records for {id}; give an event id (ultronctl event list) or a job id (ultronctl job list)"
                );
            }
            if output == Format::Json {
                print_json(
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
                        e.state
                    );
                    if !e.error.is_empty() {
                        println!("error: {}", e.error);
                    }
                }
                print_audit(&chain, output)?;
            }
        }
    }
    Ok(0)
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

fn print_audit(entries: &[v1::AuditEntry], output: Format) -> anyhow::Result<()> {
    if output == Format::Json {
        return print_json(&audit_json(entries));
    }
    let mut table = output::table(&[
        "TIME", "ACTOR", "WHAT", "RULE", "ACTION", "DRONE", "STATUS", "JOB", "DETAIL",
    ]);
    for e in entries {
        table.add_row(vec![
            output::time(e.at_ms)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default(),
            e.actor.clone(),
            e.kind.clone(),
            e.rule.clone(),
            e.action.clone(),
            e.drone_id.clone(),
            e.status.clone(),
            e.job_id.clone(),
            summarize(&e.detail_json),
        ]);
    }
    println!("{table}");
    Ok(())
}

/// The detail, short enough for a table cell.
fn summarize(detail_json: &str) -> String {
    let text = detail_json.to_string();
    if text.chars().count() > 80 {
        format!("{}...", text.chars().take(77).collect::<String>())
    } else {
        text
    }
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
