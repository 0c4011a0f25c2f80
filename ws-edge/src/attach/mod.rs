//! The edge's attachments to core-svc: a few long-lived `EventService.Attach`
//! streams carry every topic the edge's apps read, each topic's events once.
//!
//! # Shape
//! - [`Attachments`]: the pool (`--attachments`, default 2). A topic always goes to
//!   the same attachment (by a hash of its name), so its events stay in order.
//!   With several core-svc replicas (`--core-url a,b,…`) attachment `i` starts on
//!   replica `i mod n`; each has a connection of its own to each replica it uses,
//!   shared with its location relay.
//! - [`Shard`]: one attachment's [`registry::Registry`] (topic → sessions) behind a
//!   mutex, and the state of its link. Sessions join and leave under the lock; the
//!   link dispatches each batch under it.
//! - [`link`]: the task that holds the stream: it sends what the registry asks
//!   for, dispatches what comes back, and when the stream breaks or its replica
//!   does not answer attaches again on the next replica (at once, and with
//!   jittered backoff after each full round of them) and watches every topic again
//!   from its last cursor. The replicas share one database, so the cursors hold on
//!   any of them.
//! - [`Membership`]: a session's place in the registries, and its
//!   [`Inbox`]; dropping it leaves every topic.
//! - [`relay`]: the drivers' positions from the sockets, up one
//!   `RelayDriverLocations` stream per attachment (on its connections; it starts
//!   on the link's replica and moves through them on its own when its stream
//!   fails); a driver always goes to the same one (by a hash of its id).
//!
//! # Data flow
//! ```text
//! handshake ──join──▶ registry ──watch / snapshot──▶ link ──AttachRequest──▶ core-svc
//! core-svc ──EventBatch──▶ link ──dispatch: render once per group──▶ inboxes ──▶ sessions
//! ```
//!
//! # When a queue is full
//! - A session's inbox: the app is closed with 1013 (see [`crate::inbox`]).
//! - The link never waits for a session, so the stream is read as fast as batches
//!   can be rendered; if the edge still falls behind, core-svc ends the stream with
//!   RESOURCE_EXHAUSTED and the link attaches again from each topic's cursor:
//!   durable events are replayed, positions in between are skipped (the next one
//!   supersedes them).
//! - Requests wait in the registry as per-topic flags (bounded by the topics
//!   read), and go out as the stream takes them, at most
//!   [`registry::MAX_WATCHES`] watches a message.

pub mod link;
pub mod registry;
pub mod relay;

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dialect::Audience;
use crate::inbox::{Ended, Inbox};
use crate::metrics::Metrics;
use crate::upstream::Upstream;
use registry::Registry;

/// One attachment: its registry and how its link is doing.
pub struct Shard {
    registry: Mutex<Registry>,
    /// The registry has something to ask for.
    wanted: Notify,
    status: AtomicU8,
}

const CONNECTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

impl Shard {
    fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            registry: Mutex::new(Registry::new(metrics)),
            wanted: Notify::new(),
            status: AtomicU8::new(CONNECTING),
        }
    }

    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the link the registry has something to ask for.
    fn want(&self) {
        self.wanted.notify_one();
    }

    fn set_status(&self, status: u8) {
        self.status.store(status, Ordering::Release);
    }

    /// Whether a new session can be served: the stream is up, or being made for
    /// the first time. Down, the handshake is refused rather than left waiting.
    pub fn available(&self) -> bool {
        self.status() != DOWN
    }

    fn status(&self) -> u8 {
        self.status.load(Ordering::Acquire)
    }
}

/// core-svc cannot be reached through an attachment a session needs.
#[derive(Debug)]
pub struct Unavailable;

/// The edge's attachments, and beside each its location relay.
#[derive(Clone)]
pub struct Attachments {
    shards: Arc<[Arc<Shard>]>,
    relays: Arc<[Arc<relay::Relay>]>,
}

impl std::fmt::Debug for Attachments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachments")
            .field("count", &self.shards.len())
            .finish_non_exhaustive()
    }
}

