//! Live fan-out of events to subscribers.
//!
//! Each subscription has ONE bounded queue fed by every topic it reads. Publishing
//! never waits: when a subscriber's queue is full it is marked lagged and dropped
//! from the registry, and its stream ends with RESOURCE_EXHAUSTED once it has
//! drained what it already got, so it resumes from its cursor instead of growing
//! memory here. A [`Subscription`] unregisters itself when dropped (the client went
//! away), and a topic with no subscribers leaves no entry behind.
//!
//! For ephemeral events the hub also keeps, per subscribed topic, the durable head
//! (the last durable sequence number) and a counter of ephemeral events since it:
//! the ephemeral offset is `head * EPHEMERAL_SPAN + counter`. A resume cursor raises
//! the counter past itself, so offsets keep increasing across core-svc restarts.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use logi::pb::{self, event::Kind};
use tokio::sync::mpsc;

use crate::model::timestamp;

/// Offsets reserved after each durable event for the ephemeral events that follow.
pub const EPHEMERAL_SPAN: u64 = 1_000_000_000;

/// The durable sequence number and ephemeral counter an offset stands for.
pub fn split(offset: u64) -> (u64, u64) {
    (offset / EPHEMERAL_SPAN, offset % EPHEMERAL_SPAN)
}

#[derive(Debug)]
pub struct Hub {
    epoch: u64,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    topics: HashMap<String, TopicEntry>,
    next_id: u64,
    closed: bool,
}

#[derive(Debug, Default)]
struct TopicEntry {
    /// Known only once a subscriber read it from storage or a durable event passed.
    head: Option<u64>,
    ephemeral: u64,
    subs: Vec<Sub>,
}

#[derive(Debug, Clone)]
struct Sub {
    id: u64,
    tx: mpsc::Sender<Arc<pb::Event>>,
    lagged: Arc<AtomicBool>,
}

