//! One WebSocket connection.
//!
//! One task per connection selects over the client's frames, the upstream [`Feed`]
//! (polled as a cancel-safe stream), the [`Outbox`] of frames for the client
//! (written in batches, one flush each), a ping timer, the token's expiry and
//! shutdown. When the outbox is full the client is not reading fast enough: rather
//! than buffer without limit, the connection is closed with 1013 and the app
//! reconnects (its state comes back as a snapshot). A socket that takes no batch
//! for [`WRITE_TIMEOUT`] is dropped, so a peer that stopped reading cannot hold the
//! session forever.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::SinkExt;
use futures::stream::{SplitStream, StreamExt};
use logi::auth::{Principal, Role};
use logi::pb;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::close;
use crate::dialect::{self, Audience, inbound};
use crate::outbox::{Outbox, Sink};
use crate::route::Route;
use crate::upstream::{Feed, FeedEnd, Upstream};

/// A socket that takes no batch of frames for this long ends the connection; so
/// does a snapshot, or a close, not written in this time.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pings left unanswered before the client is closed.
const MAX_UNANSWERED_PINGS: u32 = 2;
/// After sending a close, how long the peer's close reply is waited for (reading
/// on, as the protocol asks) before the TCP connection is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// The longest a token is waited for: later expiries are treated as this.
const MAX_TOKEN_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct Settings {
    pub ping_interval: Duration,
    pub outbound_queue: usize,
    pub max_frame_bytes: usize,
}

/// A booking as the snapshot showed it: events up to this time are already shown.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Shown {
    updated_at: (i64, i32),
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
    pub snapshot: Snapshot,
}

/// The frames that show a principal its bookings in progress, and what they cover.
#[derive(Debug, Default)]
pub struct Snapshot {
    frames: Vec<Value>,
    shown: HashMap<u64, Shown>,
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
) -> Result<Snapshot, tonic::Status> {
    let mut bookings = upstream.active_bookings(principal).await?;
    let topic = match principal.role {
        Role::User => logi::topic::Topic::UserBookings(principal.id.clone()),
        _ => {
            // Only a rider is shown its OTP.
            bookings.iter_mut().for_each(|b| b.otp.clear());
            logi::topic::Topic::DriverBookings(principal.id.clone())
        }
    }
    .to_string();
    let audience = audience(route, principal);
    let mut snap = Snapshot::default();
    for b in &bookings {
        snap.frames.extend(dialect::snapshot(b, &topic, &audience));
        let at = b.updated_at.map_or((0, 0), |t| (t.seconds, t.nanos));
        snap.shown.insert(b.id, Shown { updated_at: at });
    }
    Ok(snap)
}

/// Why the session ended.
struct End {
    /// `None`: the connection is gone, there is nobody to tell.
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

    fn stalled() -> Self {
        Self {
            code: None,
            reason: "the socket took nothing for too long".into(),
        }
    }

    fn slow() -> Self {
        Self::close(
            close::TRY_AGAIN_LATER,
            "too slow: frames were not read in time, reconnect",
        )
    }

    /// Whether frames already queued should still be written before the close: not
    /// when the client is the one not reading.
    fn drains(&self) -> bool {
        !matches!(
            self.code,
            Some(close::TRY_AGAIN_LATER | close::PING_TIMEOUT)
        )
    }
}

/// Queues a frame; a full outbox means the client is too slow.
fn enqueue(out: &mut Outbox, frame: &Value) -> Result<(), End> {
    out.push(Message::Text(frame.to_string().into()))
        .map_err(|_| End::slow())
}

impl Session {
    /// Serves the connection until either side ends it.
    pub fn run(self, socket: WebSocket) -> impl Future<Output = ()> + Send {
        let span = tracing::info_span!(
            "ws",
            principal = %self.principal.id,
            role = self.principal.role.as_str(),
            route = ?self.route.dialect,
        );
        // Not an `async move` block inside an `async fn`: that would keep the
        // session twice in the task, once in each.
        self.connected(socket).instrument(span)
    }

