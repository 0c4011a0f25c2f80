//! EventService.Attach: one stream per edge for every topic its apps read, each
//! topic's events sent once, in batches.
//!
//! # Shape
//! One task per attachment (its response stream) selects over shutdown, the
//! starts being read, the hub queue (ONE bounded queue for all its topics) and the
//! edge's requests. Each watched topic is in one of two states:
//! - **starting**: its start is being read (a snapshot or head marker, or the
//!   replay after the edge's cursor, or a ResyncRequired for a refused one); the
//!   live events of the topic that arrive meanwhile are held back;
//! - **live**: events after the last one sent go out, older ones are dropped.
//!
//! A fresh snapshot of a live topic (a new app on it) holds its live events back
//! the same way while it is read at head H; then the held events up to H go out,
//! the Snapshot at H, and the held events after it, so the edge can show the new
//! app the snapshot and only what follows. At most [`MAX_STARTING`] starts are read
//! at once; the edge's further requests wait meanwhile (HTTP/2 flow control holds
//! the edge back).
//!
//! # Bounds
//! The hub queue holds the configured number of events; events held back count
//! against the same bound. Past it the edge is too slow: the stream ends with
//! RESOURCE_EXHAUSTED and the edge attaches again with each topic's cursor. A
//! replay longer than [`MAX_REPLAY`] is not sent: the topic gets a
//! ResyncRequired and a snapshot instead.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};
use futures::{Future, Stream};
use logi::auth::Role;
use logi::pb::{self, event::Kind, resync_required::Reason};
use logi::topic::Topic;
use tonic::{Status, Streaming};

use super::Core;
use super::events::{marker, resync_at};
use super::replay::{Replay, Stop};
use crate::cursor::{self, Refusal};
use crate::error::Error;
use crate::hub::{EPHEMERAL_SPAN, Next, Subscription};

/// Topic starts read at once per attachment.
pub const MAX_STARTING: usize = 64;
/// Events one topic's start may replay; a longer replay is a resync.
pub const MAX_REPLAY: usize = 4096;
/// Events per batch at most.
pub const MAX_BATCH: usize = 512;

pub type BatchStream = Pin<Box<dyn Stream<Item = Result<pb::EventBatch, Status>> + Send>>;

/// A topic's start, read: what goes out first, and the offset it ends at.
struct Started {
    events: Vec<pb::Event>,
    delivered: u64,
}

/// What a read topic start or fresh snapshot brings back.
struct Read {
    topic: String,
    kind: ReadKind,
}

enum ReadKind {
    Start(Result<Started, Error>),
    /// Boxed: an event is far larger than the rest.
    Refresh(Result<Box<pb::Event>, Error>),
}

enum State {
    /// A start or fresh snapshot is being read; live events wait here.
    Starting {
        held: Vec<Arc<pb::Event>>,
        /// Live before, so what it held must still go out (a fresh snapshot).
        delivered: Option<u64>,
    },
    Live {
        delivered: u64,
    },
}

type Reading = Pin<Box<dyn Future<Output = Read> + Send>>;

/// Serves one attachment for the `service` principal `role`.
///
/// # Errors
/// PERMISSION_DENIED for any other role, UNAVAILABLE when shutting down.
pub fn attach(
    core: Arc<Core>,
    role: Role,
    requests: Streaming<pb::AttachRequest>,
) -> Result<BatchStream, Status> {
    if role != Role::Service {
        return Err(Status::permission_denied(
            "Attach is for ws-edge, with a service token: apps and tools use Subscribe",
        ));
    }
    let sub = core
        .hub
        .attach(core.attachment_queue)
        .map_err(|e| Status::unavailable(e.to_string()))?;
    Ok(Box::pin(serve(core, sub, requests)))
}