impl Sub {
    /// Queues `event`; false when the subscriber is gone or lagged and must be dropped.
    fn offer(&self, event: &Arc<pb::Event>) -> bool {
        if self.lagged.load(Ordering::Relaxed) {
            return false;
        }
        match self.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lagged.store(true, Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Why the hub refuses a new subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("core-svc is shutting down")]
pub struct Closed;

impl Hub {
    /// A hub whose subscribers each get a queue of `capacity` events.
    pub fn new(epoch: u64, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            epoch,
            capacity: capacity.max(1),
            inner: Mutex::default(),
        })
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delivers committed durable events, in the order given. Called in commit order.
    pub fn publish(&self, events: &[pb::Event]) {
        let mut inner = self.lock();
        for event in events {
            let Some(entry) = inner.topics.get_mut(&event.topic) else {
                continue;
            };
            let (seq, _) = split(event.cursor.map_or(0, |c| c.offset));
            if entry.head.is_none_or(|h| seq > h) {
                entry.head = Some(seq);
                entry.ephemeral = 0;
            }
            let event = Arc::new(event.clone());
            entry.subs.retain(|s| s.offer(&event));
        }
    }

    /// Delivers an ephemeral event to the subscribers of `topic`; returns whether
    /// anyone could get it. Dropped when nobody subscribes (nothing is lost: it is not
    /// kept anyway) or the topic's head is not known yet.
    pub fn publish_ephemeral(&self, topic: &str, kind: Kind, at: SystemTime) -> bool {
        let mut inner = self.lock();
        let Some(entry) = inner.topics.get_mut(topic) else {
            return false;
        };
        let Some(head) = entry.head else { return false };
        if entry.ephemeral + 1 >= EPHEMERAL_SPAN {
            tracing::warn!(
                topic,
                "ephemeral offsets exhausted until the next durable event"
            );
            return false;
        }
        entry.ephemeral += 1;
        let event = Arc::new(pb::Event {
            topic: topic.to_owned(),
            cursor: Some(pb::Cursor {
                epoch: self.epoch,
                offset: head * EPHEMERAL_SPAN + entry.ephemeral,
            }),
            occurred_at: Some(timestamp(at)),
            kind: Some(kind),
        });
        entry.subs.retain(|s| s.offer(&event));
        true
    }

    /// Registers a subscriber for `topics`. Register BEFORE reading history, so that
    /// every event committed after the read is queued here.
    ///
    /// # Errors
    /// [`Closed`] once the hub is shutting down.
    pub fn subscribe(self: &Arc<Self>, topics: Vec<String>) -> Result<Subscription, Closed> {
        let (tx, rx) = mpsc::channel(self.capacity);
        let lagged = Arc::new(AtomicBool::new(false));
        let mut inner = self.lock();
        if inner.closed {
            return Err(Closed);
        }
        inner.next_id += 1;
        let id = inner.next_id;
        for topic in &topics {
            let sub = Sub {
                id,
                tx: tx.clone(),
                lagged: lagged.clone(),
            };
            inner
                .topics
                .entry(topic.clone())
                .or_default()
                .subs
                .push(sub);
        }
        drop(inner);
        Ok(Subscription {
            hub: self.clone(),
            id,
            topics: topics.into_iter().collect(),
            rx,
            lagged,
            tx: None,
        })
    }

    /// Registers an attachment: a subscriber with a queue of `capacity` events whose
    /// topics come and go ([`Subscription::watch`], [`Subscription::unwatch`]). Its
    /// stream does not end when the hub closes: its owner watches for shutdown.
    ///
    /// # Errors
    /// [`Closed`] once the hub is shutting down.
    pub fn attach(self: &Arc<Self>, capacity: usize) -> Result<Subscription, Closed> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let id = {
            let mut inner = self.lock();
            if inner.closed {
                return Err(Closed);
            }
            inner.next_id += 1;
            inner.next_id
        };
        Ok(Subscription {
            hub: self.clone(),
            id,
            topics: HashSet::new(),
            rx,
            lagged: Arc::new(AtomicBool::new(false)),
            tx: Some(tx),
        })
    }

    /// Tells the hub a topic's durable head as read from storage, and the offset a
    /// subscriber resumes from, so later ephemeral offsets exceed both.
    pub fn observe(&self, topic: &str, head: u64, resume_offset: Option<u64>) {
        let mut inner = self.lock();
        let Some(entry) = inner.topics.get_mut(topic) else {
            return;
        };
        if entry.head.is_none_or(|h| head > h) {
            entry.head = Some(head);
            entry.ephemeral = 0;
        }
        if let Some((seq, eph)) = resume_offset.map(split)
            && Some(seq) == entry.head
        {
            entry.ephemeral = entry.ephemeral.max(eph);
        }
    }

    /// Takes subscriber `id` off `topic`; a topic left with nobody leaves no entry.
    fn forget(&self, id: u64, topic: &str) {
        let mut inner = self.lock();
        if let Some(entry) = inner.topics.get_mut(topic) {
            entry.subs.retain(|s| s.id != id);
            if entry.subs.is_empty() {
                inner.topics.remove(topic);
            }
        }
    }

    /// Ends every subscription (their streams answer UNAVAILABLE) and refuses new ones.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.topics.clear();
    }

    /// Subscribers of `topic`, for tests and metrics.
    pub fn subscribers(&self, topic: &str) -> usize {
        self.lock().topics.get(topic).map_or(0, |e| e.subs.len())
    }

    /// Topics with at least one subscriber.
    pub fn topic_count(&self) -> usize {
        self.lock().topics.len()
    }
}

/// What a subscription yields next.
#[derive(Debug)]
pub enum Next {
    Event(Arc<pb::Event>),
    /// The queue overflowed; the subscriber must resume from its cursor.
    Lagged,
    /// The hub shut down.
    Closed,
}

