//! The embedded SQLite store.
//!
//! One writer thread owns the only write connection (SQLite allows one writer at a
//! time anyway; a thread of our own keeps that queue visible and bounded instead of
//! spinning on SQLITE_BUSY). Jobs reach it through a bounded channel: when it is
//! full, callers wait up to [`ENQUEUE_TIMEOUT`] and then get UNAVAILABLE. A job whose
//! caller went away before it started is skipped.
//!
//! Group commit: the writer takes every job queued (up to [`MAX_BATCH`]) into ONE
//! transaction, each job in its own savepoint, and syncs once for all of them. A job
//! that fails rolls back its savepoint only. Nobody hears of a job's effects before
//! the batch commits: then, in order, its effects go to the sink and its caller gets
//! its answer; if the commit fails, every caller of the batch gets the error.
//!
//! Reads use a small pool of read-only connections on the blocking thread pool; WAL
//! mode lets them run beside the writer. The database runs in WAL mode with
//! `synchronous = FULL`: a commit is durable before anyone hears of it.

mod rows;
mod tx;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use logi::id::Id;
use logi::pb;
use prost::Message;
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{BookingQuery, CommitSink, Effects, PendingBooking, Store, TopicState};
use crate::error::Error;
use crate::hub::EPHEMERAL_SPAN;
use crate::model::{
    Booking, BookingId, Canceller, Driver, DriverStatus, GeoPoint, NewBooking, Offer, from_millis,
    timestamp, to_millis,
};
use tx::Tx;

/// How long a caller waits for room in the writer's queue.
pub const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for its transaction once queued.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Jobs that may wait for the writer.
const WRITE_QUEUE: usize = 1024;
/// Read-only connections.
const READERS: usize = 4;
/// Events removed per retention transaction.
const PRUNE_BATCH: usize = 2000;

const MIGRATIONS: &[&str] = &[include_str!("../../../migrations/0001_init.sql")];

/// What a job leaves to do once its batch's commit succeeded (Ok) or failed (Err):
/// publish its effects and answer its caller.
type Done = Box<dyn FnOnce(Result<(), Error>) + Send>;
/// A write, run inside its own savepoint of the batch's transaction.
type Job = Box<dyn FnOnce(&mut Transaction<'_>) -> Done + Send>;
/// Jobs committed together at most (one fsync for all of them).
pub const MAX_BATCH: usize = 256;

pub struct SqliteStore {
    path: PathBuf,
    epoch: u64,
    jobs: mpsc::Sender<Job>,
    readers: Mutex<Vec<Connection>>,
    read_permits: Arc<Semaphore>,
    sink: Arc<dyn CommitSink>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("epoch", &self.epoch)
            .finish()
    }
}

fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, Error> {
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // FULL: a commit is on disk before its events are published, so a power loss can
    // never roll back events that subscribers already saw (and reuse their offsets).
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), Error> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(Error::Storage(format!(
            "the database schema is version {version}, newer than this core-svc knows ({}): upgrade core-svc",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

fn epoch(conn: &Connection) -> Result<u64, Error> {
    if let Some(v) = conn
        .query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
            r.get::<_, String>(0)
        })
        .optional()?
    {
        return v
            .parse()
            .map_err(|_| Error::Storage(format!("meta.epoch {v:?} is not a number")));
    }
    // Below 2^53 so that JSON tools that read numbers as doubles keep it exact.
    let epoch = rand::random_range(1..(1u64 << 53));
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('epoch', ?1)",
        [epoch.to_string()],
    )?;
    Ok(epoch)
}

