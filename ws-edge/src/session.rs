//! One WebSocket connection.
//!
//! One task per connection selects over the client's frames, its [`Source`] of
//! frames (the inbox the edge's attachments fill, or in recover mode a [`Feed`] of
//! its own), the [`Outbox`] of frames for the client
//! (written in batches, one flush each), a ping timer, the token's expiry and
//! shutdown. When the outbox is full the client is not reading fast enough: rather
//! than buffer without limit, the connection is closed with 1013 and the app
//! reconnects (its state comes back as a snapshot). A socket that takes no batch
//! for [`WRITE_TIMEOUT`] is dropped, so a peer that stopped reading cannot hold the
//! session forever.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::SinkExt;
use futures::Stream;
use futures::stream::{SplitStream, StreamExt};
use logi::auth::{Principal, Role};
use logi::pb::{self, event::Kind};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admission::{PrincipalHold, Slot};
use crate::attach::{Attachments, Membership};
use crate::close;
use crate::dialect::{self, Audience, inbound};
use crate::inbox::{self, Inbox};
use crate::inbox::{Ended, Item};
use crate::metrics::{FrameType, Inbound, Metrics, Slow};
use crate::outbox::{Outbox, Sink};
use crate::resume;
use crate::route::Route;
use crate::timers::{self, Beat, Heartbeat};
use crate::upstream::{Feed, FeedEnd};

/// A socket that takes no batch of frames for this long ends the connection; so
/// does a snapshot, or a close, not written in this time.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After sending a close, how long the peer's close reply is waited for (reading
/// on, as the protocol asks) before the TCP connection is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Settings {
    pub ping_interval: Duration,
    pub outbound_queue: usize,
    pub max_frame_bytes: usize,
}

pub struct Session {
    pub route: Route,
    pub principal: Principal,
    /// Where the driver's positions go up.
    pub attachments: Attachments,
    pub settings: Settings,
    pub shutdown: CancellationToken,
    /// The route's topics, in the route's order.
    pub topics: Vec<String>,
    /// Set with `?recover=1` (or `?since=`).
    pub recover: Option<Recover>,
    /// The connection's place under the edge's limits, given back when the session ends.
    pub held: (Option<Slot>, PrincipalHold),
    pub metrics: Arc<Metrics>,
}

/// Where a session's frames come from; set up before the upgrade, so the app's
/// snapshot is on its way when it is connected.
pub enum Source {
    /// The edge's attachments: frames rendered once for every app alike, and the
    /// app's own snapshot.
    Attached(Membership),
    /// A Subscribe stream of its own, for an app in recover mode: its replay and
    /// cursors are its own. Boxed: the feed is far larger, and rare.
    Feed(Box<Feed>),
}

type Events = Pin<Box<dyn Stream<Item = Result<pb::Event, FeedEnd>> + Send>>;

/// A [`Source`] being read.
enum Incoming {
    Attached(Membership),
    /// The feed, and an inbox of its own for the answers to the driver's positions.
    Feed(Events, Arc<Inbox>),
}

impl Incoming {
    fn new(source: Source) -> Self {
        match source {
            Source::Attached(membership) => Self::Attached(membership),
            Source::Feed(feed) => {
                Self::Feed(Box::pin((*feed).into_stream()), Inbox::new(0, inbox::LIMIT))
            }
        }
    }

    /// Where the answers to the driver's positions go.
    fn inbox(&self) -> &Arc<Inbox> {
        match self {
            Self::Attached(membership) => &membership.inbox,
            Self::Feed(_, inbox) => inbox,
        }
    }

    /// Hands back the queue of a take, emptied, for the next one.
    fn give_back(&self, spare: VecDeque<Item>) {
        self.inbox().give_back(spare);
    }

    /// What is there, at most `room` frames of it from the inbox. Cancel-safe.
    fn poll_take(
        &mut self,
        cx: &mut Context<'_>,
        room: usize,
    ) -> Poll<Result<VecDeque<Item>, Ended>> {
        match self {
            Self::Attached(membership) => membership.inbox.poll_take(cx, room),
            // Not held back by `room`: a full outbox closes a recover-mode app as
            // slow, rather than making core-svc hold its events.
            Self::Feed(events, inbox) => match inbox.poll_take(cx, room) {
                Poll::Pending => Self::poll_feed(events, cx),
                ready => ready,
            },
        }
    }

