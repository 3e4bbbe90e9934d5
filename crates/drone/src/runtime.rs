//! `ultron8-drone run`: the drone's life after joining.
//!
//! 1. Report as `lost` every execution the journal shows begun but never
//!    finished: the drone died while running it, and re-running it could
//!    do harm twice.
//! 2. Register with the hive (facts in, broker address and signing key out),
//!    retrying with jittered backoff.
//! 3. In parallel: heartbeat with host stats; deliver spooled results until
//!    the hive acknowledges them; consume the drone's queue and handle each
//!    request.
//!
//! Handling a request: verify the hive's signature, the addressee and the
//! expiry; journal the execution id (a second delivery of the same id is
//! acknowledged and dropped); acknowledge the message; ask the drone's
//! `[policy]`, which may refuse it; run, as the policy's user; spool the
//! result (or the refusal); mark the journal entry finished; deliver.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use futures::StreamExt;
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{Instrument, debug, error, info, info_span, warn};
use ultron8_broker::{ActionConsumer, Delivery};
use ultron8_core::echo::quote;
use ultron8_core::secrets::OutputMasker;
use ultron8_core::{CommandSpec, ExecutionStatus, Program};
use ultron8_pki::RequestVerifier;
use ultron8_proto::convert::{command_from_wire, facts_to_wire, stats_to_wire, status_to_wire};
use ultron8_proto::v1::{self, drone_service_client::DroneServiceClient};

use crate::backoff::Backoff;
use crate::checks::Checks;
use crate::config::{DroneDir, DroneFile};
use crate::executor::{self, ExecSpec, StreamKind};
use crate::facts::{StatsSampler, collect_facts};
use crate::journal::{Begin, Journal, ProcessRecord};
use crate::policy::{Policy, RunAs};
use crate::spool::{Spool, SpooledReport};

/// Supplies the consumer for the broker URL the hive hands out. The
/// default builds an AMQP consumer; the all-in-one dev hive injects its
/// in-process broker.
pub type ConsumerFactory =
    Arc<dyn Fn(&str) -> anyhow::Result<Arc<dyn ActionConsumer>> + Send + Sync>;

pub fn amqp_consumer_factory() -> ConsumerFactory {
    Arc::new(|url: &str| {
        if url.starts_with("amqp://") || url.starts_with("amqps://") {
            Ok(Arc::new(ultron8_broker::amqp::AmqpConsumer::new(url)) as Arc<dyn ActionConsumer>)
        } else if url.starts_with("inproc:") {
            anyhow::bail!(
                "the hive runs an embedded in-process broker (`ultron8-hive dev`), which only its built-in drone can use; \
                 remote drones need a hive started with `ultron8-hive serve` and RabbitMQ"
            )
        } else {
            anyhow::bail!("the hive handed out a broker URL this drone cannot use: {url}")
        }
    })
}

/// How long finished executions stay in the journal.
const JOURNAL_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

struct Drone {
    file: DroneFile,
    client: DroneServiceClient<Channel>,
    journal: Journal,
    spool: Spool,
    /// Wakes the spool deliverer when a new result is spooled.
    spooled: Notify,
    /// Pack scripts, by SHA-256.
    scripts_dir: std::path::PathBuf,
    /// Executions running now, each with the token that cancels it.
    running: std::sync::Mutex<std::collections::BTreeMap<String, CancellationToken>>,
    /// One per execution allowed to run at once (`max_concurrent`).
    slots: Arc<Semaphore>,
    /// Requests taken and not yet spooled (or refused).
    in_flight: std::sync::atomic::AtomicUsize,
    /// Set when the drone is stopping: commands canceled then were not
    /// canceled by an operator.
    stopping: std::sync::atomic::AtomicBool,
    /// What this host's owner lets run (`[policy]` in drone.toml).
    policy: Policy,
    /// When the hive issued this drone's certificate (Unix ms, the hive's
    /// clock). Requests signed before it were meant for an earlier holder
    /// of this drone's name.
    enrolled_at_ms: i64,
    /// The checks the hive signed for this drone.
    checks: Arc<Checks>,
}

/// How long a stopping drone waits, beyond the kill grace, for its
/// canceled commands' results to reach the spool.
const STOP_SPOOL_DEADLINE: Duration = Duration::from_secs(5);

/// Deliveries beyond `max_concurrent` the broker may hand over at once, so
/// that a cancel reaches a drone whose slots are all taken by the commands
/// it is meant to stop.
const PREFETCH_HEADROOM: u16 = 16;

/// How long the drone waits for the hive to acknowledge a start before it
/// runs the command anyway: a hive that hangs must not make a command run
/// late (its expiry is checked again after the wait).
const START_REPORT_DEADLINE: Duration = Duration::from_secs(5);

/// How long the hive may take to hand over the secrets a command needs.
/// Past it the execution fails: a command that needs a secret cannot run
/// without it.
const SECRETS_DEADLINE: Duration = Duration::from_secs(10);

struct Registration {
    broker_url: String,
    verifier: RequestVerifier,
    heartbeat_interval: Duration,
}

