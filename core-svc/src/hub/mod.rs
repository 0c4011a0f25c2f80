//! Live fan-out of events to subscribers.
//!
//! Each subscription has ONE bounded queue fed by every topic it reads. Publishing
//! never waits: when a subscriber's queue is full it is marked lagged and dropped
//! from the registry, and its stream ends with RESOURCE_EXHAUSTED once it has
//! drained what it already got, so it resumes from its cursor instead of growing
//! memory here. A [`Subscription`] unregisters itself when dropped (the client went
//! away), and a topic with no subscribers leaves no entry behind.
//!
//! Each subscribed topic has a [`Sequence`]: the order its durable events go out
//! in and the offsets of its ephemeral events (`head * EPHEMERAL_SPAN + counter`;
//! a resume cursor raises the counter past itself, so offsets keep increasing
//! across restarts). A hub fed by one writer in commit order ([`Order::Committed`],
//! SQLite) sends events as they come. A hub fed by several connections or
//! replicas ([`Order::Sequenced`]) sends each topic's events in sequence order: a
//! new topic waits for its head to be read, and a missing event is read from the
//! store. The [`fill`] task does both reads; it finds its work in the hub.
//!
//! A sequenced topic can run behind the store for a moment (an event committed
//! but not here yet). Readers that must not get ahead of it wait:
//! [`Subscription::ready`] before a topic's start is read, [`Hub::reached`] after
//! a fresh snapshot is read.

pub mod fill;
mod sequence;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use logi::pb::{self, event::Kind};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use crate::error::Error;
use crate::model::timestamp;
pub use sequence::{EPHEMERAL_SPAN, MAX_HELD, Order, split};
use sequence::{Offered, Sequence};

/// How long a sequenced topic's next event may be missing before it is read from
/// the store: long enough for one that is merely late (another connection's
/// commit, a message between replicas) to arrive by itself.
pub const GAP_GRACE: Duration = Duration::from_millis(100);
/// How long a reader waits for a sequenced topic to catch up with the store.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Hub {
    epoch: u64,
    capacity: usize,
    order: Order,
    inner: Mutex<Inner>,
    /// Wakes the [`fill`] task when a topic needs a read.
    work_added: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    topics: HashMap<String, TopicEntry>,
    next_id: u64,
    closed: bool,
    /// Sequenced topics that need a read: their head, or a missing event.
    work: HashSet<String>,
    /// Of those, the ones being read now.
    reading: HashSet<String>,
}

#[derive(Debug)]
struct TopicEntry {
    seq: Sequence,
    /// Its head is to be read again: events may have been missed.
    recheck: bool,
    subs: Vec<Sub>,
    /// Readers waiting for the head to reach a sequence number.
    waiters: Vec<(u64, oneshot::Sender<()>)>,
}

impl TopicEntry {
    fn new(order: Order) -> Self {
        Self {
            seq: Sequence::new(order),
            recheck: false,
            subs: Vec::new(),
            waiters: Vec::new(),
        }
    }

    /// Sends `events` to the subscribers, then answers the readers waiting for
    /// what the head now is.
    fn deliver(&mut self, events: Vec<Arc<pb::Event>>) {
        for event in &events {
            self.subs.retain(|s| s.offer(event));
        }
        if !self.seq.started() {
            return;
        }
        // Only a sequenced topic has waiters (see `Hub::reached`); a started one
        // has a head.
        let head = self.seq.head().unwrap_or(0);
        let (done, waiting) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|(at, _)| head >= *at);
        self.waiters = waiting;
        for (_, waiter) in done {
            let _ = waiter.send(());
        }
    }

    /// Every subscriber of the topic resumes from its cursor instead.
    fn start_over(&mut self) {
        for sub in &self.subs {
            sub.lagged.store(true, Ordering::Relaxed);
        }
        self.subs.clear();
    }
}

/// What the [`fill`] task is to read now.
#[derive(Debug, Default, PartialEq)]
pub struct Work {
    /// Topics whose head is not known yet.
    pub heads: Vec<String>,
    /// Topics missing the events after this sequence number.
    pub gaps: Vec<(String, u64)>,
    /// When a gap not due yet will be.
    pub next: Option<Instant>,
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
    /// A hub fed in commit order, whose subscribers each get a queue of `capacity`
    /// events.
    pub fn new(epoch: u64, capacity: usize) -> Arc<Self> {
        Self::with_order(epoch, capacity, Order::Committed)
    }

