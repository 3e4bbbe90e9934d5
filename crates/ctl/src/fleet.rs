//! `ultronctl source`, `target` and `fleet`: discovery sources, the
//! inventory of instances they feed, and the fleet views over it
//! (summary, per-service figures, health against a minimum, and `top`,
//! in [`crate::top`]).

use std::time::Duration;

use clap::Subcommand;
use serde::Serialize;
use ultron8_proto::v1;

use crate::cli::usage;
use crate::client::{Client, call_failed};
use crate::output::{self, Cell, Output, Table};

/// Instances asked for per call: a page well inside gRPC's 4 MiB message
/// limit, however large the fleet.
pub const PAGE_SIZE: u32 = 1000;

#[derive(Subcommand)]
pub enum SourceCommand {
    /// Add a discovery source. Admins only; audited. It is refreshed at
    /// once, then every --interval, by one hive replica at a time.
    ///
    ///   ultronctl source add cloud --http http://127.0.0.1:9001
    ///   ultronctl source add cloud --http http://api:9001 --concurrency 32 --timeout 2s
    ///   ultronctl source add racks --file /etc/ultron8/targets.txt
    ///   ultronctl source add core --static db-1,db-2,127.0.0.1
    ///   ultronctl source add hosts --drones '*'
    ///   ultronctl source add web --drones 'label:role=web' --service-label app
    ///
    /// --http: GET URL/servers lists instance ids (a JSON array of
    /// strings), GET URL/ID reports one: {"cpu":"61%","service":"UserService",
    /// "memory":"4%"}. An instance that fails, is slow or answers malformed
    /// is shown unknown with the error; the others still update.
    ///
    /// --file: a file on the hive's host, read again when it changes: one
    /// instance per line, `name [address] [key=value ...]` (the label
    /// `service` is its service; # starts a comment), or a JSON list of
    /// {"name", "address", "service", "labels"}. See docs/fleet.md.
    #[command(verbatim_doc_comment)]
    Add {
        /// The source's name: a letter, then letters, digits, -, _ or .
        name: String,
        /// A cloud API's base URL
        #[arg(long, value_name = "URL", group = "kind")]
        http: Option<String>,
        /// A targets file on the hive's host (absolute path)
        #[arg(long, value_name = "PATH", group = "kind")]
        file: Option<String>,
        /// A fixed list of instances, comma-separated
        #[arg(
            long = "static",
            value_name = "A,B,C",
            value_delimiter = ',',
            group = "kind"
        )]
        static_list: Option<Vec<String>>,
        /// The drones a target expression selects, with their heartbeat figures
        #[arg(long, value_name = "TARGET", group = "kind")]
        drones: Option<String>,
        /// With --drones: the label that names a drone's service [default: service]
        #[arg(long, value_name = "LABEL", requires = "drones")]
        service_label: Option<String>,
        /// With --http: instance requests in flight at once [default: 16]
        #[arg(long, value_name = "N", requires = "http")]
        concurrency: Option<u32>,
        /// With --http: deadline of each request [default: 5s]
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", requires = "http")]
        timeout: Option<Duration>,
        /// How often it is refreshed (at least 1s) [default: 30s]
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
        interval: Option<Duration>,
    },
    /// The sources: kind, where they look, when last refreshed and how
    /// many instances they listed.
    ///
    ///   ultronctl source list
    ///   ultronctl source list -o json
    #[command(verbatim_doc_comment)]
    List,
    /// Remove a source and the instances it listed. Admins only; audited.
    ///
    ///   ultronctl source remove cloud
    #[command(verbatim_doc_comment)]
    Remove { name: String },
}

#[derive(Subcommand)]
pub enum TargetCommand {
    /// The instances the sources listed.
    ///
    ///   ultronctl target list
    ///   ultronctl target list --source cloud --service UserService -o csv
    #[command(verbatim_doc_comment)]
    List {
        #[command(flatten)]
        filter: InstanceFilter,
    },
}

