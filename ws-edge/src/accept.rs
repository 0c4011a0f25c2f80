//! The accept loop: each client connection is served by hyper's HTTP/1 with the
//! edge's limits, before any route sees it.
//!
//! - A request head (line and headers) must arrive complete within the handshake
//!   deadline, from the moment the connection is accepted (and again while a kept-alive
//!   connection waits for its next one): silent and slowloris sockets are dropped,
//!   not held, and counted as `timeout` when they never sent a whole head.
//! - A head larger than the header limit is answered 431 and the connection closed.
//! - Past the open-connection limit a connection is answered 503 with Retry-After
//!   and closed (at most [`MAX_REJECTING`] at once, within a second; more are
//!   dropped unanswered); within it, its [`Slot`] rides in the request's extensions, and the
//!   WebSocket session keeps it, so the slot is free again only when both are gone.
//!
//! At shutdown the loop stops accepting, and connections not yet upgraded finish
//! their request and close, within the grace period.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::admission::{Slot, Slots};
use crate::handshake;
use crate::metrics::{Handshake, Metrics};

/// A failing `accept` (out of file descriptors, mostly) is retried after this.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Connections past the limit answered 503 at once; more are dropped unanswered.
const MAX_REJECTING: usize = 64;
/// How long a connection past the limit may take to send its request.
const REJECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub handshake_timeout: Duration,
    pub max_header_bytes: usize,
}

/// Serves `router` on `listener` until `shutdown`; then waits up to `grace` for the
/// connections not yet upgraded.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    slots: Slots,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let connections = TaskTracker::new();
    let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; retrying shortly");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let io = TokioIo::new(tcp);
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.handshake_timeout)
            .max_buf_size(limits.max_header_bytes);
        let stop = shutdown.clone();
        match slots.take() {
            Some(slot) => {
                let router = router.clone();
                // hyper restarts the head deadline for each request of a kept-alive
                // connection: a timeout after one was served is a client idling
                // between requests (a scraper, a browser), not a slowloris.
                let served = Arc::new(AtomicBool::new(false));
                let serving = served.clone();
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    serving.store(true, Ordering::Relaxed);
                    routed(router.clone(), slot.clone(), req)
                });
                let conn = http.serve_connection(io, service).with_upgrades();
                let metrics = metrics.clone();
                connections.spawn(async move {
                    let mut conn = std::pin::pin!(conn);
                    let done = tokio::select! {
                        done = conn.as_mut() => done,
                        () = stop.cancelled() => {
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = done {
                        tracing::debug!(error = %e, "connection ended with an error");
                        if e.is_timeout() && !served.load(Ordering::Relaxed) {
                            metrics.handshake(Handshake::Timeout);
                        } else if e.is_parse_too_large() {
                            metrics.handshake(Handshake::HeadTooLarge);
                        }
                    }
                });
            }
            None => {
                // Answered quickly and few at a time: a flood past the limit must
                // not take the file descriptors the edge keeps for itself.
                let Ok(permit) = rejecting.clone().try_acquire_owned() else {
                    tracing::warn!("connection limit reached: dropping a connection");
                    continue;
                };
                tracing::warn!("connection limit reached: answering 503");
                http.keep_alive(false).header_read_timeout(REJECT_TIMEOUT);
                let metrics = metrics.clone();
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    metrics.answered(handshake::asks_upgrade(req.headers()), 503);
                    std::future::ready(Ok::<_, Infallible>(busy()))
                });
                let conn = http.serve_connection(io, service);
                connections.spawn(async move {
                    let _ = tokio::time::timeout(REJECT_TIMEOUT * 2, conn).await;
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("grace period over: dropping connections not yet upgraded");
    }
}

async fn routed(
    router: Router,
    slot: Slot,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    req.extensions_mut().insert(slot);
    router.oneshot(req).await
}

fn busy() -> Response<Body> {
    let mut response = Response::new(Body::from(
        "this edge holds as many connections as it may: retry shortly, or another edge\n",
    ));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}