fn serve(
    core: Arc<Core>,
    mut sub: Subscription,
    mut requests: Streaming<pb::AttachRequest>,
) -> impl Stream<Item = Result<pb::EventBatch, Status>> + Send {
    async_stream::stream! {
        let limit = core.attachment_queue;
        let mut topics: HashMap<String, State> = HashMap::new();
        let mut held = 0usize;
        let mut reading: FuturesUnordered<Reading> = FuturesUnordered::new();
        let mut requests_open = true;
        let shutdown = core.shutdown.clone();
        let mut stopping = std::pin::pin!(shutdown.cancelled());
        loop {
            let mut batch: Vec<pb::Event> = Vec::new();
            tokio::select! {
                biased;
                () = &mut stopping => {
                    yield Err(Status::unavailable("core-svc is shutting down: attach again with your last cursors"));
                    return;
                }
                Some(read) = reading.next(), if !reading.is_empty() => {
                    match finish(&mut topics, &mut held, read, &mut batch) {
                        Ok(()) => {}
                        Err(status) => {
                            yield Err(status);
                            return;
                        }
                    }
                }
                next = sub.next() => {
                    let mut next = Some(next);
                    // What the queue holds now goes out in one batch.
                    while let Some(n) = next.take() {
                        match n {
                            Next::Event(event) => route(&mut topics, &mut held, event, &mut batch),
                            Next::Lagged => {
                                yield Err(Status::resource_exhausted(
                                    "this edge fell behind and was cut off: attach again with each topic's last cursor",
                                ));
                                return;
                            }
                            Next::Closed => {
                                yield Err(Status::unavailable("core-svc is shutting down: attach again with your last cursors"));
                                return;
                            }
                        }
                        if batch.len() < MAX_BATCH {
                            next = sub.try_next();
                        }
                    }
                    if held > limit {
                        yield Err(Status::resource_exhausted(
                            "this edge fell behind while topics were starting: attach again with each topic's last cursor",
                        ));
                        return;
                    }
                }
                request = requests.message(), if requests_open && reading.len() < MAX_STARTING => {
                    match request {
                        Ok(Some(r)) => {
                            if let Err(status) = asked(&core, &mut sub, &mut topics, &mut held, &mut reading, r) {
                                yield Err(status);
                                return;
                            }
                        }
                        // The edge closed its side: it reads on until it goes.
                        Ok(None) => requests_open = false,
                        Err(status) => {
                            tracing::debug!(code = ?status.code(), "attachment requests broke");
                            return;
                        }
                    }
                }
            }
            if !batch.is_empty() {
                yield Ok(pb::EventBatch { events: batch });
            }
        }
    }
}

/// A live event for the edge, or held back while its topic starts.
fn route(
    topics: &mut HashMap<String, State>,
    held: &mut usize,
    event: Arc<pb::Event>,
    batch: &mut Vec<pb::Event>,
) {
    let offset = event.cursor.map_or(0, |c| c.offset);
    match topics.get_mut(&event.topic) {
        // Queued before the topic was unwatched.
        None => {}
        Some(State::Starting { held: h, .. }) => {
            h.push(event);
            *held += 1;
        }
        Some(State::Live { delivered }) if offset > *delivered => {
            *delivered = offset;
            batch.push((*event).clone());
        }
        // Already sent with the topic's start.
        Some(State::Live { .. }) => {}
    }
}

/// Takes in one request of the edge.
fn asked(
    core: &Arc<Core>,
    sub: &mut Subscription,
    topics: &mut HashMap<String, State>,
    held: &mut usize,
    reading: &mut FuturesUnordered<Reading>,
    r: pb::AttachRequest,
) -> Result<(), Status> {
    for name in r.unwatch {
        sub.unwatch(&name);
        if let Some(State::Starting { held: h, .. }) = topics.remove(&name) {
            *held -= h.len();
        }
    }
    for w in r.watch {
        let topic = Topic::parse(&w.topic).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // Registered before its start is read, so nothing committed after the read
        // is missed; what both have is dropped by offset.
        sub.watch(&w.topic)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if let Some(State::Starting { held: h, .. }) = topics.insert(
            w.topic.clone(),
            State::Starting {
                held: Vec::new(),
                delivered: None,
            },
        ) {
            *held -= h.len();
        }
        let core = core.clone();
        reading.push(Box::pin(async move {
            let kind = ReadKind::Start(start(&core, &w.topic, &topic, w.resume, w.snapshot).await);
            Read {
                topic: w.topic,
                kind,
            }
        }));
    }
    for name in r.snapshot {
        let Some(State::Live { delivered }) = topics.get(&name) else {
            continue; // Not watched, or starting: its start brings a snapshot if asked.
        };
        let delivered = *delivered;
        let topic = Topic::parse(&name).map_err(|e| Status::invalid_argument(e.to_string()))?;
        topics.insert(
            name.clone(),
            State::Starting {
                held: Vec::new(),
                delivered: Some(delivered),
            },
        );
        let core = core.clone();
        reading.push(Box::pin(async move {
            let epoch = core.store.epoch();
            let read = core.topic_read(&topic, true).await;
            let kind = ReadKind::Refresh(read.map(|(state, snap)| {
                let head = state.last_seq * EPHEMERAL_SPAN;
                let snapshot = Kind::Snapshot(snap.unwrap_or_default());
                Box::new(marker(&name, epoch, head, snapshot))
            }));
            Read { topic: name, kind }
        }));
    }
    Ok(())
}

