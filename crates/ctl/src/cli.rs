//! The command line: what each command takes, and what it does.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, CommandFactory, Parser, Subcommand};
use serde_json::json;
use ultron8_proto::v1;

use crate::client::{Client, call_failed, connect};
use crate::output::{
    self, Cell, DroneView, ExecutionView, Format, JobView, Output, Table, print_execution_result,
};

/// Operate an Ultron8 fleet: run commands on drones, watch jobs, enroll hosts.
///
/// ultronctl talks to the hive over mutual TLS with the operator certificate
/// named in its config file (see --config).
///
/// Every command that reads takes -o: `table` fits the terminal (long cells
/// cut with …, ids shortened to a unique prefix), `wide` shows every column
/// in full, `json` and `yaml` are for programs. Wherever an id of a job, an
/// execution or an event is asked for, any unique prefix of it will do.
///
/// Exit status: 0 success; 1 failure (the hive refused, or cannot be
/// reached); 2 usage error; 3 a run in which some host did not succeed;
/// 130 interrupted.
#[derive(Parser)]
#[command(name = "ultronctl", version = crate::status::VERSION, propagate_version = true)]
pub struct Cli {
    /// Config file [default: $ULTRONCTL_CONFIG, else ~/.config/ultron8/ultronctl.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How to print what a command reads
    #[arg(
        short,
        long,
        global = true,
        value_enum,
        default_value = "table",
        value_name = "FORMAT"
    )]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a command, or a pack action, on every drone the target selects,
    /// printing each host's output as it arrives (`web-1 | ...`, stderr
    /// `web-1 ! ...`), then its result line.
    ///
    /// Ctrl-C asks whether to cancel the job (--cancel-on-interrupt: no
    /// question); a second Ctrl-C stops watching and leaves the job running.
    ///
    /// Exits 0 when every host succeeded, 3 when any did not or a host the
    /// target names was offline (--online-only ignores those), 130 after
    /// Ctrl-C, 1 when the job could not be run at all, 2 when the command
    /// line is wrong.
    ///
    /// Targets: '*', globs on drone id or hostname (web-*), lists (web-1,web-2),
    /// labels (label:role=web), combined with and / or / not and parentheses:
    ///   ultronctl run -t 'label:role=web and not web-3' -- systemctl restart nginx
    ///   ultronctl run -t '*' --async -- uptime
    ///   ultronctl run -t 'db-*' --shell -- 'df -h / | tail -1'
    /// A pack action takes key=value parameters, checked against its schema:
    ///   ultronctl run linux.restart_service service=nginx -t 'label:role=web'
    ///   ultronctl run core.http url=https://hooks.example/x body='{"text":"hi"}'
    /// An action's parameters, their types, defaults and which are required:
    ///   ultronctl action get linux.restart_service
    ///   ultronctl action list
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
    /// Actions of the installed packs, and the parameters each takes.
    #[command(subcommand)]
    Action(crate::automation::ActionCommand),
    /// Packs of actions and rules: check, install, list, show, remove.
    #[command(subcommand)]
    Pack(crate::automation::PackCommand),
    /// Events: what arrived, and firing one by hand.
    #[command(subcommand)]
    Event(crate::automation::EventCommand),
    /// Rules: list, inspect, enable, disable, and test against an event.
    #[command(subcommand)]
    Rule(crate::automation::RuleCommand),
    /// The audit trail: who or what ran what, where, and why.
    #[command(subcommand)]
    Audit(crate::automation::AuditCommand),
    /// Secrets that pack actions read as {{ secret.NAME }}: set, list, get,
    /// delete. Values are sealed in the hive and reach a command only in
    /// its environment, on the drone that runs it.
    #[command(subcommand)]
    Secret(crate::secrets::SecretCommand),
    /// The fleet's instances, from every discovery source: summary,
    /// per-service figures, health against a minimum, and a live top.
    #[command(subcommand)]
    Fleet(crate::fleet::FleetCommand),
    /// Discovery sources that feed the fleet views: a cloud API, a
    /// targets file, a static list, the drones. add, list, remove.
    #[command(subcommand)]
    Source(crate::fleet::SourceCommand),
    /// The instances the discovery sources listed.
    #[command(subcommand)]
    Target(crate::fleet::TargetCommand),
    /// Probes of discovered targets (HTTP, TCP) from packs: where each
    /// stands on each target.
    #[command(subcommand)]
    Probe(crate::probes::ProbeCommand),
    /// Enrolled drones: list, show, remove, and create join tokens.
    #[command(subcommand)]
    Drone(DroneCommand),
    /// Checks the drones run (from packs' sensors/): where each stands.
    #[command(subcommand)]
    Check(crate::checks::CheckCommand),
    /// Operators' certificates: issue, list, revoke.
    #[command(subcommand)]
    Operator(crate::operators::OperatorCommand),
    /// Jobs: one run over a set of drones.
    #[command(subcommand)]
    Job(JobCommand),
    /// Executions: one job on one drone.
    #[command(subcommand)]
    Exec(ExecCommand),
    /// The hive's health on one screen: whether it reaches its store and
    /// broker, the rules engine's backlog, drones online and offline,
    /// executions running, and what failed in the last hour.
    ///
    /// Exits 0 when the hive is ready (store and broker answer), 1 when not
    /// or when it cannot be reached.
    ///   ultronctl status
    ///   ultronctl status -o json | jq .figures.pending_events
    #[command(verbatim_doc_comment)]
    Status,
    /// This ultronctl's version and the hive's, with the commits they were
    /// built from. Still prints the client's when the hive cannot be reached.
    ///
    /// Example: ultronctl version -o json
    Version,
    /// Print a completion script for a shell, to load into it.
    ///
    ///   source <(ultronctl completion bash)                       # bash, this shell
    ///   ultronctl completion bash > /etc/bash_completion.d/ultronctl
    ///   ultronctl completion zsh > "${fpath[1]}/_ultronctl"        # zsh
    ///   ultronctl completion fish > ~/.config/fish/completions/ultronctl.fish
    #[command(verbatim_doc_comment)]
    Completion {
        /// The shell to complete in
        #[arg(value_enum)]
        shell: CompletionShell,
    },
}