/// Runs a batch of jobs in one IMMEDIATE transaction and completes them in order.
fn commit_batch(conn: &mut Connection, batch: Vec<Job>) {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    if !conn.is_autocommit() {
        // A transaction left open (a failed rollback): end it, or no write could begin.
        let _ = conn.execute_batch("ROLLBACK");
    }
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            // Dropping a job drops its reply: its caller hears the writer failed.
            tracing::error!(error = %e, "cannot begin a write transaction");
            return;
        }
    };
    let mut done: Vec<Done> = Vec::with_capacity(batch.len());
    for job in batch {
        // After some errors (disk full, I/O) SQLite rolls the whole transaction back
        // by itself: then nothing of this batch is committed, and a further savepoint
        // would start (and commit) a transaction of its own. Stop here.
        if tx.is_autocommit() {
            let lost =
                Error::Storage("the write transaction was rolled back by the database".into());
            for d in done {
                d(Err(lost.clone()));
            }
            return; // The jobs not run are dropped: their callers hear of it.
        }
        // A panic unwinds through the job's savepoint, which rolls back that job
        // alone; its caller's reply is dropped. The batch goes on.
        match catch_unwind(AssertUnwindSafe(|| job(&mut tx))) {
            Ok(d) => done.push(d),
            Err(_) => tracing::error!("a database write panicked; that write was rolled back"),
        }
    }
    let committed = tx.commit().map_err(Error::from);
    for d in done {
        if catch_unwind(AssertUnwindSafe(|| d(committed.clone()))).is_err() {
            // Committed effects failed to reach the live side: subscribers and the
            // in-memory registry no longer match the database. Restarting rebuilds
            // them from it; carrying on would serve a silent gap.
            tracing::error!("publishing committed effects panicked; stopping so a restart resyncs");
            std::process::abort();
        }
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
                Error::Storage(format!("cannot create folder {}: {e}", dir.display()))
            })?;
        }
        let mut writer = connect(path, OpenFlags::default())
            .map_err(|e| Error::Storage(format!("cannot open database {}: {e}", path.display())))?;
        let mode: String =
            writer.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Storage(format!(
                "database {} refused WAL mode ({mode})",
                path.display()
            )));
        }
        migrate(&mut writer)?;
        let epoch = epoch(&writer)?;
        let readers = (0..READERS)
            .map(|_| {
                connect(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (jobs, mut queue) = mpsc::channel::<Job>(WRITE_QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                // Ends when every sender (the store) is gone.
                while let Some(first) = queue.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        let Ok(job) = queue.try_recv() else { break };
                        batch.push(job);
                    }
                    commit_batch(&mut writer, batch);
                }
            })
            .map_err(|e| Error::Storage(format!("cannot start the writer thread: {e}")))?;
        Ok(Arc::new(Self {
            path: path.to_owned(),
            epoch,
            jobs,
            readers: Mutex::new(readers),
            read_permits: Arc::new(Semaphore::new(READERS)),
            sink: sink(epoch),
        }))
    }

    /// Runs `f` on the writer thread, in its own savepoint of the batch transaction
    /// it joins (group commit: one sync for every job queued meanwhile). Only after
    /// the batch commits do its effects go to the sink, in order, and the caller hear
    /// back; if `f` fails, its savepoint alone is rolled back.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        let (epoch, sink) = (self.epoch, self.sink.clone());
        let job: Job = Box::new(move |tx: &mut Transaction<'_>| -> Done {
            if reply.is_closed() {
                return Box::new(|_| {}); // The caller gave up; change nothing on its behalf.
            }
            let outcome = (|| {
                let sp = tx.savepoint()?;
                let mut t = Tx {
                    tx: &sp,
                    epoch,
                    now: SystemTime::now(),
                    fx: Effects::default(),
                };
                let value = f(&mut t)?;
                let fx = std::mem::take(&mut t.fx);
                sp.commit()?;
                Ok((value, fx))
            })();
            match outcome {
                // Answered after the batch commits too: the refusal may rest on an
                // earlier job of this batch, which is not durable yet.
                Err(e) => Box::new(move |committed: Result<(), Error>| {
                    let _ = reply.send(committed.and(Err(e)));
                }),
                Ok((value, fx)) => Box::new(move |committed: Result<(), Error>| {
                    let result = committed.map(|()| {
                        sink.committed(&fx);
                        value
                    });
                    let _ = reply.send(result);
                }),
            }
        });
        let busy = || Error::Unavailable("core-svc's database is overloaded: retry shortly".into());
        tokio::time::timeout(ENQUEUE_TIMEOUT, self.jobs.send(job))
            .await
            .map_err(|_| busy())?
            .map_err(|_| Error::Unavailable("core-svc's database writer has stopped".into()))?;
        tokio::time::timeout(COMMIT_TIMEOUT, answer)
            .await
            .map_err(|_| {
                Error::Unavailable(
                    "core-svc's database did not answer in time: the change may or may not have been made, \
                     read it back before retrying"
                        .into(),
                )
            })?
            .map_err(|_| Error::Storage("the database writer dropped a transaction".into()))?
    }

    /// Runs `f` on a read-only connection from the pool.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let permit =
            tokio::time::timeout(ENQUEUE_TIMEOUT, self.read_permits.clone().acquire_owned())
                .await
                .map_err(|_| {
                    Error::Unavailable("core-svc's database is overloaded: retry shortly".into())
                })?
                .map_err(|_| Error::Unavailable("core-svc is shutting down".into()))?;
        let this = self.clone();
        // The permit travels with the connection: if the caller goes away mid-read the
        // connection is still in use until this closure returns it.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = this
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop()
                .expect("one per permit");
            let result = f(&conn);
            this.readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
            result
        })
        .await
        .map_err(|e| Error::Storage(format!("read task failed: {e}")))?
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

