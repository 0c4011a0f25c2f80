//! EventService: replay from a cursor, then live, with no gap and no duplicate.
//!
//! The subscription registers with the hub BEFORE history is read, so any event
//! committed after the read is queued live; events that are in both the history and
//! the live queue are dropped by offset, per topic.
//!
//! Each topic starts in one of three ways, decided before the answer: at its head
//! (no cursor: a StreamHead or a Snapshot marks where), by replay (a cursor that
//! [`cursor::check`] accepts), or with a ResyncRequired at its head (a cursor it
//! refuses), followed by a Snapshot when asked. Every topic's marker is sent first,
//! then the replays.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::Stream;
use logi::auth::Role;
use logi::caps::Hold;
use logi::id::Id;
use logi::pb::{self, event::Kind, event_service_server::EventService};
use logi::topic::Topic;
use tonic::{Request, Response, Status};

use super::attach;
use super::replay::{Replay, Stop};
use super::{Core, principal};
use crate::cursor::{self, Refusal};
use crate::error::Error;
use crate::hub::{EPHEMERAL_SPAN, Next, Subscription};
use crate::live;
use crate::metrics::Lagged;
use crate::model::{Driver, DriverStatus, Location, timestamp};
use crate::store::{TopicSnapshot, TopicState};

/// Topics one subscription may read.
pub const MAX_TOPICS: usize = 16;
/// The longest a stream's expiry is waited for: later ones are treated as this, so
/// the clock never overflows.
const MAX_STREAM_LIFE: Duration = Duration::from_secs(365 * 24 * 3600);

pub struct EventApi(pub Arc<Core>);

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

/// How one topic of a subscription starts.
enum Start {
    /// Live from the head, marked by a StreamHead or a Snapshot when asked for.
    Head,
    /// Replay after this offset, then live.
    Replay(u64),
    /// These events (a ResyncRequired at the head, then a Snapshot when asked
    /// for) at this offset, then live.
    Resync(u64, Vec<pb::Event>),
}

struct TopicStart {
    name: String,
    topic: Topic,
    state: TopicState,
    start: Start,
    /// Read with `state` when the stream asked for snapshots and this start needs one.
    snapshot: Option<pb::Snapshot>,
}

/// Drivers the `fleet` snapshot lists at most, so that it
/// stays one message an edge takes (see ws-edge's `MAX_EVENTS_MESSAGE`).
pub const FLEET_SNAPSHOT_DRIVERS: usize = 20_000;

/// The snapshot as the stream carries it; the OTP goes only to the rider's topic.
fn snapshot_pb(topic: &Topic, snap: &TopicSnapshot) -> pb::Snapshot {
    let with_otp = matches!(topic, Topic::UserBookings(_));
    pb::Snapshot {
        bookings: snap.bookings.iter().map(|b| b.to_pb(with_otp)).collect(),
        offers: snap
            .offers
            .iter()
            .map(|(b, distance_m)| pb::BookingOffered {
                booking: Some(b.to_pb(false)),
                distance_m: *distance_m,
            })
            .collect(),
        drivers: Vec::new(),
    }
}

impl Core {
    /// Starts `name` over at its head after `refusal`: reads the head (and the
    /// snapshot, when asked for), tells the hub, and returns the head's offset with
    /// the ResyncRequired (and Snapshot) to send there.
    pub(super) async fn resync(
        &self,
        name: &str,
        topic: &Topic,
        snapshot: bool,
        refusal: Refusal,
    ) -> Result<(u64, Vec<pb::Event>), Error> {
        let (state, snap) = self.topic_read(topic, snapshot).await?;
        self.hub.observe(name, state.last_seq, None);
        let (epoch, head) = (self.store.epoch(), state.last_seq * EPHEMERAL_SPAN);
        let resync = Kind::ResyncRequired(pb::ResyncRequired {
            reason: refusal.reason as i32,
            detail: refusal.detail,
        });
        let mut events = vec![marker(name, epoch, head, resync)];
        events.extend(snap.map(|s| marker(name, epoch, head, Kind::Snapshot(s))));
        Ok((head, events))
    }

