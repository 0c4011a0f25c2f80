//! core-svc as one replica of several: what it tells the others over NATS, and
//! what it hears from them.
//!
//! # Shape
//! - [`wire`]: commits and positions as `logi.cluster.v1` messages.
//! - [`peers`]: the other replicas' message numbers, to notice what was lost.
//! - [`Cluster`]: the NATS connection and two tasks. The outbox sends each local
//!   commit (from the commit sink, through a bounded queue), the positions
//!   received here every [`POSITIONS_EVERY`] (latest per driver), and a heartbeat
//!   every [`HEARTBEAT_EVERY`]. The inbox applies what the others send through
//!   [`Live`]: events to the hub (which orders them by sequence), driver changes
//!   to the registry (by version), positions to the registry and riders.
//!
//! # Subjects
//! `logi.{epoch}.commits` and `logi.{epoch}.positions`. The epoch is the
//! database's: replicas of one database hear each other, and a cluster on another
//! database sharing the NATS server never does.
//!
//! # Loss
//! NATS is the fast path and PostgreSQL the record. A replica may miss a commit:
//! a message lost or dropped (a number skipped), a replica killed between its
//! commit and its message (it goes quiet), or this replica's own connection
//! broken for a while. On any of these it catches up from the store: the head
//! of every topic it serves is read again (the hub reads the events it lacks
//! and delivers them in order, once) and so is every driver's state.

pub mod peers;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::connection::State;
use bytes::Bytes;
use futures::StreamExt;
use logi::id::Id;
use prost::Message;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::Error;
use crate::live::{self, Live};
use crate::model::Location;
use crate::store::{Effects, Store};
use peers::Peers;
use wire::cpb;

/// How often the positions received here go to the other replicas: a rider whose
/// driver pings another replica waits half of it on average (measured: 50 ms put
/// about 30 ms on the median position), for a hundred messages a second.
pub const POSITIONS_EVERY: Duration = Duration::from_millis(10);
/// How often a replica says it is there, with the number of its last commit.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// Commits waiting to be sent; past it one is dropped (and the others notice).
const OUTBOX: usize = 16_384;
/// How long one message may take to be handed to the connection.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting at start-up may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The wait before reconnecting to NATS, times the attempts so far, up to
/// [`MAX_RECONNECT_WAIT`].
const RECONNECT_EVERY: Duration = Duration::from_millis(100);
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(2);
/// Connection events waiting for the inbox.
const EVENTS: usize = 64;

pub struct Cluster {
    /// This replica, drawn at its start.
    replica: u64,
    client: async_nats::Client,
    commits: String,
    positions: String,
    outbox: mpsc::Sender<Effects>,
    /// The receiving end, taken by the outbox task.
    outbox_rx: Mutex<Option<mpsc::Receiver<Effects>>>,
    /// A commit could not be sent: the next message skips a number, so that the
    /// others know.
    dropped: AtomicBool,
    /// Positions received here since the last send, latest per driver.
    moved: Mutex<HashMap<Id, Location>>,
    events: Mutex<Option<mpsc::Receiver<async_nats::Event>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("replica", &self.replica)
            .field("commits", &self.commits)
            .finish()
    }
}