    /// A hub fed as [`Order`] says; a sequenced one needs the [`fill`] task.
    pub fn with_order(epoch: u64, capacity: usize, order: Order) -> Arc<Self> {
        Arc::new(Self {
            epoch,
            capacity: capacity.max(1),
            order,
            inner: Mutex::default(),
            work_added: Notify::new(),
        })
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn order(&self) -> Order {
        self.order
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delivers committed durable events. A committed hub takes them in commit
    /// order; a sequenced one puts each topic's in order itself.
    pub fn publish(&self, events: &[pb::Event]) {
        let now = Instant::now();
        let mut inner = self.lock();
        let mut gapped = false;
        for event in events {
            let Some(entry) = inner.topics.get_mut(&event.topic) else {
                continue;
            };
            match entry.seq.offer(Arc::new(event.clone()), now) {
                Offered::Deliver(out) => entry.deliver(out),
                Offered::Overflow => {
                    tracing::warn!(topic = %event.topic, "too many events missing their predecessor: the topic's subscribers resume");
                    entry.start_over();
                    inner.topics.remove(&event.topic);
                    continue;
                }
            }
            if entry.seq.gap_due(GAP_GRACE).is_some() {
                gapped |= inner.work.insert(event.topic.clone());
            }
        }
        drop(inner);
        if gapped {
            self.work_added.notify_one();
        }
    }

    /// Delivers an ephemeral event to the subscribers of `topic`; returns whether
    /// anyone could get it. Dropped when nobody subscribes (nothing is lost: it is not
    /// kept anyway) or the topic's head is not known yet.
    pub fn publish_ephemeral(&self, topic: &str, kind: Kind, at: SystemTime) -> bool {
        self.publish_ephemeral_with(topic, at, || kind)
    }

    /// As [`Hub::publish_ephemeral`], building the event only when it is sent.
    pub fn publish_ephemeral_with(
        &self,
        topic: &str,
        at: SystemTime,
        kind: impl FnOnce() -> Kind,
    ) -> bool {
        let mut inner = self.lock();
        let Some(entry) = inner.topics.get_mut(topic) else {
            return false;
        };
        let Some(offset) = entry.seq.next_ephemeral() else {
            if entry.seq.head().is_some() {
                tracing::warn!(
                    topic,
                    "ephemeral offsets exhausted until the next durable event"
                );
            }
            return false;
        };
        let event = Arc::new(pb::Event {
            topic: topic.to_owned(),
            cursor: Some(pb::Cursor {
                epoch: self.epoch,
                offset,
            }),
            occurred_at: Some(timestamp(at)),
            kind: Some(kind()),
        });
        entry.subs.retain(|s| s.offer(&event));
        true
    }

    /// Adds `sub` to `topic`; a new sequenced topic needs its head read.
    fn join(&self, inner: &mut Inner, topic: &str, sub: Sub) -> bool {
        let entry = inner
            .topics
            .entry(topic.to_owned())
            .or_insert_with(|| TopicEntry::new(self.order));
        entry.subs.push(sub);
        !entry.seq.started() && inner.work.insert(topic.to_owned())
    }

    /// Registers a subscriber for `topics`. Register BEFORE reading history, so that
    /// every event committed after the read is queued here (and, on a sequenced
    /// hub, wait for [`Subscription::ready`] before reading).
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
        let mut added = false;
        for topic in &topics {
            let sub = Sub {
                id,
                tx: tx.clone(),
                lagged: lagged.clone(),
            };
            added |= self.join(&mut inner, topic, sub);
        }
        drop(inner);
        if added {
            self.work_added.notify_one();
        }
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
    /// subscriber resumes from, so later ephemeral offsets exceed both. On a
    /// sequenced hub a head past what was delivered means events are on their
    /// way, or missing.
    pub fn observe(&self, topic: &str, head: u64, resume_offset: Option<u64>) {
        let mut inner = self.lock();
        let Some(entry) = inner.topics.get_mut(topic) else {
            return;
        };
        let out = entry.seq.start(head, Instant::now());
        entry.deliver(out);
        if let Some(offset) = resume_offset {
            entry.seq.resumed_at(offset);
        }
        let gapped = entry.seq.gap_due(GAP_GRACE).is_some() && inner.work.insert(topic.to_owned());
        drop(inner);
        if gapped {
            self.work_added.notify_one();
        }
    }

    /// Resolves once `topic` has delivered its durable events up to `seq` to its
    /// subscribers' queues (at once on a committed hub, whose order is the
    /// store's).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when that takes longer than [`CATCH_UP_TIMEOUT`], or
    /// the topic starts over meanwhile.
    pub async fn reached(&self, topic: &str, seq: u64) -> Result<(), Error> {
        let waiting = {
            let mut inner = self.lock();
            match inner.topics.get_mut(topic) {
                Some(entry)
                    if entry.seq.started()
                        && (self.order == Order::Committed
                            || entry.seq.head().is_some_and(|h| h >= seq)) =>
                {
                    None
                }
                Some(entry) => {
                    let (tx, rx) = oneshot::channel();
                    entry.waiters.push((seq, tx));
                    Some(rx)
                }
                // Nobody reads it: there is nothing to catch up with.
                None => None,
            }
        };
        let Some(rx) = waiting else { return Ok(()) };
        match tokio::time::timeout(CATCH_UP_TIMEOUT, rx).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::Unavailable(format!(
                "topic {topic} started over while it was read: read it again"
            ))),
            Err(_) => Err(Error::Unavailable(format!(
                "core-svc could not learn where topic {topic} is in time: retry shortly"
            ))),
        }
    }

