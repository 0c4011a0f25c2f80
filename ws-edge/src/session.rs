//! One WebSocket connection.
//!
//! The session task selects over the client's frames, the upstream [`Feed`], a ping
//! timer, the token's expiry and shutdown. Frames for the client go through ONE
//! bounded queue to a writer task that writes every frame ready and then flushes
//! once. When the queue is full the client is not reading fast enough: rather than
//! buffer without limit, the connection is closed with 1013 and the app reconnects
//! (its state comes back as a snapshot). Every socket write has a timeout, so a
//! peer that stopped reading cannot hold the writer forever.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::SinkExt;
use futures::stream::{SplitSink, StreamExt};
use logi::auth::{Principal, Role};
use logi::pb;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::close;
use crate::dialect::{self, Audience, inbound};
use crate::route::Route;
use crate::upstream::{Feed, Upstream};

/// A write (a batch of frames and its flush) that takes longer ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames written per flush at most, so one busy connection cannot starve the flush.
const MAX_BATCH: usize = 64;

#[derive(Debug, Clone)]
pub struct Settings {
    pub ping_interval: Duration,
    pub outbound_queue: usize,
    pub max_frame_bytes: usize,
}

pub struct Session {
    pub route: Route,
    pub principal: Principal,
    pub upstream: Upstream,
    pub settings: Settings,
    pub shutdown: CancellationToken,
    /// Subscribed before the upgrade.
    pub feed: Feed,
    /// The snapshot read after subscribing, sent before any event.
    pub snapshot: Vec<Value>,
}

/// The audience of a connection.
pub fn audience(route: Route, principal: &Principal) -> Audience {
    Audience {
        dialect: route.dialect,
        principal: principal.id.clone(),
        role: principal.role,
    }
}

/// The state of the principal's bookings in progress, as ordinary frames.
///
/// # Errors
/// The status core-svc answered.
pub async fn snapshot(
    upstream: &Upstream,
    route: Route,
    principal: &Principal,
) -> Result<Vec<Value>, tonic::Status> {
    let bookings = upstream.active_bookings(principal).await?;
    let topic = match principal.role {
        Role::User => logi::topic::Topic::UserBookings(principal.id.clone()),
        _ => logi::topic::Topic::DriverBookings(principal.id.clone()),
    }
    .to_string();
    let audience = audience(route, principal);
    Ok(bookings
        .iter()
        .flat_map(|b| dialect::snapshot(b, &topic, &audience))
        .collect())
}

/// Why the session ended; `None` code: the client went away, nothing to send.
struct End {
    code: Option<u16>,
    reason: String,
}

impl End {
    fn close(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            reason: reason.into(),
        }
    }

    fn gone() -> Self {
        Self {
            code: None,
            reason: "client went away".into(),
        }
    }
}

/// Queues a frame; a full queue means the client is too slow.
fn enqueue(out: &mpsc::Sender<Message>, frame: &Value) -> Result<(), End> {
    match out.try_send(Message::Text(frame.to_string().into())) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(_)) => Err(End::close(
            close::TRY_AGAIN_LATER,
            "too slow: frames were not read in time, reconnect",
        )),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(End::gone()),
    }
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut frames: mpsc::Receiver<Message>,
    mut close: oneshot::Receiver<Option<CloseFrame>>,
) {
    loop {
        tokio::select! {
            biased;
            frame = &mut close => {
                if let Ok(Some(frame)) = frame {
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
                }
                return;
            }
            first = frames.recv() => {
                let Some(first) = first else { return };
                let batch = async {
                    sink.feed(first).await?;
                    for _ in 1..MAX_BATCH {
                        let Ok(next) = frames.try_recv() else { break };
                        sink.feed(next).await?;
                    }
                    sink.flush().await
                };
                match tokio::time::timeout(WRITE_TIMEOUT, batch).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => return,
                }
            }
        }
    }
}

impl Session {
    /// Serves the connection until either side ends it.
    pub async fn run(mut self, socket: WebSocket) {
        let span = tracing::info_span!(
            "ws",
            principal = %self.principal.id,
            role = self.principal.role.as_str(),
            route = ?self.route.dialect,
        );
        async move {
            let (sink, incoming) = socket.split();
            let (out, frames) = mpsc::channel(self.settings.outbound_queue);
            let (close_tx, close_rx) = oneshot::channel();
            let writer = tokio::spawn(write_loop(sink, frames, close_rx));
            tracing::debug!("connected");
            let end = self.serve(incoming, &out).await;
            tracing::debug!(code = ?end.code, reason = %end.reason, "closing");
            let frame = end.code.map(|code| CloseFrame {
                code,
                reason: end.reason.into(),
            });
            let _ = close_tx.send(frame);
            drop(out);
            let _ = tokio::time::timeout(WRITE_TIMEOUT, writer).await;
        }
        .instrument(span)
        .await;
    }

