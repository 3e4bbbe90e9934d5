//! The hive's shared state, and what its background loops do with it:
//! dispatch and redispatch, expiry, marking silent drones offline. The
//! operations callers ask for are in [`crate::ops`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use ultron8_broker::ActionPublisher;
use ultron8_core::ExecutionStatus;
use ultron8_core::audit::AuditVerb;
use ultron8_core::ids::ExecutionId;
use ultron8_pki::{CertificateAuthority, RequestSigningKey};
use ultron8_proto::convert::command_to_wire;
use ultron8_proto::v1;
use ultron8_store::{
    ExecutionRecord, ExecutionUpdate, NewAuditRecord, PendingDispatch, Store, TransitionOutcome,
};

use crate::actor::Actor;
use crate::config::HiveConfig;
use crate::metrics::Metrics;
use crate::planning::HIVE_EXECUTOR;

pub struct Hive {
    pub config: HiveConfig,
    pub store: Arc<dyn Store>,
    pub publisher: Arc<dyn ActionPublisher>,
    pub ca: CertificateAuthority,
    pub signing_key: RequestSigningKey,
    pub metrics: Metrics,
    /// Woken whenever an execution changes here, so job watchers on this
    /// replica answer at once; watchers also poll, for changes made by
    /// other replicas.
    pub executions_changed: Notify,
    /// Wakes this replica's rules engine when it stored an event.
    pub events_arrived: Notify,
    /// Names each execution whose output this replica just stored, so job
    /// followers read only what changed; followers also poll, for output
    /// stored by other replicas.
    pub output_arrived: tokio::sync::broadcast::Sender<ExecutionId>,
    /// The rules engine's compiled rules, reloaded when the catalog changes.
    pub rules: crate::rulebook::RuleCache,
    /// The installed drone checks, as of one catalog version.
    pub checks: crate::ops::checks::CheckCatalog,
    /// Rate-limits the escalations of failing rules.
    pub failure_escalations: crate::rulebook::EscalationLimiter,
    /// For `http` actions.
    pub http: reqwest::Client,
    /// What this hive is, for `ultron8_build_info` and `ultronctl version`.
    pub build: BuildInfo,
    /// Cancelled when the hive starts shutting down: long-lived streams
    /// (job followers, drones' output) end then, with a status that says
    /// so, rather than holding the shutdown up.
    pub stopping: CancellationToken,
    pub started_at: DateTime<Utc>,
    /// Certificates refused at the handshake and on every call.
    pub revoked: Arc<crate::revocation::RevokedCertificates>,
    /// Operator certificates this replica has recorded, so each is written
    /// to the store once, on its first call.
    pub operators_recorded: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Seals and opens secrets (`ops::secrets`); None until
    /// [`Hive::with_secrets_key`]: a hive without one refuses every secret
    /// operation rather than sealing with a key nobody keeps.
    pub secrets_key: Option<Arc<dyn crate::keys::KeyProvider>>,
}

/// A build of the hive: its version and the commit it was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: String,
    /// `unknown` when built outside a git checkout.
    pub commit: String,
}

impl BuildInfo {
    /// This library's version; the commit is known only to the binary
    /// that was built from it (see [`Hive::with_build`]).
    pub fn library() -> BuildInfo {
        BuildInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            commit: "unknown".to_string(),
        }
    }
}

/// Output notices kept for a slow follower before it falls back to
/// re-reading every running execution.
const OUTPUT_NOTICES: usize = 4096;

/// How long after its expiry the hive waits before declaring a request
/// expired: covers clock skew between hive and drone and a drone that
/// accepted the request just before the deadline and is reporting it.
pub const EXPIRY_GRACE: Duration = Duration::from_secs(5);

impl Hive {
    /// A hive over `store` and `publisher` with its identity. Nothing runs
    /// yet: `serve::run` starts the services and loops, tests and
    /// benchmarks start what they exercise.
    pub fn new(
        config: HiveConfig,
        store: Arc<dyn Store>,
        publisher: Arc<dyn ActionPublisher>,
        ca: CertificateAuthority,
        signing_key: RequestSigningKey,
    ) -> anyhow::Result<Hive> {
        Ok(Hive {
            config,
            store,
            publisher,
            ca,
            signing_key,
            metrics: Metrics::new(),
            executions_changed: Notify::default(),
            events_arrived: Notify::default(),
            output_arrived: tokio::sync::broadcast::channel(OUTPUT_NOTICES).0,
            rules: Default::default(),
            failure_escalations: Default::default(),
            checks: Default::default(),
            http: http_client()?,
            build: BuildInfo::library(),
            stopping: CancellationToken::new(),
            started_at: Utc::now(),
            revoked: Default::default(),
            operators_recorded: Default::default(),
            secrets_key: None,
        }
        .with_build(BuildInfo::library()))
    }

