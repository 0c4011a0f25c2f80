//! The embedded SQLite store.
//!
//! # Layout
//! - [`schema`]: opening a file: connection settings, migrations, the epoch.
//! - [`writer`]: the writer thread and its bounded queue; group commit.
//! - [`reader`]: the pool of read-only connections.
//! - [`tx`]: the steps of the state transitions ([`super::transitions`]), each a
//!   statement of the write transaction; the writer thread runs a transition with
//!   `block_on`, its steps being synchronous.
//! - [`queries`]: the reads.
//! - [`rows`]: rows ↔ domain types.
//!
//! One writer thread owns the only write connection (SQLite allows one writer at a
//! time anyway; a thread of our own keeps that queue visible and bounded instead of
//! spinning on SQLITE_BUSY). Reads run on the pool beside it, in WAL mode. The
//! database runs with `synchronous = FULL`: a commit is durable before anyone hears
//! of it. Reads that must agree exactly with what subscribers were sent (a topic's
//! head, a snapshot) run on the writer thread instead: every commit before them has
//! been published.

mod queries;
mod reader;
mod rows;
mod schema;
mod tx;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::executor::block_on;
use logi::id::Id;
use logi::pb;
use logi::topic::Topic;
use rusqlite::{OpenFlags, params};

use super::lease;
use super::transitions;
use super::{
    BookingQuery, CommitSink, DriverRecord, PendingBooking, REQUEST_ID_WINDOW, Store,
    TopicSnapshot, TopicState,
};
use crate::error::Error;
use crate::model::{
    Booking, BookingId, Canceller, Driver, DriverStatus, Location, NewBooking, Offer, to_millis,
};
use reader::Readers;
use writer::Writer;
pub use writer::{COMMIT_TIMEOUT, ENQUEUE_TIMEOUT, MAX_BATCH};

/// Events removed per retention transaction.
const PRUNE_BATCH: usize = 2000;

pub struct SqliteStore {
    path: PathBuf,
    epoch: u64,
    writer: Writer,
    readers: Arc<Readers>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating it and its folder if needed) and migrates the database at
    /// `path`, then starts the writer thread. `sink` is built from the epoch.
    ///
    /// # Errors
    /// [`Error::Storage`] when the file cannot be created, opened or migrated.
    pub fn open(
        path: &Path,
        sink: impl FnOnce(u64) -> Arc<dyn CommitSink>,
    ) -> Result<Arc<Self>, Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::storage_from(format!("cannot create folder {}", dir.display()), e)
            })?;
        }
        let mut conn = schema::connect(path, OpenFlags::default()).map_err(|e| {
            Error::storage_from(format!("cannot open database {}", path.display()), e)
        })?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::storage(format!(
                "database {} refused WAL mode ({mode})",
                path.display()
            )));
        }
        schema::migrate(&mut conn)?;
        let epoch = schema::epoch(&conn)?;
        let readers = Readers::open(path)?;
        let writer = Writer::start(conn, epoch, sink(epoch))?;
        Ok(Arc::new(Self {
            path: path.to_owned(),
            epoch,
            writer,
            readers,
        }))
    }
}

/// The SQLite store as the rest of core-svc holds it.
#[derive(Clone, Debug)]
pub struct Sqlite(pub Arc<SqliteStore>);

impl Sqlite {
    /// See [`SqliteStore::open`].
    ///
    /// # Errors
    /// [`Error::Storage`] when the database cannot be opened or migrated.
    pub fn open(path: &Path, sink: impl FnOnce(u64) -> Arc<dyn CommitSink>) -> Result<Self, Error> {
        SqliteStore::open(path, sink).map(Self)
    }
}

#[async_trait]
impl Store for Sqlite {
    fn epoch(&self) -> u64 {
        self.0.epoch
    }

    async fn create_booking(&self, new: NewBooking, offers: Vec<Offer>) -> Result<Booking, Error> {
        self.0
            .writer
            .write(move |t| block_on(transitions::create_booking(t, &new, &offers)))
            .await
    }

    async fn add_offers(&self, id: BookingId, offers: Vec<Offer>) -> Result<(), Error> {
        self.0
            .writer
            .write(move |t| block_on(transitions::add_offers(t, id, &offers)))
            .await
    }

    async fn accept(&self, id: BookingId, driver: Id) -> Result<Booking, Error> {
        self.0
            .writer
            .write(move |t| block_on(transitions::accept(t, id, &driver)))
            .await
    }

    async fn verify_otp(&self, id: BookingId, driver: Id, otp: String) -> Result<Booking, Error> {
        self.0
            .writer
            .write(move |t| block_on(transitions::verify_otp(t, id, &driver, &otp)))
            .await?
    }

    async fn issue_otp(&self, id: BookingId) -> Result<Booking, Error> {
        self.0
            .writer
            .write(move |t| block_on(transitions::issue_otp(t, id)))
            .await
    }

    async fn complete(&self, id: BookingId, driver: Id) -> Result<Booking, Error> {
        self.0
            .writer
            .write(move |t| block_on(transitions::complete(t, id, &driver)))
            .await
    }

    async fn cancel(
        &self,
        id: BookingId,
        by: Canceller,
        driver: Option<Id>,
        reason: String,
    ) -> Result<Booking, Error> {
        self.0
            .writer
            .write(move |t| block_on(transitions::cancel(t, id, by, driver.as_ref(), &reason)))
            .await
    }

