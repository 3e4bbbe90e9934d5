//! The command line: what each command takes, and what it does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ultron8_proto::v1;

use crate::client::{Client, call_failed, connect};
use crate::output::{
    self, DroneView, ExecutionView, Format, JobView, print_execution_result, print_json,
};

/// Operate an Ultron8 fleet: run commands on drones, watch jobs, enroll hosts.
///
/// ultronctl talks to the hive over mutual TLS with the operator certificate
/// named in its config file (see --config).
#[derive(Parser)]
#[command(name = "ultronctl", version = crate::status::VERSION, propagate_version = true)]
pub struct Cli {
    /// Config file [default: $ULTRONCTL_CONFIG, else ~/.config/ultron8/ultronctl.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a command, or a pack action, on every drone the target selects,
    /// and print each host's result as it arrives.
    ///
    /// Exits 0 when every host succeeded, 3 when any did not, 1 when the
    /// job could not be run at all.
    ///
    /// Targets: '*', globs on drone id or hostname (web-*), lists (web-1,web-2),
    /// labels (label:role=web), combined with and / or / not and parentheses:
    ///   ultronctl run -t 'label:role=web and not web-3' -- systemctl restart nginx
    ///   ultronctl run -t '*' --async -- uptime
    ///   ultronctl run -t 'db-*' --shell -- 'df -h / | tail -1'
    /// A pack action takes key=value parameters, checked against its schema:
    ///   ultronctl run linux.restart_service service=nginx -t 'label:role=web'
    ///   ultronctl run core.http url=https://hooks.example/x body='{"text":"hi"}'
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
    /// Packs of actions and rules: install, list, show, remove.
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
    /// Enrolled drones: list, show, and create join tokens.
    #[command(subcommand)]
    Drone(DroneCommand),
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
    Status {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// This ultronctl's version and the hive's, with the commits they were
    /// built from. Still prints the client's when the hive cannot be reached.
    Version {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
}

#[derive(Args)]
pub struct RunArgs {
    /// Which drones to run on (see `ultronctl run --help`); not needed for
    /// actions the hive runs itself (http, noop)
    #[arg(short, long)]
    pub target: Option<String>,
    /// A pack action (`pack.name`) followed by its key=value parameters
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
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Format,
    /// The command and its arguments, after `--`
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Subcommand)]
pub enum DroneCommand {
    /// List drones, optionally those a target selects
    List {
        #[arg(short, long)]
        target: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Facts, labels and latest stats of one drone
    Show {
        id: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// One-time join tokens
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a one-time token a new drone joins with; it pins this hive's CA
    Create {
        /// Label every drone joining with this token gets, key=value (repeatable)
        #[arg(long = "label", value_parser = parse_key_value)]
        labels: Vec<(String, String)>,
        /// How long the token stays valid, e.g. 30m [default: the hive's, 1h]
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
}

#[derive(Subcommand)]
pub enum JobCommand {
    /// Recent jobs, newest first
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// One job with every host's result (and elapsed time of those still running)
    Get {
        id: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// A job's output, each line prefixed by its host (`web-1 | ...`, stderr `web-1 ! ...`)
    ///
    ///   ultronctl job logs 0193a1c2-...             # what it printed so far
    ///   ultronctl job logs -f 0193a1c2-...          # and what it prints next, until it ends
    ///   ultronctl job logs 0193a1c2-... --drone web-1
    #[command(verbatim_doc_comment)]
    Logs {
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
    ///   ultronctl job cancel 0193a1c2-...
    ///   ultronctl job cancel 0193a1c2-... --drone web-1
    #[command(verbatim_doc_comment)]
    Cancel {
        id: String,
        /// Only this drone's execution
        #[arg(long, value_name = "DRONE")]
        drone: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
}

#[derive(Subcommand)]
pub enum ExecCommand {
    /// One execution with its full output (output so far while it runs)
    Get {
        id: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
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

pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    let config = crate::config::resolve(cli.config.as_deref(), |key| std::env::var(key).ok())
        .map(|(config, _)| config);
    let command = match cli.command {
        // Answers with the client's version even without a hive.
        Command::Version { output } => {
            let hive = match config {
                Ok(config) => match connect(&config).await {
                    Ok(mut client) => crate::status::status(&mut client).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            return crate::status::print_version(hive, output);
        }
        command => command,
    };
    let config = config?;
    let mut client = connect(&config).await?;
    match command {
        Command::Version { output } => {
            crate::status::print_version(crate::status::status(&mut client).await, output)
        }
        Command::Status { output } => {
            let status = crate::status::status(&mut client).await?;
            crate::status::print_status(&status, output)
        }
        Command::Run(args) => run_command(&mut client, args).await,
        Command::Pack(command) => crate::automation::pack(&mut client, command).await,
        Command::Event(command) => crate::automation::event(&mut client, command).await,
        Command::Rule(command) => crate::automation::rule(&mut client, command).await,
        Command::Audit(command) => crate::automation::audit(&mut client, command).await,
        Command::Drone(DroneCommand::List { target, output }) => {
            let drones = client
                .list_drones(v1::ListDronesRequest {
                    target: target.unwrap_or_default(),
                })
                .await
                .map_err(call_failed)?
                .into_inner()
                .drones;
            if output == Format::Json {
                print_json(&drones.iter().map(DroneView::from).collect::<Vec<_>>())?;
            } else {
                let mut table = output::table(&[
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
                ]);
                for d in &drones {
                    let view = DroneView::from(d);
                    let stats = view.stats.as_ref();
                    let pct = |v: Option<f32>| {
                        v.map(|v| format!("{v:.0}%")).unwrap_or_else(|| "-".into())
                    };
                    table.add_row(vec![
                        view.id.clone(),
                        if view.online {
                            "online".into()
                        } else {
                            "offline".into()
                        },
                        view.hostname.clone(),
                        format!("{} {}", view.os, view.os_version)
                            .trim()
                            .to_string(),
                        pct(stats.map(|s| s.cpu_percent)),
                        pct(stats.map(|s| s.memory_percent)),
                        pct(stats.map(|s| s.disk_percent)),
                        stats
                            .map(|s| format!("{:.2}", s.load[0]))
                            .unwrap_or_else(|| "-".into()),
                        output::ago(d.last_seen_ms),
                        view.labels
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(","),
                    ]);
                }
                if drones.is_empty() {
                    eprintln!(
                        "No drones yet. Create a join token with `ultronctl drone token create`."
                    );
                } else {
                    println!("{table}");
                }
            }
            Ok(0)
        }
        Command::Drone(DroneCommand::Show { id, output }) => {
            let drone = client
                .get_drone(v1::GetDroneRequest { id })
                .await
                .map_err(call_failed)?
                .into_inner();
            let view = DroneView::from(&drone);
            if output == Format::Json {
                print_json(&view)?;
            } else {
                let mut table = output::table(&["FIELD", "VALUE"]);
                let rows: Vec<(&str, String)> = vec![
                    ("id", view.id.clone()),
                    (
                        "status",
                        if view.online {
                            "online".into()
                        } else {
                            "offline".into()
                        },
                    ),
                    ("hostname", view.hostname.clone()),
                    ("os", format!("{} {}", view.os, view.os_version)),
                    ("kernel", view.kernel.clone()),
                    ("arch", view.arch.clone()),
                    ("cpus", view.cpus.to_string()),
                    (
                        "memory",
                        format!("{:.1} GiB", view.memory_bytes as f64 / (1u64 << 30) as f64),
                    ),
                    (
                        "labels",
                        view.labels
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    ("agent", view.agent_version.clone()),
                    ("last seen", output::ago(drone.last_seen_ms)),
                ];
                for (field, value) in rows {
                    table.add_row(vec![field.to_string(), value]);
                }
                if let Some(stats) = &view.stats {
                    table.add_row(vec![
                        "cpu".to_string(),
                        format!("{:.1}%", stats.cpu_percent),
                    ]);
                    table.add_row(vec![
                        "memory used".to_string(),
                        format!("{:.1}%", stats.memory_percent),
                    ]);
                    table.add_row(vec![
                        "disk used (/)".to_string(),
                        format!("{:.1}%", stats.disk_percent),
                    ]);
                    table.add_row(vec![
                        "load".to_string(),
                        format!(
                            "{:.2} {:.2} {:.2}",
                            stats.load[0], stats.load[1], stats.load[2]
                        ),
                    ]);
                }
                println!("{table}");
            }
            Ok(0)
        }
        Command::Drone(DroneCommand::Token(TokenCommand::Create {
            labels,
            ttl,
            output,
        })) => {
            let response = client
                .create_join_token(v1::CreateJoinTokenRequest {
                    labels: labels.into_iter().collect(),
                    ttl_ms: ttl.map_or(0, |t| t.as_millis() as u64),
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            if output == Format::Json {
                print_json(&serde_json::json!({
                    "token": response.token,
                    "token_id": response.token_id,
                    "expires_at": output::time(response.expires_at_ms),
                    "ca_fingerprint": response.ca_fingerprint,
                }))?;
            } else {
                println!("{}", response.token);
                eprintln!(
                    "One-time token {}, valid until {}. On the new host run:\n  ultron8-drone join --hive {} --token {}",
                    response.token_id,
                    output::time(response.expires_at_ms)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default(),
                    config.hive,
                    response.token
                );
            }
            Ok(0)
        }
        Command::Job(JobCommand::List { limit, output }) => {
            let jobs = client
                .list_jobs(v1::ListJobsRequest { limit })
                .await
                .map_err(call_failed)?
                .into_inner()
                .jobs;
            if output == Format::Json {
                let views: Vec<_> = jobs
                    .iter()
                    .map(|j| {
                        serde_json::json!({
                            "id": j.id, "target": j.target, "requester": j.requester, "command": j.command,
                            "created_at": output::time(j.created_at_ms),
                            "executions": j.executions, "succeeded": j.succeeded, "failed": j.failed, "pending": j.pending,
                        })
                    })
                    .collect();
                print_json(&views)?;
            } else {
                let mut table = output::table(&[
                    "JOB",
                    "CREATED",
                    "REQUESTER",
                    "TARGET",
                    "HOSTS",
                    "OK",
                    "FAILED",
                    "PENDING",
                    "COMMAND",
                ]);
                for j in &jobs {
                    table.add_row(vec![
                        j.id.clone(),
                        output::ago(j.created_at_ms),
                        j.requester.clone(),
                        j.target.clone(),
                        j.executions.to_string(),
                        j.succeeded.to_string(),
                        j.failed.to_string(),
                        j.pending.to_string(),
                        j.command.clone(),
                    ]);
                }
                println!("{table}");
            }
            Ok(0)
        }
        Command::Job(JobCommand::Get { id, output }) => {
            let job = client
                .get_job(v1::GetJobRequest { id })
                .await
                .map_err(call_failed)?
                .into_inner();
            if output == Format::Json {
                print_json(&JobView::from(&job))?;
            } else {
                let view = JobView::from(&job);
                println!(
                    "job {}  target {:?}  by {}  command: {}",
                    view.id, view.target, view.requester, view.command
                );
                for e in &job.executions {
                    println!("--- execution {}", e.id);
                    print_execution_result(e);
                }
                for drone in &job.offline_drones {
                    println!("--- {drone}: offline when the job was submitted; not run");
                }
            }
            Ok(0)
        }
        Command::Job(JobCommand::Logs { id, follow, drone }) => {
            crate::follow::logs(&mut client, id, drone, follow).await
        }
        Command::Job(JobCommand::Cancel { id, drone, output }) => {
            let answer = client
                .cancel_job(v1::CancelJobRequest {
                    job_id: id.clone(),
                    drone_id: drone.unwrap_or_default(),
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            if output == Format::Json {
                let executions: Vec<serde_json::Value> = answer
                    .executions
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "execution_id": e.execution_id,
                            "drone": e.drone_id,
                            "outcome": cancel_outcome(e.outcome),
                        })
                    })
                    .collect();
                print_json(&executions)?;
            } else {
                for e in &answer.executions {
                    println!("{}  {}", e.drone_id, cancel_outcome(e.outcome));
                }
                eprintln!("{}", crate::follow::cancel_summary(&answer));
                eprintln!("follow it to its end with: ultronctl job logs -f {id}");
            }
            Ok(0)
        }
        Command::Exec(ExecCommand::Get { id, output }) => {
            let execution = client
                .get_execution(v1::GetExecutionRequest { id })
                .await
                .map_err(call_failed)?
                .into_inner();
            if output == Format::Json {
                print_json(&ExecutionView::from(&execution))?;
            } else {
                println!("execution {}  job {}", execution.id, execution.job_id);
                print_execution_result(&execution);
            }
            Ok(0)
        }
    }
}

async fn run_command(client: &mut Client, args: RunArgs) -> anyhow::Result<u8> {
    let job = match (args.action.split_first(), args.command.is_empty()) {
        (Some(_), false) => anyhow::bail!(
            "give either a pack action with key=value parameters, or a command after --, not both"
        ),
        (None, true) => anyhow::bail!(
            "nothing to run: give a command after -- (ultronctl run -t '*' -- uptime) or a pack action (ultronctl run linux.disk_usage -t web-1)"
        ),
        (Some((action, params)), true) => {
            let parameters = crate::automation::parse_parameters(params)?;
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
        (None, false) => submit_command(client, &args).await?,
    };
    follow_job(client, job, &args).await
}

async fn submit_command(client: &mut Client, args: &RunArgs) -> anyhow::Result<v1::Job> {
    let target = args.target.clone().ok_or_else(|| {
        anyhow::anyhow!("a command needs a target: -t '*', -t web-1, -t 'label:role=web'")
    })?;
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
async fn follow_job(client: &mut Client, job: v1::Job, args: &RunArgs) -> anyhow::Result<u8> {
    if args.run_async {
        if args.output == Format::Json {
            print_json(&JobView::from(&job))?;
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
            json: args.output == Format::Json,
            online_only: args.online_only,
            cancel_on_interrupt: args.cancel_on_interrupt,
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