fn pick<'a, T>(all: &'a [T], key: &str) -> &'a T {
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
    // The remainder is below the length, which is a usize.
    &all[(hash % all.len() as u64) as usize]
}

impl Attachments {
    /// Starts `count` attachments (at least one), each on connections of its own,
    /// attachment `i` first on replica `i mod n`.
    pub fn start(
        upstream: &Upstream,
        count: usize,
        outage_limit: Duration,
        metrics: &Arc<Metrics>,
        shutdown: &CancellationToken,
        tasks: &TaskTracker,
    ) -> Self {
        let count = count.max(1);
        let shards: Arc<[Arc<Shard>]> = (0..count)
            .map(|_| Arc::new(Shard::new(metrics.clone())))
            .collect();
        let relays: Arc<[Arc<relay::Relay>]> = (0..count)
            .map(|_| Arc::new(relay::Relay::new(metrics.clone())))
            .collect();
        for (index, (shard, relay)) in shards.iter().zip(relays.iter()).enumerate() {
            let channels = upstream.connections();
            let link = link::Link {
                index,
                shard: shard.clone(),
                upstream: upstream.clone(),
                channels: channels.clone(),
                outage_limit,
                metrics: metrics.clone(),
            };
            tasks.spawn(link.run(shutdown.clone()));
            tasks.spawn(
                relay
                    .clone()
                    .run(upstream.clone(), index, channels, shutdown.clone()),
            );
        }
        Self { shards, relays }
    }

    /// Whether every attachment's stream is up, on whichever replica (for
    /// `/readyz`: an edge with one down refuses the apps of its topics).
    pub fn ready(&self) -> bool {
        self.shards.iter().all(|s| s.status() == UP)
    }

    /// How many attachments there are.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Always false: there is at least one attachment.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// For the metrics: attachments up, and topics watched over all of them.
    pub fn state(&self) -> (usize, usize) {
        let up = self.shards.iter().filter(|s| s.status() == UP).count();
        let topics = self.shards.iter().map(|s| s.registry().topics()).sum();
        (up, topics)
    }

    /// The attachment that carries `topic`.
    pub fn shard(&self, topic: &str) -> &Arc<Shard> {
        pick(&self.shards[..], topic)
    }

    /// The relay that carries `driver`'s positions.
    pub fn relay(&self, driver: &str) -> &Arc<relay::Relay> {
        pick(&self.relays[..], driver)
    }

    /// Registers a session on `topics`: nothing is sent to it before each topic's
    /// snapshot, and everything after (see [`Membership::started`]). Its inbox
    /// holds at most `limit` frames.
    ///
    /// # Errors
    /// [`Unavailable`] when an attachment it needs is down.
    pub fn join(
        &self,
        topics: &[String],
        audience: &Audience,
        limit: usize,
    ) -> Result<Membership, Unavailable> {
        let mut membership = Membership {
            inbox: Inbox::new(topics.len(), limit),
            topics: Vec::with_capacity(topics.len()),
        };
        for topic in topics {
            let shard = self.shard(topic);
            if !shard.available() {
                return Err(Unavailable); // What was joined is left as `membership` drops.
            }
            if shard.registry().join(topic, &membership.inbox, audience) {
                shard.want();
            }
            membership.topics.push((shard.clone(), topic.clone()));
        }
        Ok(membership)
    }
}

/// A session's registration on its topics; dropped, it leaves them all.
pub struct Membership {
    pub inbox: Arc<Inbox>,
    topics: Vec<(Arc<Shard>, String)>,
}

impl Membership {
    /// Once every topic's snapshot is in the inbox: whatever is committed from
    /// then on reaches the session.
    ///
    /// # Errors
    /// Why the inbox ended meanwhile.
    pub async fn started(&self) -> Result<(), Ended> {
        std::future::poll_fn(|cx| self.inbox.poll_started(cx)).await
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        for (shard, topic) in &self.topics {
            if shard.registry().leave(topic, &self.inbox) {
                shard.want();
            }
        }
    }
}