    /// A topic's bounds, and its snapshot when `snapshot` is asked for.
    pub(super) async fn topic_read(
        &self,
        topic: &Topic,
        snapshot: bool,
    ) -> Result<(TopicState, Option<pb::Snapshot>), Error> {
        if snapshot {
            let (state, snap) = self.store.topic_snapshot(topic.clone()).await?;
            let mut snap = snapshot_pb(topic, &snap);
            if *topic == Topic::Fleet {
                // Read after the topic's state: positions are ephemeral, and every one
                // recorded after this read follows it live.
                let mut drivers = self.registry.all();
                // Past the limit, the drivers offline (or silent) are left out first.
                let off = |d: &(Driver, Option<Location>, bool)| {
                    d.2 || d.0.status == DriverStatus::Offline
                };
                drivers.sort_unstable_by(|a, b| {
                    (off(a), a.0.id.as_str()).cmp(&(off(b), b.0.id.as_str()))
                });
                drivers.truncate(FLEET_SNAPSHOT_DRIVERS);
                snap.drivers = drivers
                    .iter()
                    .map(|(d, l, unseen)| live::fleet_pb(d, l.as_ref(), *unseen))
                    .collect();
            }
            Ok((state, Some(snap)))
        } else {
            Ok((self.store.topic_state(topic.to_string()).await?, None))
        }
    }
}

#[tonic::async_trait]
impl EventService for EventApi {
    type SubscribeStream = EventStream;
    type AttachStream = attach::BatchStream;

    async fn attach(
        &self,
        req: Request<tonic::Streaming<pb::AttachRequest>>,
    ) -> Result<Response<attach::BatchStream>, Status> {
        let p = principal(&req)?;
        tracing::info!(principal = %p.id, "edge attached");
        attach::attach(self.0.clone(), p.role, req.into_inner()).map(Response::new)
    }

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        if r.topics.is_empty() {
            return Err(Error::invalid("topics is empty: name at least one topic").into());
        }
        // Counted before anything else is done per topic.
        if r.topics.len() > MAX_TOPICS {
            return Err(
                Error::invalid(format!("at most {MAX_TOPICS} topics per subscription")).into(),
            );
        }
        let mut topics: Vec<(String, Topic)> = Vec::with_capacity(r.topics.len());
        for name in r.topics {
            let topic = Topic::parse(&name).map_err(|e| Error::invalid(e.to_string()))?;
            if !topic.readable_by(&p) {
                return Err(Error::denied(format!(
                    "a {} token for {} may not read topic {name}",
                    p.role.as_str(),
                    p.id
                ))
                .into());
            }
            if !topics.iter().any(|(n, _)| *n == name) {
                topics.push((name, topic));
            }
        }
        if let Some(stray) = r
            .resume
            .keys()
            .find(|k| !topics.iter().any(|(n, _)| n == *k))
        {
            return Err(Error::invalid(format!(
                "resume names topic {stray}, which is not in topics"
            ))
            .into());
        }
        let hold = if p.role == Role::Service {
            Hold::exempt()
        } else {
            self.0.streams.hold((p.role, p.id.clone())).ok_or_else(|| {
                Status::resource_exhausted(format!(
                    "{} {} already has {} streams open: close one before subscribing again",
                    p.role.as_str(),
                    p.id,
                    self.0.streams.max()
                ))
            })?
        };
        let sub = self
            .0
            .hub
            .subscribe(topics.iter().map(|(n, _)| n.clone()).collect())
            .map_err(|e| Status::unavailable(e.to_string()))?;
        // A sequenced hub first learns where each topic is, so that no start read
        // below is ahead of what it will deliver.
        sub.ready().await?;
        // Each topic's bounds are read before answering, so that the hub knows the
        // durable head (and can number positions) as soon as the caller holds the
        // stream.
        let epoch = self.0.store.epoch();
        let mut starts = Vec::with_capacity(topics.len());
        for (name, topic) in topics {
            let cursor = r.resume.get(&name).copied();
            let (state, snapshot) = self
                .0
                .topic_read(&topic, r.snapshots && cursor.is_none())
                .await?;
            let start = match cursor::resume(&self.0.hub, &name, epoch, state, cursor) {
                None => Start::Head,
                Some(Ok(offset)) => Start::Replay(offset),
                Some(Err(refusal)) => {
                    let (head, events) = self.0.resync(&name, &topic, r.snapshots, refusal).await?;
                    Start::Resync(head, events)
                }
            };
            starts.push(TopicStart {
                name,
                topic,
                state,
                start,
                snapshot,
            });
        }
        // An app's stream ends with its token. A `service` stream does not: an edge
        // carries thousands of apps on streams opened with one service token, and
        // cutting them all in the same second when it expires would send them all
        // back through the writer at once; the edge enforces each app's own expiry.
        let expires_in = (p.role != Role::Service).then(|| p.time_left());
        tracing::debug!(principal = %p.id, topics = starts.len(), "subscribed");
        let options = Options {
            heads: r.heads,
            snapshots: r.snapshots,
            expires_in,
            hold,
        };
        Ok(Response::new(Box::pin(events(
            self.0.clone(),
            sub,
            starts,
            options,
        ))))
    }
}