/// A read start or snapshot is in: send it, then what was held back.
fn finish(
    topics: &mut HashMap<String, State>,
    held: &mut usize,
    read: Read,
    batch: &mut Vec<pb::Event>,
) -> Result<(), Status> {
    // Unwatched (or watched again) meanwhile: nothing of this read goes out.
    let Some(State::Starting {
        held: waiting,
        delivered,
    }) = topics.remove(&read.topic)
    else {
        return Ok(());
    };
    *held -= waiting.len();
    let live_from = match read.kind {
        ReadKind::Start(started) => {
            let started = started.map_err(Status::from)?;
            batch.extend(started.events);
            started.delivered
        }
        ReadKind::Refresh(snapshot) => {
            let snapshot = snapshot.map_err(Status::from)?;
            let at = snapshot.cursor.map_or(0, |c| c.offset);
            let sent = delivered.unwrap_or(0);
            // The events the snapshot covers still go to the apps already there.
            for event in waiting.iter().filter(|e| {
                let offset = e.cursor.map_or(0, |c| c.offset);
                offset > sent && offset <= at
            }) {
                batch.push((**event).clone());
            }
            batch.push(*snapshot);
            at.max(sent)
        }
    };
    let mut last = live_from;
    for event in waiting {
        let offset = event.cursor.map_or(0, |c| c.offset);
        if offset > last {
            last = offset;
            batch.push((*event).clone());
        }
    }
    topics.insert(read.topic, State::Live { delivered: last });
    Ok(())
}

/// Reads how `name` starts for the edge: as Subscribe starts a topic.
async fn start(
    core: &Arc<Core>,
    name: &str,
    topic: &Topic,
    resume: Option<pb::Cursor>,
    snapshot: bool,
) -> Result<Started, Error> {
    let epoch = core.store.epoch();
    let (state, snap) = core.topic_read(topic, snapshot && resume.is_none()).await?;
    let head = state.last_seq * EPHEMERAL_SPAN;
    let refusal = match cursor::resume(&core.hub, name, epoch, state, resume) {
        None => {
            let kind = match snap {
                Some(s) => Kind::Snapshot(s),
                None => Kind::StreamHead(pb::StreamHead {}),
            };
            return Ok(Started {
                events: vec![marker(name, epoch, head, kind)],
                delivered: head,
            });
        }
        Some(Ok(offset)) => match replay(core, name, offset, state.last_seq).await {
            Ok(events) => {
                let delivered = events
                    .last()
                    .and_then(|e| e.cursor)
                    .map_or(offset, |c| c.offset);
                return Ok(Started { events, delivered });
            }
            Err(Stop::Gap(refusal)) => refusal,
            Err(Stop::Failed(e)) => return Err(e),
        },
        Some(Err(refusal)) => refusal,
    };
    let (state, snap) = core.topic_read(topic, snapshot).await?;
    core.hub.observe(name, state.last_seq, None);
    Ok(Started {
        events: resync_at(name, epoch, state.last_seq, refusal, snap).collect(),
        delivered: state.last_seq * EPHEMERAL_SPAN,
    })
}

/// The durable events after `offset`, at most [`MAX_REPLAY`].
async fn replay(
    core: &Core,
    name: &str,
    offset: u64,
    last_seq: u64,
) -> Result<Vec<pb::Event>, Stop> {
    let mut replay = Replay::new(name.to_owned(), offset, last_seq);
    let mut events = Vec::new();
    while let Some(page) = replay.next_page(core).await? {
        events.extend(page);
        if events.len() > MAX_REPLAY {
            return Err(Stop::Gap(Refusal {
                reason: Reason::HistoryTruncated,
                detail: format!(
                    "more than {MAX_REPLAY} events after the cursor: start over from the snapshot"
                ),
            }));
        }
    }
    Ok(events)
}
