//! EventService: replay from a cursor, then live, with no gap and no duplicate.
//!
//! The subscription registers with the hub BEFORE history is read, so any event
//! committed after the read is queued live; events that are in both the history and
//! the live queue are dropped by offset, per topic.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;
use logi::pb::{self, event::Kind, event_service_server::EventService};
use logi::topic::Topic;
use tonic::{Request, Response, Status};

use super::{Core, principal};
use crate::cursor::{self, Refusal};
use crate::error::Error;
use crate::hub::{self, EPHEMERAL_SPAN, Next, Subscription};
use crate::model::timestamp;
use crate::store::TopicState;

/// Topics one subscription may read.
pub const MAX_TOPICS: usize = 16;
/// Durable events read from storage per query while replaying.
const REPLAY_PAGE: usize = 256;

pub struct EventApi(pub Arc<Core>);

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for EventApi {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        if r.topics.is_empty() {
            return Err(Error::invalid("topics is empty: name at least one topic").into());
        }
        let mut names: Vec<String> = Vec::new();
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
            if !names.contains(&name) {
                names.push(name);
            }
        }
        if names.len() > MAX_TOPICS {
            return Err(
                Error::invalid(format!("at most {MAX_TOPICS} topics per subscription")).into(),
            );
        }
        if let Some(stray) = r.resume.keys().find(|k| !names.contains(k)) {
            return Err(Error::invalid(format!(
                "resume names topic {stray}, which is not in topics"
            ))
            .into());
        }
        let sub = self
            .0
            .hub
            .subscribe(names.clone())
            .map_err(|e| Status::unavailable(e.to_string()))?;
        // Read each topic's bounds before answering, so that the hub knows the durable
        // head (and can number positions) as soon as the caller holds the stream.
        let epoch = self.0.store.epoch();
        let mut topics = Vec::with_capacity(names.len());
        for name in names.iter().cloned() {
            let state = self.0.store.topic_state(name.clone()).await?;
            let cursor = r.resume.get(&name).copied();
            let resume = cursor::resume(&self.0.hub, &name, epoch, state, cursor);
            topics.push(Start {
                topic: name,
                state,
                resume,
            });
        }
        let expires_in = UNIX_EPOCH
            .checked_add(Duration::from_secs(p.expires_at))
            .and_then(|exp| exp.duration_since(SystemTime::now()).ok())
            .unwrap_or_default();
        tracing::debug!(principal = %p.id, topics = ?names, "subscribed");
        Ok(Response::new(Box::pin(events(
            self.0.clone(),
            sub,
            topics,
            r.heads,
            expires_in,
        ))))
    }
}

/// Where a subscription starts reading one of its topics.
struct Start {
    topic: String,
    state: TopicState,
    /// The subscriber's cursor for it, checked; `None` when it sent none.
    resume: Option<Result<u64, Refusal>>,
}

/// An event of the stream itself (not of the log) at `offset`.
fn marker(topic: &str, epoch: u64, offset: u64, kind: Kind) -> pb::Event {
    pb::Event {
        topic: topic.to_owned(),
        cursor: Some(pb::Cursor { epoch, offset }),
        occurred_at: Some(timestamp(SystemTime::now())),
        kind: Some(kind),
    }
}

fn resync(topic: &str, epoch: u64, offset: u64, refusal: Refusal) -> pb::Event {
    let kind = Kind::ResyncRequired(pb::ResyncRequired {
        reason: refusal.reason as i32,
        detail: refusal.detail,
    });
    marker(topic, epoch, offset, kind)
}

enum Live {
    Next(Next),
    Expired,
}

fn events(
    core: Arc<Core>,
    mut sub: Subscription,
    topics: Vec<Start>,
    heads: bool,
    expires_in: Duration,
) -> impl Stream<Item = Result<pb::Event, Status>> + Send {
    async_stream::stream! {
        let epoch = core.store.epoch();
        // Capped: a token valid for centuries must not overflow the clock.
        let expiry = tokio::time::Instant::now() + expires_in.min(Duration::from_secs(365 * 24 * 3600));
        // The offset of the last event sent, per topic with a cursor.
        let mut delivered: HashMap<String, u64> = HashMap::new();
        for Start { topic, state, resume } in topics {
            let head = state.last_seq * EPHEMERAL_SPAN;
            let offset = match resume {
                None => {
                    if heads {
                        delivered.insert(topic.clone(), head);
                        yield Ok(marker(&topic, epoch, head, Kind::StreamHead(pb::StreamHead {})));
                    }
                    continue;
                }
                Some(Err(refusal)) => {
                    delivered.insert(topic.clone(), head);
                    yield Ok(resync(&topic, epoch, head, refusal));
                    continue;
                }
                Some(Ok(offset)) => offset,
            };
            delivered.insert(topic.clone(), offset);
            let mut after = hub::split(offset).0;
            loop {
                let page = match core.store.events_after(topic.clone(), after, REPLAY_PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        yield Err(Status::from(e));
                        return;
                    }
                };
                let full = page.len() == REPLAY_PAGE;
                for event in page {
                    let offset = event.cursor.map_or(0, |c| c.offset);
                    after = hub::split(offset).0;
                    delivered.insert(topic.clone(), offset);
                    yield Ok(event);
                }
                if !full {
                    break;
                }
            }
        }
        // Made once: a timer made per event would be registered and removed each time.
        let mut expired = std::pin::pin!(tokio::time::sleep_until(expiry));
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
    use logi::auth::{Principal, Role};
    use logi::id::Id;
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
            };
            Arc::new(live) as Arc<dyn CommitSink>
        })
        .unwrap();
        let store: Arc<dyn Store> = Arc::new(store);
        let dispatcher = Dispatcher::new(
            DispatchConfig::default(),
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
        })
    }

    async fn subscribe(core: &Arc<Core>, resume: Option<pb::Cursor>) -> EventStream {
        let resume = resume
            .map(|c| ("admins".to_owned(), c))
            .into_iter()
            .collect();
        let mut req = Request::new(pb::SubscribeRequest {
            topics: vec!["admins".into()],
            resume,
            heads: false,
        });
        let admin = Principal {
            id: Id::new("ops").unwrap(),
            role: Role::Admin,
            expires_at: u64::MAX / 2,
        };
        req.extensions_mut().insert(admin);
        EventApi(core.clone())
            .subscribe(req)
            .await
            .unwrap()
            .into_inner()
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
    async fn a_refused_cursor_does_not_stop_the_positions_of_its_topic() {
        let dir = tempfile::tempdir().unwrap();
        let core = core(&dir.path().join("logi.db"), 16);
        register(&core, 1).await;
        let deep = pb::Cursor {
            epoch: core.store.epoch(),
            offset: EPHEMERAL_SPAN + EPHEMERAL_SPAN - 1,
        };
        let mut stream = subscribe(&core, Some(deep)).await;
        let resync = stream.next().await.unwrap().unwrap();
        assert!(
            matches!(resync.kind, Some(Kind::ResyncRequired(ref r)) if r.reason == pb::resync_required::Reason::CursorAhead as i32),
            "{resync:?}"
        );
        let kind = Kind::DriverLocation(pb::DriverLocationChanged::default());
        assert!(
            core.hub
                .publish_ephemeral("admins", kind, SystemTime::now())
        );
        let position = stream.next().await.unwrap().unwrap();
        assert_eq!(position.cursor.unwrap().offset, EPHEMERAL_SPAN + 1);
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
}
