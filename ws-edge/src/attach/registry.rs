//! One attachment's registry: topic → the sessions reading it.
//!
//! Pure bookkeeping, no I/O: sessions join and leave, the link asks what to tell
//! core-svc next ([`Registry::take_request`]) and hands in what core-svc sent
//! ([`Registry::dispatch`]).
//!
//! - The first session on a topic makes it watched, the last one leaving unwatches
//!   it. Sessions are held by `Weak`: one that vanished without leaving is dropped
//!   at the next event.
//! - A session joins *waiting*: it is sent nothing until a Snapshot of the topic
//!   comes (the watch's own, or a fresh one asked for it), and from then on
//!   everything after it. Snapshot, resync and live events come in one ordered
//!   stream, so there is no window and no duplicate.
//! - Each topic remembers the cursor of the last event it passed on: a new stream
//!   watches every topic again from there, and what core-svc sends twice is dropped
//!   by offset.
//! - Sessions are grouped by what their frames look like (dialect and recipient):
//!   an event is rendered once per group, and every session of the group is handed
//!   the same bytes.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use axum::extract::ws::Utf8Bytes;
use logi::pb::{self, event::Kind};

use crate::dialect::{self, Audience};
use crate::inbox::{Ended, Inbox};
use crate::metrics::{FrameType, Metrics};
use crate::route::Dialect;

/// Watches per request at most, so a storm of new topics goes out in pieces
/// rather than as one huge message.
pub const MAX_WATCHES: usize = 1024;

#[derive(Default)]
pub struct Registry {
    topics: HashMap<String, Entry>,
    /// Topics whose watch or snapshot may have to be asked for.
    dirty: Vec<String>,
    /// Topics nobody reads any more, to unwatch.
    unwatch: Vec<String>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Entry {
    groups: Vec<Group>,
    /// The last event passed on: where a new stream resumes the topic.
    cursor: Option<pb::Cursor>,
    /// Watched on the current stream.
    watched: bool,
    /// A Snapshot is on its way (the watch's own or a fresh one).
    refreshing: bool,
    /// In `Registry::dirty`.
    dirty: bool,
}

/// The sessions whose frames of a topic are the same bytes.
struct Group {
    key: Key,
    /// The first member's, for rendering.
    audience: Audience,
    members: Vec<Member>,
}

#[derive(PartialEq, Eq)]
struct Key {
    dialect: Dialect,
    recipient: String,
}

impl Key {
    fn of(audience: &Audience) -> Self {
        let recipient = match audience.dialect {
            Dialect::Logi => dialect::logi::recipient(audience),
            Dialect::Channels(_) => String::new(),
        };
        Self {
            dialect: audience.dialect,
            recipient,
        }
    }
}

struct Member {
    inbox: Weak<Inbox>,
    /// Sent nothing until the topic's next Snapshot.
    waiting: bool,
}

impl Entry {
    fn waiting(&self) -> bool {
        self.groups
            .iter()
            .flat_map(|g| &g.members)
            .any(|m| m.waiting)
    }

    fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

impl Registry {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            ..Self::default()
        }
    }

    /// Topics watched (or about to be).
    pub fn topics(&self) -> usize {
        self.topics.len()
    }

    /// Adds `inbox` to `topic`'s readers, waiting for a snapshot. True when the
    /// link has something new to ask for.
    pub fn join(&mut self, topic: &str, inbox: &Arc<Inbox>, audience: &Audience) -> bool {
        let entry = self.topics.entry(topic.to_owned()).or_default();
        let key = Key::of(audience);
        let member = Member {
            inbox: Arc::downgrade(inbox),
            waiting: true,
        };
        match entry.groups.iter_mut().find(|g| g.key == key) {
            Some(group) => group.members.push(member),
            None => {
                // Most topics have one group (and one reader) for good: room for
                // exactly that, not the four a first push would make.
                entry.groups.reserve_exact(1);
                entry.groups.push(Group {
                    key,
                    audience: audience.clone(),
                    members: vec![member],
                });
            }
        }
        // A Snapshot already on its way serves this session too.
        if entry.refreshing || entry.dirty {
            return false;
        }
        entry.dirty = true;
        self.dirty.push(topic.to_owned());
        true
    }

    /// Takes `inbox` off `topic`; the last reader leaving unwatches it. True when
    /// the link has something new to ask for.
    pub fn leave(&mut self, topic: &str, inbox: &Arc<Inbox>) -> bool {
        let Some(entry) = self.topics.get_mut(topic) else {
            return false;
        };
        let gone = Arc::downgrade(inbox);
        for group in &mut entry.groups {
            group.members.retain(|m| !m.inbox.ptr_eq(&gone));
        }
        entry.groups.retain(|g| !g.members.is_empty());
        self.forget_if_empty(topic)
    }