    async fn connected(mut self, socket: WebSocket) {
        let (mut sink, mut incoming) = socket.split();
        let mut out = Outbox::new(self.settings.outbound_queue);
        tracing::debug!("connected");
        let end = self.serve(&mut sink, &mut incoming, &mut out).await;
        tracing::debug!(code = ?end.code, reason = %end.reason, "closing");
        let Some(code) = end.code else { return };
        let last_words = async {
            if end.drains() {
                out.write_all(&mut sink).await?;
            }
            let frame = CloseFrame {
                code,
                reason: end.reason.into(),
            };
            sink.send(Message::Close(Some(frame))).await
        };
        // Whatever became of our close, read on for the peer's: reading also
        // writes tungstenite's own reply to a close the peer sent first.
        let _ = tokio::time::timeout(WRITE_TIMEOUT, last_words).await;
        let reply = async {
            while let Some(Ok(message)) = incoming.next().await {
                if let Message::Close(_) = message {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_LINGER, reply).await;
    }

    fn expiry(&self) -> Instant {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let left = Duration::from_secs(self.principal.expires_at).saturating_sub(now);
        Instant::now() + left.min(MAX_TOKEN_WAIT)
    }

    async fn serve(
        &mut self,
        sink: &mut Sink,
        incoming: &mut SplitStream<WebSocket>,
        out: &mut Outbox,
    ) -> End {
        let snapshot = std::mem::take(&mut self.snapshot);
        // Written at once, not queued: a snapshot may be longer than the outbox.
        let shown = async {
            for frame in &snapshot.frames {
                sink.feed(Message::Text(frame.to_string().into())).await?;
            }
            sink.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, shown).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return End::gone(),
            Err(_) => return End::slow(),
        }
        let feed = std::mem::replace(&mut self.feed, Feed::new(self.upstream.clone(), Vec::new()));
        let mut events = std::pin::pin!(feed.into_stream());
        let audience = audience(self.route, &self.principal);
        let interval = self.settings.ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
        let mut unanswered = 0u32;
        // Made once, not per turn of the loop: each would be registered and removed
        // again for every event.
        let shutdown = self.shutdown.clone();
        let mut stopping = std::pin::pin!(shutdown.cancelled());
        let mut expired = std::pin::pin!(tokio::time::sleep_until(self.expiry()));
        // Armed while the outbox is busy: by then the socket must have taken a batch.
        let mut stall = std::pin::pin!(tokio::time::sleep(WRITE_TIMEOUT));
        let mut stall_armed = false;
        loop {
            if out.busy() && !stall_armed {
                stall.as_mut().reset(Instant::now() + WRITE_TIMEOUT);
                stall_armed = true;
            }
            // In this order: writing before taking in more, so the outbox does not
            // fill while the socket would take it (a random pick could pass over the
            // write branch often enough to fill a small outbox); the stall only when
            // nothing could be written; the client's frames (pongs among them)
            // before the ping timer and events, so neither a due ping nor a busy feed
            // can make a client that answered look silent.
            tokio::select! {
                biased;
                () = &mut stopping => return End::close(close::GOING_AWAY, "server shutting down"),
                () = &mut expired => return End::close(close::TOKEN_EXPIRED, "token expired"),
                written = std::future::poll_fn(|cx| out.poll_write(sink, cx)), if out.busy() => {
                    if written.is_err() {
                        return End::gone();
                    }
                    stall_armed = false;
                }
                () = &mut stall, if stall_armed => return End::stalled(),
                message = incoming.next() => {
                    match message {
                        Some(Ok(Message::Text(text))) => {
                            unanswered = 0;
                            // Boxed: the session's task is not sized for the call to core-svc.
                            let called = Instant::now();
                            if let Err(end) = Box::pin(self.inbound(text.as_str(), out)).await {
                                return end;
                            }
                            // Nothing was written meanwhile, through no fault of the
                            // socket: the stall clock stops during our own call.
                            if stall_armed {
                                let deadline = stall.deadline() + called.elapsed();
                                stall.as_mut().reset(deadline);
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            unanswered = 0;
                            let error = dialect::error_frame("binary frames are not supported: send JSON text");
                            if let Err(end) = enqueue(out, &error) {
                                return end;
                            }
                        }
                        Some(Ok(Message::Pong(_) | Message::Ping(_))) => unanswered = 0,
                        // Answer the client's close, as the protocol asks.
                        Some(Ok(Message::Close(_))) => return End::close(1000, ""),
                        None => return End::gone(),
                        Some(Err(e)) => return self.read_error(e),
                    }
                }
                _ = ping.tick() => {
                    if unanswered >= MAX_UNANSWERED_PINGS {
                        return End::close(close::PING_TIMEOUT, "no answer to two pings");
                    }
                    if out.push(Message::Ping(Default::default())).is_err() {
                        return End::slow();
                    }
                    unanswered += 1;
                }
                // Events already buffered by HTTP/2 come without a wait: if they did
                // not draw on the task's budget like the socket writes do, a burst
                // would fill the outbox while those writes are put off, and a healthy
                // client would be closed as slow.
                event = tokio::task::coop::cooperative(events.next()) => match event {
                    Some(Ok(event)) => {
                        if let Err(end) = deliver(&event, &audience, &snapshot, out) {
                            return end;
                        }
                    }
                    Some(Err(end)) => {
                        tracing::warn!(?end, "core-svc feed ended");
                        return End::close(end.close_code(), feed_end_reason(&end));
                    }
                    None => return End::close(close::INTERNAL, "the event feed stopped, reconnect"),
                },
            }
        }
    }

    fn read_error(&self, e: axum::Error) -> End {
        match e.into_inner().downcast_ref::<tungstenite::Error>() {
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

    async fn inbound(&self, text: &str, out: &mut Outbox) -> Result<(), End> {
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

fn feed_end_reason(end: &FeedEnd) -> &'static str {
    match end {
        FeedEnd::Outage(_) => "core-svc is unavailable, reconnect",
        FeedEnd::Refused(_) => "core-svc refused the subscription, reconnect later",
    }
}

/// Whether the snapshot already showed what `event` says.
fn already_shown(event: &pb::Event, snapshot: &Snapshot) -> bool {
    let booking = match &event.kind {
        Some(pb::event::Kind::BookingChanged(c)) => c.booking.as_ref().map(|b| b.id),
        Some(pb::event::Kind::OtpIssued(o)) => Some(o.booking_id),
        _ => None,
    };
    let (Some(id), Some(at)) = (booking, event.occurred_at) else {
        return false;
    };
    snapshot
        .shown
        .get(&id)
        .is_some_and(|shown| (at.seconds, at.nanos) <= shown.updated_at)
}

fn deliver(
    event: &pb::Event,
    audience: &Audience,
    snapshot: &Snapshot,
    out: &mut Outbox,
) -> Result<(), End> {
    if let Some(pb::event::Kind::ResyncRequired(r)) = &event.kind {
        // core-svc's history no longer reaches our cursor (its database was replaced
        // or restored): events may be missing, so the app starts over.
        tracing::warn!(detail = %r.detail, "resync required: closing so the app reconnects");
        return Err(End::close(
            close::SERVICE_RESTART,
            "core-svc's history was reset, reconnect",
        ));
    }
    if already_shown(event, snapshot) {
        return Ok(());
    }
    for frame in dialect::render(event, audience) {
        enqueue(out, &frame)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(id: u64, at: (i64, i32)) -> pb::Event {
        pb::Event {
            topic: "user_12_bookings".into(),
            cursor: None,
            occurred_at: Some(prost_types::Timestamp {
                seconds: at.0,
                nanos: at.1,
            }),
            kind: Some(pb::event::Kind::BookingChanged(pb::BookingChanged {
                booking: Some(pb::Booking {
                    id,
                    ..Default::default()
                }),
                previous_status: 0,
            })),
        }
    }

    #[test]
    fn events_the_snapshot_already_showed_are_not_repeated() {
        let mut snapshot = Snapshot::default();
        snapshot.shown.insert(
            7,
            Shown {
                updated_at: (100, 5_000_000),
            },
        );
        assert!(already_shown(&changed(7, (100, 5_000_000)), &snapshot));
        assert!(already_shown(&changed(7, (99, 0)), &snapshot));
        assert!(
            !already_shown(&changed(7, (100, 6_000_000)), &snapshot),
            "a later change is news"
        );
        assert!(
            !already_shown(&changed(8, (1, 0)), &snapshot),
            "another booking is news"
        );
        let otp = pb::Event {
            kind: Some(pb::event::Kind::OtpIssued(pb::OtpIssued {
                booking_id: 7,
                otp: "123456".into(),
            })),
            ..changed(7, (100, 5_000_000))
        };
        assert!(already_shown(&otp, &snapshot));
    }
}
