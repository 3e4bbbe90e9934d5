//! The plain-HTTP listener: liveness, readiness and Prometheus metrics,
//! which change nothing and need no authentication; and event intake
//! (webhooks, Alertmanager), authenticated per endpoint in [`crate::events`].
//! [`serve`] holds every client to the header and body deadlines and the
//! connection cap of the configuration.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::hive::Hive;
use crate::metrics::Exposition;

/// How long shutting down waits for requests in progress before it drops
/// their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves [`router`] on `listener` until `shutdown`, holding every client
/// to the limits of the hive's configuration: a plain `axum::serve` has
/// none, so a client that sends half a header, or opens connections and
/// says nothing, would hold them for ever.
///
/// - `http_header_timeout`: hyper closes a connection whose request head
///   has not arrived in full within it, counted from when the connection is
///   ready for a request (so an idle keep-alive connection closes too).
/// - `http_body_timeout`: the event handlers read a body within it, as a
///   whole, however it trickles in ([`crate::events`]); the other routes
///   read none.
/// - `http_max_connections`: a connection is accepted only with a permit,
///   so past the cap further clients wait in the listen backlog, unread,
///   until one closes; none is dropped.
pub async fn serve(
    listener: TcpListener,
    hive: Arc<Hive>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let config = &hive.config;
    let permits = Arc::new(Semaphore::new(config.http_max_connections));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(config.http_header_timeout);
    let app = router(hive.clone());
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // Never closed; if it were, nothing more could be served.
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http1.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // A client that timed out or went away: its problem.
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
    // Stop accepting, then let requests in progress finish.
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "HTTP requests still in progress after {}s; dropping them",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    Ok(())
}

/// An accept that failed. A connection that went away before it was
/// accepted is nothing; anything else (out of file descriptors) is logged
/// and waited out briefly rather than retried in a hot loop.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept an HTTP connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

pub fn router(hive: Arc<Hive>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/webhooks/{name}", post(crate::events::webhook))
        .route("/v1/alertmanager", post(crate::events::alertmanager))
        // The event handlers read bodies themselves, up to the configured
        // limit, so an oversized one gets a counted 413 with a message.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(hive)
}

/// Ready when both the store and the broker answer, each within
/// [`CHECK_TIMEOUT`](crate::ops::health::CHECK_TIMEOUT): a hive that cannot reach either cannot accept jobs,
/// and a probe must get its answer before its own timeout.
async fn readyz(State(hive): State<Arc<Hive>>) -> impl IntoResponse {
    let readiness = hive.readiness().await;
    let ready = readiness.ready();
    let said = |answer: Result<(), String>| answer.err().unwrap_or_else(|| "ok".into());
    let body = json!({
        "ready": ready,
        "store": said(readiness.store),
        "broker": said(readiness.broker),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

/// The exposition in the format the scraper asked for (see
/// [`Exposition::negotiate`]).
async fn metrics(State(hive): State<Arc<Hive>>, headers: HeaderMap) -> impl IntoResponse {
    let format = Exposition::negotiate(
        headers
            .get(header::ACCEPT)
            .and_then(|accept| accept.to_str().ok()),
    );
    match hive
        .metrics
        .render(hive.store.as_ref(), format, chrono::Utc::now())
        .await
    {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, format.content_type())],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}\n"),
        )
            .into_response(),
    }
}