    /// Ends this hive's long-lived streams when `shutdown` is cancelled.
    pub fn stopping_on(mut self, shutdown: CancellationToken) -> Hive {
        self.stopping = shutdown;
        self
    }

    /// The error a stream ends with when the hive shuts down.
    pub fn shutting_down(&self, job_id: &ultron8_core::ids::JobId) -> crate::error::HiveError {
        crate::error::HiveError::unavailable(format!(
            "the hive is shutting down; the job goes on: ultronctl job get {job_id}"
        ))
    }

    /// Names the build this hive runs as (the binary knows its commit).
    /// Seals secrets with `key`.
    pub fn with_secrets_key(mut self, key: Arc<dyn crate::keys::KeyProvider>) -> Hive {
        self.secrets_key = Some(key);
        self
    }

    pub fn with_build(mut self, build: BuildInfo) -> Hive {
        self.metrics.set_build(&build.version, &build.commit);
        self.build = build;
        self
    }

    /// Signs and publishes one execution's request, then records it as
    /// dispatched. A failure leaves the execution `requested`, and the
    /// redispatch loop tries again: the drone's journal makes a second
    /// delivery harmless.
    pub async fn dispatch(&self, item: &PendingDispatch) -> bool {
        let now = Utc::now();
        let remaining = (item.expires_at - now).to_std().unwrap_or_default();
        if remaining.is_zero() {
            // The expiry sweeper records it; publishing would only make the
            // drone refuse it.
            return false;
        }
        let body = self.signed_request(item, now);
        let publishing = std::time::Instant::now();
        let published = self
            .publisher
            .publish(item.drone_id.as_str(), body, remaining)
            .await;
        self.metrics
            .broker_publish
            .observe(publishing.elapsed().as_secs_f64());
        match published {
            Ok(()) => {
                let latency = (Utc::now() - item.created_at).to_std().unwrap_or_default();
                self.metrics.dispatch_latency.observe(latency.as_secs_f64());
                let update = ExecutionUpdate {
                    status: ExecutionStatus::Dispatched,
                    at: Utc::now(),
                    started_at: None,
                    result: None,
                };
                match self
                    .store
                    .transition_execution(&item.execution_id, &update, None)
                    .await
                {
                    Ok(TransitionOutcome::Applied { .. }) => {
                        self.executions_changed.notify_waiters()
                    }
                    // The drone was faster than us and already reported.
                    Ok(_) => {}
                    Err(e) => {
                        warn!(execution_id = %item.execution_id, error = %e, "cannot record dispatch")
                    }
                }
                true
            }
            Err(e) => {
                self.metrics.dispatch_failures.inc();
                warn!(
                    job_id = %item.job_id, execution_id = %item.execution_id, drone_id = %item.drone_id,
                    error = %e, "publish failed; will retry"
                );
                false
            }
        }
    }

    pub fn signed_request(&self, item: &PendingDispatch, now: DateTime<Utc>) -> Vec<u8> {
        self.sign(v1::ActionRequest {
            job_id: item.job_id.to_string(),
            execution_id: item.execution_id.to_string(),
            drone_id: item.drone_id.to_string(),
            issued_at_ms: now.timestamp_millis(),
            expires_at_ms: item.expires_at.timestamp_millis(),
            command: Some(command_to_wire(&item.command)),
            requester: item.requester.clone(),
            cancel: false,
            action: item.action_ref.clone().unwrap_or_default(),
        })
    }

