//! The HTTP side: WebSocket routes (checked before the upgrade; a plain GET with a
//! good token gets 426), `/healthz` (the process is up), `/readyz` (every
//! attachment is up, on whichever replica, and some core-svc replica answers its
//! health check), `/metrics` (Prometheus text) and the operations page under
//! `/ops/` ([`crate::ops`]).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use logi::auth::{Principal, Verifier};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{self, PrincipalCaps, Slot, Slots};
use crate::attach::Attachments;
use crate::config::Config;
use crate::inbox;
use crate::metrics::{self, Handshake, Metrics, Plain};
use crate::resume;
use crate::route::Route;
use crate::session::{self, Recover, Session, Settings, Source};
use crate::upstream::{Credential, Feed, Upstream};
use crate::{accept, handshake, ops};

/// tungstenite's read buffer is 128 KiB by default, allocated for every connection.
/// Apps send a few small JSON frames (a GPS position is under 100 bytes); a bigger
/// frame makes the buffer grow to its length, up to the frame limit.
const READ_BUFFER: usize = 512;
/// Frames accumulate up to this much before going to the socket (or at each flush).
const WRITE_BUFFER: usize = 8 * 1024;
/// A hard cap on what tungstenite may hold unwritten for one connection: past it
/// writing waits for the socket, the outbox fills, and a client that is not reading
/// is closed with 1013 instead of growing this buffer.
const MAX_WRITE_BUFFER: usize = 64 * 1024;
/// The same for an operations console (`?fleet=1`): one frame holds the fleet's
/// snapshot, up to core-svc's 20,000 drivers (a few MB of JSON), and tungstenite
/// refuses, and so ends the connection on, any frame larger than its cap.
const FLEET_MAX_WRITE_BUFFER: usize = 8 * 1024 * 1024;

/// How long a handshake waits for the app's snapshot through the attachment.
const SNAPSHOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(String),
    #[error("HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Binds the listening socket, with SO_REUSEPORT when asked for. A send buffer
/// size set here is inherited by every accepted connection.
///
/// # Errors
/// When the address cannot be bound.
pub fn bind(
    addr: std::net::SocketAddr,
    reuse_port: bool,
    send_buffer: Option<u32>,
) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    if let Some(bytes) = send_buffer {
        socket.set_send_buffer_size(bytes)?;
    }
    socket.bind(addr)?;
    socket.listen(4096)
}

#[derive(Clone)]
struct Edge {
    verifier: Arc<Verifier>,
    upstream: Upstream,
    attachments: Attachments,
    settings: Settings,
    shutdown: CancellationToken,
    sessions: TaskTracker,
    caps: PrincipalCaps,
    metrics: Arc<Metrics>,
    registry: Arc<prometheus_client::registry::Registry>,
}

/// Serves the edge on `listener` until `shutdown`, then closes every connection
/// with 1001 and waits up to the configured grace period for them.
///
/// # Errors
/// [`ServeError`] for bad configuration or a failing listener.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    config.validate().map_err(ServeError::Config)?;
    let verifier = Arc::new(config.jwt.verifier().map_err(ServeError::Config)?);
    let credential = match (
        config.jwt.signer(),
        &config.core_token,
        &config.core_token_file,
    ) {
        (_, Some(token), _) => Credential::Static(token.clone()),
        (_, None, Some(path)) => Credential::File(path.clone()),
        (Some(signer), None, None) => Credential::Mint(signer),
        (None, None, None) => {
            return Err(ServeError::Config("LOGI_CORE_TOKEN is required".into()));
        }
    };
    let upstream = Upstream::new(&config.core_url, credential, config.upstream_outage_limit)
        .map_err(ServeError::Config)?;
    let links = TaskTracker::new();
    let mut registry = logi::metrics::registry();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let attachments = Attachments::start(
        &upstream,
        config.attachments,
        config.upstream_outage_limit,
        &metrics,
        &shutdown,
        &links,
    );
    registry.register_collector(Box::new(metrics::State(Arc::new(attachments.clone()))));
    let edge = Edge {
        verifier,
        upstream,
        attachments,
        settings: Settings {
            ping_interval: config.ping_interval,
            outbound_queue: config.outbound_queue,
            max_frame_bytes: config.max_frame_bytes,
        },
        shutdown: shutdown.clone(),
        sessions: TaskTracker::new(),
        caps: PrincipalCaps::new(config.max_connections_per_principal),
        metrics: metrics.clone(),
        registry: Arc::new(registry),
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape))
        .merge(ops::routes())
        .fallback(upgrade)
        .with_state(edge.clone());
    let max_connections = match config.max_connections {
        0 => admission::default_max_connections(),
        n => n,
    };
    tracing::info!(addr = %listener.local_addr()?, core = %config.core_url.join(","), max_connections, "ws-edge ready");
    let limits = accept::Limits {
        handshake_timeout: config.handshake_timeout,
        max_header_bytes: config.max_header_bytes,
    };
    accept::serve(
        listener,
        app,
        Slots::new(max_connections),
        limits,
        metrics,
        shutdown.clone(),
        config.shutdown_grace,
    )
    .await;
    edge.sessions.close();
    if tokio::time::timeout(config.shutdown_grace, edge.sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!("grace period over: dropping the connections still open");
    }
    links.close();
    links.wait().await;
    tracing::info!("ws-edge stopped");
    Ok(())
}