/// The shells `completion` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args)]
pub struct RunArgs {
    /// Which drones to run on (see `ultronctl run --help`); not needed for
    /// actions the hive runs itself (http, noop)
    #[arg(short, long)]
    pub target: Option<String>,
    /// A pack action (`pack.name`) followed by its key=value parameters; see
    /// its parameters with `ultronctl action get ACTION`
    #[arg(value_name = "ACTION [KEY=VALUE]...")]
    pub action: Vec<String>,
    /// Print the job id and return at once; follow it with `ultronctl job logs -f ID`
    #[arg(long = "async")]
    pub run_async: bool,
    /// Print each host's result line only, not its output
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not count hosts the target names that are offline as failures (exit 0 if the others succeed)
    #[arg(long)]
    pub online_only: bool,
    /// On Ctrl-C, cancel the job without asking (default: ask on a terminal, else stop watching)
    #[arg(long)]
    pub cancel_on_interrupt: bool,
    /// Kill the command (SIGTERM, then SIGKILL to its process group) after this long, e.g. 30s [default: the drone's, 10m]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// How long a drone may take to pick the job up before it expires unrun, e.g. 2m [default: the hive's, 5m]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    /// Run the words after -- as a /bin/sh script instead of a program and its arguments
    #[arg(long)]
    pub shell: bool,
    /// Environment variable for the command, KEY=VALUE (repeatable)
    #[arg(long = "env", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Working directory on the drone
    #[arg(long)]
    pub cwd: Option<String>,
    /// Captured bytes per output stream [default: the drone's, 1 MiB]
    #[arg(long)]
    pub output_limit: Option<u64>,
    /// The command and its arguments, after `--`
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Subcommand)]
pub enum DroneCommand {
    /// List drones, optionally those a target selects
    ///
    ///   ultronctl drone list
    ///   ultronctl drone list -t 'label:role=web' -o wide
    #[command(verbatim_doc_comment)]
    List {
        /// Only the drones this target expression selects (online or not)
        #[arg(short, long)]
        target: Option<String>,
    },
    /// Facts, labels and latest stats of one drone
    ///
    /// Example: ultronctl drone show web-1
    Show {
        /// The drone's id (its name)
        id: String,
    },
    /// Take a drone out of the fleet: it is no longer listed or targeted,
    /// and its certificate is revoked, so the hive refuses it from its next
    /// call on. Its executions and audit trail stay readable. Audited.
    ///
    /// An online drone is refused unless --force: stop ultron8-drone on the
    /// host first. The drone comes back by joining again with a new token
    /// and the same name (`ultron8-drone join --name ID --token ... --force`).
    ///
    ///   ultronctl drone remove web-3
    ///   ultronctl drone remove web-3 --force
    #[command(verbatim_doc_comment)]
    Remove {
        /// The drone's id (its name)
        id: String,
        /// Remove it even though it is online (its running executions end lost)
        #[arg(long)]
        force: bool,
    },
    /// One-time join tokens
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a one-time token a new drone joins with; it pins this hive's CA
    ///
    /// A token never takes over the name of a drone in the fleet. To enroll
    /// a host in an existing drone's place (a rebuilt machine, a lost key),
    /// make the token with --replace: the drone's current certificate is
    /// revoked when the new host joins. --name binds a token to one name.
    ///
    /// A dev hive (`ultron8-hive dev`) refuses: its only drone is the
    /// built-in one. Remote drones need `ultron8-hive serve`.
    ///
    ///   ultronctl drone token create --label role=web --ttl 30m
    ///   ultronctl drone token create --name web-4
    ///   ultronctl drone token create --replace web-3
    #[command(verbatim_doc_comment)]
    Create {
        /// Label every drone joining with this token gets, key=value (repeatable)
        #[arg(long = "label", value_parser = parse_key_value)]
        labels: Vec<(String, String)>,
        /// How long the token stays valid, e.g. 30m [default: the hive's, 1h]
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// Only a drone joining with this name can use the token
        #[arg(long, value_name = "DRONE", conflicts_with = "replace")]
        name: Option<String>,
        /// Enroll the joining host as this drone, which is in the fleet,
        /// revoking its current certificate
        #[arg(long, value_name = "DRONE")]
        replace: Option<String>,
    },
}

