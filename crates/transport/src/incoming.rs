//! The server side: accept TCP connections and run TLS handshakes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{FuturesUnordered, Stream, StreamExt};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinError, JoinHandle};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A handshake that has not finished by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many handshakes run at once; past it, accepting waits.
const MAX_PENDING_HANDSHAKES: usize = 1024;
/// Pause after an accept error that is not about one connection (e.g. out of
/// file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Accepts TCP connections on `listener` and performs TLS handshakes
/// concurrently, each in its own task with a 10 s deadline. Failed or slow
/// handshakes and accept errors are logged and skipped: the stream never ends
/// and never yields an error (the `Result` item is what
/// `tonic::transport::Server::serve_with_incoming` expects). Dropping the
/// stream closes the listener and aborts the handshakes in flight.
///
/// The stream must be polled inside a tokio runtime.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, io::Error>> + Send + 'static {
    let state = Incoming {
        listener,
        acceptor: TlsAcceptor::from(config),
        pending: FuturesUnordered::new(),
    };
    futures::stream::unfold(state, |mut state| async move {
        let stream = state.next_stream().await;
        Some((Ok(stream), state))
    })
}

struct Incoming {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    pending: FuturesUnordered<AbortOnDrop<Option<TlsStream<TcpStream>>>>,
}

impl Incoming {
    async fn next_stream(&mut self) -> TlsStream<TcpStream> {
        loop {
            let can_accept = self.pending.len() < MAX_PENDING_HANDSHAKES;
            tokio::select! {
                biased;
                Some(done) = self.pending.next(), if !self.pending.is_empty() => match done {
                    Ok(Some(stream)) => return stream,
                    Ok(None) => {}
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => tracing::error!(error = %e, "TLS handshake task failed"),
                },
                accepted = self.listener.accept(), if can_accept => match accepted {
                    Ok((tcp, peer)) => self.start_handshake(tcp, peer),
                    Err(e) if is_connection_error(&e) => {
                        tracing::debug!(error = %e, "accept failed for one connection");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed; pausing");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                },
            }
        }
    }

    fn start_handshake(&mut self, tcp: TcpStream, peer: SocketAddr) {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let acceptor = self.acceptor.clone();
        let task = tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => Some(stream),
                // rustls reports protocol and certificate failures as InvalidData:
                // worth a warning (e.g. a certificate from another CA).
                Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                    tracing::warn!(%peer, error = %e, "TLS handshake refused");
                    None
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out after {HANDSHAKE_TIMEOUT:?}");
                    None
                }
            }
        });
        self.pending.push(AbortOnDrop(task));
    }
}

/// Accept errors that concern only the connection being accepted.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A task handle that aborts the task when dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.get_mut().0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