#[derive(Subcommand)]
pub enum FleetCommand {
    /// Every instance: name, address, service, CPU, memory, status. Status
    /// is unhealthy at or above the hive's thresholds (80 % by default),
    /// unknown when its figures could not be had (the error says why).
    ///
    ///   ultronctl fleet summary
    ///   ultronctl fleet summary --sort cpu --desc --status unhealthy
    ///   ultronctl fleet summary --service UserService -o csv > users.csv
    #[command(verbatim_doc_comment)]
    Summary {
        #[command(flatten)]
        filter: InstanceFilter,
        /// Sort by name, address, service, cpu, memory or status
        #[arg(long, default_value = "name", value_parser = ["name", "address", "service", "cpu", "memory", "status"])]
        sort: String,
        /// Sort in descending order
        #[arg(long)]
        desc: bool,
    },
    /// Per service: instances, how many are healthy, average CPU and
    /// memory (over the instances that reported figures), and its status:
    /// healthy (every instance), degraded (some) or down (none).
    ///
    ///   ultronctl fleet services
    ///   ultronctl fleet services --service AuthService -o json
    #[command(verbatim_doc_comment)]
    Services {
        /// Only this service
        #[arg(long)]
        service: Option<String>,
        /// Only instances of this source
        #[arg(long)]
        source: Option<String>,
    },
    /// The services with fewer than N healthy instances. Exits 1 when any
    /// is flagged, 0 when none is: made for cron and CI.
    ///
    ///   ultronctl fleet health --min-healthy 2
    ///   ultronctl fleet health --min-healthy 8 -o json || page-someone
    #[command(verbatim_doc_comment)]
    Health {
        /// Least number of healthy instances a service needs
        #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
        min_healthy: u32,
    },
    /// A live view of one service's instances, full screen: CPU and memory
    /// with a sparkline of their recent history, busiest first, unhealthy
    /// ones highlighted. Refreshes every --interval until q or Ctrl-C.
    ///
    ///   ultronctl fleet top --service UserService
    ///   ultronctl fleet top --service UserService --interval 5s --sort memory
    #[command(verbatim_doc_comment)]
    Top {
        /// The service to watch
        #[arg(long)]
        service: String,
        /// How often to refresh
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
        interval: Duration,
        /// Sort by cpu, memory, name or status (busiest first for figures)
        #[arg(long, default_value = "cpu", value_parser = ["cpu", "memory", "name", "status"])]
        sort: String,
    },
}

/// Which instances a listing shows.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct InstanceFilter {
    /// Only this service
    #[arg(long)]
    pub service: Option<String>,
    /// Only instances of this source
    #[arg(long)]
    pub source: Option<String>,
    /// Only healthy, unhealthy or unknown instances
    #[arg(long, value_parser = ["healthy", "unhealthy", "unknown"])]
    pub status: Option<String>,
}