fn booking_by_id(conn: &Connection, id: BookingId) -> Result<Booking, Error> {
    let sql = format!(
        "SELECT {} FROM bookings WHERE id = ?1",
        rows::BOOKING_COLUMNS
    );
    conn.prepare_cached(&sql)?
        .query_row([id as i64], rows::booking)
        .optional()?
        .ok_or(Error::BookingNotFound(id))
}

#[async_trait]
impl Store for Sqlite {
    fn epoch(&self) -> u64 {
        self.0.epoch
    }

    async fn create_booking(&self, new: NewBooking, offers: Vec<Offer>) -> Result<Booking, Error> {
        self.0.write(move |t| t.create_booking(&new, &offers)).await
    }

    async fn add_offers(&self, id: BookingId, offers: Vec<Offer>) -> Result<(), Error> {
        self.0.write(move |t| t.add_offers(id, &offers)).await
    }

    async fn accept(&self, id: BookingId, driver: Id) -> Result<Booking, Error> {
        self.0.write(move |t| t.accept(id, &driver)).await
    }

    async fn verify_otp(&self, id: BookingId, driver: Id, otp: String) -> Result<Booking, Error> {
        self.0
            .write(move |t| t.verify_otp(id, &driver, &otp))
            .await?
    }

    async fn issue_otp(&self, id: BookingId) -> Result<Booking, Error> {
        self.0.write(move |t| t.issue_otp(id)).await
    }

    async fn complete(&self, id: BookingId, driver: Id) -> Result<Booking, Error> {
        self.0.write(move |t| t.complete(id, &driver)).await
    }

    async fn cancel(
        &self,
        id: BookingId,
        by: Canceller,
        driver: Option<Id>,
        reason: String,
    ) -> Result<Booking, Error> {
        self.0
            .write(move |t| t.cancel(id, by, driver.as_ref(), &reason))
            .await
    }

    async fn expire(&self, id: BookingId) -> Result<Booking, Error> {
        self.0.write(move |t| t.expire(id)).await
    }

    async fn set_driver_status(
        &self,
        id: Id,
        status: DriverStatus,
        vehicle_type: Option<String>,
    ) -> Result<Driver, Error> {
        self.0
            .write(move |t| t.set_driver_status(&id, status, vehicle_type.as_deref()))
            .await
    }

    async fn booking(&self, id: BookingId) -> Result<Booking, Error> {
        self.0.read(move |c| booking_by_id(c, id)).await
    }

    async fn offered_to(&self, id: BookingId, driver: Id) -> Result<bool, Error> {
        self.0
            .read(move |c| {
                let found = c
                    .prepare_cached(
                        "SELECT 1 FROM offers WHERE booking_id = ?1 AND driver_id = ?2",
                    )?
                    .exists(params![id as i64, driver.as_str()])?;
                Ok(found)
            })
            .await
    }

    async fn bookings(&self, q: BookingQuery) -> Result<(Vec<Booking>, Option<BookingId>), Error> {
        self.0
            .read(move |c| {
                let mut sql = format!("SELECT {} FROM bookings WHERE 1 = 1", rows::BOOKING_COLUMNS);
                let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
                if let Some(user) = &q.user_id {
                    args.push(Box::new(user.to_string()));
                    sql += &format!(" AND user_id = ?{}", args.len());
                }
                if let Some(driver) = &q.driver_id {
                    args.push(Box::new(driver.to_string()));
                    sql += &format!(" AND driver_id = ?{}", args.len());
                }
                if !q.statuses.is_empty() {
                    let names: Vec<String> = q
                        .statuses
                        .iter()
                        .map(|s| format!("'{}'", s.as_str()))
                        .collect();
                    sql += &format!(" AND status IN ({})", names.join(", "));
                }
                if let Some(before) = q.before {
                    args.push(Box::new(before as i64));
                    sql += &format!(" AND id < ?{}", args.len());
                }
                args.push(Box::new(q.limit as i64 + 1));
                sql += &format!(" ORDER BY id DESC LIMIT ?{}", args.len());
                let mut stmt = c.prepare_cached(&sql)?;
                let mut page = stmt
                    .query_map(rusqlite::params_from_iter(args.iter()), rows::booking)?
                    .collect::<Result<Vec<_>, _>>()?;
                let next = if page.len() > q.limit {
                    page.truncate(q.limit);
                    page.last().map(|b| b.id)
                } else {
                    None
                };
                Ok((page, next))
            })
            .await
    }