    fn expiry(&self) -> Instant {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Instant::now() + Duration::from_secs(self.principal.expires_at).saturating_sub(now)
    }

    async fn serve(
        &mut self,
        mut incoming: futures::stream::SplitStream<WebSocket>,
        out: &mpsc::Sender<Message>,
    ) -> End {
        let expiry = self.expiry();
        for frame in std::mem::take(&mut self.snapshot) {
            if let Err(end) = enqueue(out, &frame) {
                return end;
            }
        }
        let audience = audience(self.route, &self.principal);
        let interval = self.settings.ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
        let mut last_pong = Instant::now();
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return End::close(close::GOING_AWAY, "server shutting down"),
                () = tokio::time::sleep_until(expiry) => return End::close(close::TOKEN_EXPIRED, "token expired"),
                _ = ping.tick() => {
                    if last_pong.elapsed() > interval * 2 {
                        return End::close(close::PING_TIMEOUT, "no answer to two pings");
                    }
                    if out.try_send(Message::Ping(Default::default())).is_err() {
                        return End::close(close::TRY_AGAIN_LATER, "too slow: frames were not read in time, reconnect");
                    }
                }
                message = incoming.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        last_pong = Instant::now();
                        if let Err(end) = self.inbound(text.as_str(), out).await {
                            return end;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        if let Err(end) = enqueue(out, &dialect::error_frame("binary frames are not supported: send JSON text")) {
                            return end;
                        }
                    }
                    Some(Ok(Message::Pong(_) | Message::Ping(_))) => last_pong = Instant::now(),
                    Some(Ok(Message::Close(_))) | None => return End::gone(),
                    Some(Err(e)) => return self.read_error(e),
                },
                event = self.feed.next() => match event {
                    Ok(event) => {
                        if let Err(end) = self.deliver(&event, &audience, out).await {
                            return end;
                        }
                    }
                    Err(end) => {
                        tracing::warn!(?end, "core-svc feed ended");
                        return End::close(end.close_code(), "core-svc is unavailable, reconnect");
                    }
                },
            }
        }
    }

    fn read_error(&self, e: axum::Error) -> End {
        let inner = e.into_inner();
        match inner.downcast_ref::<tungstenite::Error>() {
            Some(tungstenite::Error::Capacity(_)) => End::close(
                close::TOO_BIG,
                format!(
                    "frames may be at most {} bytes",
                    self.settings.max_frame_bytes
                ),
            ),
            _ => End::gone(),
        }
    }

    async fn deliver(
        &self,
        event: &pb::Event,
        audience: &Audience,
        out: &mpsc::Sender<Message>,
    ) -> Result<(), End> {
        if let Some(pb::event::Kind::ResyncRequired(r)) = &event.kind {
            // core-svc lost the history after our cursor: show the current state again.
            tracing::info!(detail = %r.detail, "resync: sending a fresh snapshot");
            let frames = match snapshot(&self.upstream, self.route, &self.principal).await {
                Ok(frames) => frames,
                Err(status) => {
                    tracing::warn!(code = ?status.code(), "no fresh snapshot after a resync");
                    Vec::new()
                }
            };
            for frame in &frames {
                enqueue(out, frame)?;
            }
            return Ok(());
        }
        for frame in dialect::render(event, audience) {
            enqueue(out, &frame)?;
        }
        Ok(())
    }

    async fn inbound(&self, text: &str, out: &mpsc::Sender<Message>) -> Result<(), End> {
        let answer = match inbound::parse(self.route.dialect, text) {
            Err(e) => Some(e.to_string()),
            Ok(_) if self.principal.role != Role::Driver => {
                Some("only drivers may send their location".to_owned())
            }
            Ok(position) => match self
                .upstream
                .forward_location(&self.principal.id, position)
                .await
            {
                Ok(()) => None,
                Err(status) => Some(close::location_error(&status)),
            },
        };
        match answer {
            Some(message) => enqueue(out, &dialect::error_frame(&message)),
            None => Ok(()),
        }
    }
}