    /// What the [`fill`] task is to read now; each topic handed out is the
    /// task's until it reports back ([`Hub::head_read`], [`Hub::gap_read`]).
    pub fn work(&self, now: Instant) -> Work {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut work = Work::default();
        inner.work.retain(|topic| {
            if inner.reading.contains(topic) {
                return true;
            }
            let Some(entry) = inner.topics.get(topic) else {
                return false;
            };
            if !entry.seq.started() || entry.recheck {
                work.heads.push(topic.clone());
            } else if let Some(after) = entry.seq.gap(now, GAP_GRACE) {
                work.gaps.push((topic.clone(), after));
            } else if let Some(due) = entry.seq.gap_due(GAP_GRACE) {
                work.next = Some(work.next.map_or(due, |n| n.min(due)));
                return true;
            } else {
                return false;
            }
            inner.reading.insert(topic.clone());
            true
        });
        work
    }

    /// Waits until [`Hub::work`] may have something.
    pub async fn work_added(&self) {
        self.work_added.notified().await;
    }

    /// The head of `topic` was read (None: the read failed and is tried again).
    pub fn head_read(&self, topic: &str, head: Option<u64>) {
        let mut inner = self.lock();
        inner.reading.remove(topic);
        if let Some(head) = head
            && let Some(entry) = inner.topics.get_mut(topic)
        {
            entry.recheck = false;
            let out = entry.seq.start(head, Instant::now());
            entry.deliver(out);
            // A gap this opens is found by the next `Hub::work`: a topic handed
            // out stays in the work set until then.
        }
    }