#[derive(Debug)]
pub struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    topics: HashSet<String>,
    rx: mpsc::Receiver<Arc<pb::Event>>,
    lagged: Arc<AtomicBool>,
    /// An attachment's own sender, to register topics it watches later.
    tx: Option<mpsc::Sender<Arc<pb::Event>>>,
}

impl Subscription {
    /// Starts queuing `topic`'s events too (an attachment only; a no-op if already).
    /// Register BEFORE reading the topic's history, as for [`Hub::subscribe`].
    ///
    /// # Errors
    /// [`Closed`] once the hub is shutting down.
    pub fn watch(&mut self, topic: &str) -> Result<(), Closed> {
        let Some(tx) = &self.tx else { return Ok(()) };
        if self.topics.contains(topic) {
            return Ok(());
        }
        let mut inner = self.hub.lock();
        if inner.closed {
            return Err(Closed);
        }
        let sub = Sub {
            id: self.id,
            tx: tx.clone(),
            lagged: self.lagged.clone(),
        };
        inner
            .topics
            .entry(topic.to_owned())
            .or_default()
            .subs
            .push(sub);
        drop(inner);
        self.topics.insert(topic.to_owned());
        Ok(())
    }

    /// Stops queuing `topic`'s events; those already queued still come.
    pub fn unwatch(&mut self, topic: &str) {
        if self.topics.remove(topic) {
            self.hub.forget(self.id, topic);
        }
    }

    /// The next queued event if one is there now, without waiting.
    pub fn try_next(&mut self) -> Option<Next> {
        match self.rx.try_recv() {
            Ok(event) => Some(Next::Event(event)),
            Err(_) if self.lagged.load(Ordering::Relaxed) => Some(Next::Lagged),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => Some(Next::Closed),
        }
    }