impl Cluster {
    /// Connects to NATS at `url` as `replica` of the cluster of the database with
    /// `epoch`.
    ///
    /// # Errors
    /// [`Error::Unavailable`] naming the URL when NATS does not answer.
    pub async fn connect(url: &str, epoch: u64, replica: u64) -> Result<Arc<Self>, Error> {
        let (events_tx, events_rx) = mpsc::channel(EVENTS);
        let options = async_nats::ConnectOptions::new()
            .name("core-svc")
            .connection_timeout(CONNECT_TIMEOUT)
            // Reconnects for ever, soon after a break; the inbox hears of each change.
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                RECONNECT_EVERY
                    .saturating_mul(attempts.min(20) as u32)
                    .min(MAX_RECONNECT_WAIT)
            })
            .event_callback(move |event| {
                let events = events_tx.clone();
                async move {
                    let _ = events.try_send(event);
                }
            });
        let client = tokio::time::timeout(CONNECT_TIMEOUT, options.connect(url))
            .await
            .map_err(|_| {
                Error::Unavailable(format!(
                    "cannot connect to NATS at {url}: no answer in {CONNECT_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| Error::Unavailable(format!("cannot connect to NATS at {url}: {e}")))?;
        let (outbox, outbox_rx) = mpsc::channel(OUTBOX);
        Ok(Arc::new(Self {
            replica,
            client,
            commits: format!("logi.{epoch}.commits"),
            positions: format!("logi.{epoch}.positions"),
            outbox,
            outbox_rx: Mutex::new(Some(outbox_rx)),
            dropped: AtomicBool::new(false),
            moved: Mutex::default(),
            events: Mutex::new(Some(events_rx)),
        }))
    }

    pub fn replica(&self) -> u64 {
        self.replica
    }

    /// Whether NATS is connected now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// A local commit, for the others. Never waits: when the outbox is full the
    /// commit is dropped here (the others notice and read it from the store).
    pub fn committed(&self, effects: &Effects) {
        if effects.events.is_empty() && effects.drivers.is_empty() && effects.settled.is_empty() {
            return;
        }
        if self.outbox.try_send(effects.clone()).is_err() {
            self.dropped.store(true, Ordering::Relaxed);
        }
    }

    /// A position received here, for the others.
    pub fn moved(&self, driver: Id, location: Location) {
        self.moved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(driver, location);
    }

    /// Starts the outbox and inbox on `tracker`; they end with `shutdown`.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the subscriptions cannot be made.
    pub async fn start(
        self: &Arc<Self>,
        live: Arc<Live>,
        store: Arc<dyn Store>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let subscribe = |subject: String| async move {
            self.client.subscribe(subject.clone()).await.map_err(|e| {
                Error::Unavailable(format!("cannot subscribe to NATS subject {subject}: {e}"))
            })
        };
        let commits = subscribe(self.commits.clone()).await?;
        let positions = subscribe(self.positions.clone()).await?;
        let outbox = self
            .outbox_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .expect("started once");
        let events = self
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .expect("started once");
        tracker.spawn(self.clone().send(outbox, shutdown.clone()));
        tracker.spawn(self.clone().receive(
            Inbox {
                commits,
                positions,
                events,
            },
            live,
            store,
            shutdown,
        ));
        Ok(())
    }

    async fn publish(&self, subject: &str, payload: Vec<u8>) -> bool {
        let sent = tokio::time::timeout(
            SEND_TIMEOUT,
            self.client
                .publish(subject.to_owned(), Bytes::from(payload)),
        )
        .await;
        match sent {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(subject, error = %e, "cannot send to the other replicas");
                false
            }
            Err(_) => {
                tracing::warn!(subject, "NATS did not take a message in time");
                false
            }
        }
    }

    /// The outbox task.
    async fn send(
        self: Arc<Self>,
        mut outbox: mpsc::Receiver<Effects>,
        shutdown: CancellationToken,
    ) {
        let mut sent = 0u64;
        let mut positions = tokio::time::interval(POSITIONS_EVERY);
        let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
        positions.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let msg = tokio::select! {
                () = shutdown.cancelled() => return,
                Some(fx) = outbox.recv() => {
                    // A number skipped tells the others a commit did not reach them.
                    sent += if self.dropped.swap(false, Ordering::Relaxed) { 2 } else { 1 };
                    wire::committed(self.replica, sent, &fx)
                }
                _ = heartbeat.tick() => {
                    if self.dropped.swap(false, Ordering::Relaxed) {
                        sent += 1;
                    }
                    cpb::Committed { replica: self.replica, sent, ..Default::default() }
                }
                _ = positions.tick() => {
                    let moved: Vec<(Id, Location)> = std::mem::take(
                        &mut *self.moved.lock().unwrap_or_else(|p| p.into_inner()),
                    )
                    .into_iter()
                    .collect();
                    if !moved.is_empty() {
                        let msg = wire::positions(self.replica, moved);
                        self.publish(&self.positions, msg.encode_to_vec()).await;
                    }
                    continue;
                }
            };
            if !self.publish(&self.commits, msg.encode_to_vec()).await {
                self.dropped.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The inbox task.
    async fn receive(
        self: Arc<Self>,
        mut inbox: Inbox,
        live: Arc<Live>,
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
    ) {
        let mut peers = Peers::default();
        let mut check = tokio::time::interval(HEARTBEAT_EVERY);
        loop {
            let lost = tokio::select! {
                () = shutdown.cancelled() => return,
                Some(msg) = inbox.commits.next() => {
                    match cpb::Committed::decode(msg.payload) {
                        Ok(c) if c.replica == self.replica => false,
                        Ok(c) => {
                            let lost = peers.heard(c.replica, c.sent, Instant::now());
                            match wire::remote(c) {
                                Ok(remote) => {
                                    live.remote(remote);
                                    lost
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "a malformed commit from another replica");
                                    true
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "an undecodable commit from another replica");
                            true
                        }
                    }
                }
                Some(msg) = inbox.positions.next() => {
                    if let Ok(p) = cpb::Positions::decode(msg.payload)
                        && p.replica != self.replica
                    {
                        for (driver, location) in wire::locations(p) {
                            // A driver this replica does not know yet is known once its
                            // registration's commit arrives; its next position counts.
                            let _ = live::position(&live.hub, &live.registry, &driver, location, false);
                        }
                    }
                    false
                }
                Some(event) = inbox.events.recv() => {
                    tracing::info!(%event, "NATS");
                    // Whatever came while disconnected, or was dropped for a slow
                    // subscriber, never arrived.
                    matches!(event, async_nats::Event::Connected | async_nats::Event::SlowConsumer(_))
                }
                _ = check.tick() => peers.went_quiet(Instant::now()),
            };
            if lost {
                catch_up(&live, store.as_ref(), &shutdown).await;
            }
        }
    }
}

struct Inbox {
    commits: async_nats::Subscriber,
    positions: async_nats::Subscriber,
    events: mpsc::Receiver<async_nats::Event>,
}

/// Reads again from the store what may have been missed: every served topic's
/// head (the hub then reads the events it lacks) and every driver's state,
/// trying again until the store answers.
async fn catch_up(live: &Live, store: &dyn Store, shutdown: &CancellationToken) {
    tracing::info!("commits of another replica may have been missed: catching up from the store");
    live.hub.recheck();
    loop {
        match store.drivers().await {
            Ok(drivers) => {
                for saved in drivers {
                    live.registry.apply(&saved.driver);
                }
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the drivers to catch up; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(HEARTBEAT_EVERY) => {}
        }
    }
}