    /// A signed cancel of `execution` for its drone, valid for `ttl`.
    pub fn signed_cancel(
        &self,
        execution: &ExecutionRecord,
        requester: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Vec<u8> {
        let expires = now + chrono::Duration::from_std(ttl).unwrap_or_default();
        self.sign(v1::ActionRequest {
            job_id: execution.job_id.to_string(),
            execution_id: execution.id.to_string(),
            drone_id: execution.drone_id.to_string(),
            issued_at_ms: now.timestamp_millis(),
            expires_at_ms: expires.timestamp_millis(),
            command: None,
            requester: requester.to_string(),
            cancel: true,
            action: String::new(),
        })
    }

    fn sign(&self, request: v1::ActionRequest) -> Vec<u8> {
        let request = request.encode_to_vec();
        v1::SignedActionRequest {
            signature: self.signing_key.sign(&request),
            key_id: self.signing_key.key_id(),
            request,
        }
        .encode_to_vec()
    }

    /// Re-publishes executions stuck in `requested` (the hive died between
    /// recording and publishing them, or the broker was down).
    pub async fn redispatch_stale(&self) {
        let now = Utc::now();
        let cutoff = now - chrono::Duration::seconds(5);
        match self
            .store
            .executions_awaiting_dispatch(cutoff, now, 500)
            .await
        {
            Ok(items) => {
                for item in items {
                    // A hive-side action interrupted by a crash is not
                    // repeated blindly (it may have reached its URL); it
                    // expires like a request no drone picked up.
                    if item.drone_id == HIVE_EXECUTOR {
                        continue;
                    }
                    if self.dispatch(&item).await {
                        info!(execution_id = %item.execution_id, drone_id = %item.drone_id, "re-dispatched");
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot look for undispatched executions"),
        }
    }

    pub async fn expire_overdue(&self) {
        let cutoff = Utc::now() - chrono::Duration::from_std(EXPIRY_GRACE).unwrap_or_default();
        match self.store.expire_overdue_executions(cutoff).await {
            Ok(expired) if !expired.is_empty() => {
                for execution in &expired {
                    self.metrics.execution_finished(ExecutionStatus::Expired);
                    info!(job_id = %execution.job_id, execution_id = %execution.id, drone_id = %execution.drone_id,
                        "expired: the drone did not pick the request up in time");
                }
                self.executions_changed.notify_waiters();
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot expire overdue executions"),
        }
    }

    pub async fn mark_silent_drones_offline(&self) {
        let cutoff =
            Utc::now() - chrono::Duration::from_std(self.config.offline_after).unwrap_or_default();
        match self.store.mark_silent_drones_offline(cutoff).await {
            Ok(ids) => {
                for id in ids {
                    warn!(drone_id = %id, "drone is offline: no heartbeat for {}",
                        humantime::format_duration(self.config.offline_after));
                }
            }
            Err(e) => warn!(error = %e, "cannot mark silent drones offline"),
        }
    }

    /// Declares `lost` every execution running on a drone silent for
    /// `lost_after`: nobody will report it. Its command may still run on
    /// that host (a partition, a frozen drone), which the record says; if
    /// the drone returns and reports a result, that is audited beside the
    /// `lost` state rather than replacing it (states never move back).
    pub async fn mark_lost_executions(&self) {
        let cutoff =
            Utc::now() - chrono::Duration::from_std(self.config.lost_after).unwrap_or_default();
        let silent = match self.store.running_on_silent_drones(cutoff).await {
            Ok(silent) => silent,
            Err(e) => {
                warn!(error = %e, "cannot look for executions on silent drones");
                return;
            }
        };
        for execution in silent {
            let error = format!(
                "drone {} stopped heartbeating more than {} ago; its command may still be running there",
                execution.drone_id,
                humantime::format_duration(self.config.lost_after)
            );
            let now = Utc::now();
            let update = ExecutionUpdate {
                status: ExecutionStatus::Lost,
                at: now,
                started_at: None,
                result: Some(ultron8_store::ExecutionResult {
                    error: Some(error.clone()),
                    ..Default::default()
                }),
            };
            let mut audit = self.audit(
                Actor::Hive,
                AuditVerb::ExecutionFinished,
                serde_json::json!({ "error": error }),
            );
            audit.job_id = Some(execution.job_id.clone());
            audit.execution_id = Some(execution.id.clone());
            audit.drone_id = Some(execution.drone_id.clone());
            audit.status = Some(ExecutionStatus::Lost);
            match self
                .store
                .transition_execution(&execution.id, &update, Some(&audit))
                .await
            {
                Ok(TransitionOutcome::Applied { .. }) => {
                    self.metrics.execution_finished(ExecutionStatus::Lost);
                    warn!(job_id = %execution.job_id, execution_id = %execution.id,
                        drone_id = %execution.drone_id, "execution lost: {error}");
                    self.executions_changed.notify_waiters();
                }
                // It finished meanwhile, or another replica declared it.
                Ok(_) => {}
                Err(e) => {
                    warn!(execution_id = %execution.id, error = %e, "cannot declare an execution lost")
                }
            }
        }
    }

    /// An audit record of `action` by `actor`, with the links left for the
    /// caller to fill.
    pub fn audit(
        &self,
        actor: Actor,
        action: AuditVerb,
        detail: serde_json::Value,
    ) -> NewAuditRecord {
        NewAuditRecord {
            id: crate::ids::new_audit_id(),
            at: Utc::now(),
            actor,
            action,
            job_id: None,
            execution_id: None,
            drone_id: None,
            status: None,
            event_id: None,
            rule: None,
            action_ref: None,
            detail,
        }
    }
}

/// The client `http` actions use: rustls with the ring provider (like every
/// other TLS in Ultron8) and the Mozilla root store.
pub(crate) fn http_client() -> anyhow::Result<reqwest::Client> {
    use anyhow::Context;
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("cannot configure TLS for http actions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .user_agent(concat!("ultron8-hive/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot build the HTTP client for http actions")
}

/// Runs `tick` every `period` until `shutdown` is cancelled.
pub async fn every(period: Duration, shutdown: CancellationToken, mut tick: impl AsyncFnMut()) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => tick().await,
            _ = shutdown.cancelled() => return,
        }
    }
}