    /// The next queued event. After an overflow the events queued before it are
    /// still delivered, then [`Next::Lagged`].
    pub async fn next(&mut self) -> Next {
        if self.lagged.load(Ordering::Relaxed) && self.rx.is_empty() {
            return Next::Lagged;
        }
        match self.rx.recv().await {
            Some(event) => Next::Event(event),
            None if self.lagged.load(Ordering::Relaxed) => Next::Lagged,
            None => Next::Closed,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for topic in &self.topics {
            self.hub.forget(self.id, topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn durable(topic: &str, seq: u64) -> pb::Event {
        pb::Event {
            topic: topic.into(),
            cursor: Some(pb::Cursor {
                epoch: 1,
                offset: seq * EPHEMERAL_SPAN,
            }),
            occurred_at: None,
            kind: Some(Kind::OtpIssued(pb::OtpIssued {
                booking_id: seq,
                otp: String::new(),
            })),
        }
    }

    fn location() -> Kind {
        Kind::DriverLocation(pb::DriverLocationChanged::default())
    }

    async fn offset(sub: &mut Subscription) -> u64 {
        match sub.next().await {
            Next::Event(e) => e.cursor.unwrap().offset,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn delivers_in_order_to_subscribers_of_the_topic() {
        let hub = Hub::new(1, 16);
        let mut a = hub.subscribe(vec!["t".into(), "u".into()]).unwrap();
        let mut b = hub.subscribe(vec!["u".into()]).unwrap();
        hub.publish(&[
            durable("t", 1),
            durable("u", 1),
            durable("v", 1),
            durable("t", 2),
        ]);
        assert_eq!(offset(&mut a).await, EPHEMERAL_SPAN);
        assert_eq!(offset(&mut a).await, EPHEMERAL_SPAN);
        assert_eq!(offset(&mut a).await, 2 * EPHEMERAL_SPAN);
        assert_eq!(offset(&mut b).await, EPHEMERAL_SPAN);
        assert!(b.rx.is_empty());
    }

    #[tokio::test]
    async fn ephemeral_offsets_sit_between_durable_ones_and_pass_resume_cursors() {
        let hub = Hub::new(1, 16);
        let mut s = hub.subscribe(vec!["t".into()]).unwrap();
        // Head unknown: dropped rather than given a made-up offset.
        assert!(!hub.publish_ephemeral("t", location(), SystemTime::now()));
        hub.observe("t", 3, Some(3 * EPHEMERAL_SPAN + 41));
        assert!(hub.publish_ephemeral("t", location(), SystemTime::now()));
        assert_eq!(offset(&mut s).await, 3 * EPHEMERAL_SPAN + 42);
        hub.publish(&[durable("t", 4)]);
        hub.publish_ephemeral("t", location(), SystemTime::now());
        assert_eq!(offset(&mut s).await, 4 * EPHEMERAL_SPAN);
        assert_eq!(offset(&mut s).await, 4 * EPHEMERAL_SPAN + 1);
        assert!(!hub.publish_ephemeral("nobody", location(), SystemTime::now()));
    }

    #[tokio::test]
    async fn a_full_queue_ends_the_subscriber_after_what_it_already_has() {
        let hub = Hub::new(1, 2);
        let mut slow = hub.subscribe(vec!["t".into()]).unwrap();
        let mut fast = hub.subscribe(vec!["t".into()]).unwrap();
        hub.publish(&[durable("t", 1), durable("t", 2)]);
        assert_eq!(offset(&mut fast).await, EPHEMERAL_SPAN);
        assert_eq!(offset(&mut fast).await, 2 * EPHEMERAL_SPAN);
        hub.publish(&[durable("t", 3)]);
        assert_eq!(
            hub.subscribers("t"),
            1,
            "the lagged subscriber is dropped at once"
        );
        assert_eq!(offset(&mut fast).await, 3 * EPHEMERAL_SPAN);
        assert_eq!(offset(&mut slow).await, EPHEMERAL_SPAN);
        assert_eq!(offset(&mut slow).await, 2 * EPHEMERAL_SPAN);
        assert!(matches!(slow.next().await, Next::Lagged));
    }

    #[tokio::test]
    async fn dropping_a_subscription_leaves_nothing_behind() {
        let hub = Hub::new(1, 4);
        let a = hub.subscribe(vec!["t".into(), "u".into()]).unwrap();
        let b = hub.subscribe(vec!["t".into()]).unwrap();
        assert_eq!(hub.topic_count(), 2);
        drop(a);
        assert_eq!(hub.subscribers("t"), 1);
        assert_eq!(hub.topic_count(), 1);
        drop(b);
        assert_eq!(hub.topic_count(), 0);
    }

    #[tokio::test]
    async fn close_ends_streams_and_refuses_new_ones() {
        let hub = Hub::new(1, 4);
        let mut s = hub.subscribe(vec!["t".into()]).unwrap();
        hub.close();
        assert!(matches!(s.next().await, Next::Closed));
        assert_eq!(hub.subscribe(vec!["t".into()]).unwrap_err(), Closed);
    }

    #[tokio::test]
    async fn an_attachment_watches_and_unwatches_topics_as_it_goes() {
        let hub = Hub::new(1, 16);
        let mut a = hub.attach(16).unwrap();
        a.watch("t").unwrap();
        a.watch("t").unwrap(); // once is enough
        hub.publish(&[durable("t", 1), durable("u", 1)]);
        assert_eq!(offset(&mut a).await, EPHEMERAL_SPAN);
        a.watch("u").unwrap();
        a.unwatch("t");
        hub.publish(&[durable("t", 2), durable("u", 2)]);
        assert_eq!(offset(&mut a).await, 2 * EPHEMERAL_SPAN);
        assert!(a.rx.is_empty(), "nothing of t after unwatching it");
        assert_eq!((hub.subscribers("t"), hub.subscribers("u")), (0, 1));
        drop(a);
        assert_eq!(hub.topic_count(), 0, "nothing is left behind");
        hub.close();
        assert!(hub.attach(4).is_err());
    }
}