/// Execution statuses, as `--status` takes them.
const STATUSES: [&str; 10] = [
    "requested",
    "dispatched",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "rejected",
    "expired",
    "lost",
    "canceled",
];

#[derive(Subcommand)]
pub enum JobCommand {
    /// Recent jobs, newest first, with how many of their hosts succeeded,
    /// failed or are pending
    ///
    ///   ultronctl job list --status failed,timed_out --since 1h
    ///   ultronctl job list --drone web-1 --status failed      # jobs in which web-1 failed
    ///   ultronctl job list --rule linux.restart_on_down --limit 10
    #[command(verbatim_doc_comment)]
    List {
        /// Only jobs with an execution in one of these statuses (comma-separated or repeated)
        #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(STATUSES))]
        status: Vec<String>,
        /// Only jobs that ran on this drone (with --status: whose execution there has it)
        #[arg(long, value_name = "DRONE")]
        drone: Option<String>,
        /// Only jobs this rule fired, `pack.name`
        #[arg(long)]
        rule: Option<String>,
        /// Only jobs running this pack action, `pack.name`
        #[arg(long)]
        action: Option<String>,
        /// Only jobs created since: a duration ago (15m, 2h, 7d) or an RFC 3339 time
        #[arg(long, value_parser = crate::automation::parse_time)]
        since: Option<DateTime<Utc>>,
        /// At most this many jobs (the hive returns at most 1000)
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One job with every host's result (and elapsed time of those still running)
    ///
    ///   ultronctl job get 0193a1c2-5            # any unique prefix of the id
    #[command(verbatim_doc_comment)]
    Get {
        /// The job's id, or any prefix of it no other job's id starts with
        id: String,
    },
    /// A job's output, each line prefixed by its host (`web-1 | ...`, stderr `web-1 ! ...`)
    ///
    ///   ultronctl job logs 0193a1c2-5             # what it printed so far
    ///   ultronctl job logs -f 0193a1c2-5          # and what it prints next, until it ends
    ///   ultronctl job logs 0193a1c2-5 --drone web-1
    #[command(verbatim_doc_comment)]
    Logs {
        /// The job's id, or any prefix of it no other job's id starts with
        id: String,
        /// Keep following until every host has finished
        #[arg(short, long)]
        follow: bool,
        /// Only this drone's output
        #[arg(long, value_name = "DRONE")]
        drone: Option<String>,
    },
    /// Stop a job: hosts that have not started never run it; running ones
    /// get SIGTERM, then SIGKILL, on their whole process group, and end
    /// `canceled`. Audited.
    ///
    ///   ultronctl job cancel 0193a1c2-5
    ///   ultronctl job cancel 0193a1c2-5 --drone web-1
    #[command(verbatim_doc_comment)]
    Cancel {
        /// The job's id, or any prefix of it no other job's id starts with
        id: String,
        /// Only this drone's execution
        #[arg(long, value_name = "DRONE")]
        drone: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ExecCommand {
    /// One execution with its full output (output so far while it runs)
    ///
    /// Example: ultronctl exec get 0193a1c3-8
    Get {
        /// The execution's id, or any prefix of it no other execution's id starts with
        id: String,
    },
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

use crate::follow::FollowOptions;
pub use crate::follow::{EXIT_INTERRUPTED, EXIT_SOME_FAILED};

/// Exit status for a command line that is wrong, as clap's own errors.
pub const EXIT_USAGE: u8 = 2;

/// A command line ultronctl cannot act on (exit status 2): what is wrong
/// and how to say it right.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A [`UsageError`] as the error commands return.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// The exit status for an error a command returned: 2 for a usage error,
/// 1 for anything else.
pub fn exit_status(error: &anyhow::Error) -> u8 {
    if error.chain().any(|cause| cause.is::<UsageError>()) {
        EXIT_USAGE
    } else {
        1
    }
}

/// Refuses `-o json`/`-o yaml` for a command that prints no data.
fn text_only(out: &Output, command: &str) -> anyhow::Result<()> {
    if out.is_data() {
        return Err(usage(format!(
            "{command} prints text, not data; -o json and -o yaml do not apply to it"
        )));
    }
    Ok(())
}

/// What is wrong with the command line that can be told before asking
/// the hive, so a usage error exits 2 whether a hive answers or not.
fn check_usage(command: &Command, out: &Output) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => args.check(),
        Command::Job(JobCommand::Logs { .. }) => text_only(out, "job logs"),
        Command::Fleet(crate::fleet::FleetCommand::Top { .. }) => text_only(out, "fleet top"),
        Command::Secret(crate::secrets::SecretCommand::Delete { .. }) => {
            text_only(out, "secret delete")
        }
        // JSON given inline; a file or standard input is read when it is sent.
        Command::Event(crate::automation::EventCommand::Fire { payload, .. })
            if payload != "-" && !payload.starts_with('@') =>
        {
            crate::automation::read_payload(payload, &mut std::io::empty()).map(|_| ())
        }
        _ => Ok(()),
    }
}

impl RunArgs {
    /// A pack action with parameters, or a command with a target; not both.
    fn check(&self) -> anyhow::Result<()> {
        match (self.action.split_first(), self.command.is_empty()) {
            (Some(_), false) => Err(usage(
                "give either a pack action with key=value parameters, or a command after --, not both",
            )),
            (None, true) => Err(usage(
                "nothing to run: give a command after -- (ultronctl run -t '*' -- uptime) or a pack action (ultronctl run linux.disk_usage -t web-1)",
            )),
            (Some((_, params)), true) => crate::automation::parse_parameters(params)
                .map(|_| ())
                .map_err(|e| usage(format!("{e:#}"))),
            (None, false) if self.target.is_none() => Err(usage(
                "a command needs a target: -t '*', -t web-1, -t 'label:role=web'",
            )),
            (None, false) => Ok(()),
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    let out = Output::detect(cli.output);
    check_usage(&cli.command, &out)?;
    // Commands that need no hive.
    match &cli.command {
        Command::Completion { shell } => {
            text_only(&out, "completion")?;
            return completion(*shell, &mut std::io::stdout());
        }
        Command::Pack(crate::automation::PackCommand::Validate { dirs }) => {
            return crate::automation::validate(dirs, &out);
        }
        _ => {}
    }
    let config = crate::config::resolve(cli.config.as_deref(), |key| std::env::var(key).ok())
        .map(|(config, _)| config);
    let command = match cli.command {
        // Answers with the client's version even without a hive.
        Command::Version => {
            let hive = match config {
                Ok(config) => match connect(&config).await {
                    Ok(mut client) => crate::status::status(&mut client).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            return crate::status::print_version(hive, &out);
        }
        command => command,
    };
    let config = config?;
    let mut client = connect(&config).await?;
    match command {
        Command::Version | Command::Completion { .. } => Ok(0),
        Command::Status => {
            let status = crate::status::status(&mut client).await?;
            crate::status::print_status(&status, &out)
        }
        Command::Run(args) => run_command(&mut client, args, &out).await,
        Command::Action(command) => crate::automation::action(&mut client, command, &out).await,
        Command::Pack(command) => crate::automation::pack(&mut client, command, &out).await,
        Command::Event(command) => crate::automation::event(&mut client, command, &out).await,
        Command::Rule(command) => crate::automation::rule(&mut client, command, &out).await,
        Command::Audit(command) => crate::automation::audit(&mut client, command, &out).await,
        Command::Secret(command) => crate::secrets::secret(&mut client, command, &out).await,
        Command::Probe(command) => crate::probes::probe(&mut client, command, &out).await,
        Command::Fleet(command) => crate::fleet::fleet(&mut client, command, &out).await,
        Command::Source(command) => crate::fleet::source(&mut client, command, &out).await,
        Command::Target(command) => crate::fleet::target(&mut client, command, &out).await,
        Command::Drone(command) => drone(&mut client, command, &out, &config.hive).await,
        Command::Check(command) => crate::checks::check(&mut client, command, &out).await,
        Command::Operator(command) => {
            crate::operators::operator(&mut client, command, &out, &config).await
        }
        Command::Job(command) => job(&mut client, command, &out).await,
        Command::Exec(ExecCommand::Get { id }) => {
            let execution = client
                .get_execution(v1::GetExecutionRequest { id })
                .await
                .map_err(call_failed)?
                .into_inner();
            if out.is_data() {
                out.data(&ExecutionView::from(&execution))?;
            } else {
                println!("execution {}  job {}", execution.id, execution.job_id);
                print_execution_result(&execution, &out);
            }
            Ok(0)
        }
    }
}

/// Writes the completion script for `shell` to `to`.
pub fn completion(shell: CompletionShell, to: &mut dyn std::io::Write) -> anyhow::Result<u8> {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "ultronctl", to);
    Ok(0)
}

/// The short forms of `ids` of `kind` to print in a table: the shortest
/// unique prefixes the hive computes, or the ids whole for `-o wide` and
/// when the hive cannot say (an older hive).
pub async fn short_ids(
    client: &mut Client,
    kind: v1::IdKind,
    ids: &[String],
    out: &Output,
) -> Vec<String> {
    if out.format != Format::Table || ids.is_empty() {
        return ids.to_vec();
    }
    let request = v1::ShortenIdsRequest {
        kind: kind as i32,
        ids: ids.to_vec(),
    };
    match client.shorten_ids(request).await {
        Ok(response) => {
            let short = response.into_inner().short_ids;
            if short.len() == ids.len() {
                short
            } else {
                ids.to_vec()
            }
        }
        Err(_) => ids.to_vec(),
    }
}

fn online_word(online: bool) -> &'static str {
    if online { "online" } else { "offline" }
}

async fn drone(
    client: &mut Client,
    command: DroneCommand,
    out: &Output,
    hive: &str,
) -> anyhow::Result<u8> {
    match command {
        DroneCommand::List { target } => {
            let drones = client
                .list_drones(v1::ListDronesRequest {
                    target: target.unwrap_or_default(),
                })
                .await
                .map_err(call_failed)?
                .into_inner()
                .drones;
            if out.is_data() {
                out.data(&drones.iter().map(DroneView::from).collect::<Vec<_>>())?;
                return Ok(0);
            }
            if drones.is_empty() {
                eprintln!(
                    "No drones yet. Create a join token with `ultronctl drone token create`."
                );
                return Ok(0);
            }
            let mut table = Table::new(&[
                "DRONE",
                "STATUS",
                "HOSTNAME",
                "OS",
                "CPU",
                "MEM",
                "DISK",
                "LOAD1",
                "LAST SEEN",
                "LABELS",
            ])
            .wide_only(&["LOAD1", "LABELS"]);
            for d in &drones {
                let view = DroneView::from(d);
                let stats = view.stats.as_ref();
                let pct =
                    |v: Option<f32>| v.map(|v| format!("{v:.0}%")).unwrap_or_else(|| "-".into());
                table.row(vec![
                    Cell::text(&view.id),
                    Cell::state(online_word(view.online)),
                    Cell::text(&view.hostname),
                    Cell::text(format!("{} {}", view.os, view.os_version).trim()),
                    Cell::text(pct(stats.map(|s| s.cpu_percent))),
                    Cell::text(pct(stats.map(|s| s.memory_percent))),
                    Cell::text(pct(stats.map(|s| s.disk_percent))),
                    Cell::text(
                        stats
                            .map(|s| format!("{:.2}", s.load[0]))
                            .unwrap_or_else(|| "-".into()),
                    ),
                    Cell::text(output::ago(d.last_seen_ms)),
                    Cell::text(
                        view.labels
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                ]);
            }
            out.table(&table);
            Ok(0)
        }
        DroneCommand::Show { id } => {
            let drone = client
                .get_drone(v1::GetDroneRequest { id })
                .await
                .map_err(call_failed)?
                .into_inner();
            let view = DroneView::from(&drone);
            if out.is_data() {
                out.data(&view)?;
                return Ok(0);
            }
            let mut table = Table::new(&["FIELD", "VALUE"]);
            let mut rows: Vec<(&str, Cell)> = vec![
                ("id", Cell::text(&view.id)),
                ("status", Cell::state(online_word(view.online))),
                ("hostname", Cell::text(&view.hostname)),
                ("os", Cell::text(format!("{} {}", view.os, view.os_version))),
                ("kernel", Cell::text(&view.kernel)),
                ("arch", Cell::text(&view.arch)),
                ("cpus", Cell::text(view.cpus.to_string())),
                (
                    "memory",
                    Cell::text(format!(
                        "{:.1} GiB",
                        view.memory_bytes as f64 / (1u64 << 30) as f64
                    )),
                ),
                (
                    "labels",
                    Cell::text(
                        view.labels
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                ),
                ("agent", Cell::text(&view.agent_version)),
                ("last seen", Cell::text(output::ago(drone.last_seen_ms))),
            ];
            if let Some(stats) = &view.stats {
                rows.push(("cpu", Cell::text(format!("{:.1}%", stats.cpu_percent))));
                rows.push((
                    "memory used",
                    Cell::text(format!("{:.1}%", stats.memory_percent)),
                ));
                rows.push((
                    "disk used (/)",
                    Cell::text(format!("{:.1}%", stats.disk_percent)),
                ));
                rows.push((
                    "load",
                    Cell::text(format!(
                        "{:.2} {:.2} {:.2}",
                        stats.load[0], stats.load[1], stats.load[2]
                    )),
                ));
            }
            for (field, value) in rows {
                table.row(vec![Cell::text(field), value]);
            }
            out.table(&table);
            Ok(0)
        }
        DroneCommand::Remove { id, force } => {
            let drone = client
                .remove_drone(v1::RemoveDroneRequest {
                    id: id.clone(),
                    force,
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            if out.is_data() {
                let mut view = serde_json::to_value(DroneView::from(&drone))?;
                view["removed_at"] = json!(output::time(drone.removed_at_ms));
                view["removed_by"] = json!(drone.removed_by);
                out.data(&view)?;
            } else {
                println!("removed {id}");
                eprintln!(
                    "Its history stays (ultronctl audit list --drone {id}). To bring it back, \
                     join it again with a new token and the same name."
                );
            }
            Ok(0)
        }
        DroneCommand::Token(TokenCommand::Create {
            labels,
            ttl,
            name,
            replace,
        }) => {
            let replacing = replace.is_some();
            let bound = replace.or(name);
            let response = client
                .create_join_token(v1::CreateJoinTokenRequest {
                    labels: labels.into_iter().collect(),
                    ttl_ms: ttl.map_or(0, |t| t.as_millis() as u64),
                    drone_id: bound.clone().unwrap_or_default(),
                    replace: replacing,
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            if out.is_data() {
                out.data(&json!({
                    "token": response.token,
                    "token_id": response.token_id,
                    "expires_at": output::time(response.expires_at_ms),
                    "ca_fingerprint": response.ca_fingerprint,
                }))?;
            } else {
                println!("{}", response.token);
                let name = bound.map(|n| format!(" --name {n}")).unwrap_or_default();
                eprintln!(
                    "One-time token {}, valid until {}. On the new host run:\n  ultron8-drone join --hive {} --token {}{name}",
                    response.token_id,
                    output::time(response.expires_at_ms)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default(),
                    hive,
                    response.token
                );
            }
            Ok(0)
        }
    }
}

/// A job's state in one word, from its hosts' counts: running while any
/// host has not finished, then failed if any did not succeed.
pub fn job_state(j: &v1::JobSummary) -> &'static str {
    if j.pending > 0 {
        "running"
    } else if j.failed > 0 {
        "failed"
    } else if j.executions == 0 {
        "-"
    } else {
        "succeeded"
    }
}

/// A job's hosts in one cell: `3`, `3, 1 failed`, `3, 2 pending`.
pub fn hosts_summary(j: &v1::JobSummary) -> String {
    let mut text = j.executions.to_string();
    for (count, what) in [(j.failed, "failed"), (j.pending, "pending")] {
        if count > 0 {
            text.push_str(&format!(", {count} {what}"));
        }
    }
    text
}

async fn job(client: &mut Client, command: JobCommand, out: &Output) -> anyhow::Result<u8> {
    match command {
        JobCommand::List {
            status,
            drone,
            rule,
            action,
            since,
            limit,
        } => {
            let jobs = client
                .list_jobs(v1::ListJobsRequest {
                    limit,
                    statuses: status,
                    drone: drone.unwrap_or_default(),
                    rule: rule.unwrap_or_default(),
                    action: action.unwrap_or_default(),
                    since_ms: since.map_or(0, |t| t.timestamp_millis()),
                })
                .await
                .map_err(call_failed)?
                .into_inner()
                .jobs;
            if out.is_data() {
                let views: Vec<_> = jobs
                    .iter()
                    .map(|j| {
                        json!({
                            "id": j.id, "target": j.target, "requester": j.requester, "command": j.command,
                            "created_at": output::time(j.created_at_ms), "status": job_state(j),
                            "executions": j.executions, "succeeded": j.succeeded, "failed": j.failed, "pending": j.pending,
                        })
                    })
                    .collect();
                out.data(&views)?;
                return Ok(0);
            }
            let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
            let short = short_ids(client, v1::IdKind::Job, &ids, out).await;
            let mut table = Table::new(&[
                "JOB",
                "CREATED",
                "REQUESTER",
                "TARGET",
                "STATUS",
                "HOSTS",
                "OK",
                "FAILED",
                "PENDING",
                "COMMAND",
            ])
            .wide_only(&["REQUESTER", "OK", "FAILED", "PENDING"]);
            for (j, short) in jobs.iter().zip(short) {
                table.row(vec![
                    Cell::id(&j.id, short),
                    Cell::text(output::ago(j.created_at_ms)),
                    Cell::text(&j.requester),
                    Cell::text(&j.target),
                    Cell::state(job_state(j)),
                    Cell::abbreviated(j.executions.to_string(), hosts_summary(j)),
                    Cell::text(j.succeeded.to_string()),
                    Cell::text(j.failed.to_string()),
                    Cell::text(j.pending.to_string()),
                    Cell::text(&j.command),
                ]);
            }
            if jobs.is_empty() {
                eprintln!("No jobs match.");
            } else {
                out.table(&table);
            }
            Ok(0)
        }
        JobCommand::Get { id } => {
            let job = client
                .get_job(v1::GetJobRequest { id })
                .await
                .map_err(call_failed)?
                .into_inner();
            let view = JobView::from(&job);
            if out.is_data() {
                out.data(&view)?;
                return Ok(0);
            }
            println!(
                "job {}  target {:?}  by {}  command: {}",
                view.id, view.target, view.requester, view.command
            );
            for e in &job.executions {
                println!("--- execution {}", e.id);
                print_execution_result(e, out);
            }
            for drone in &job.offline_drones {
                println!("--- {drone}: offline when the job was submitted; not run");
            }
            Ok(0)
        }
        JobCommand::Logs { id, follow, drone } => {
            crate::follow::logs(client, id, drone, follow).await
        }
        JobCommand::Cancel { id, drone } => {
            let answer = client
                .cancel_job(v1::CancelJobRequest {
                    job_id: id.clone(),
                    drone_id: drone.unwrap_or_default(),
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            if out.is_data() {
                let executions: Vec<serde_json::Value> = answer
                    .executions
                    .iter()
                    .map(|e| {
                        json!({
                            "execution_id": e.execution_id,
                            "drone": e.drone_id,
                            "outcome": cancel_outcome(e.outcome),
                        })
                    })
                    .collect();
                out.data(&executions)?;
            } else {
                for e in &answer.executions {
                    println!("{}  {}", e.drone_id, cancel_outcome(e.outcome));
                }
                eprintln!("{}", crate::follow::cancel_summary(&answer));
                eprintln!("follow it to its end with: ultronctl job logs -f {id}");
            }
            Ok(0)
        }
    }
}

async fn run_command(client: &mut Client, args: RunArgs, out: &Output) -> anyhow::Result<u8> {
    args.check()?;
    let job = match args.action.split_first() {
        Some((action, params)) => {
            let parameters =
                crate::automation::parse_parameters(params).map_err(|e| usage(format!("{e:#}")))?;
            let request = v1::RunActionRequest {
                action: action.clone(),
                parameters_json: serde_json::Value::Object(parameters).to_string(),
                target: args.target.clone().unwrap_or_default(),
                ttl_ms: args.ttl.map_or(0, |t| t.as_millis() as u64),
            };
            client
                .run_action(request)
                .await
                .map_err(call_failed)?
                .into_inner()
        }
        None => submit_command(client, &args).await?,
    };
    follow_job(client, job, &args, out).await
}

async fn submit_command(client: &mut Client, args: &RunArgs) -> anyhow::Result<v1::Job> {
    let target = args
        .target
        .clone()
        .ok_or_else(|| usage("a command needs a target: -t '*', -t web-1, -t 'label:role=web'"))?;
    let program = if args.shell {
        v1::command::Program::Shell(args.command.join(" "))
    } else {
        v1::command::Program::Argv(v1::Argv {
            args: args.command.clone(),
        })
    };
    let env: BTreeMap<String, String> = args.env.iter().cloned().collect();
    let request = v1::SubmitJobRequest {
        target,
        command: Some(v1::Command {
            program: Some(program),
            env: env.into_iter().collect(),
            working_dir: args.cwd.clone().unwrap_or_default(),
            timeout_ms: args.timeout.map_or(0, |t| t.as_millis() as u64),
            output_limit_bytes: args.output_limit.unwrap_or(0),
            redact: Vec::new(),
            secret_env: Default::default(),
        }),
        ttl_ms: args.ttl.map_or(0, |t| t.as_millis() as u64),
    };
    Ok(client
        .submit_job(request)
        .await
        .map_err(call_failed)?
        .into_inner())
}

/// Prints a submitted job's id with `--async`, or follows it to its end,
/// and returns the exit status.
async fn follow_job(
    client: &mut Client,
    job: v1::Job,
    args: &RunArgs,
    out: &Output,
) -> anyhow::Result<u8> {
    if args.run_async {
        if out.is_data() {
            out.data(&JobView::from(&job))?;
        } else {
            println!("{}", job.id);
            eprintln!(
                "job {} submitted to {} drone(s); follow it with: ultronctl job logs -f {}",
                job.id,
                job.executions.len(),
                job.id
            );
            for drone in &job.offline_drones {
                eprintln!("{drone}  offline, not run");
            }
        }
        return Ok(0);
    }
    crate::follow::follow_run(
        client,
        job,
        FollowOptions {
            quiet: args.quiet,
            data: out.is_data().then_some(out.format),
            online_only: args.online_only,
            cancel_on_interrupt: args.cancel_on_interrupt,
            colour: out.colour,
        },
    )
    .await
}

fn cancel_outcome(outcome: i32) -> &'static str {
    match v1::CancelOutcome::try_from(outcome) {
        Ok(v1::CancelOutcome::Canceled) => "canceled before it started",
        Ok(v1::CancelOutcome::Signalled) => "stopping (SIGTERM, then SIGKILL)",
        Ok(v1::CancelOutcome::AlreadyFinished) => "already finished",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_errors_exit_2_and_others_1() {
        assert_eq!(exit_status(&usage("nothing to run")), EXIT_USAGE);
        let wrapped = usage("bad").context("while reading the command line");
        assert_eq!(exit_status(&wrapped), EXIT_USAGE);
        assert_eq!(exit_status(&anyhow::anyhow!("the hive is unavailable")), 1);
    }

    #[test]
    fn output_is_one_flag_before_or_after_the_command() {
        for args in [
            &["ultronctl", "-o", "json", "job", "list"][..],
            &["ultronctl", "job", "list", "-o", "json"][..],
            &["ultronctl", "job", "list", "--output=json"][..],
        ] {
            let cli = Cli::try_parse_from(args).expect("parses");
            assert_eq!(cli.output, Format::Json, "{args:?}");
        }
        let cli = Cli::try_parse_from(["ultronctl", "drone", "list"]).expect("parses");
        assert_eq!(cli.output, Format::Table);
        assert!(Cli::try_parse_from(["ultronctl", "job", "list", "-o", "xml"]).is_err());
    }

    #[test]
    fn job_list_takes_statuses_comma_separated_or_repeated() {
        let cli = Cli::try_parse_from([
            "ultronctl",
            "job",
            "list",
            "--status",
            "failed,timed_out",
            "--status",
            "lost",
            "--since",
            "1h",
        ])
        .expect("parses");
        let Command::Job(JobCommand::List { status, since, .. }) = cli.command else {
            panic!("job list");
        };
        assert_eq!(status, ["failed", "timed_out", "lost"]);
        assert!(since.is_some());
        let error = Cli::try_parse_from(["ultronctl", "job", "list", "--status", "broken"])
            .err()
            .expect("an unknown status is refused");
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn a_wrong_run_is_a_usage_error_before_any_hive_is_asked() {
        let out = Output::plain(Format::Table);
        for (args, expected) in [
            (&["ultronctl", "run"][..], Some("nothing to run")),
            (
                &["ultronctl", "run", "-t", "*", "a.b", "--", "uptime"][..],
                Some("not both"),
            ),
            (
                &["ultronctl", "run", "--", "uptime"][..],
                Some("needs a target"),
            ),
            (
                &["ultronctl", "run", "a.b", "oops"][..],
                Some("not key=value"),
            ),
            (&["ultronctl", "run", "-t", "*", "--", "uptime"][..], None),
            (&["ultronctl", "run", "core.noop"][..], None),
        ] {
            let cli = Cli::try_parse_from(args).expect("parses");
            match (check_usage(&cli.command, &out), expected) {
                (Ok(()), None) => {}
                (Err(e), Some(text)) => {
                    assert_eq!(exit_status(&e), EXIT_USAGE, "{args:?}");
                    assert!(format!("{e:#}").contains(text), "{args:?}: {e:#}");
                }
                (result, _) => panic!("{args:?}: {result:?}"),
            }
        }
        let cli =
            Cli::try_parse_from(["ultronctl", "job", "logs", "x", "-o", "json"]).expect("parses");
        assert!(check_usage(&cli.command, &Output::plain(Format::Json)).is_err());
        assert!(check_usage(&cli.command, &out).is_ok());
    }

    #[test]
    fn completion_scripts_name_the_commands() {
        for shell in [
            CompletionShell::Bash,
            CompletionShell::Zsh,
            CompletionShell::Fish,
        ] {
            let mut script = Vec::new();
            completion(shell, &mut script).expect("completion");
            let script = String::from_utf8(script).expect("utf8");
            assert!(script.contains("ultronctl"), "{shell:?}");
            assert!(script.contains("remove"), "{shell:?}: drone remove");
        }
    }

    #[test]
    fn job_states_follow_their_hosts() {
        let summary = |executions, failed, pending| v1::JobSummary {
            executions,
            failed,
            pending,
            succeeded: executions - failed - pending,
            ..Default::default()
        };
        assert_eq!(job_state(&summary(3, 1, 1)), "running");
        assert_eq!(job_state(&summary(3, 1, 0)), "failed");
        assert_eq!(job_state(&summary(3, 0, 0)), "succeeded");
        assert_eq!(hosts_summary(&summary(3, 1, 1)), "3, 1 failed, 1 pending");
        assert_eq!(hosts_summary(&summary(3, 0, 0)), "3");
    }
}