    async fn drivers(&self) -> Result<Vec<Driver>, Error> {
        self.0.read(|c| {
                let mut trips = std::collections::HashMap::new();
                let mut stmt = c.prepare(
                    "SELECT driver_id, id, user_id, status FROM bookings WHERE status IN ('accepted', 'on_trip')",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok((
                        rows::id(r, 0)?,
                        crate::model::ActiveTrip {
                            booking_id: r.get::<_, i64>(1)? as u64,
                            user_id: rows::id(r, 2)?,
                            status: rows::booking_status(r, 3)?,
                        },
                    ))
                })?;
                for row in rows {
                    let (driver, trip) = row?;
                    trips.insert(driver, trip);
                }
                let mut stmt = c.prepare("SELECT id, status, vehicle_type FROM drivers")?;
                let drivers = stmt
                    .query_map([], |r| {
                        let id = rows::id(r, 0)?;
                        Ok(Driver { active: trips.get(&id).cloned(), id, status: rows::driver_status(r, 1)?, vehicle_type: r.get(2)? })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(drivers)
            })
            .await
    }

    async fn pending(&self) -> Result<Vec<PendingBooking>, Error> {
        self.0.read(|c| {
                let mut stmt = c.prepare(
                    "SELECT id, pickup_lat, pickup_lon, vehicle_type, created_at FROM bookings WHERE status = 'pending'",
                )?;
                let mut pending = stmt
                    .query_map([], |r| {
                        Ok(PendingBooking {
                            id: r.get::<_, i64>(0)? as u64,
                            pickup: GeoPoint { lat: r.get(1)?, lon: r.get(2)? },
                            vehicle_type: r.get(3)?,
                            created_at: from_millis(r.get(4)?),
                            offered: Vec::new(),
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let mut offers = c.prepare_cached("SELECT driver_id FROM offers WHERE booking_id = ?1")?;
                for p in &mut pending {
                    p.offered = offers.query_map([p.id as i64], |r| rows::id(r, 0))?.collect::<Result<_, _>>()?;
                }
                Ok(pending)
            })
            .await
    }

    async fn topic_state(&self, topic: String) -> Result<TopicState, Error> {
        // Read on the writer thread: every commit before this read has been published
        // to the hub, so a head read here never runs ahead of the live events.
        self.0
            .write(move |t| {
                let state =
                    t.tx.prepare_cached("SELECT last_seq, pruned_seq FROM topics WHERE name = ?1")?
                        .query_row([topic], |r| {
                            Ok(TopicState {
                                last_seq: r.get::<_, i64>(0)? as u64,
                                pruned_seq: r.get::<_, i64>(1)? as u64,
                            })
                        })
                        .optional()?;
                Ok(state.unwrap_or_default())
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
        self.0.read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT seq, occurred_at, payload FROM events WHERE topic = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![topic, after_seq as i64, limit as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?))
                })?;
                let mut events = Vec::new();
                for row in rows {
                    let (seq, at, payload) = row?;
                    let mut event = pb::Event::decode(payload.as_slice())
                        .map_err(|e| Error::Storage(format!("event {topic}#{seq} is corrupt: {e}")))?;
                    event.topic = topic.clone();
                    event.cursor = Some(pb::Cursor { epoch, offset: seq as u64 * EPHEMERAL_SPAN });
                    event.occurred_at = Some(timestamp(from_millis(at)));
                    events.push(event);
                }
                Ok(events)
            })
            .await
    }

    async fn prune(&self, before: SystemTime) -> Result<u64, Error> {
        let cutoff = to_millis(before);
        let mut removed = 0;
        // Bounded batches, one transaction each, so other writes go on in between.
        loop {
            let batch = self
                .0
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