struct Options {
    heads: bool,
    snapshots: bool,
    /// None for `service` streams, which do not end with their token.
    expires_in: Option<Duration>,
    /// The stream's place under the per-principal cap, given back when it ends.
    hold: Hold<(Role, Id)>,
}

/// An event of the stream itself (not of the log) at `offset`.
pub(super) fn marker(topic: &str, epoch: u64, offset: u64, kind: Kind) -> pb::Event {
    pb::Event {
        topic: topic.to_owned(),
        cursor: Some(pb::Cursor { epoch, offset }),
        occurred_at: Some(timestamp(SystemTime::now())),
        kind: Some(kind),
    }
}

enum Live {
    Next(Next),
    Expired,
}

fn events(
    core: Arc<Core>,
    mut sub: Subscription,
    starts: Vec<TopicStart>,
    options: Options,
) -> impl Stream<Item = Result<pb::Event, Status>> + Send {
    async_stream::stream! {
        let _hold = &options.hold;
        let epoch = core.store.epoch();
        // Capped: a token valid for centuries must not overflow the clock.
        let expiry = options
            .expires_in
            .map(|d| tokio::time::Instant::now() + d.min(MAX_STREAM_LIFE));
        // The offset of the last event sent, per topic with a cursor.
        let mut delivered: HashMap<String, u64> = HashMap::new();
        let mut replays = Vec::new();
        for start in starts {
            let head = start.state.last_seq * EPHEMERAL_SPAN;
            match start.start {
                Start::Head => {
                    let kind = match start.snapshot {
                        Some(s) => Kind::Snapshot(s),
                        None if options.heads => Kind::StreamHead(pb::StreamHead {}),
                        None => continue,
                    };
                    delivered.insert(start.name.clone(), head);
                    yield Ok(marker(&start.name, epoch, head, kind));
                }
                Start::Resync(head, events) => {
                    delivered.insert(start.name.clone(), head);
                    for event in events {
                        yield Ok(event);
                    }
                }
                Start::Replay(offset) => {
                    delivered.insert(start.name.clone(), offset);
                    replays.push((start.name, start.topic, offset, start.state.last_seq));
                }
            }
        }
        for (name, topic, offset, last_seq) in replays {
            let mut replay = Replay::new(name.clone(), offset, last_seq);
            let refusal = loop {
                match replay.next_page(&core).await {
                    Ok(Some(page)) => {
                        for event in page {
                            delivered.insert(name.clone(), event.cursor.map_or(0, |c| c.offset));
                            yield Ok(event);
                        }
                    }
                    Ok(None) => break None,
                    Err(Stop::Gap(refusal)) => break Some(refusal),
                    Err(Stop::Failed(e)) => {
                        yield Err(Status::from(e));
                        return;
                    }
                }
            };
            if let Some(refusal) = refusal {
                // Start this topic over at its head, as for a refused cursor.
                match core.resync(&name, &topic, options.snapshots, refusal).await {
                    Ok((head, events)) => {
                        delivered.insert(name.clone(), head);
                        for event in events {
                            yield Ok(event);
                        }
                    }
                    Err(e) => {
                        yield Err(Status::from(e));
                        return;
                    }
                }
            }
        }
        // Made once: a timer made per event would be registered and removed each time.
        let mut expired = std::pin::pin!(async {
            match expiry {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        });
        loop {
            let live = tokio::select! {
                next = sub.next() => Live::Next(next),
                () = &mut expired => Live::Expired,
            };
            match live {
                Live::Next(Next::Event(event)) => {
                    let offset = event.cursor.map_or(0, |c| c.offset);
                    match delivered.get_mut(&event.topic) {
                        Some(d) if offset <= *d => continue,
                        Some(d) => *d = offset,
                        None => {
                            delivered.insert(event.topic.clone(), offset);
                        }
                    }
                    yield Ok((*event).clone());
                }
                Live::Next(Next::Lagged) => {
                    core.metrics.lagged(Lagged::Subscribe);
                    yield Err(Status::resource_exhausted(
                        "this subscriber fell behind and was cut off: subscribe again with the cursor of the last event it processed",
                    ));
                    return;
                }
                Live::Next(Next::Closed) => {
                    yield Err(Status::unavailable("core-svc is shutting down: subscribe again with your last cursors"));
                    return;
                }
                Live::Expired => {
                    yield Err(Status::unauthenticated("the token expired: subscribe again with a fresh token and your last cursors"));
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use logi::auth::Principal;
    use std::time::UNIX_EPOCH;

    use logi::pb::resync_required::Reason;

    use super::super::replay;
    use tokio_stream::StreamExt;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::dispatch::{DispatchConfig, Dispatcher, Schedule};
    use crate::drivers::Registry;
    use crate::hub::Hub;
    use crate::live::Live;
    use crate::model::DriverStatus;
    use crate::store::sqlite::Sqlite;
    use crate::store::{CommitSink, Store};
    use crate::tariff::Tariffs;

    fn core(path: &std::path::Path, queue: usize) -> Arc<Core> {
        let registry = Arc::new(Registry::default());
        let schedule = Schedule::new(DispatchConfig::default());
        let mut hub = None;
        let store = Sqlite::open(path, |epoch| {
            let h = Hub::new(epoch, queue);
            hub = Some(h.clone());
            let live = Live {
                hub: h,
                registry: registry.clone(),
                schedule: schedule.clone(),
                cluster: std::sync::OnceLock::new(),
                metrics: Arc::default(),
            };
            Arc::new(live) as Arc<dyn CommitSink>
        })
        .unwrap();
        let store: Arc<dyn Store> = Arc::new(store);
        let dispatcher = Dispatcher::new(
            DispatchConfig::default(),
            1,
            schedule,
            store.clone(),
            registry.clone(),
        );
        Arc::new(Core {
            store,
            hub: hub.unwrap(),
            registry,
            dispatcher,
            tariffs: Tariffs::default(),
            shutdown: CancellationToken::new(),
            streams: logi::caps::Caps::new(2),
            cluster: None,
            attachment_queue: 1024,
            metrics: Arc::default(),
        })
    }

    async fn subscribe(core: &Arc<Core>, resume: Option<pb::Cursor>) -> EventStream {
        let resume = resume
            .map(|c| ("admins".to_owned(), c))
            .into_iter()
            .collect();
        let req = pb::SubscribeRequest {
            topics: vec!["admins".into()],
            resume,
            heads: false,
            snapshots: false,
        };
        call(core, req, Role::Admin, u64::MAX / 2).await.unwrap()
    }

    async fn call(
        core: &Arc<Core>,
        body: pb::SubscribeRequest,
        role: Role,
        expires_at: u64,
    ) -> Result<EventStream, Status> {
        let mut req = Request::new(body);
        req.extensions_mut().insert(Principal {
            id: Id::new("ops").unwrap(),
            role,
            expires_at,
        });
        Ok(EventApi(core.clone()).subscribe(req).await?.into_inner())
    }

    fn kind(event: &pb::Event) -> &Kind {
        event.kind.as_ref().unwrap()
    }

    async fn register(core: &Arc<Core>, n: usize) {
        for i in 0..n {
            let id = Id::new(format!("d{i}")).unwrap();
            core.store
                .set_driver_status(id, DriverStatus::Available, Some("car".into()))
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_cut_off_then_resumes_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        let core = core(&dir.path().join("logi.db"), 2);
        let mut slow = subscribe(&core, None).await;
        register(&core, 5).await; // five admin events into a queue of two
        let first = slow.next().await.unwrap().unwrap();
        let second = slow.next().await.unwrap().unwrap();
        let cut = slow.next().await.unwrap().unwrap_err();
        assert_eq!(cut.code(), tonic::Code::ResourceExhausted);
        drop(slow);
        assert_eq!(core.hub.topic_count(), 0, "nothing is left behind");

        let mut resumed = subscribe(&core, second.cursor).await;
        let mut offsets = vec![first.cursor.unwrap().offset, second.cursor.unwrap().offset];
        for _ in 0..3 {
            offsets.push(
                resumed
                    .next()
                    .await
                    .unwrap()
                    .unwrap()
                    .cursor
                    .unwrap()
                    .offset,
            );
        }
        assert_eq!(
            offsets,
            (1..=5).map(|s| s * EPHEMERAL_SPAN).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn a_client_that_goes_away_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let core = core(&dir.path().join("logi.db"), 16);
        let a = subscribe(&core, None).await;
        let b = subscribe(&core, None).await;
        assert_eq!(core.hub.subscribers("admins"), 2);
        drop(a);
        assert_eq!(core.hub.subscribers("admins"), 1);
        drop(b);
        assert_eq!(core.hub.topic_count(), 0);
        register(&core, 1).await; // publishing to nobody is fine
    }

    #[tokio::test]
    async fn a_crafted_cursor_cannot_use_up_a_topics_position_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let core = core(&dir.path().join("logi.db"), 16);
        register(&core, 1).await;
        let _watcher = subscribe(&core, None).await;
        // One below the end of the ephemeral range after the last durable event.
        let crafted = pb::Cursor {
            epoch: core.store.epoch(),
            offset: EPHEMERAL_SPAN + EPHEMERAL_SPAN - 2,
        };
        let mut refused = subscribe(&core, Some(crafted)).await;
        let first = refused.next().await.unwrap().unwrap();
        assert!(
            matches!(kind(&first), Kind::ResyncRequired(r) if r.reason == Reason::CursorAhead as i32)
        );
        let location = || Kind::DriverLocation(pb::DriverLocationChanged::default());
        for _ in 0..3 {
            assert!(
                core.hub
                    .publish_ephemeral("admins", location(), SystemTime::now()),
                "positions still get offsets"
            );
        }
    }

    #[tokio::test]
    async fn the_topic_count_is_checked_before_the_topics() {
        let dir = tempfile::tempdir().unwrap();
        let core = core(&dir.path().join("logi.db"), 16);
        let req = pb::SubscribeRequest {
            topics: (0..=MAX_TOPICS)
                .map(|i| format!("not a topic {i}"))
                .collect(),
            ..Default::default()
        };
        let err = call(&core, req, Role::Admin, u64::MAX / 2)
            .await
            .err()
            .unwrap();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(err.message(), "at most 16 topics per subscription");
    }

    #[tokio::test]
    async fn retention_during_a_replay_is_a_resync_not_a_silent_gap() {
        let dir = tempfile::tempdir().unwrap();
        let core = core(&dir.path().join("logi.db"), 1024);
        let n = replay::PAGE + 20;
        futures::future::join_all((0..n).map(|i| {
            let store = core.store.clone();
            async move {
                let id = Id::new(format!("d{i}")).unwrap();
                store
                    .set_driver_status(id, DriverStatus::Available, Some("car".into()))
                    .await
                    .unwrap();
            }
        }))
        .await;
        let start = pb::Cursor {
            epoch: core.store.epoch(),
            offset: 0,
        };
        let mut replay = subscribe(&core, Some(start)).await;
        let first = replay.next().await.unwrap().unwrap();
        assert_eq!(first.cursor.unwrap().offset, EPHEMERAL_SPAN);
        // The first page is read; everything after it goes before the second.
        core.store
            .prune(SystemTime::now() + Duration::from_secs(1))
            .await
            .unwrap();
        for seq in 2..=replay::PAGE as u64 {
            let e = replay.next().await.unwrap().unwrap();
            assert_eq!(e.cursor.unwrap().offset, seq * EPHEMERAL_SPAN);
        }
        let resync = replay.next().await.unwrap().unwrap();
        match kind(&resync) {
            Kind::ResyncRequired(r) => {
                assert_eq!(r.reason, Reason::HistoryTruncated as i32);
                assert_eq!(
                    r.detail,
                    format!(
                        "events after number {} were removed by retention while being replayed",
                        replay::PAGE
                    )
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            resync.cursor.unwrap().offset,
            n as u64 * EPHEMERAL_SPAN,
            "at the head"
        );
    }

    #[tokio::test]
    async fn service_streams_outlive_their_token_app_streams_do_not() {
        use futures::FutureExt;
        let dir = tempfile::tempdir().unwrap();
        let core = core(&dir.path().join("logi.db"), 16);
        let soon = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 2;
        let req = || pb::SubscribeRequest {
            topics: vec!["admins".into()],
            ..Default::default()
        };
        let mut app = call(&core, req(), Role::Admin, soon).await.unwrap();
        let mut edge = call(&core, req(), Role::Service, soon).await.unwrap();
        // Polled once, so each stream is waiting on its timer.
        assert!(app.next().now_or_never().is_none());
        assert!(edge.next().now_or_never().is_none());
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(3600)).await;
        let end = app.next().await.unwrap().unwrap_err();
        assert_eq!(end.code(), tonic::Code::Unauthenticated);
        assert!(
            edge.next().now_or_never().is_none(),
            "the service stream goes on"
        );
        // The real clock again: the writer thread's answers take real time.
        tokio::time::resume();
        register(&core, 1).await;
        let event = edge.next().await.unwrap().unwrap();
        assert!(matches!(kind(&event), Kind::DriverStatus(_)));
    }

    #[tokio::test]
    async fn a_refused_cursor_is_followed_by_a_snapshot_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let core = core(&dir.path().join("logi.db"), 16);
        register(&core, 2).await;
        let req = pb::SubscribeRequest {
            topics: vec!["admins".into()],
            resume: [(
                "admins".to_owned(),
                pb::Cursor {
                    epoch: core.store.epoch() + 1,
                    offset: EPHEMERAL_SPAN,
                },
            )]
            .into(),
            heads: false,
            snapshots: true,
        };
        let mut s = call(&core, req, Role::Admin, u64::MAX / 2).await.unwrap();
        let resync = s.next().await.unwrap().unwrap();
        assert!(
            matches!(kind(&resync), Kind::ResyncRequired(r) if r.reason == Reason::EpochChanged as i32)
        );
        let snapshot = s.next().await.unwrap().unwrap();
        assert!(matches!(kind(&snapshot), Kind::Snapshot(_)));
        assert_eq!(snapshot.cursor, resync.cursor);
        assert_eq!(resync.cursor.unwrap().offset, 2 * EPHEMERAL_SPAN);
    }
}