async fn readyz(State(edge): State<Edge>) -> Response {
    if edge.attachments.ready() && edge.upstream.ready().await {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "core-svc is not reachable\n",
        )
            .into_response()
    }
}

async fn scrape(State(edge): State<Edge>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            logi::metrics::CONTENT_TYPE,
        )],
        logi::metrics::encode(&edge.registry),
    )
        .into_response()
}

/// Whether the query turns `name` on (`?name=1` or `?name=true`).
fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    matches!(query.get(name).map(String::as_str), Some("1" | "true"))
}

/// The opt-in resume of `?recover=1` / `?since=<cursor>` (which implies it).
fn recover_mode(query: Option<&HashMap<String, String>>, topics: usize) -> Option<Recover> {
    let query = query?;
    let since = query.get("since").filter(|s| !s.is_empty());
    let asked = flag(query, "recover");
    if !asked && since.is_none() {
        return None;
    }
    let (position, refused) = match since.map(|s| resume::Position::parse(s, topics)) {
        None => (resume::Position::new(topics), None),
        Some(Ok(position)) => (position, None),
        Some(Err(e)) => (resume::Position::new(topics), Some(e)),
    };
    Some(Recover { position, refused })
}

/// Where an app's frames will come from, set up before its upgrade is answered;
/// why not, when core-svc cannot serve it now.
async fn source(
    edge: &Edge,
    route: Route,
    principal: &Principal,
    topics: &[String],
    recover: Option<&Recover>,
) -> Result<Source, String> {
    if let Some(recover) = recover {
        // An app resuming from its own cursor has a Subscribe stream of its own.
        let cursors = recover
            .position
            .resume(topics)
            .map(|(t, c)| (t.clone(), c))
            .collect();
        let mut feed = Feed::new(edge.upstream.clone(), topics.to_vec(), cursors);
        feed.subscribe_now()
            .await
            .map_err(|s| format!("Subscribe: {:?}, {}", s.code(), s.message()))?;
        return Ok(Source::Feed(Box::new(feed)));
    }
    let audience = session::audience(route, principal);
    let membership = edge
        .attachments
        .join(topics, &audience, inbox::LIMIT)
        .map_err(|_| "its attachment is down".to_owned())?;
    // Answered once the snapshot is read, as a Subscribe's headers were: what is
    // committed after the app is connected is sure to reach it.
    match tokio::time::timeout(SNAPSHOT_TIMEOUT, membership.started()).await {
        Ok(Ok(())) => Ok(Source::Attached(membership)),
        Ok(Err(ended)) => Err(format!("{ended:?}")),
        Err(_) => Err("no snapshot came in time".to_owned()),
    }
}

