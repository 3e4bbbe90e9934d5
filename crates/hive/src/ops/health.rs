//! The hive's own health: readiness (can it take work?) and the status
//! summary `ultronctl status` prints.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ultron8_core::ExecutionStatus;
use ultron8_store::{Activity, PendingEvents};

use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::error::HiveError;
use crate::hive::{BuildInfo, Hive};
use crate::metrics::StoreCall;

/// How long a dependency may take to answer a readiness check. Probes
/// (Kubernetes, load balancers) give up after a few seconds; an answer
/// after theirs is no answer.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the readiness loop asks the store and the broker.
pub const READINESS_INTERVAL: Duration = Duration::from_secs(2);

/// The gRPC services whose health `grpc.health.v1.Health` reports, beside
/// the whole server (`""`), and what each needs.
const CONTROL_SERVICE: &str = "ultron8.v1.ControlService";
const DRONE_SERVICE: &str = "ultron8.v1.DroneService";

/// How far back `status` looks for failures.
pub const RECENT: Duration = Duration::from_secs(3600);

/// Whether each dependency answered; `Err` says how it did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub store: Result<(), String>,
    pub broker: Result<(), String>,
}

impl Readiness {
    /// A hive that cannot reach its store or its broker cannot take jobs.
    pub fn ready(&self) -> bool {
        self.store.is_ok() && self.broker.is_ok()
    }
}

/// What `ultronctl status` shows.
#[derive(Debug, Clone)]
pub struct HiveStatus {
    pub build: BuildInfo,
    pub started_at: DateTime<Utc>,
    pub readiness: Readiness,
    /// What the store knows; `Err` says why it could not be read.
    pub figures: Result<StatusFigures, String>,
}

/// The store's part of [`HiveStatus`].
#[derive(Debug, Clone)]
pub struct StatusFigures {
    pub backlog: PendingEvents,
    pub drones_online: i64,
    pub drones_offline: i64,
    pub executions_running: i64,
    /// Since `now - RECENT`.
    pub recent: Activity,
}

impl Hive {
    /// Asks the store and the broker, at once, each within
    /// [`CHECK_TIMEOUT`], and records the answer in the metrics.
    pub async fn readiness(&self) -> Readiness {
        let within = |what: &'static str| {
            move |_| {
                format!(
                    "the {what} did not answer within {}s",
                    CHECK_TIMEOUT.as_secs()
                )
            }
        };
        let store = tokio::time::timeout(
            CHECK_TIMEOUT,
            self.metrics.time_store(StoreCall::Ping, self.store.ping()),
        );
        let broker = tokio::time::timeout(CHECK_TIMEOUT, self.publisher.ping());
        let (store, broker) = tokio::join!(store, broker);
        let readiness = Readiness {
            store: store
                .map_err(within("store"))
                .and_then(|r| r.map_err(|e| e.to_string())),
            broker: broker
                .map_err(within("broker"))
                .and_then(|r| r.map_err(|e| e.to_string())),
        };
        self.metrics
            .set_readiness(readiness.store.is_ok(), readiness.broker.is_ok());
        readiness
    }

    /// Checks readiness every [`READINESS_INTERVAL`] until `shutdown`, and
    /// reports it through `grpc.health.v1.Health` and the metrics: the
    /// control service needs the store and the broker (it submits jobs),
    /// the drone service only the store (it records reports); the server
    /// as a whole is serving when both are. On shutdown everything turns
    /// NOT_SERVING, so balancers stop sending before the ports close.
    pub async fn watch_readiness(
        self: std::sync::Arc<Self>,
        health: HealthReporter,
        shutdown: CancellationToken,
    ) {
        let status = |up: bool| {
            if up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }
        };
        let mut was: Option<Readiness> = None;
        loop {
            let now = self.readiness().await;
            if was.as_ref() != Some(&now) {
                if now.ready() {
                    tracing::info!("ready: the store and the broker answer");
                } else {
                    tracing::warn!(store = ?now.store, broker = ?now.broker, "not ready");
                }
            }
            health.set_service_status("", status(now.ready())).await;
            health
                .set_service_status(CONTROL_SERVICE, status(now.ready()))
                .await;
            health
                .set_service_status(DRONE_SERVICE, status(now.store.is_ok()))
                .await;
            was = Some(now);
            tokio::select! {
                _ = tokio::time::sleep(READINESS_INTERVAL) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        for service in ["", CONTROL_SERVICE, DRONE_SERVICE] {
            health
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
    }

    /// The hive's health in one answer. It answers even when the store
    /// does not: readiness then says why, and the figures are missing.
    pub async fn status(&self, now: DateTime<Utc>) -> HiveStatus {
        let readiness = self.readiness().await;
        let figures = match &readiness.store {
            Ok(()) => tokio::time::timeout(CHECK_TIMEOUT * 5, self.status_figures(now))
                .await
                .map_err(|_| "the store did not answer in time".to_string())
                .and_then(|r| r.map_err(|e| e.to_string())),
            Err(e) => Err(e.clone()),
        };
        HiveStatus {
            build: self.build.clone(),
            started_at: self.started_at,
            readiness,
            figures,
        }
    }

    async fn status_figures(&self, now: DateTime<Utc>) -> Result<StatusFigures, HiveError> {
        let backlog = self.store.pending_events().await?;
        let drones = self.store.list_drones().await?;
        let by_status = self.store.count_executions_by_status().await?;
        let since = now - chrono::Duration::from_std(RECENT).unwrap_or_default();
        let recent = self.store.activity_since(since).await?;
        let online = drones.iter().filter(|d| d.online).count() as i64;
        Ok(StatusFigures {
            backlog,
            drones_online: online,
            drones_offline: drones.len() as i64 - online,
            executions_running: by_status
                .iter()
                .filter(|(s, _)| *s == ExecutionStatus::Running)
                .map(|(_, n)| n)
                .sum(),
            recent,
        })
    }
}