    /// Reads the head of every topic again (events may have been missed: a lost
    /// message between replicas); the ones found missing are then read too.
    pub fn recheck(&self) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        for (name, entry) in &mut inner.topics {
            entry.recheck = true;
            inner.work.insert(name.clone());
        }
        let any = !inner.work.is_empty();
        if any {
            self.work_added.notify_one();
        }
    }

    /// The events of `topic` after `after` were read (None: the read failed).
    pub fn gap_read(&self, topic: &str, after: u64, events: Option<Vec<pb::Event>>) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.reading.remove(topic);
        let (Some(events), Some(entry)) = (events, inner.topics.get_mut(topic)) else {
            return;
        };
        if events.is_empty() && entry.seq.unfillable(after) {
            tracing::warn!(
                topic,
                after,
                "events missing from the store (removed by retention?): the topic's subscribers resume"
            );
            entry.start_over();
            inner.topics.remove(topic);
            return;
        }
        for event in events {
            if let Offered::Deliver(out) = entry.seq.offer(Arc::new(event), now) {
                entry.deliver(out);
            }
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
        inner.work.clear();
        drop(inner);
        self.work_added.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
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
        let added = self.hub.join(&mut inner, topic, sub);
        drop(inner);
        if added {
            self.hub.work_added.notify_one();
        }
        self.topics.insert(topic.to_owned());
        Ok(())
    }

    /// Resolves once every topic of this subscription knows its head, so that a
    /// start read from the store from now on is not ahead of what the hub will
    /// deliver (at once on a committed hub).
    ///
    /// # Errors
    /// [`Error::Unavailable`] as for [`Hub::reached`].
    pub async fn ready(&self) -> Result<(), Error> {
        for topic in &self.topics {
            self.hub.reached(topic, 0).await?;
        }
        Ok(())
    }

    /// Stops queuing `topic`'s events; those already queued still come.
    pub fn unwatch(&mut self, topic: &str) {
        if self.topics.remove(topic) {
            self.hub.forget(self.id, topic);
        }
    }

    /// Events queued for this subscriber now.
    pub fn queued(&self) -> usize {
        self.rx.len()
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

    fn sequenced() -> Arc<Hub> {
        Hub::with_order(1, 64, Order::Sequenced)
    }

    #[tokio::test]
    async fn a_sequenced_topic_waits_for_its_head_then_delivers_in_order() {
        let hub = sequenced();
        let mut s = hub.subscribe(vec!["t".into()]).unwrap();
        let ready = tokio::spawn({
            let hub = hub.clone();
            async move { hub.reached("t", 0).await }
        });
        hub.publish(&[durable("t", 4), durable("t", 3)]);
        let work = hub.work(Instant::now());
        assert_eq!(work.heads, ["t"]);
        assert!(hub.work(Instant::now()).heads.is_empty(), "handed out once");
        assert!(!ready.is_finished());
        // Head 3 was in the store already: 4 follows it.
        hub.head_read("t", Some(3));
        ready.await.unwrap().unwrap();
        s.ready().await.unwrap();
        assert_eq!(offset(&mut s).await, 4 * EPHEMERAL_SPAN);
        hub.publish(&[durable("t", 6)]);
        hub.publish(&[durable("t", 5)]);
        assert_eq!(offset(&mut s).await, 5 * EPHEMERAL_SPAN);
        assert_eq!(offset(&mut s).await, 6 * EPHEMERAL_SPAN);
        assert!(s.rx.is_empty());
    }

    #[tokio::test]
    async fn a_missing_event_is_read_from_the_store_after_the_grace_period() {
        let hub = sequenced();
        let mut s = hub.subscribe(vec!["t".into()]).unwrap();
        let t0 = Instant::now();
        hub.work(t0);
        hub.head_read("t", Some(1));
        hub.publish(&[durable("t", 3)]);
        let early = hub.work(Instant::now());
        assert!(early.gaps.is_empty(), "2 may still come");
        assert!(early.next.is_some());
        let work = hub.work(Instant::now() + GAP_GRACE);
        assert_eq!(work.gaps, [("t".to_owned(), 1)]);
        // The store has 2 and 3; 3 goes out once.
        hub.gap_read("t", 1, Some(vec![durable("t", 2), durable("t", 3)]));
        assert_eq!(offset(&mut s).await, 2 * EPHEMERAL_SPAN);
        assert_eq!(offset(&mut s).await, 3 * EPHEMERAL_SPAN);
        assert!(s.rx.is_empty());
        assert_eq!(hub.work(Instant::now() + GAP_GRACE), Work::default());
    }

    #[tokio::test]
    async fn a_reader_ahead_of_a_sequenced_topic_waits_for_it() {
        let hub = sequenced();
        let mut s = hub.subscribe(vec!["t".into()]).unwrap();
        hub.work(Instant::now());
        hub.head_read("t", Some(1));
        // A fresh snapshot was read at head 2: 2 is committed but not here yet.
        hub.observe("t", 2, None);
        let caught_up = tokio::spawn({
            let hub = hub.clone();
            async move { hub.reached("t", 2).await }
        });
        tokio::task::yield_now().await;
        assert!(!caught_up.is_finished());
        hub.publish(&[durable("t", 2)]);
        caught_up.await.unwrap().unwrap();
        assert_eq!(
            offset(&mut s).await,
            2 * EPHEMERAL_SPAN,
            "queued before the reader goes on"
        );
    }

    #[tokio::test]
    async fn events_gone_from_the_store_make_the_topic_start_over() {
        let hub = sequenced();
        let mut s = hub.subscribe(vec!["t".into()]).unwrap();
        hub.work(Instant::now());
        hub.head_read("t", Some(1));
        hub.publish(&[durable("t", 3)]);
        hub.work(Instant::now() + GAP_GRACE);
        hub.gap_read("t", 1, Some(Vec::new()));
        assert!(matches!(s.next().await, Next::Lagged));
        assert_eq!(hub.topic_count(), 0);
    }
}
