//! The HTTP listeners: accept connections and serve a router on each
//! (HTTP/1.1, or HTTP/2 when the client speaks it), with a deadline for a
//! request's headers, and shut down gracefully.
//!
//! The deadline ([`AppConfig::header_read_timeout`](crate::AppConfig),
//! `HEADER_READ_TIMEOUT_SECS`) covers a connection's wait for its first
//! bytes and for the next request's headers too: a client that opens
//! connections and sends nothing, or headers slowly (slowloris), or leaves
//! keep-alive connections idle, is disconnected once it passes. The request
//! timeout (`REQUEST_TIMEOUT_SECS`) starts once the headers are in.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting and waits for the connections to finish their requests
/// (idle ones are closed). Each request carries the peer's address as
/// [`ConnectInfo<SocketAddr>`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(e) => {
                    // Out of file descriptors, say: let some close.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = router
            .clone()
            .map_request(move |mut request: axum::extract::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                request
            });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // hyper's deadline starts once the protocol is known, from the
            // first bytes: a connection that sends none is closed here.
            // (`peek` waits for a byte or the end, without consuming it;
            // `readable` may report readiness that is not there.)
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(header_read_timeout, stream.peek(&mut first)).await,
                Ok(Ok(1..))
            ) {
                tracing::debug!(%peer, "connection closed: nothing sent in time");
                return;
            }
            let connection =
                builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