    fn poll_feed(events: &mut Events, cx: &mut Context<'_>) -> Poll<Result<VecDeque<Item>, Ended>> {
        match events.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(event))) => {
                Poll::Ready(Ok(VecDeque::from([Item::Event(Arc::new(event))])))
            }
            Poll::Ready(Some(Err(end))) => Poll::Ready(Err(Ended::Feed(end))),
            Poll::Ready(None) => Poll::Ready(Err(Ended::Stopped)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The opt-in resume of an app: where it stands, and a `resync` frame owed to it.
#[derive(Debug)]
pub struct Recover {
    pub position: resume::Position,
    /// The refusal of the app's `since` by the edge itself, told before any frame.
    pub refused: Option<resume::CursorError>,
}

/// The audience of a connection.
pub fn audience(route: Route, principal: &Principal) -> Audience {
    Audience {
        dialect: route.dialect,
        principal: principal.id.clone(),
        role: principal.role,
    }
}

/// Why the session ended.
struct End {
    /// `None`: the connection is gone, there is nobody to tell.
    code: Option<u16>,
    reason: String,
    /// Closed as slow: the queue that overflowed.
    slow: Option<Slow>,
}

impl End {
    fn close(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            reason: reason.into(),
            slow: None,
        }
    }

    fn gone() -> Self {
        Self {
            code: None,
            reason: "client went away".into(),
            slow: None,
        }
    }

    fn stalled() -> Self {
        Self {
            code: None,
            reason: "the socket took nothing for too long".into(),
            slow: None,
        }
    }

    /// The outbox is full.
    fn slow() -> Self {
        Self::slow_at(Slow::Outbox)
    }

    fn slow_at(queue: Slow) -> Self {
        Self {
            slow: Some(queue),
            ..Self::close(
                close::TRY_AGAIN_LATER,
                "too slow: frames were not read in time, reconnect",
            )
        }
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
    out.push(text(frame)).map_err(|_| End::slow())
}

impl Session {
    /// Serves the connection until either side ends it.
    ///
    /// No span around the session: entering and leaving one at every wake-up
    /// showed in the fan-out profile; its few log lines name the principal instead.
    pub fn run(self, source: Source, socket: WebSocket) -> impl Future<Output = ()> + Send {
        // Not an `async move` block inside an `async fn`: that would keep the
        // session twice in the task, once in each.
        self.connected(Incoming::new(source), socket)
    }

    async fn connected(mut self, mut source: Incoming, socket: WebSocket) {
        let (mut sink, mut incoming) = socket.split();
        let _connected = self.metrics.connected(self.route, self.principal.role);
        let mut out = Outbox::new(
            self.settings.outbound_queue,
            self.metrics.outbox_backlog.clone(),
        );
        tracing::debug!(principal = %self.principal.id, role = self.principal.role.as_str(), route = ?self.route.dialect, "connected");
        let end = self
            .serve(&mut source, &mut sink, &mut incoming, &mut out)
            .await;
        // Off the topics before the goodbye, which may take a while.
        drop(source);
        tracing::debug!(principal = %self.principal.id, code = ?end.code, reason = %end.reason, "closing");
        self.metrics.closed(end.code);
        if let Some(queue) = end.slow {
            self.metrics.slow(queue);
        }
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

    async fn serve(
        &mut self,
        source: &mut Incoming,
        sink: &mut Sink,
        incoming: &mut SplitStream<WebSocket>,
        out: &mut Outbox,
    ) -> End {
        let mut delivery = Delivery {
            metrics: self.metrics.clone(),
            audience: audience(self.route, &self.principal),
            topics: std::mem::take(&mut self.topics),
            recover: self.recover.take(),
        };
        let mut heartbeat = Heartbeat::new(self.settings.ping_interval);
        // Made once, not per turn of the loop: each would be registered and removed
        // again for every event.
        let shutdown = self.shutdown.clone();
        let mut stopping = std::pin::pin!(shutdown.cancelled());
        let mut expired = std::pin::pin!(tokio::time::sleep_until(timers::token_deadline(
            self.principal.time_left()
        )));
        // Since when the busy outbox waits for the socket to take a batch; by
        // WRITE_TIMEOUT after that it must have. The timer is set only when it is
        // not set already, and checked when it fires: not moved at every write.
        // It fires halfway through a wait first, so that the backlog of an app
        // that stopped reading is reported while it may still catch up.
        let mut waiting_since: Option<Instant> = None;
        let mut stall = std::pin::pin!(tokio::time::sleep(WRITE_TIMEOUT));
        let mut stall_armed = false;
        loop {
            if out.busy() {
                let since = *waiting_since.get_or_insert_with(Instant::now);
                if !stall_armed {
                    let halfway = since + WRITE_TIMEOUT / 2;
                    let at = if Instant::now() < halfway {
                        halfway
                    } else {
                        since + WRITE_TIMEOUT
                    };
                    stall.as_mut().reset(at);
                    stall_armed = true;
                    // Here and when the timer fires, not per frame: a flush that
                    // never completes reports nothing itself.
                    out.report_waiting();
                }
            }
            let room = out.room();
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
                    waiting_since = None;
                }
                () = &mut stall, if stall_armed => {
                    stall_armed = false;
                    out.report_waiting();
                    if waiting_since.is_some_and(|since| since.elapsed() >= WRITE_TIMEOUT) {
                        return End::stalled();
                    }
                }
                message = incoming.next() => {
                    match message {
                        Some(Ok(Message::Text(text))) => {
                            heartbeat.answered();
                            if let Err(end) = self.inbound(text.as_str(), source.inbox(), out) {
                                return end;
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            heartbeat.answered();
                            self.metrics.received(Inbound::Error);
                            self.metrics.frames_sent(FrameType::Error, 1);
                            let error = dialect::error_frame("binary frames are not supported: send JSON text");
                            if let Err(end) = enqueue(out, &error) {
                                return end;
                            }
                        }
                        Some(Ok(Message::Pong(_) | Message::Ping(_))) => heartbeat.answered(),
                        // Answer the client's close, as the protocol asks.
                        Some(Ok(Message::Close(_))) => return End::close(1000, ""),
                        None => return End::gone(),
                        Some(Err(e)) => return self.read_error(e),
                    }
                }
                beat = heartbeat.tick() => match beat {
                    Beat::Silent => return End::close(close::PING_TIMEOUT, "no answer to two pings"),
                    Beat::Ping => {
                        if out.push(Message::Ping(Default::default())).is_err() {
                            return End::slow();
                        }
                    }
                },
                // Frames already waiting come without a wait: if they did not draw
                // on the task's budget like the socket writes do, a burst would fill
                // the outbox while those writes are put off, and a healthy client
                // would be closed as slow.
                taken = tokio::task::coop::cooperative(std::future::poll_fn(|cx| source.poll_take(cx, room))) => match taken {
                    Ok(mut items) => {
                        while let Some(item) = items.pop_front() {
                            let queued = match item {
                                Item::Frame(text) => out.push(Message::Text(text)).map_err(|_| End::slow()),
                                Item::Event(event) => delivery.deliver(&event, out),
                            };
                            if let Err(end) = queued {
                                return end;
                            }
                        }
                        source.give_back(items);
                    }
                    Err(Ended::Slow) => return End::slow_at(Slow::Inbox),
                    Err(Ended::Feed(end)) => {
                        tracing::warn!(principal = %self.principal.id, ?end, "core-svc feed ended");
                        return End::close(end.close_code(), feed_end_reason(&end));
                    }
                    Err(Ended::Stopped) => return End::close(close::INTERNAL, "the event feed stopped, reconnect"),
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

    /// Answers a malformed frame at once; a position goes to the driver's relay,
    /// which answers a refusal through `inbox`.
    fn inbound(&self, text: &str, inbox: &Arc<Inbox>, out: &mut Outbox) -> Result<(), End> {
        let refusal = match inbound::parse(self.route.dialect, text) {
            Err(e) => e.to_string(),
            Ok(_) if self.principal.role != Role::Driver => {
                "only drivers may send their location".to_owned()
            }
            Ok(position) => {
                self.metrics.received(Inbound::Location);
                let driver = &self.principal.id;
                self.attachments
                    .relay(driver.as_str())
                    .push(driver, position, inbox);
                return Ok(());
            }
        };
        self.metrics.received(Inbound::Error);
        self.metrics.frames_sent(FrameType::Error, 1);
        enqueue(out, &dialect::error_frame(&refusal))
    }
}

fn feed_end_reason(end: &FeedEnd) -> &'static str {
    match end {
        FeedEnd::Outage(_) => "core-svc is unavailable, reconnect",
        FeedEnd::Refused(_) => "core-svc refused the subscription, reconnect later",
    }
}

/// Turns a connection's events into its frames.
struct Delivery {
    metrics: Arc<Metrics>,
    audience: Audience,
    topics: Vec<String>,
    recover: Option<Recover>,
}

/// In recover mode, the cursors an event's frames carry, made only when a frame
/// carries them (positions, the bulk of the frames, carry none).
#[derive(Default)]
struct Cursors {
    /// Where the app stands before the event: on frames that do not yet show all
    /// of it (a resync, all but the last frame of a snapshot), so that an app cut
    /// off among them and resuming from the last cursor it got loses nothing.
    before: Option<String>,
    /// Where it stands once it has all of the event's frames.
    after: Option<String>,
}

impl Delivery {
    fn deliver(&mut self, event: &pb::Event, out: &mut Outbox) -> Result<(), End> {
        let Some(kind) = &event.kind else {
            return Ok(());
        };
        let cursors = self.advance(event, kind);
        let before = cursors.before.as_deref();
        let after = cursors.after.as_deref();
        if let Some(recover) = &mut self.recover
            && let Some(refused) = recover.refused.take()
        {
            let frame =
                dialect::resync_frame(&self.audience, "invalid_cursor", &refused.to_string());
            self.metrics.frames_sent(FrameType::Resync, 1);
            enqueue(out, &stamped(frame, before))?;
        }
        let frames = match kind {
            Kind::ResyncRequired(r) => {
                let Some(_) = &self.recover else {
                    // core-svc's history no longer reaches our cursor (its database
                    // was replaced or restored): events may be missing, so the app
                    // starts over.
                    tracing::warn!(principal = %self.audience.principal, detail = %r.detail, "resync required: closing so the app reconnects");
                    return Err(End::close(
                        close::SERVICE_RESTART,
                        "core-svc's history was reset, reconnect",
                    ));
                };
                // The snapshot follows from core-svc.
                let frame = dialect::resync_frame(
                    &self.audience,
                    dialect::resync_reason(r.reason),
                    &r.detail,
                );
                self.metrics.frames_sent(FrameType::Resync, 1);
                return enqueue(out, &stamped(frame, before));
            }
            Kind::Snapshot(snap) => {
                let frames = dialect::snapshot(snap, &event.topic, &self.audience);
                self.metrics.frames_sent(FrameType::Snapshot, frames.len());
                let last = frames.len().saturating_sub(1);
                // Bounded by core-svc (a few dozen bookings and offers), and allowed
                // past the outbox's limit: an app with many bookings is not slow.
                for (i, frame) in frames.into_iter().enumerate() {
                    let cursor = if i == last { after } else { before };
                    out.push_snapshot(text(&stamped(frame, cursor)));
                }
                return Ok(());
            }
            _ => dialect::render(event, &self.audience),
        };
        self.metrics.frames_sent(FrameType::of(kind), frames.len());
        for frame in frames {
            enqueue(out, &stamped(frame, after))?;
        }
        Ok(())
    }

    /// In recover mode, moves the app's position to `event`; the cursors its frames
    /// carry: `after` for durable ones, `before` for a resync or a snapshot.
    fn advance(&mut self, event: &pb::Event, kind: &Kind) -> Cursors {
        let Some(recover) = self.recover.as_mut() else {
            return Cursors::default();
        };
        let (Some(index), Some(cursor)) = (
            self.topics.iter().position(|t| *t == event.topic),
            event.cursor,
        ) else {
            return Cursors::default();
        };
        let starts_over = matches!(kind, Kind::ResyncRequired(_) | Kind::Snapshot(_));
        let before = (starts_over || recover.refused.is_some())
            .then(|| recover.position.before(cursor).encode())
            .flatten();
        recover.position.advance(index, cursor);
        let after = dialect::is_durable(kind)
            .then(|| recover.position.encode())
            .flatten();
        Cursors { before, after }
    }
}

fn stamped(frame: Value, cursor: Option<&str>) -> Value {
    match cursor {
        Some(c) => dialect::with_cursor(frame, c),
        None => frame,
    }
}

fn text(frame: &Value) -> Message {
    Message::Text(frame.to_string().into())
}