/// A plain GET of a route with a good token (the operations page asks so before
/// opening its socket, as a browser's WebSocket cannot read a refusal's status):
/// 426, so that only a refusal is a 4xx other than this.
fn not_an_upgrade(principal: &Principal) -> Response {
    let message = format!(
        "this {} token may connect here: open it as a WebSocket (Upgrade: websocket)\n",
        principal.role.as_str()
    );
    (
        StatusCode::UPGRADE_REQUIRED,
        [(axum::http::header::UPGRADE, "websocket")],
        message,
    )
        .into_response()
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "core-svc is unavailable: retry shortly\n",
    )
        .into_response()
}

async fn upgrade(
    State(edge): State<Edge>,
    slot: Option<Extension<Slot>>,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let token = query
        .as_ref()
        .ok()
        .and_then(|q| q.get("token"))
        .map(String::as_str);
    // The path only: the query holds the token, which is never logged.
    let path = uri.path();
    let fleet = query.as_ref().is_ok_and(|q| flag(q, "fleet"));
    // Only an upgrade is counted as a handshake: plain GETs (a page's preflight,
    // a browser's favicon, scanners) would drown the refusals of real apps.
    let upgrade = handshake::asks_upgrade(&headers);
    let admitted = handshake::check(path, token, &edge.verifier).and_then(|(route, principal)| {
        let route = if fleet {
            handshake::fleet(route, &principal)?
        } else {
            route
        };
        Ok((route, principal))
    });
    let (route, principal) = match admitted {
        Ok(admitted) => admitted,
        Err(rejection) => {
            tracing::info!(path, status = rejection.status.as_u16(), reason = %rejection.message, "handshake refused");
            edge.metrics.answered(upgrade, rejection.status.as_u16());
            return (rejection.status, format!("{}\n", rejection.message)).into_response();
        }
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(WebSocketUpgradeRejection::InvalidConnectionHeader(_)) => {
            if !upgrade {
                edge.metrics.plain(Plain::UpgradeRequired);
            }
            return not_an_upgrade(&principal);
        }
        Err(rejection) => return rejection.into_response(),
    };
    let Some(hold) = edge.caps.hold(admission::key(&principal)) else {
        tracing::info!(path, status = 429, principal = %principal.id, "handshake refused: too many connections");
        edge.metrics.handshake(Handshake::TooMany);
        let message = format!(
            "{} {} already has {} connections open on this edge: close one first\n",
            principal.role.as_str(),
            principal.id,
            edge.caps.max()
        );
        return (StatusCode::TOO_MANY_REQUESTS, message).into_response();
    };
    // Registered before answering 101: once the app is connected its snapshot is
    // on its way, and everything after it follows.
    let topics: Vec<String> = route
        .topics(&principal)
        .iter()
        .map(ToString::to_string)
        .collect();
    let recover = recover_mode(query.as_ref().ok().map(|q| &q.0), topics.len());
    let source = match source(&edge, route, &principal, &topics, recover.as_ref()).await {
        Ok(source) => source,
        Err(why) => {
            tracing::warn!(path, reason = %why, "core-svc unavailable at handshake");
            edge.metrics.handshake(Handshake::Unavailable);
            return unavailable();
        }
    };
    let max = edge.settings.max_frame_bytes;
    let session = Session {
        route,
        principal,
        attachments: edge.attachments.clone(),
        settings: edge.settings.clone(),
        shutdown: edge.shutdown.clone(),
        topics,
        recover,
        held: (slot.map(|Extension(s)| s), hold),
        metrics: edge.metrics.clone(),
    };
    edge.metrics.handshake(Handshake::Upgraded);
    let sessions = edge.sessions.clone();
    let max_write = if route.fleet {
        FLEET_MAX_WRITE_BUFFER
    } else {
        MAX_WRITE_BUFFER
    };
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(max_write)
        .max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "upgrade failed"))
        .on_upgrade(move |socket| {
            // The session gets a task of its own, and axum's upgrade task ends here:
            // that task keeps its own copies of the socket and of this closure for as
            // long as the future it awaits runs, 4 KiB per connection.
            sessions.spawn(session.run(source, socket));
            std::future::ready(())
        })
}