    async fn expire(&self, id: BookingId) -> Result<Booking, Error> {
        self.0
            .writer
            .write(move |t| block_on(transitions::expire(t, id)))
            .await
    }

    async fn set_driver_status(
        &self,
        id: Id,
        status: DriverStatus,
        vehicle_type: Option<String>,
    ) -> Result<Driver, Error> {
        self.0
            .writer
            .write(move |t| {
                block_on(transitions::set_driver_status(
                    t,
                    &id,
                    status,
                    vehicle_type.as_deref(),
                ))
            })
            .await
    }

    async fn booking(&self, id: BookingId) -> Result<Booking, Error> {
        self.0.readers.read(move |c| queries::booking(c, id)).await
    }

    async fn offered_to(&self, id: BookingId, driver: Id) -> Result<bool, Error> {
        self.0
            .readers
            .read(move |c| queries::offered_to(c, id, &driver))
            .await
    }

    async fn bookings(&self, q: BookingQuery) -> Result<(Vec<Booking>, Option<BookingId>), Error> {
        self.0.readers.read(move |c| queries::bookings(c, &q)).await
    }

    async fn drivers(&self) -> Result<Vec<DriverRecord>, Error> {
        self.0.readers.read(queries::drivers).await
    }

    async fn set_driver_unseen(&self, id: Id, unseen: bool) -> Result<bool, Error> {
        self.0
            .writer
            .write(move |t| block_on(transitions::set_driver_unseen(t, &id, unseen)))
            .await
    }

    async fn save_positions(&self, positions: Vec<(Id, Location)>) -> Result<(), Error> {
        self.0
            .writer
            .write(move |t| t.save_positions(&positions))
            .await
    }

    async fn lease_pending(
        &self,
        owner: u64,
        lease: Duration,
    ) -> Result<Vec<PendingBooking>, Error> {
        self.0
            .writer
            .write(move |t| {
                let (owner, now) = (owner as i64, to_millis(t.now));
                let until = now + lease.as_millis() as i64;
                t.tx.prepare_cached(lease::FORGET_SETTLED)?
                    .execute([owner])?;
                t.tx.prepare_cached(&lease::take("?1", "?2", "?3"))?
                    .execute(params![owner, until, now])?;
                queries::leased(t.tx, owner)
            })
            .await
    }

    async fn release_leases(&self, owner: u64) -> Result<(), Error> {
        self.0
            .writer
            .write(move |t| {
                t.tx.prepare_cached(lease::RELEASE)?
                    .execute([owner as i64])?;
                Ok(())
            })
            .await
    }

    async fn topic_state(&self, topic: String) -> Result<TopicState, Error> {
        // On the writer thread: every commit before this read has been published to
        // the hub, so a head read here never runs ahead of the live events.
        self.0
            .writer
            .write(move |t| queries::topic_state(t.tx, &topic))
            .await
    }

    async fn topic_snapshot(&self, topic: Topic) -> Result<(TopicState, TopicSnapshot), Error> {
        // On the writer thread, as topic_state, and in one read: the snapshot is
        // exactly the state at the head returned with it.
        self.0
            .writer
            .write(move |t| {
                let state = queries::topic_state(t.tx, &topic.to_string())?;
                Ok((state, queries::snapshot(t.tx, &topic, t.now)?))
            })
            .await
    }

    async fn events_after(
        &self,
        topic: String,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<pb::Event>, Error> {
        let epoch = self.0.epoch;
        self.0
            .readers
            .read(move |c| queries::events_after(c, epoch, &topic, after_seq, limit))
            .await
    }

    async fn prune(&self, before: SystemTime) -> Result<u64, Error> {
        let cutoff = to_millis(before);
        self.0
            .writer
            .write(|t| {
                let since = t.now.checked_sub(REQUEST_ID_WINDOW).unwrap_or(t.now);
                t.tx.prepare_cached("DELETE FROM booking_requests WHERE created_at < ?1")?
                    .execute([to_millis(since)])?;
                Ok(())
            })
            .await?;
        let mut removed = 0;
        // Bounded batches, one transaction each, so other writes go on in between.
        loop {
            let batch = self
                .0
                .writer
                .write(move |t| {
                    let rows: Vec<(String, i64)> =
                        t.tx.prepare_cached(
                            "SELECT topic, seq FROM events WHERE occurred_at < ?1 LIMIT ?2",
                        )?
                        .query_map(params![cutoff, PRUNE_BATCH as i64], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })?
                        .collect::<Result<_, _>>()?;
                    let mut delete =
                        t.tx.prepare_cached("DELETE FROM events WHERE topic = ?1 AND seq = ?2")?;
                    let mut mark = t.tx.prepare_cached(
                        "UPDATE topics SET pruned_seq = MAX(pruned_seq, ?2) WHERE name = ?1",
                    )?;
                    for (topic, seq) in &rows {
                        delete.execute(params![topic, seq])?;
                        mark.execute(params![topic, seq])?;
                    }
                    Ok(rows.len())
                })
                .await?;
            removed += batch as u64;
            if batch < PRUNE_BATCH {
                return Ok(removed);
            }
        }
    }
}

#[cfg(test)]
mod tests;
