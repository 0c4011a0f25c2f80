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

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};
use futures::{Future, Stream};
use logi::auth::Role;
use logi::pb::{self, event::Kind, resync_required::Reason};
use logi::topic::Topic;
use tonic::{Status, Streaming};

use super::Core;
use super::events::marker;
use super::replay::{Replay, Stop};
use crate::cursor::{self, Refusal};
use crate::error::Error;
use crate::hub::{EPHEMERAL_SPAN, Next, Subscription};
use crate::metrics::Lagged;
use crate::store::TopicState;

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
    /// The topic's generation when the read was asked for.
    generation: u64,
    kind: ReadKind,
}

/// A read waiting for its turn.
enum Ask {
    Start(pb::WatchTopic, Topic),
    Refresh(String, Topic),
}

/// A read's outcome; a failed one keeps what it needs to be asked again.
enum ReadKind {
    Start(Result<Started, (Error, pb::WatchTopic, Topic)>),
    /// Boxed: an event is far larger than the rest.
    Refresh(Result<Box<pb::Event>, (Error, Topic)>),
}

enum State {
    /// A start or fresh snapshot is being read; live events wait here.
    Starting {
        held: Vec<Arc<pb::Event>>,
        /// Live before, so what it held must still go out (a fresh snapshot).
        delivered: Option<u64>,
        generation: u64,
        /// A fresh snapshot was asked for while a watch's start was read: it is
        /// read once that start is sent.
        refresh: bool,
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
        let mut queued: VecDeque<(u64, Ask)> = VecDeque::new();
        let mut generation = 0u64;
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
                    // The store publishes a commit before it answers a read made
                    // after it: take in what the queue holds first, so an event the
                    // read covers is held for the apps already on the topic, not
                    // dropped as already sent once the topic is live again.
                    while let Some(next) = sub.try_next() {
                        match next {
                            Next::Event(event) => route(&mut topics, &mut held, event, &mut batch),
                            Next::Lagged | Next::Closed => break,
                        }
                    }
                    if let Some(again) = finish(&mut topics, &mut held, &mut generation, read, &mut batch) {
                        queued.push_back(again);
                    }
                }
                next = sub.next() => {
                    let mut next = Some(next);
                    // What the queue holds now goes out in one batch.
                    while let Some(n) = next.take() {
                        match n {
                            Next::Event(event) => route(&mut topics, &mut held, event, &mut batch),
                            Next::Lagged => {
                                core.metrics.lagged(Lagged::Attach);
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
                        core.metrics.lagged(Lagged::Attach);
                        yield Err(Status::resource_exhausted(
                            "this edge fell behind while topics were starting: attach again with each topic's last cursor",
                        ));
                        return;
                    }
                }
                request = requests.message(), if requests_open && queued.is_empty() => {
                    match request {
                        Ok(Some(r)) => {
                            if let Err(status) = asked(&mut sub, &mut topics, &mut held, &mut queued, &mut generation, r) {
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
            while reading.len() < MAX_STARTING && let Some((generation, ask)) = queued.pop_front() {
                reading.push(read(core.clone(), generation, ask));
            }
            if !batch.is_empty() {
                // Sampled once per turn, not per event: how far behind the edge is.
                core.metrics.attach_queued(sub.queued() + held);
            }
            // A start may bring thousands at once: no batch is larger than MAX_BATCH.
            while !batch.is_empty() {
                let rest = batch.split_off(batch.len().min(MAX_BATCH));
                yield Ok(pb::EventBatch { events: batch });
                batch = rest;
            }
        }
    }
}

/// Reads one start or fresh snapshot.
fn read(core: Arc<Core>, generation: u64, ask: Ask) -> Reading {
    Box::pin(async move {
        match ask {
            Ask::Start(w, topic) => {
                let started = start(&core, &w.topic, &topic, w.resume, w.snapshot).await;
                let kind = ReadKind::Start(started.map_err(|e| (e, w.clone(), topic)));
                Read {
                    topic: w.topic,
                    generation,
                    kind,
                }
            }
            Ask::Refresh(name, topic) => {
                let epoch = core.store.epoch();
                let read = caught_up(&core, &name, core.topic_read(&topic, true).await).await;
                let kind = ReadKind::Refresh(
                    read.map(|(state, snap)| {
                        let head = state.last_seq * EPHEMERAL_SPAN;
                        let snapshot = Kind::Snapshot(snap.unwrap_or_default());
                        Box::new(marker(&name, epoch, head, snapshot))
                    })
                    .map_err(|e| (e, topic)),
                );
                Read {
                    topic: name,
                    generation,
                    kind,
                }
            }
        }
    })
}

/// A fresh snapshot read at head H covers events up to H: the apps already on the
/// topic must get them first. Waits until the hub has queued them (a sequenced
/// hub can be behind the store), so that they are in the queue when the read is
/// taken in.
async fn caught_up<T>(
    core: &Core,
    name: &str,
    read: Result<(TopicState, T), Error>,
) -> Result<(TopicState, T), Error> {
    let (state, rest) = read?;
    core.hub.observe(name, state.last_seq, None);
    core.hub.reached(name, state.last_seq).await?;
    Ok((state, rest))
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

/// Takes in one request of the edge: its reads are queued.
fn asked(
    sub: &mut Subscription,
    topics: &mut HashMap<String, State>,
    held: &mut usize,
    queued: &mut VecDeque<(u64, Ask)>,
    generation: &mut u64,
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
        *generation += 1;
        let starting = State::Starting {
            held: Vec::new(),
            delivered: None,
            generation: *generation,
            refresh: false,
        };
        if let Some(State::Starting { held: h, .. }) = topics.insert(w.topic.clone(), starting) {
            *held -= h.len();
        }
        queued.push_back((*generation, Ask::Start(w, topic)));
    }
    for name in r.snapshot {
        let delivered = match topics.get_mut(&name) {
            Some(State::Live { delivered }) => *delivered,
            // A watch's start is being read (one resumed from a cursor brings no
            // snapshot of its own): the snapshot is read once the start is sent.
            Some(State::Starting {
                delivered: None,
                refresh,
                ..
            }) => {
                *refresh = true;
                continue;
            }
            // Not watched, or a snapshot is being read already: it serves this too.
            _ => continue,
        };
        let topic = Topic::parse(&name).map_err(|e| Status::invalid_argument(e.to_string()))?;
        queued.push_back(refreshing(topics, generation, name, topic, delivered));
    }
    Ok(())
}

/// Starts reading a fresh snapshot of the live `name`, sent up to `delivered`.
fn refreshing(
    topics: &mut HashMap<String, State>,
    generation: &mut u64,
    name: String,
    topic: Topic,
    delivered: u64,
) -> (u64, Ask) {
    *generation += 1;
    let state = State::Starting {
        held: Vec::new(),
        delivered: Some(delivered),
        generation: *generation,
        refresh: false,
    };
    topics.insert(name.clone(), state);
    (*generation, Ask::Refresh(name, topic))
}

/// A read start or snapshot is in: send it, then what was held back. A failed
/// read comes back to be queued again (the topic stays starting, holding), and so
/// does a fresh snapshot asked for while a start was read.
fn finish(
    topics: &mut HashMap<String, State>,
    held: &mut usize,
    generation: &mut u64,
    read: Read,
    batch: &mut Vec<pb::Event>,
) -> Option<(u64, Ask)> {
    // Unwatched, or watched again meanwhile: this read is not the topic's any more.
    let current = matches!(
        topics.get(&read.topic),
        Some(State::Starting { generation, .. }) if *generation == read.generation
    );
    if !current {
        return None;
    }
    let kind = match read.kind {
        ReadKind::Start(Err((e, w, topic))) => {
            tracing::warn!(topic = %w.topic, error = %e, "a topic's start could not be read; trying again");
            return Some((read.generation, Ask::Start(w, topic)));
        }
        ReadKind::Refresh(Err((e, topic))) => {
            tracing::warn!(topic = %read.topic, error = %e, "a snapshot could not be read; trying again");
            return Some((read.generation, Ask::Refresh(read.topic, topic)));
        }
        ok => ok,
    };
    let Some(State::Starting {
        held: waiting,
        delivered,
        refresh,
        ..
    }) = topics.remove(&read.topic)
    else {
        return None;
    };
    *held -= waiting.len();
    let offset = |e: &pb::Event| e.cursor.map_or(0, |c| c.offset);
    let live_from = match kind {
        ReadKind::Start(Ok(started)) => {
            batch.extend(started.events);
            started.delivered
        }
        ReadKind::Refresh(Ok(snapshot)) => {
            let mut snapshot = *snapshot;
            let sent = delivered.unwrap_or(0);
            // At the last event it covers, never below one already sent (a position
            // after the last durable event).
            let at = offset(&snapshot).max(sent);
            if let Some(c) = snapshot.cursor.as_mut() {
                c.offset = at;
            }
            // The events the snapshot covers still go to the apps already there.
            batch.extend(
                waiting
                    .iter()
                    .filter(|e| offset(e) > sent && offset(e) <= at)
                    .map(|e| (**e).clone()),
            );
            batch.push(snapshot);
            at
        }
        ReadKind::Start(Err(_)) | ReadKind::Refresh(Err(_)) => unreachable!("taken above"),
    };
    let mut last = live_from;
    for event in waiting {
        if offset(&event) > last {
            last = offset(&event);
            batch.push((*event).clone());
        }
    }
    if refresh && let Ok(topic) = Topic::parse(&read.topic) {
        return Some(refreshing(topics, generation, read.topic, topic, last));
    }
    topics.insert(read.topic, State::Live { delivered: last });
    None
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
    // A sequenced hub first learns where the topic is: the read below is then not
    // ahead of what it will deliver.
    core.hub.reached(name, 0).await?;
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
    let (delivered, events) = core.resync(name, topic, snapshot, refusal).await?;
    Ok(Started { events, delivered })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(offset: u64) -> pb::Event {
        pb::Event {
            topic: "admins".into(),
            cursor: Some(pb::Cursor { epoch: 1, offset }),
            occurred_at: None,
            kind: Some(Kind::StreamHead(pb::StreamHead {})),
        }
    }

    fn snapshot_at(offset: u64) -> pb::Event {
        pb::Event {
            kind: Some(Kind::Snapshot(pb::Snapshot::default())),
            ..event(offset)
        }
    }

    fn offsets(batch: &[pb::Event]) -> Vec<(u64, bool)> {
        batch
            .iter()
            .map(|e| {
                let snapshot = matches!(e.kind, Some(Kind::Snapshot(_)));
                (e.cursor.unwrap().offset / EPHEMERAL_SPAN, snapshot)
            })
            .collect()
    }

    fn refreshing(held: &[u64], delivered: u64, generation: u64) -> HashMap<String, State> {
        let held = held
            .iter()
            .map(|s| Arc::new(event(s * EPHEMERAL_SPAN)))
            .collect();
        let state = State::Starting {
            held,
            delivered: Some(delivered * EPHEMERAL_SPAN),
            generation,
            refresh: false,
        };
        HashMap::from([("admins".to_owned(), state)])
    }

    fn refresh(at: u64, generation: u64) -> Read {
        Read {
            topic: "admins".into(),
            generation,
            kind: ReadKind::Refresh(Ok(Box::new(snapshot_at(at * EPHEMERAL_SPAN)))),
        }
    }

    #[test]
    fn a_fresh_snapshot_goes_between_the_events_it_covers_and_those_after() {
        // Sent up to 3; 4 and 5 came while the snapshot (at 4) was read.
        let mut topics = refreshing(&[4, 5], 3, 7);
        let (mut held, mut batch) = (2, Vec::new());
        assert!(finish(&mut topics, &mut held, &mut 9, refresh(4, 7), &mut batch).is_none());
        assert_eq!(offsets(&batch), [(4, false), (4, true), (5, false)]);
        assert_eq!(held, 0);
        assert!(
            matches!(topics["admins"], State::Live { delivered } if delivered == 5 * EPHEMERAL_SPAN)
        );
        // Whatever comes next and was already sent is dropped; newer goes out.
        let mut batch = Vec::new();
        route(
            &mut topics,
            &mut held,
            Arc::new(event(5 * EPHEMERAL_SPAN)),
            &mut batch,
        );
        route(
            &mut topics,
            &mut held,
            Arc::new(event(6 * EPHEMERAL_SPAN)),
            &mut batch,
        );
        assert_eq!(offsets(&batch), [(6, false)]);
    }

    #[test]
    fn a_snapshot_never_goes_out_below_what_was_sent() {
        // A position after durable event 3 was sent; the snapshot reads head 3.
        let mut topics = refreshing(&[], 3, 1);
        if let Some(State::Starting { delivered, .. }) = topics.get_mut("admins") {
            *delivered = Some(3 * EPHEMERAL_SPAN + 5);
        }
        let (mut held, mut batch) = (0, Vec::new());
        finish(&mut topics, &mut held, &mut 9, refresh(3, 1), &mut batch);
        assert_eq!(batch[0].cursor.unwrap().offset, 3 * EPHEMERAL_SPAN + 5);
    }

    #[test]
    fn a_snapshot_asked_while_a_resumed_watch_starts_is_read_after_it() {
        let starting = State::Starting {
            held: Vec::new(),
            delivered: None,
            generation: 3,
            refresh: true,
        };
        let mut topics = HashMap::from([("admins".to_owned(), starting)]);
        let start = Read {
            topic: "admins".into(),
            generation: 3,
            kind: ReadKind::Start(Ok(Started {
                events: vec![event(5 * EPHEMERAL_SPAN)],
                delivered: 5 * EPHEMERAL_SPAN,
            })),
        };
        let (mut held, mut batch, mut generation) = (0, Vec::new(), 3);
        let again = finish(&mut topics, &mut held, &mut generation, start, &mut batch);
        assert_eq!(offsets(&batch), [(5, false)], "the replay goes out first");
        assert!(matches!(again, Some((4, Ask::Refresh(..)))));
        assert!(matches!(
            topics["admins"],
            State::Starting { delivered: Some(d), generation: 4, refresh: false, .. } if d == 5 * EPHEMERAL_SPAN
        ));
    }

    #[test]
    fn a_read_overtaken_by_a_later_watch_is_ignored() {
        let mut topics = refreshing(&[4], 3, 8);
        let (mut held, mut batch) = (1, Vec::new());
        assert!(finish(&mut topics, &mut held, &mut 9, refresh(4, 7), &mut batch).is_none());
        assert!(batch.is_empty());
        assert!(matches!(
            topics["admins"],
            State::Starting { generation: 8, .. }
        ));
        // A failed read is asked again, the topic still starting.
        let failed = Read {
            topic: "admins".into(),
            generation: 8,
            kind: ReadKind::Refresh(Err((Error::Unavailable("busy".into()), Topic::Admins))),
        };
        let again = finish(&mut topics, &mut held, &mut 9, failed, &mut batch);
        assert!(matches!(again, Some((8, Ask::Refresh(..)))));
        assert_eq!(held, 1);
    }
}
