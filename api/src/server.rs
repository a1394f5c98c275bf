//! The HTTP/1.1 server under both APIs: hyper's connection loop with the limits a hostile client
//! meets (axum's `serve` sets none of them):
//! - **header read timeout**: a client that does not send a whole request head within
//!   `header_read_timeout` (a slow client sending a byte a second, or one that connects and
//!   sends nothing) has its connection closed;
//! - **header limits**: at most [`MAX_HEADERS`] headers and [`MAX_HEADER_BYTES`] of request
//!   head, otherwise `431` and the connection is closed;
//! - **graceful shutdown**: on `shutdown` the listener closes, each connection finishes the
//!   request it is serving, and the loop returns once all have (at most [`DRAIN_TIMEOUT`]).

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// Headers one request may carry.
pub const MAX_HEADERS: usize = 64;
/// Bytes of one request's head (request line and headers).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// How long the connections in flight get to finish after a shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .max_headers(MAX_HEADERS)
            .max_header_size(MAX_HEADER_BYTES);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout, closing them");
    }
    Ok(())
}