/// An instance as `-o json|yaml|csv` show it.
#[derive(Serialize)]
pub struct InstanceView {
    pub name: String,
    pub address: String,
    pub service: String,
    pub cpu: Option<f64>,
    pub memory: Option<f64>,
    pub status: String,
    pub error: Option<String>,
    pub source: String,
    pub last_seen: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<&v1::FleetInstance> for InstanceView {
    fn from(i: &v1::FleetInstance) -> Self {
        InstanceView {
            name: i.name.clone(),
            address: i.address.clone(),
            service: i.service.clone(),
            cpu: i.cpu,
            memory: i.memory,
            status: i.status.clone(),
            error: (!i.error.is_empty()).then(|| i.error.clone()),
            source: i.source.clone(),
            last_seen: output::time(i.last_seen_ms),
        }
    }
}

/// A service as `-o json|yaml|csv` show it.
#[derive(Serialize)]
pub struct ServiceView {
    pub service: String,
    pub instances: u32,
    pub healthy: u32,
    pub unhealthy: u32,
    pub unknown: u32,
    pub avg_cpu: Option<f64>,
    pub avg_memory: Option<f64>,
    pub status: String,
    pub not_healthy: Vec<String>,
}

impl From<&v1::FleetServiceSummary> for ServiceView {
    fn from(s: &v1::FleetServiceSummary) -> Self {
        ServiceView {
            service: s.service.clone(),
            instances: s.instances,
            healthy: s.healthy,
            unhealthy: s.unhealthy,
            unknown: s.unknown,
            avg_cpu: s.avg_cpu,
            avg_memory: s.avg_memory,
            status: s.status.clone(),
            not_healthy: s.not_healthy.clone(),
        }
    }
}

/// A source as `-o json|yaml|csv` show it.
#[derive(Serialize)]
pub struct SourceView {
    pub name: String,
    pub kind: String,
    pub location: String,
    pub interval: String,
    pub origin: String,
    pub instances: u64,
    pub last_refresh: Option<chrono::DateTime<chrono::Utc>>,
    pub last_error: Option<String>,
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    pub created_by: String,
}

impl From<&v1::SourceInfo> for SourceView {
    fn from(s: &v1::SourceInfo) -> Self {
        SourceView {
            name: s.name.clone(),
            kind: s.kind.clone(),
            location: s.location.clone(),
            interval: humantime::format_duration(Duration::from_millis(s.interval_ms)).to_string(),
            origin: s.origin.clone(),
            instances: s.instances,
            last_refresh: output::time(s.last_refresh_at_ms),
            last_error: (!s.last_error.is_empty()).then(|| s.last_error.clone()),
            created_at: output::time(s.created_at_ms),
            created_by: s.created_by.clone(),
        }
    }
}

/// A percentage for a table: `61.0%`, or `-` when unknown.
pub fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.1}%"))
}

/// "-" for an empty text.
fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