    fn forget_if_empty(&mut self, topic: &str) -> bool {
        if !self.topics.get(topic).is_some_and(Entry::is_empty) {
            return false;
        }
        let entry = self.topics.remove(topic).expect("just looked");
        if entry.watched {
            self.unwatch.push(topic.to_owned());
            return true;
        }
        false
    }

    /// A new stream: nothing is watched on it yet, every topic is watched again
    /// from its cursor.
    pub fn reattached(&mut self) {
        self.unwatch.clear();
        self.dirty.clear();
        for (name, entry) in &mut self.topics {
            entry.watched = false;
            entry.refreshing = false;
            entry.dirty = true;
            self.dirty.push(name.clone());
        }
    }

    /// What to ask core-svc next, if anything.
    pub fn take_request(&mut self) -> Option<pb::AttachRequest> {
        let mut request = pb::AttachRequest {
            unwatch: std::mem::take(&mut self.unwatch),
            ..Default::default()
        };
        while request.watch.len() < MAX_WATCHES
            && let Some(name) = self.dirty.pop()
        {
            let Some(entry) = self.topics.get_mut(&name) else {
                continue;
            };
            entry.dirty = false;
            let waiting = entry.waiting();
            if !entry.watched {
                entry.watched = true;
                request.watch.push(pb::WatchTopic {
                    topic: name.clone(),
                    resume: entry.cursor,
                    snapshot: true,
                });
                // Without a cursor the watch starts with a Snapshot; resumed, it
                // replays what was missed, and the snapshot is read after that.
                entry.refreshing = entry.cursor.is_none() || waiting;
                if entry.cursor.is_some() && waiting {
                    request.snapshot.push(name);
                }
            } else if waiting && !entry.refreshing {
                entry.refreshing = true;
                request.snapshot.push(name);
            }
        }
        let empty =
            request.watch.is_empty() && request.unwatch.is_empty() && request.snapshot.is_empty();
        (!empty).then_some(request)
    }

    /// Whether [`Registry::take_request`] has more to give.
    pub fn has_requests(&self) -> bool {
        !self.dirty.is_empty() || !self.unwatch.is_empty()
    }

    /// Hands core-svc's events to the sessions. True when sessions that vanished
    /// left topics nobody reads (an unwatch to send).
    pub fn dispatch(&mut self, events: Vec<pb::Event>) -> bool {
        let mut unwatched = false;
        for event in events {
            let (Some(cursor), Some(kind)) = (event.cursor, &event.kind) else {
                continue;
            };
            let Some(entry) = self.topics.get_mut(&event.topic) else {
                continue; // Unwatched meanwhile.
            };
            match kind {
                Kind::StreamHead(_) => {
                    entry.cursor = Some(cursor);
                    continue;
                }
                // A Snapshot starts the sessions waiting for one; a refused
                // cursor's ResyncRequired goes to those already there (what
                // follows starts the topic over for them).
                Kind::Snapshot(_) | Kind::ResyncRequired(_) => {
                    let snapshot = matches!(kind, Kind::Snapshot(_));
                    entry.cursor = Some(cursor);
                    entry.refreshing &= !snapshot;
                    let event = Arc::new(event);
                    each_member(entry, |m, inbox| {
                        if m.waiting == snapshot {
                            m.waiting = false;
                            inbox.push_event(event.clone());
                        }
                    });
                    unwatched |= self.forget_if_empty(&event.topic);
                }
                _ => {
                    let seen = entry
                        .cursor
                        .is_some_and(|c| c.epoch == cursor.epoch && c.offset >= cursor.offset);
                    if seen {
                        continue;
                    }
                    entry.cursor = Some(cursor);
                    let sent = deliver(entry, &event);
                    self.metrics.frames_sent(FrameType::of(kind), sent);
                    unwatched |= self.forget_if_empty(&event.topic);
                }
            }
        }
        unwatched
    }

    /// Ends every session's inbox (the attachment is gone for good); they leave
    /// as they close.
    pub fn end_all(&mut self, why: &Ended) {
        for entry in self.topics.values() {
            for member in entry.groups.iter().flat_map(|g| &g.members) {
                if let Some(inbox) = member.inbox.upgrade() {
                    inbox.end(why.clone());
                }
            }
        }
    }

    /// Whether anyone reads `topic`.
    #[cfg(test)]
    pub fn watched(&self, topic: &str) -> bool {
        self.topics.contains_key(topic)
    }

    /// Sessions reading `topic`.
    #[cfg(test)]
    pub fn readers(&self, topic: &str) -> usize {
        self.topics
            .get(topic)
            .map_or(0, |e| e.groups.iter().map(|g| g.members.len()).sum())
    }
}