pub async fn run(
    dir: DroneDir,
    consumers: ConsumerFactory,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let file = dir.load()?;
    // Before anything else: a drone whose policy cannot be enforced must
    // not take requests.
    let policy = Policy::load(&file, &dir.config())?;
    info!(drone_id = %file.id, policy = %policy.describe(), "policy in force");
    let read = |path: std::path::PathBuf| {
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let ca = first_cert(&read(dir.ca())?)?;
    let cert = first_cert(&read(dir.cert())?)?;
    let enrolled_at_ms = ultron8_pki::client_certificate_issued_at(&cert)
        .with_context(|| format!("cannot read the certificate {}", dir.cert().display()))?
        .timestamp_millis();
    let key = read(dir.key())?;
    let tls = ultron8_transport::client_config(&ca, &cert, &key)?;
    let channel = ultron8_transport::connect_lazy(&file.hive, &file.server_name, tls)?;
    let client = DroneServiceClient::new(channel);
    // Checks run from the set last verified, before the hive answers and
    // whether it ever does.
    let checks = Checks::open(
        &dir.checks(),
        &file.id,
        client.clone(),
        policy.clone(),
        dir.scripts(),
        file.settings.kill_grace,
        shutdown.child_token(),
    )?;
    let drone = Arc::new(Drone {
        client,
        journal: Journal::open(&dir.journal())
            .with_context(|| format!("cannot open the journal in {}", dir.journal().display()))?,
        spool: Spool::open(&dir.spool())
            .with_context(|| format!("cannot open the spool in {}", dir.spool().display()))?,
        spooled: Notify::new(),
        scripts_dir: dir.scripts(),
        running: Default::default(),
        slots: Arc::new(Semaphore::new(file.settings.max_concurrent.max(1) as usize)),
        in_flight: Default::default(),
        stopping: Default::default(),
        policy,
        enrolled_at_ms,
        checks,
        file,
    });
    let span = info_span!("drone", drone_id = %drone.file.id);
    async move {
        drone.checks.start();
        let deliver_transitions = tokio::spawn(drone.checks.clone().deliver_loop());
        drone.report_interrupted_executions().await?;
        // Forgetting an id is safe only once no copy of its request can
        // still arrive: far beyond any sane TTL and the broker's redelivery.
        match drone.journal.prune_finished(JOURNAL_RETENTION) {
            Ok(0) => {}
            Ok(pruned) => info!(pruned, "pruned old journal entries"),
            Err(e) => warn!(error = %e, "cannot prune the journal"),
        }
        let registration = tokio::select! {
            registration = drone.register_until_accepted() => registration,
            _ = shutdown.cancelled() => {
                let _ = deliver_transitions.await;
                return Ok(());
            }
        };
        let consumer = consumers(&registration.broker_url)?;
        let registration = Arc::new(registration);

        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(drone.checks.clone().refresh_loop());
        tasks.spawn(
            drone
                .clone()
                .heartbeat_loop(registration.heartbeat_interval, shutdown.clone()),
        );
        tasks.spawn(drone.clone().deliver_spool_loop(shutdown.clone()));
        tasks.spawn(
            drone
                .clone()
                .consume_loop(consumer, registration.clone(), shutdown.clone()),
        );
        shutdown.cancelled().await;
        drone.stop_in_flight().await;
        tasks.shutdown().await;
        let _ = deliver_transitions.await;
        Ok(())
    }
    .instrument(span)
    .await
}

fn first_cert(pem: &str) -> anyhow::Result<Vec<u8>> {
    ultron8_pki::pem_to_der_certs(pem)?
        .into_iter()
        .next()
        .context("PEM file holds no certificate")
}

impl Drone {
    /// Stops the commands still running (SIGTERM, then SIGKILL to each
    /// process group), waits for their results to reach the spool, and
    /// tries once to deliver them; undelivered ones go at the next start.
    async fn stop_in_flight(&self) {
        use std::sync::atomic::Ordering;
        self.stopping.store(true, Ordering::SeqCst);
        let tokens: Vec<CancellationToken> = self
            .running
            .lock()
            .map(|running| running.values().cloned().collect())
            .unwrap_or_default();
        if tokens.is_empty() && self.in_flight.load(Ordering::SeqCst) == 0 {
            info!("stopping");
            return;
        }
        info!(
            running = tokens.len(),
            "stopping: running commands get SIGTERM, then SIGKILL; their results are spooled as canceled"
        );
        for token in tokens {
            token.cancel();
        }
        let deadline =
            tokio::time::Instant::now() + self.file.settings.kill_grace + STOP_SPOOL_DEADLINE;
        while self.in_flight.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match tokio::time::timeout(Duration::from_secs(2), self.deliver_spool()).await {
            Ok(Ok(())) => info!("results delivered"),
            _ => info!("results stay spooled until the next start"),
        }
    }

    async fn report_interrupted_executions(&self) -> anyhow::Result<()> {
        let interrupted = self
            .journal
            .unfinished()
            .context("cannot read the journal")?;
        for entry in interrupted {
            warn!(execution_id = %entry.execution_id, job_id = %entry.job_id,
                "execution was interrupted by a drone restart; reporting it lost instead of running it again");
            let mut error =
                "the drone stopped while the command was running; it was not run again".to_string();
            if let Some(process) = entry.process
                && let Some(note) = self.stop_leftover(process).await
            {
                error = format!("{error}; {note}");
            }
            let now = Utc::now().timestamp_millis();
            let report = SpooledReport::without_output(
                &entry.execution_id,
                &entry.job_id,
                ExecutionStatus::Lost,
                error,
                0,
                now,
            );
            self.spool
                .put(&report)
                .context("cannot spool a lost report")?;
            self.journal
                .finish(&entry.execution_id)
                .context("cannot update the journal")?;
        }
        Ok(())
    }

    /// Stops the process group of a command the drone died running: with
    /// its drone gone nobody enforces its timeout. Only a group whose leader
    /// is still the very process recorded (same pid, same start time) is
    /// signalled, never a reused pid. Says what it did, if anything.
    async fn stop_leftover(&self, process: ProcessRecord) -> Option<String> {
        use nix::sys::signal::{Signal, killpg};
        let same = || {
            ultron8_host::process::process_start_ticks(process.pgid)
                .is_ok_and(|ticks| ticks == process.start_ticks)
        };
        if !same() {
            return None;
        }
        let pgid = nix::unistd::Pid::from_raw(process.pgid);
        warn!(
            pgid = process.pgid,
            "stopping the leftover process group of an interrupted execution"
        );
        let _ = killpg(pgid, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + self.file.settings.kill_grace;
        while same() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let survived = same();
        let _ = killpg(pgid, Signal::SIGKILL);
        Some(if survived {
            format!(
                "its leftover process group {} got SIGTERM, then SIGKILL",
                process.pgid
            )
        } else {
            format!("its leftover process group {} got SIGTERM", process.pgid)
        })
    }

    async fn register_until_accepted(&self) -> Registration {
        let mut backoff = Backoff::default();
        loop {
            match self.register().await {
                Ok(registration) => {
                    info!(hive = %self.file.hive, "registered with the hive");
                    return registration;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    warn!(hive = %self.file.hive, error = %e, retry_in = ?delay, "cannot register with the hive");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn register(&self) -> anyhow::Result<Registration> {
        let facts = collect_facts(self.file.labels.clone());
        let response = self
            .client
            .clone()
            .register(v1::RegisterRequest {
                facts: Some(facts_to_wire(&facts)),
            })
            .await
            .map_err(describe_status)?
            .into_inner();
        let broker_url = response
            .broker
            .map(|b| b.url)
            .filter(|u| !u.is_empty())
            .context("the hive sent no broker address")?;
        let verifier = RequestVerifier::new(response.request_signing_public_key.clone());
        if verifier.key_id() != response.request_signing_key_id {
            anyhow::bail!("the hive's signing key does not match its key id; refusing to trust it");
        }
        self.checks.registered(
            verifier.clone(),
            response.request_signing_public_key.clone(),
        );
        Ok(Registration {
            broker_url,
            verifier,
            heartbeat_interval: Duration::from_millis(
                response.heartbeat_interval_ms.max(200) as u64
            ),
        })
    }

    async fn heartbeat_loop(self: Arc<Self>, mut interval: Duration, shutdown: CancellationToken) {
        let mut sampler = StatsSampler::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => return,
            }
            let running = self
                .running
                .lock()
                .map(|r| r.keys().cloned().collect())
                .unwrap_or_default();
            let spooled = self.spool.count().unwrap_or_else(|e| {
                warn!(error = %e, "cannot count the spool");
                0
            });
            let request = v1::HeartbeatRequest {
                stats: Some(stats_to_wire(&sampler.sample())),
                running_execution_ids: running,
                spooled_results: u32::try_from(spooled).unwrap_or(u32::MAX),
                checks: self.checks.summary(),
                check_set_version: self.checks.version(),
            };
            match self.client.clone().heartbeat(request).await {
                Ok(response) => {
                    let response = response.into_inner();
                    self.checks.announced(&response.check_set_version);
                    let asked = response.heartbeat_interval_ms;
                    if asked > 0 {
                        interval = Duration::from_millis(asked.max(200) as u64);
                    }
                }
                Err(status)
                    if status.code() == tonic::Code::NotFound
                        || status.code() == tonic::Code::FailedPrecondition =>
                {
                    // The hive forgot us (e.g. a fresh database): registering
                    // again restores the record.
                    warn!(error = %describe_status(status), "hive does not know this drone; registering again");
                    if let Err(e) = self.register().await {
                        warn!(error = %e, "re-registration failed");
                    }
                }
                Err(status) => debug!(error = %describe_status(status), "heartbeat failed"),
            }
        }
    }

    /// Delivers spooled results oldest first; a result leaves the spool
    /// only once the hive has acknowledged it.
    async fn deliver_spool_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let wake = self.spooled.notified();
            let delay = match self.deliver_spool().await {
                Ok(()) => {
                    backoff.reset();
                    Duration::from_secs(30)
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    debug!(error = %e, retry_in = ?delay, "hive unreachable; results stay spooled");
                    delay
                }
            };
            tokio::select! {
                _ = wake => {}
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn deliver_spool(&self) -> anyhow::Result<()> {
        for report in self.spool.pending().context("cannot read the spool")? {
            let wire = v1::ExecutionReport {
                execution_id: report.execution_id.clone(),
                status: status_to_wire(report.status) as i32,
                exit_code: report.exit_code,
                stdout: report.stdout,
                stderr: report.stderr,
                stdout_truncated: report.stdout_truncated,
                stderr_truncated: report.stderr_truncated,
                duration_ms: report.duration_ms,
                error: report.error.unwrap_or_default(),
                started_at_ms: report.started_at_ms,
                finished_at_ms: report.finished_at_ms,
                policy_rule: report.policy_rule.unwrap_or_default(),
            };
            match self.client.clone().report_result(wire).await {
                Ok(_) => {}
                Err(status) if is_permanent(&status) => {
                    // The hive will never accept it (e.g. the execution is
                    // not ours); keeping it would block nothing but would
                    // retry forever. Say so loudly.
                    error!(execution_id = %report.execution_id, error = %describe_status(status),
                        "hive refused a result permanently; dropping it from the spool");
                }
                Err(status) => return Err(describe_status(status)),
            }
            self.spool
                .remove(&report.execution_id)
                .context("cannot remove a delivered result from the spool")?;
            debug!(execution_id = %report.execution_id, "result delivered");
        }
        Ok(())
    }

    async fn consume_loop(
        self: Arc<Self>,
        consumer: Arc<dyn ActionConsumer>,
        registration: Arc<Registration>,
        shutdown: CancellationToken,
    ) {
        let prefetch = self
            .file
            .settings
            .max_concurrent
            .max(1)
            .saturating_add(PREFETCH_HEADROOM);
        let mut backoff = Backoff::default();
        loop {
            let mut deliveries = match consumer.consume(&self.file.id, prefetch).await {
                Ok(deliveries) => {
                    info!("consuming action requests");
                    backoff.reset();
                    deliveries
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    warn!(error = %e, retry_in = ?delay, "cannot consume from the broker");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = shutdown.cancelled() => return,
                    }
                }
            };
            loop {
                let next = tokio::select! {
                    next = deliveries.next() => next,
                    _ = shutdown.cancelled() => return,
                };
                match next {
                    Some(Ok(delivery)) => {
                        // A run waits for a slot inside `handle`; a cancel
                        // needs none.
                        let drone = self.clone();
                        let registration = registration.clone();
                        tokio::spawn(async move {
                            drone.handle(delivery, &registration).await;
                        });
                    }
                    Some(Err(e)) => {
                        warn!(error = %e, "broker connection lost");
                        break;
                    }
                    None => {
                        warn!("broker closed the consumer");
                        break;
                    }
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn handle(&self, delivery: Delivery, registration: &Registration) {
        let request = match verify(
            &delivery.body,
            &self.file.id,
            self.enrolled_at_ms,
            &registration.verifier,
        ) {
            Ok(request) => request,
            Err(refusal) => {
                warn!(claimed_execution_id = %refusal.execution_id, reason = %refusal.reason, "refused an action request");
                if let Err(e) = delivery.reject().await {
                    warn!(error = %e, "cannot drop the refused message");
                }
                if !refusal.execution_id.is_empty() {
                    self.report_refusal(&refusal).await;
                }
                return;
            }
        };
        let span =
            info_span!("execution", job_id = %request.job_id, execution_id = %request.execution_id);
        if request.cancel {
            return self
                .cancel_request(delivery, request)
                .instrument(span)
                .await;
        }
        let Ok(_slot) = self.slots.clone().acquire_owned().await else {
            return;
        };
        self.run_request(delivery, request).instrument(span).await
    }

    /// A signed cancel: stops the execution if it runs here; if it has not
    /// arrived, journals its id as finished so that it never starts. (The
    /// hive has already recorded a not-yet-started execution `canceled`.)
    async fn cancel_request(&self, delivery: Delivery, request: v1::ActionRequest) {
        if Utc::now().timestamp_millis() > request.expires_at_ms {
            info!("ignoring an expired cancel");
            let _ = delivery.ack().await;
            return;
        }
        let token = self
            .running
            .lock()
            .ok()
            .and_then(|running| running.get(&request.execution_id).cloned());
        match token {
            Some(token) => {
                info!(requester = %request.requester, "canceling the running command");
                token.cancel();
            }
            None => match self.journal.begin(&request.execution_id, &request.job_id) {
                Ok(Begin::Fresh) => {
                    if let Err(e) = self.journal.finish(&request.execution_id) {
                        warn!(error = %e, "cannot journal a canceled execution");
                    }
                    info!(requester = %request.requester, "canceled before it arrived; it will not run");
                }
                Ok(Begin::AlreadySeen { .. }) => {
                    debug!("cancel for an execution that already finished here; nothing to do");
                }
                Err(e) => {
                    warn!(error = %e, "cannot journal a canceled execution; leaving the cancel for later");
                    drop(delivery);
                    return;
                }
            },
        }
        if let Err(e) = delivery.ack().await {
            warn!(error = %e, "cannot acknowledge the cancel");
        }
    }

    async fn run_request(&self, delivery: Delivery, request: v1::ActionRequest) {
        use std::sync::atomic::Ordering;
        if self.stopping.load(Ordering::SeqCst) {
            // Not taken: the broker redelivers it at the next start.
            drop(delivery);
            return;
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.take_request(delivery, request).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    async fn take_request(&self, delivery: Delivery, request: v1::ActionRequest) {
        let now = Utc::now().timestamp_millis();
        if now > request.expires_at_ms {
            let late = Duration::from_millis((now - request.expires_at_ms) as u64);
            let refusal = Refusal {
                execution_id: request.execution_id.clone(),
                status: ExecutionStatus::Expired,
                reason: format!(
                    "arrived {} after its expiry; not run",
                    humantime::format_duration(round_ms(late))
                ),
            };
            info!(reason = %refusal.reason, "refused an expired request");
            let _ = delivery.ack().await;
            // If this id already ran here, the hive holds its terminal state
            // and ignores the report: states never move backwards.
            self.report_refusal(&refusal).await;
            return;
        }
        match self.journal.begin(&request.execution_id, &request.job_id) {
            Ok(Begin::Fresh) => {}
            Ok(Begin::AlreadySeen { finished }) => {
                info!(
                    finished,
                    "duplicate delivery of an execution this drone already took; not running it again"
                );
                let _ = delivery.ack().await;
                return;
            }
            Err(e) => {
                // Without a journal entry the at-most-once promise cannot
                // be kept, so it does not run. The message is acknowledged
                // (left unacknowledged it would hold a prefetch slot for
                // good, and after a few the broker would send nothing
                // more) and the hive is told why, rather than letting the
                // request expire unexplained.
                error!(error = %e, "cannot journal the execution; not running it");
                let _ = delivery.ack().await;
                self.report_refusal(&Refusal {
                    execution_id: request.execution_id.clone(),
                    status: ExecutionStatus::Failed,
                    reason: format!(
                        "the drone cannot journal the request ({e}; is its disk full?); not run"
                    ),
                })
                .await;
                return;
            }
        }
        // Journaled: from here a crash means "lost", never "run twice", so
        // the broker may forget the message.
        if let Err(e) = delivery.ack().await {
            warn!(error = %e, "cannot acknowledge the message; a redelivery will be recognised by the journal");
        }
        // Refused by the policy: journaled and acknowledged like any
        // request (a redelivery is dropped), and its report goes through
        // the spool, so the refusal reaches the hive whatever its state.
        let report = match self.policy.decide(&request) {
            Ok(run_as) => self.execute(&request, run_as).await,
            Err(refused) => {
                warn!(action = %request.action, rule = refused.policy_rule.as_deref().unwrap_or_default(),
                    reason = refused.error.as_deref().unwrap_or_default(), "refused by this drone's policy; not run");
                *refused
            }
        };
        if let Err(e) = self.spool.put(&report) {
            error!(error = %e, "cannot spool the result; it will be reported lost at the next start");
            return;
        }
        if let Err(e) = self.journal.finish(&request.execution_id) {
            warn!(error = %e, "cannot mark the journal entry finished");
        }
        self.spooled.notify_one();
    }

    async fn execute(&self, request: &v1::ActionRequest, user: Option<RunAs>) -> SpooledReport {
        let started = Utc::now();
        let settings = &self.file.settings;
        let command = match command_from_wire(request.command.clone()) {
            Ok(command) => self.resolve_script(command).await,
            Err(e) => Err(format!("malformed command: {e}")),
        };
        let spec_redact = command
            .as_ref()
            .map(|c| c.redact.clone())
            .unwrap_or_default();
        let secret_env = command
            .as_ref()
            .map(|c| c.secret_env.clone())
            .unwrap_or_default();
        let mut spec = match command {
            Ok(command) => ExecSpec {
                program: command.program,
                env: command.env,
                working_dir: command.working_dir.map(Into::into),
                timeout: command
                    .timeout_ms
                    .map(Duration::from_millis)
                    .unwrap_or(settings.default_timeout),
                kill_grace: settings.kill_grace,
                output_limit: command
                    .output_limit_bytes
                    .unwrap_or(settings.output_limit_bytes) as usize,
                user,
            },
            Err(e) => {
                return SpooledReport::without_output(
                    &request.execution_id,
                    &request.job_id,
                    ExecutionStatus::Failed,
                    e,
                    started.timestamp_millis(),
                    Utc::now().timestamp_millis(),
                );
            }
        };
        let cancel = CancellationToken::new();
        if let Ok(mut running) = self.running.lock() {
            running.insert(request.execution_id.clone(), cancel.clone());
        }
        let not_run = |status: ExecutionStatus, error: String| {
            SpooledReport::without_output(
                &request.execution_id,
                &request.job_id,
                status,
                error,
                started.timestamp_millis(),
                Utc::now().timestamp_millis(),
            )
        };
        let start = self.report_running(request, started).await;
        let now = Utc::now().timestamp_millis();
        let refused = if start == Start::Canceled {
            Some(not_run(
                ExecutionStatus::Canceled,
                "canceled before it started; not run".into(),
            ))
        } else if now > request.expires_at_ms {
            // The hive took too long to acknowledge the start.
            Some(not_run(
                ExecutionStatus::Expired,
                "expired while reporting its start; not run".into(),
            ))
        } else {
            None
        };
        // Secrets last, once the command is known to start: their values
        // exist on this host only for the command's lifetime, and only in
        // its environment (never its argv, which every user can read).
        let mut spec_redact = spec_redact;
        let refused = match refused {
            None if !secret_env.is_empty() => {
                match self.fetch_secrets(&request.execution_id, &secret_env).await {
                    Ok(values) => {
                        for (variable, value) in values {
                            spec_redact.push(value.clone());
                            spec.env.insert(variable, value);
                        }
                        None
                    }
                    Err(e) => Some(not_run(ExecutionStatus::Failed, e)),
                }
            }
            refused => refused,
        };
        if let Some(report) = refused {
            if let Ok(mut running) = self.running.lock() {
                running.remove(&request.execution_id);
            }
            info!(status = %report.status, "not run");
            return report;
        }
        let (chunks_tx, chunks_rx) = mpsc::channel(256);
        let redact = spec_redact.clone();
        let streamer = tokio::spawn(stream_output(
            self.client.clone(),
            request.execution_id.clone(),
            chunks_rx,
            redact,
        ));
        info!(command = %ultron8_core::model::redact(&spec.program.display(), &spec_redact), "running");
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let journal = self.journal.clone();
        let execution_id = request.execution_id.clone();
        // Journal the process group, so that if this drone dies, its next
        // start can stop a command nobody supervises.
        tokio::spawn(async move {
            if let Ok(pgid) = started_rx.await {
                let recorded =
                    ultron8_host::process::process_start_ticks(pgid).and_then(|start_ticks| {
                        journal.record_process(&execution_id, ProcessRecord { pgid, start_ticks })
                    });
                if let Err(e) = recorded {
                    debug!(error = %e, "cannot journal the command's process group");
                }
            }
        });
        let outcome =
            executor::run_cancellable(spec, Some(chunks_tx), cancel, Some(started_tx)).await;
        // The sender is gone with `run`; the stream ends and the call
        // returns, unless the hive hangs: the result must reach the spool
        // whatever the hive does, so the live output gets a deadline.
        let flushing = streamer.abort_handle();
        if tokio::time::timeout(OUTPUT_FLUSH_DEADLINE, streamer)
            .await
            .is_err()
        {
            flushing.abort();
            warn!(
                "the hive did not take the live output within {OUTPUT_FLUSH_DEADLINE:?}; the result carries it"
            );
        }
        if let Ok(mut running) = self.running.lock() {
            running.remove(&request.execution_id);
        }
        info!(status = %outcome.status, exit_code = ?outcome.exit_code, duration_ms = outcome.duration.as_millis() as u64, "finished");
        let mut error = outcome.error;
        if outcome.status == ExecutionStatus::Canceled
            && self.stopping.load(std::sync::atomic::Ordering::SeqCst)
        {
            error = Some(format!(
                "the drone was stopped while the command ran; {}",
                error.unwrap_or_default()
            ));
        }
        SpooledReport {
            execution_id: request.execution_id.clone(),
            job_id: request.job_id.clone(),
            status: outcome.status,
            exit_code: outcome.exit_code,
            stdout: ultron8_core::model::redact_bytes(&outcome.stdout, &spec_redact),
            stderr: ultron8_core::model::redact_bytes(&outcome.stderr, &spec_redact),
            stdout_truncated: outcome.stdout_truncated,
            stderr_truncated: outcome.stderr_truncated,
            duration_ms: outcome.duration.as_millis() as u64,
            error,
            started_at_ms: started.timestamp_millis(),
            finished_at_ms: Utc::now().timestamp_millis(),
            policy_rule: None,
        }
    }

    /// Turns a pack script into a local file to exec: fetched from the hive
    /// by content hash the first time, verified, and cached under its hash
    /// (so a cached file can be trusted again without re-fetching).
    async fn resolve_script(&self, mut command: CommandSpec) -> Result<CommandSpec, String> {
        command.program = resolve_program(&self.client, &self.scripts_dir, command.program).await?;
        Ok(command)
    }

    /// The values of the secrets `secret_env` names (variable → secret),
    /// from the hive, within [`SECRETS_DEADLINE`]; every variable must get
    /// one. The error says why the command was not run.
    async fn fetch_secrets(
        &self,
        execution_id: &str,
        secret_env: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<(String, String)>, String> {
        let names = || {
            let mut names: Vec<&str> = secret_env.values().map(String::as_str).collect();
            names.sort_unstable();
            names.dedup();
            names.join(", ")
        };
        let mut client = self.client.clone();
        let call = client.get_execution_secrets(v1::GetExecutionSecretsRequest {
            execution_id: execution_id.to_string(),
        });
        let mut answer = match tokio::time::timeout(SECRETS_DEADLINE, call).await {
            Ok(Ok(answer)) => answer.into_inner().env,
            Ok(Err(status)) => {
                return Err(format!(
                    "cannot get secret(s) {} from the hive: {}; not run",
                    names(),
                    status.message()
                ));
            }
            Err(_) => {
                return Err(format!(
                    "the hive did not hand over secret(s) {} within {SECRETS_DEADLINE:?}; not run",
                    names()
                ));
            }
        };
        let mut values = Vec::with_capacity(secret_env.len());
        for (variable, name) in secret_env {
            match answer.remove(variable) {
                Some(value) => values.push((variable.clone(), value)),
                None => {
                    return Err(format!(
                        "the hive gave no value for secret {name} (variable {variable}); not run"
                    ));
                }
            }
        }
        info!(secrets = values.len(), "secrets received");
        Ok(values)
    }

    /// Tells the hive the command starts, within [`START_REPORT_DEADLINE`].
    /// Best effort (the final report carries the start time anyway), except
    /// that a hive answering "canceled" stops the start.
    async fn report_running(
        &self,
        request: &v1::ActionRequest,
        started: chrono::DateTime<Utc>,
    ) -> Start {
        let report = v1::ExecutionReport {
            execution_id: request.execution_id.clone(),
            status: v1::ExecutionStatus::Running as i32,
            started_at_ms: started.timestamp_millis(),
            ..Default::default()
        };
        let mut client = self.client.clone();
        match tokio::time::timeout(START_REPORT_DEADLINE, client.report_result(report)).await {
            Ok(Ok(answer)) if answer.get_ref().canceled => Start::Canceled,
            Ok(Ok(_)) => Start::Go,
            Ok(Err(status)) => {
                debug!(error = %describe_status(status), "cannot report the start; the result will follow");
                Start::Go
            }
            Err(_) => {
                warn!(
                    "the hive did not acknowledge the start within {START_REPORT_DEADLINE:?}; running anyway"
                );
                Start::Go
            }
        }
    }

    /// Refusals are reported directly, not spooled: the request may be
    /// forged, and a forged execution id must never displace a real
    /// result in the spool. If this report is lost, the hive still
    /// expires the execution.
    async fn report_refusal(&self, refusal: &Refusal) {
        let report = v1::ExecutionReport {
            execution_id: refusal.execution_id.clone(),
            status: status_to_wire(refusal.status) as i32,
            error: refusal.reason.clone(),
            finished_at_ms: Utc::now().timestamp_millis(),
            ..Default::default()
        };
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        for _ in 0..5 {
            match self.client.clone().report_result(report.clone()).await {
                Ok(_) => return,
                Err(status) if is_permanent(&status) => {
                    warn!(error = %describe_status(status), "hive refused the refusal report");
                    return;
                }
                Err(_) => tokio::time::sleep(backoff.next_delay()).await,
            }
        }
        warn!(execution_id = %refusal.execution_id, "could not report a refused request; the hive will expire it");
    }
}

async fn stream_output(
    mut client: DroneServiceClient<Channel>,
    execution_id: String,
    chunks: mpsc::Receiver<executor::OutputChunk>,
    redact: Vec<String>,
) {
    let stream = masked_output(execution_id, chunks, &redact);
    if let Err(status) = client.stream_output(stream).await {
        debug!(error = %describe_status(status), "live output not delivered; the final result carries it");
    }
}

/// The live output as the hive may see it: each stream masked as a whole
/// ([`OutputMasker`]), so a secret the command wrote in two pieces is
/// masked too. The bytes that may begin a secret wait for the next chunk
/// of their stream, or the end. Offsets count masked bytes, which is what
/// the final (masked) result holds.
pub fn masked_output(
    execution_id: String,
    chunks: mpsc::Receiver<executor::OutputChunk>,
    redact: &[String],
) -> impl futures::Stream<Item = v1::OutputChunk> + Send + 'static {
    struct Stream {
        masker: OutputMasker,
        offset: u64,
    }
    let new_stream = || Stream {
        masker: OutputMasker::new(redact),
        offset: 0,
    };
    let mut streams = [new_stream(), new_stream()];
    let wire = |kind: StreamKind| match kind {
        StreamKind::Stdout => v1::OutputStream::Stdout as i32,
        StreamKind::Stderr => v1::OutputStream::Stderr as i32,
    };
    let (tx, rx) = mpsc::channel::<v1::OutputChunk>(16);
    // A task of its own, so that the end of the input (the command's
    // output closing) can still flush what each masker held back.
    let mut chunks = chunks;
    tokio::spawn(async move {
        let emit = |streams: &mut [Stream; 2], kind: StreamKind, data: Vec<u8>| {
            let stream = &mut streams[kind as usize];
            let chunk = (!data.is_empty()).then(|| v1::OutputChunk {
                execution_id: execution_id.clone(),
                stream: wire(kind),
                offset: stream.offset,
                data: data.clone(),
            });
            stream.offset += data.len() as u64;
            chunk
        };
        while let Some(chunk) = chunks.recv().await {
            let data = streams[chunk.stream as usize].masker.push(&chunk.data);
            if let Some(out) = emit(&mut streams, chunk.stream, data)
                && tx.send(out).await.is_err()
            {
                return;
            }
        }
        for kind in [StreamKind::Stdout, StreamKind::Stderr] {
            let data = streams[kind as usize].masker.finish();
            if let Some(out) = emit(&mut streams, kind, data)
                && tx.send(out).await.is_err()
            {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Turns a pack script into a local file to exec: fetched from the hive
/// by content hash the first time, verified, and cached under its hash
/// (so a cached file can be trusted again without re-fetching). Other
/// programs pass unchanged.
pub(crate) async fn resolve_program(
    client: &DroneServiceClient<Channel>,
    scripts_dir: &std::path::Path,
    program: Program,
) -> Result<Program, String> {
    let Program::Script { sha256, name, args } = program else {
        return Ok(program);
    };
    let path = scripts_dir.join(&sha256);
    if !path.exists() {
        let content = client
            .clone()
            .fetch_script(v1::FetchScriptRequest {
                sha256: sha256.clone(),
            })
            .await
            .map_err(|status| {
                format!(
                    "cannot fetch script `{name}` from the hive: {}",
                    status.message()
                )
            })?
            .into_inner()
            .content;
        let actual = hex::encode(Sha256::digest(&content));
        if actual != sha256 {
            return Err(format!(
                "script `{name}` from the hive has SHA-256 {actual}, expected {sha256}; not run"
            ));
        }
        std::fs::create_dir_all(scripts_dir)
            .and_then(|()| ultron8_host::write_atomically(&path, &content, 0o700))
            .map_err(|e| format!("cannot cache script `{name}`: {e}"))?;
    }
    let mut argv = vec![path.display().to_string()];
    argv.extend(args);
    Ok(Program::Argv(argv))
}

/// How long the end of a command's live output may take to reach the hive
/// before the result is spooled without waiting further.
const OUTPUT_FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// What the hive said to a start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Go,
    Canceled,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// As claimed by the (possibly forged) message; empty if unreadable.
    pub execution_id: String,
    pub status: ExecutionStatus,
    pub reason: String,
}

/// Checks that a message is a request the hive signed for this drone, since
/// it enrolled (`enrolled_at_ms`): a request signed for an earlier holder of
/// the name (a host this one replaced) and replayed from the broker is
/// refused, although the new host's journal has never seen it. Expiry is
/// checked separately, after the signature, so that only genuine requests
/// are ever reported as expired.
pub fn verify(
    body: &[u8],
    drone_id: &str,
    enrolled_at_ms: i64,
    verifier: &RequestVerifier,
) -> Result<v1::ActionRequest, Refusal> {
    let rejected = |execution_id: String, reason: String| Refusal {
        execution_id,
        status: ExecutionStatus::Rejected,
        reason,
    };
    let signed = v1::SignedActionRequest::decode(body)
        .map_err(|e| rejected(String::new(), format!("not a signed action request: {e}")))?;
    // Read the claimed id before verifying, only to say which request was refused.
    let claimed = v1::ActionRequest::decode(signed.request.as_slice()).ok();
    let claimed_id = claimed
        .as_ref()
        .map(|r| r.execution_id.clone())
        .unwrap_or_default();
    if signed.key_id != verifier.key_id() {
        return Err(rejected(
            claimed_id,
            // Quoted shortened: the message may be forged, and the reason
            // goes to the hive's audit trail.
            format!("signed with unknown key {}", quote(&signed.key_id)),
        ));
    }
    verifier
        .verify(&signed.request, &signed.signature)
        .map_err(|_| {
            rejected(
                claimed_id.clone(),
                "signature does not verify: forged or corrupted".into(),
            )
        })?;
    let request =
        claimed.ok_or_else(|| rejected(String::new(), "signed request does not decode".into()))?;
    if request.drone_id != drone_id {
        return Err(rejected(
            request.execution_id,
            format!(
                "addressed to drone {}, not this one",
                quote(&request.drone_id)
            ),
        ));
    }
    if request.issued_at_ms < enrolled_at_ms {
        return Err(rejected(
            request.execution_id,
            format!(
                "signed at {}, before this drone enrolled at {}: it was meant for an earlier \
                 holder of the name {drone_id}",
                ms_text(request.issued_at_ms),
                ms_text(enrolled_at_ms)
            ),
        ));
    }
    Ok(request)
}

fn ms_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

pub(crate) fn is_permanent(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::InvalidArgument
            | tonic::Code::NotFound
            | tonic::Code::PermissionDenied
            | tonic::Code::FailedPrecondition
    )
}

fn describe_status(status: tonic::Status) -> anyhow::Error {
    use std::error::Error;
    let mut message = format!("{:?}: {}", status.code(), status.message());
    let mut source = status.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    // The handshake's alert, or the refusal of a call on an older
    // connection: either way the drone cannot fix it by retrying.
    if message.contains("CertificateRevoked") || message.contains("was revoked") {
        message.push_str(
            ". The hive revoked this drone's certificate: it was removed from the fleet, or \
             another host was enrolled under its name. To come back, join again with a new \
             token: ultron8-drone join --name <id> --token <token> --force",
        );
    }
    anyhow::anyhow!(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ultron8_pki::RequestSigningKey;

    fn key() -> RequestSigningKey {
        let der = RequestSigningKey::generate_pkcs8().expect("generate");
        RequestSigningKey::from_pkcs8(&der).expect("load")
    }

    /// What the hive receives when the command writes `pieces` to stdout
    /// and `noise` to stderr in between.
    async fn streamed(secret: &str, pieces: &[&[u8]]) -> (Vec<u8>, Vec<u8>) {
        let (tx, rx) = mpsc::channel(64);
        let mut offset = 0;
        for piece in pieces {
            tx.send(executor::OutputChunk {
                stream: StreamKind::Stdout,
                offset,
                data: piece.to_vec(),
            })
            .await
            .expect("send");
            offset += piece.len() as u64;
            tx.send(executor::OutputChunk {
                stream: StreamKind::Stderr,
                offset: 0,
                data: b"-".to_vec(),
            })
            .await
            .expect("send");
        }
        drop(tx);
        let chunks: Vec<v1::OutputChunk> = masked_output("e1".into(), rx, &[secret.to_string()])
            .collect()
            .await;
        let mut out = (Vec::new(), Vec::new());
        for chunk in chunks {
            let stream = if chunk.stream == v1::OutputStream::Stdout as i32 {
                &mut out.0
            } else {
                &mut out.1
            };
            assert_eq!(
                chunk.offset,
                stream.len() as u64,
                "offsets count masked bytes"
            );
            stream.extend(chunk.data);
        }
        out
    }

    #[tokio::test]
    async fn a_secret_written_in_two_pieces_never_reaches_the_hive_in_clear() {
        let secret = "correct-horse-battery";
        let text = format!("user=app password={secret}\n");
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let (stdout, stderr) = streamed(secret, &[&bytes[..cut], &bytes[cut..]]).await;
            assert_eq!(
                String::from_utf8_lossy(&stdout),
                "user=app password=********\n",
                "cut at {cut}"
            );
            assert_eq!(stderr, b"--".to_vec(), "the other stream is untouched");
        }
    }

    /// Anyone who can publish to the broker can send a drone anything: the
    /// refusal it reports (and the hive audits) quotes what the message
    /// claims shortened, however long the claim.
    #[test]
    fn a_refusal_quotes_a_forged_key_id_shortened() {
        let key = key();
        let verifier = RequestVerifier::new(key.public_key());
        let request = v1::ActionRequest {
            execution_id: "0198a5c0-0000-7000-8000-000000000001".into(),
            drone_id: "web-1".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let body = v1::SignedActionRequest {
            signature: key.sign(&request),
            key_id: "k".repeat(1_000_000),
            request,
        }
        .encode_to_vec();
        let refusal = verify(&body, "web-1", 0, &verifier).expect_err("an unknown key");
        assert_eq!(refusal.status, ExecutionStatus::Rejected);
        assert!(refusal.reason.len() < 300, "{} bytes", refusal.reason.len());
        assert!(
            refusal.reason.starts_with("signed with unknown key \"kkk"),
            "{}",
            &refusal.reason[..refusal.reason.len().min(300)]
        );
    }
}