pub async fn source(
    client: &mut Client,
    command: SourceCommand,
    out: &Output,
) -> anyhow::Result<u8> {
    match command {
        SourceCommand::Add {
            name,
            http,
            file,
            static_list,
            drones,
            service_label,
            concurrency,
            timeout,
            interval,
        } => {
            use v1::add_source_request::Spec;
            let spec = match (http, file, static_list, drones) {
                (Some(url), None, None, None) => Spec::Http(v1::HttpSource {
                    url,
                    concurrency: concurrency.unwrap_or(0),
                    timeout_ms: timeout.map_or(0, |t| t.as_millis().max(1) as u64),
                }),
                (None, Some(path), None, None) => {
                    // The hive reads it: a relative path would be the hive's.
                    let path = if path.starts_with('/') {
                        path
                    } else {
                        return Err(usage(format!(
                            "--file {path}: give the absolute path of the file on the hive's host"
                        )));
                    };
                    Spec::File(path)
                }
                (None, None, Some(targets), None) => Spec::StaticList(v1::StaticSource {
                    targets: targets
                        .into_iter()
                        .map(|t| t.trim().to_string())
                        .filter(|t| !t.is_empty())
                        .collect(),
                }),
                (None, None, None, Some(target)) => Spec::Drones(v1::DronesSource {
                    target,
                    service_label: service_label.unwrap_or_default(),
                }),
                _ => {
                    return Err(usage(
                        "give one of --http URL, --file PATH, --static A,B,C or --drones TARGET",
                    ));
                }
            };
            let source = client
                .add_source(v1::AddSourceRequest {
                    name,
                    interval_ms: interval.map_or(0, |i| i.as_millis() as u64),
                    spec: Some(spec),
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            if out.is_data() {
                out.data(&SourceView::from(&source))?;
            } else {
                println!(
                    "source {} added: {} {}, every {}",
                    source.name,
                    source.kind,
                    source.location,
                    humantime::format_duration(Duration::from_millis(source.interval_ms))
                );
            }
            Ok(0)
        }
        SourceCommand::List => {
            let sources = client
                .list_sources(v1::ListSourcesRequest {})
                .await
                .map_err(call_failed)?
                .into_inner()
                .sources;
            if out.is_data() {
                out.data(&sources.iter().map(SourceView::from).collect::<Vec<_>>())?;
                return Ok(0);
            }
            if sources.is_empty() {
                eprintln!(
                    "No sources yet. Add one with `ultronctl source add NAME --http URL` (or --file, --static, --drones)."
                );
                return Ok(0);
            }
            let mut table = Table::new(&[
                "NAME",
                "KIND",
                "LOCATION",
                "EVERY",
                "INSTANCES",
                "REFRESHED",
                "ERROR",
                "ORIGIN",
                "CREATED BY",
            ])
            .wide_only(&["ORIGIN", "CREATED BY"]);
            for s in &sources {
                table.row(vec![
                    Cell::text(&s.name),
                    Cell::text(&s.kind),
                    Cell::text(&s.location),
                    Cell::text(
                        humantime::format_duration(Duration::from_millis(s.interval_ms))
                            .to_string(),
                    ),
                    Cell::text(s.instances.to_string()),
                    Cell::text(if s.last_refresh_at_ms == 0 {
                        "never".to_string()
                    } else {
                        output::ago(s.last_refresh_at_ms)
                    }),
                    Cell::text(or_dash(&s.last_error)),
                    Cell::text(&s.origin),
                    Cell::text(&s.created_by),
                ]);
            }
            out.table(&table);
            Ok(0)
        }
        SourceCommand::Remove { name } => {
            client
                .remove_source(v1::RemoveSourceRequest { name: name.clone() })
                .await
                .map_err(call_failed)?;
            if out.is_data() {
                out.data(&serde_json::json!({ "removed": name }))?;
            } else {
                println!("source {name} removed, with its instances");
            }
            Ok(0)
        }
    }
}

/// Every instance the request selects, a page at a time.
pub async fn all_instances(
    client: &mut Client,
    mut request: v1::FleetSummaryRequest,
) -> anyhow::Result<Vec<v1::FleetInstance>> {
    request.limit = PAGE_SIZE;
    let mut instances = Vec::new();
    loop {
        request.offset = u32::try_from(instances.len()).unwrap_or(u32::MAX);
        let page = client
            .fleet_summary(request.clone())
            .await
            .map_err(call_failed)?
            .into_inner();
        let got = page.instances.len();
        instances.extend(page.instances);
        if got == 0 || instances.len() >= page.total as usize {
            return Ok(instances);
        }
    }
}

fn summary_request(
    filter: InstanceFilter,
    sort: &str,
    descending: bool,
) -> v1::FleetSummaryRequest {
    v1::FleetSummaryRequest {
        source: filter.source.unwrap_or_default(),
        service: filter.service.unwrap_or_default(),
        status: filter.status.unwrap_or_default(),
        sort: sort.to_string(),
        descending,
        ..Default::default()
    }
}

pub async fn target(
    client: &mut Client,
    command: TargetCommand,
    out: &Output,
) -> anyhow::Result<u8> {
    match command {
        TargetCommand::List { filter } => {
            let instances = all_instances(client, summary_request(filter, "name", false)).await?;
            print_instances(&instances, out, true)
        }
    }
}

fn print_instances(
    instances: &[v1::FleetInstance],
    out: &Output,
    with_source: bool,
) -> anyhow::Result<u8> {
    if out.is_data() {
        out.data(&instances.iter().map(InstanceView::from).collect::<Vec<_>>())?;
        return Ok(0);
    }
    if instances.is_empty() {
        eprintln!(
            "No instances. Sources list them: see `ultronctl source list` and `ultronctl source add`."
        );
        return Ok(0);
    }
    let header = [
        "NAME",
        "ADDRESS",
        "SERVICE",
        "CPU",
        "MEMORY",
        "STATUS",
        "ERROR",
        "SOURCE",
        "LAST SEEN",
    ];
    let mut table = Table::new(&header).wide_only(if with_source {
        &["LAST SEEN"][..]
    } else {
        &["SOURCE", "LAST SEEN"][..]
    });
    for i in instances {
        let cells = vec![
            Cell::text(&i.name),
            Cell::text(or_dash(&i.address)),
            Cell::text(or_dash(&i.service)),
            Cell::text(percent(i.cpu)),
            Cell::text(percent(i.memory)),
            Cell::state(&i.status),
            Cell::text(or_dash(&i.error)),
            Cell::text(&i.source),
            Cell::text(if i.last_seen_ms == 0 {
                "never".to_string()
            } else {
                output::ago(i.last_seen_ms)
            }),
        ];
        table.row(cells);
    }
    out.table(&table);
    Ok(0)
}

pub async fn fleet(client: &mut Client, command: FleetCommand, out: &Output) -> anyhow::Result<u8> {
    match command {
        FleetCommand::Summary { filter, sort, desc } => {
            let instances = all_instances(client, summary_request(filter, &sort, desc)).await?;
            let code = print_instances(&instances, out, false)?;
            if !out.is_data() && !instances.is_empty() {
                let healthy = instances.iter().filter(|i| i.status == "healthy").count();
                eprintln!("{} instances, {healthy} healthy", instances.len());
            }
            Ok(code)
        }
        FleetCommand::Services { service, source } => {
            let services = client
                .fleet_services(v1::FleetServicesRequest {
                    source: source.unwrap_or_default(),
                    service: service.unwrap_or_default(),
                })
                .await
                .map_err(call_failed)?
                .into_inner()
                .services;
            if out.is_data() {
                out.data(&services.iter().map(ServiceView::from).collect::<Vec<_>>())?;
                return Ok(0);
            }
            if services.is_empty() {
                eprintln!("No instances, so no services. See `ultronctl source list`.");
                return Ok(0);
            }
            let mut table = Table::new(&[
                "SERVICE",
                "INSTANCES",
                "HEALTHY",
                "UNHEALTHY",
                "UNKNOWN",
                "AVG CPU",
                "AVG MEMORY",
                "STATUS",
            ]);
            for s in &services {
                table.row(vec![
                    Cell::text(or_dash(&s.service)),
                    Cell::text(s.instances.to_string()),
                    Cell::text(s.healthy.to_string()),
                    Cell::text(s.unhealthy.to_string()),
                    Cell::text(s.unknown.to_string()),
                    Cell::text(percent(s.avg_cpu)),
                    Cell::text(percent(s.avg_memory)),
                    Cell::state(&s.status),
                ]);
            }
            out.table(&table);
            Ok(0)
        }
        FleetCommand::Health { min_healthy } => {
            let health = client
                .fleet_health(v1::FleetHealthRequest { min_healthy })
                .await
                .map_err(call_failed)?
                .into_inner();
            let flagged = |s: &v1::FleetServiceSummary| health.flagged.contains(&s.service);
            if out.is_data() {
                #[derive(Serialize)]
                struct HealthView {
                    service: String,
                    instances: u32,
                    healthy: u32,
                    min_healthy: u32,
                    flagged: bool,
                }
                let views: Vec<HealthView> = health
                    .services
                    .iter()
                    .map(|s| HealthView {
                        service: s.service.clone(),
                        instances: s.instances,
                        healthy: s.healthy,
                        min_healthy,
                        flagged: flagged(s),
                    })
                    .collect();
                out.data(&views)?;
            } else if health.services.is_empty() {
                eprintln!("No instances, so no services. See `ultronctl source list`.");
            } else {
                let mut table = Table::new(&["SERVICE", "HEALTHY", "INSTANCES", "STATUS"]);
                for s in &health.services {
                    table.row(vec![
                        Cell::text(or_dash(&s.service)),
                        Cell::text(s.healthy.to_string()),
                        Cell::text(s.instances.to_string()),
                        if flagged(s) {
                            Cell::state("unhealthy")
                        } else {
                            Cell::state("healthy")
                        },
                    ]);
                }
                out.table(&table);
                match health.flagged.len() {
                    0 => eprintln!("every service has at least {min_healthy} healthy instances"),
                    n => eprintln!(
                        "{n} of {} services have fewer than {min_healthy} healthy instances",
                        health.services.len()
                    ),
                }
            }
            Ok(if health.flagged.is_empty() { 0 } else { 1 })
        }
        FleetCommand::Top {
            service,
            interval,
            sort,
        } => crate::top::top(client, &service, interval, &sort).await,
    }
}