/// Calls `f` with every live member of `entry`; the vanished ones are dropped.
fn each_member(entry: &mut Entry, mut f: impl FnMut(&mut Member, &Inbox)) {
    for group in &mut entry.groups {
        group.members.retain_mut(|m| match m.inbox.upgrade() {
            Some(inbox) => {
                f(m, &inbox);
                true
            }
            None => false,
        });
    }
    entry.groups.retain(|g| !g.members.is_empty());
}

/// A live event: rendered once per group that has a session past its snapshot,
/// the same bytes queued to each of them. How many frames were queued in all.
fn deliver(entry: &mut Entry, event: &pb::Event) -> usize {
    let mut sent = 0;
    for group in &mut entry.groups {
        let mut frames: Option<Vec<Utf8Bytes>> = None;
        group.members.retain_mut(|m| {
            let Some(inbox) = m.inbox.upgrade() else {
                return false;
            };
            if !m.waiting {
                let frames = frames.get_or_insert_with(|| render(event, &group.audience));
                inbox.push_frames(frames);
                sent += frames.len();
            }
            true
        });
    }
    entry.groups.retain(|g| !g.members.is_empty());
    sent
}

/// An event's frames for `audience`, as the text every session of its group is
/// sent: straight to text for the hottest ones.
pub fn render(event: &pb::Event, audience: &Audience) -> Vec<Utf8Bytes> {
    if let Some(frames) = dialect::text::render(event, audience) {
        return frames.into_iter().map(Utf8Bytes::from).collect();
    }
    dialect::render(event, audience)
        .iter()
        .map(|frame| Utf8Bytes::from(frame.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::task::{Context, Poll, Waker};

    use logi::auth::Role;
    use logi::id::Id;

    use super::*;
    use crate::inbox::Item;
    use crate::route::ChannelsRoute;

    const TOPIC: &str = "user_1_bookings";

    fn rider(dialect: Dialect) -> Audience {
        Audience {
            dialect,
            principal: Id::new("1").unwrap(),
            role: Role::User,
        }
    }

    fn channels() -> Audience {
        rider(Dialect::Channels(ChannelsRoute::UserBookings))
    }

    fn at(offset: u64, kind: Kind) -> pb::Event {
        pb::Event {
            topic: TOPIC.into(),
            cursor: Some(pb::Cursor { epoch: 1, offset }),
            occurred_at: None,
            kind: Some(kind),
        }
    }

    fn changed(offset: u64) -> pb::Event {
        let booking = pb::Booking {
            id: offset,
            user_id: "1".into(),
            status: pb::BookingStatus::Pending as i32,
            ..Default::default()
        };
        at(
            offset,
            Kind::BookingChanged(pb::BookingChanged {
                booking: Some(booking),
                previous_status: 0,
            }),
        )
    }

    fn snapshot(offset: u64) -> pb::Event {
        at(offset, Kind::Snapshot(pb::Snapshot::default()))
    }

    fn take(inbox: &Inbox) -> VecDeque<Item> {
        match inbox.poll_take(&mut Context::from_waker(Waker::noop()), usize::MAX) {
            Poll::Ready(Ok(items)) => items,
            Poll::Pending => VecDeque::new(),
            Poll::Ready(Err(e)) => panic!("ended: {e:?}"),
        }
    }

    /// What a session was handed: a booking frame by its id, an event by its kind.
    fn seen(inbox: &Inbox) -> Vec<String> {
        take(inbox)
            .iter()
            .map(|item| match item {
                Item::Frame(text) => {
                    let frame: serde_json::Value = serde_json::from_str(text).unwrap();
                    format!("booking {}", frame["message"]["booking_id"])
                }
                Item::Event(e) => match &e.kind {
                    Some(Kind::Snapshot(_)) => "snapshot".to_owned(),
                    Some(Kind::ResyncRequired(_)) => "resync".to_owned(),
                    other => format!("{other:?}"),
                },
            })
            .collect()
    }

    #[test]
    fn the_first_session_watches_and_the_last_one_leaving_unwatches() {
        let mut registry = Registry::default();
        let (a, b) = (Inbox::new(1, 16), Inbox::new(1, 16));
        assert!(registry.join(TOPIC, &a, &channels()));
        let request = registry.take_request().unwrap();
        assert_eq!(
            request.watch,
            [pb::WatchTopic {
                topic: TOPIC.into(),
                resume: None,
                snapshot: true
            }]
        );
        assert!(request.snapshot.is_empty() && request.unwatch.is_empty());
        // The watch's snapshot serves a second session too: nothing more to ask.
        assert!(!registry.join(TOPIC, &b, &channels()));
        assert!(registry.take_request().is_none());
        assert!(!registry.leave(TOPIC, &a));
        assert_eq!(registry.readers(TOPIC), 1);
        assert!(registry.leave(TOPIC, &b));
        let request = registry.take_request().unwrap();
        assert_eq!(request.unwatch, [TOPIC]);
        assert!(request.watch.is_empty());
        assert!(!registry.watched(TOPIC));
    }

    #[test]
    fn a_session_gets_nothing_before_its_snapshot_and_everything_after() {
        let mut registry = Registry::default();
        let (a, b) = (Inbox::new(1, 16), Inbox::new(1, 16));
        registry.join(TOPIC, &a, &channels());
        registry.take_request();
        registry.dispatch(vec![changed(5)]);
        assert!(seen(&a).is_empty(), "before the snapshot");
        registry.dispatch(vec![snapshot(10), changed(11)]);
        assert_eq!(seen(&a), ["snapshot", "booking 11"]);

        // A second session on the live topic asks for a fresh snapshot...
        assert!(registry.join(TOPIC, &b, &channels()));
        let request = registry.take_request().unwrap();
        assert_eq!(request.snapshot, [TOPIC]);
        assert!(request.watch.is_empty());
        // ...gets nothing the snapshot covers, and what follows it.
        registry.dispatch(vec![changed(12), snapshot(12), changed(13)]);
        assert_eq!(seen(&a), ["booking 12", "booking 13"]);
        assert_eq!(seen(&b), ["snapshot", "booking 13"]);
    }

    #[test]
    fn an_event_is_rendered_once_for_every_session_of_a_dialect() {
        let mut registry = Registry::default();
        let (a, b, c) = (Inbox::new(1, 16), Inbox::new(1, 16), Inbox::new(1, 16));
        registry.join(TOPIC, &a, &channels());
        registry.join(TOPIC, &b, &channels());
        registry.join(TOPIC, &c, &rider(Dialect::Logi));
        registry.dispatch(vec![snapshot(1), changed(2)]);
        let frame = |inbox: &Inbox| match take(inbox).pop_back() {
            Some(Item::Frame(text)) => text,
            other => panic!("{other:?}"),
        };
        let (fa, fb, fc) = (frame(&a), frame(&b), frame(&c));
        assert_eq!(fa.as_ptr(), fb.as_ptr(), "the same bytes, not a copy");
        assert_ne!(fa.as_str(), fc.as_str(), "another dialect, another frame");
        assert!(fc.starts_with(r#"{"user_id":"1","type":"status_update""#));
    }

    #[test]
    fn a_session_that_vanished_leaves_nothing_behind() {
        let mut registry = Registry::default();
        let a = Inbox::new(1, 16);
        registry.join(TOPIC, &a, &channels());
        registry.take_request();
        drop(a);
        assert!(registry.dispatch(vec![snapshot(1)]), "an unwatch to send");
        assert!(!registry.watched(TOPIC));
        assert_eq!(registry.take_request().unwrap().unwatch, [TOPIC]);
    }

    #[test]
    fn a_new_stream_resumes_each_topic_from_its_cursor_and_drops_repeats() {
        let mut registry = Registry::default();
        let (a, b) = (Inbox::new(1, 16), Inbox::new(1, 16));
        registry.join(TOPIC, &a, &channels());
        registry.take_request();
        registry.dispatch(vec![snapshot(10), changed(11)]);
        seen(&a);
        registry.reattached();
        let cursor = Some(pb::Cursor {
            epoch: 1,
            offset: 11,
        });
        let request = registry.take_request().unwrap();
        assert_eq!(request.watch[0].resume, cursor);
        assert!(request.snapshot.is_empty(), "nobody waits for one");
        registry.dispatch(vec![changed(11), changed(12)]);
        assert_eq!(seen(&a), ["booking 12"]);

        // A session still waiting when the stream breaks gets its snapshot after
        // the replay.
        registry.join(TOPIC, &b, &channels());
        registry.reattached();
        let request = registry.take_request().unwrap();
        assert_eq!(request.watch[0].resume.map(|c| c.offset), Some(12));
        assert_eq!(request.snapshot, [TOPIC]);
        registry.dispatch(vec![changed(13), snapshot(13), changed(14)]);
        assert_eq!(seen(&a), ["booking 13", "booking 14"]);
        assert_eq!(seen(&b), ["snapshot", "booking 14"]);
    }

    #[test]
    fn a_refused_cursor_tells_the_sessions_already_there() {
        let mut registry = Registry::default();
        let a = Inbox::new(1, 16);
        registry.join(TOPIC, &a, &channels());
        registry.dispatch(vec![snapshot(10)]);
        seen(&a);
        let resync = at(
            3,
            Kind::ResyncRequired(pb::ResyncRequired {
                reason: pb::resync_required::Reason::EpochChanged as i32,
                detail: "new log".into(),
            }),
        );
        registry.dispatch(vec![resync, changed(4)]);
        assert_eq!(seen(&a), ["resync", "booking 4"]);
    }
}
