//! The PostgreSQL store: one database shared by several core-svc replicas.
//!
//! # Layout
//! - [`pool`]: the bounded connection pool, its settings, the URL without password.
//! - [`schema`]: migrations (under an advisory lock) and the epoch.
//! - [`run`]: each write in a task of its own, retried on a lost race, then
//!   published; read-only snapshot transactions.
//! - [`tx`]: the steps of the state transitions, and the append before COMMIT.
//! - [`queries`]: the reads.
//! - [`rows`]: rows ↔ domain types.
//! - [`scratch`]: throw-away databases for tests and benchmarks.
//!
//! The driver is `tokio-postgres`: a native async client that pipelines and speaks
//! the binary protocol, needs no database at compile time (unlike sqlx's macros),
//! and brings few dependencies; `deadpool-postgres` bounds the pool, times out the
//! wait for a connection and caches prepared statements per connection.
//!
//! Unlike SQLite's single writer, transactions run concurrently here: the
//! transitions lock the rows they decide on, each topic's row lock keeps its
//! sequence numbers contiguous and in commit order, and commits may reach the
//! sink out of order (the hub orders events by sequence number, the registry
//! drivers by version).

pub mod admin;
mod pool;
mod queries;
mod rows;
mod run;
mod schema;
pub mod scratch;
mod tx;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::FutureExt;
use logi::id::Id;
use logi::pb;
use logi::topic::Topic;

use super::lease;
use super::transitions::{self, Steps};
use super::{
    BookingQuery, CommitSink, DriverRecord, PendingBooking, REQUEST_ID_WINDOW, Store,
    TopicSnapshot, TopicState,
};
use crate::error::Error;
use crate::model::{
    Booking, BookingId, Canceller, Driver, DriverStatus, Location, NewBooking, Offer,
};
pub use pool::{PostgresOptions, without_password};

/// How long a health check waits for the database.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
use run::{Body, Runner};

/// Events removed per retention transaction.
const PRUNE_BATCH: usize = 2000;

/// The PostgreSQL store as the rest of core-svc holds it; clones share the pool.
#[derive(Clone)]
pub struct Postgres(Arc<Inner>);

struct Inner {
    url: String,
    epoch: u64,
    run: Runner,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("url", &self.0.url)
            .field("epoch", &self.0.epoch)
            .finish()
    }
}

/// A write's body from a closure over its own copies of the arguments.
fn body<T, F>(f: F) -> Body<T>
where
    F: for<'a, 'c> FnMut(&'a mut tx::PgTx<'c>) -> futures::future::BoxFuture<'a, Result<T, Error>>
        + Send
        + 'static,
{
    Box::new(f)
}

impl Postgres {
    /// [`Postgres::open_with`] the default [`PostgresOptions`].
    ///
    /// # Errors
    /// As [`Postgres::open_with`].
    pub async fn open(
        url: &str,
        sink: impl FnOnce(u64) -> Arc<dyn CommitSink>,
    ) -> Result<Self, Error> {
        Self::open_with(url, PostgresOptions::default(), sink).await
    }

    /// Connects to the database at `url`, migrates it and reads (or draws) its
    /// epoch; `sink` is built from the epoch. Replicas may open one database at once.
    ///
    /// # Errors
    /// [`Error::Unavailable`] naming the URL (without password) when PostgreSQL
    /// cannot be reached, [`Error::InvalidArgument`] when `url` is not one, and
    /// [`Error::Storage`] when migrating fails.
    pub async fn open_with(
        url: &str,
        options: PostgresOptions,
        sink: impl FnOnce(u64) -> Arc<dyn CommitSink>,
    ) -> Result<Self, Error> {
        let pool = pool::build(url, &options)?;
        let mut client = pool.get().await.map_err(|e| pool::unreachable(url, &e))?;
        schema::migrate(&mut client).await?;
        let epoch = schema::epoch(&client).await?;
        drop(client);
        let in_flight = options.pool_size.max(1) * 4;
        Ok(Self(Arc::new(Inner {
            url: pool::without_password(url),
            epoch,
            run: Runner::new(pool, in_flight, epoch, sink(epoch)),
        })))
    }

    async fn write<T: Send + 'static>(&self, body: Body<T>) -> Result<T, Error> {
        self.0.run.write(body).await
    }
}

#[async_trait]
impl Store for Postgres {
    fn epoch(&self) -> u64 {
        self.0.epoch
    }

    async fn create_booking(&self, new: NewBooking, offers: Vec<Offer>) -> Result<Booking, Error> {
        self.write(body(move |t| {
            let (new, offers) = (new.clone(), offers.clone());
            async move { transitions::create_booking(t, &new, &offers).await }.boxed()
        }))
        .await
    }

    async fn add_offers(&self, id: BookingId, offers: Vec<Offer>) -> Result<(), Error> {
        self.write(body(move |t| {
            let offers = offers.clone();
            async move { transitions::add_offers(t, id, &offers).await }.boxed()
        }))
        .await
    }

    async fn accept(&self, id: BookingId, driver: Id) -> Result<Booking, Error> {
        self.write(body(move |t| {
            let driver = driver.clone();
            async move { transitions::accept(t, id, &driver).await }.boxed()
        }))
        .await
    }

    async fn verify_otp(&self, id: BookingId, driver: Id, otp: String) -> Result<Booking, Error> {
        self.write(body(move |t| {
            let (driver, otp) = (driver.clone(), otp.clone());
            async move { transitions::verify_otp(t, id, &driver, &otp).await }.boxed()
        }))
        .await?
    }

    async fn issue_otp(&self, id: BookingId) -> Result<Booking, Error> {
        self.write(body(move |t| transitions::issue_otp(t, id).boxed()))
            .await
    }

    async fn complete(&self, id: BookingId, driver: Id) -> Result<Booking, Error> {
        self.write(body(move |t| {
            let driver = driver.clone();
            async move { transitions::complete(t, id, &driver).await }.boxed()
        }))
        .await
    }

    async fn cancel(
        &self,
        id: BookingId,
        by: Canceller,
        driver: Option<Id>,
        reason: String,
    ) -> Result<Booking, Error> {
        self.write(body(move |t| {
            let (driver, reason) = (driver.clone(), reason.clone());
            async move { transitions::cancel(t, id, by, driver.as_ref(), &reason).await }.boxed()
        }))
        .await
    }

    async fn expire(&self, id: BookingId) -> Result<Booking, Error> {
        self.write(body(move |t| transitions::expire(t, id).boxed()))
            .await
    }

    async fn set_driver_status(
        &self,
        id: Id,
        status: DriverStatus,
        vehicle_type: Option<String>,
    ) -> Result<Driver, Error> {
        self.write(body(move |t| {
            let (id, vehicle_type) = (id.clone(), vehicle_type.clone());
            async move {
                transitions::set_driver_status(t, &id, status, vehicle_type.as_deref()).await
            }
            .boxed()
        }))
        .await
    }

    async fn booking(&self, id: BookingId) -> Result<Booking, Error> {
        queries::booking(&self.0.run.client().await?, id).await
    }

    async fn offered_to(&self, id: BookingId, driver: Id) -> Result<bool, Error> {
        queries::offered_to(&self.0.run.client().await?, id, &driver).await
    }

    async fn bookings(&self, q: BookingQuery) -> Result<(Vec<Booking>, Option<BookingId>), Error> {
        queries::bookings(&self.0.run.client().await?, &q).await
    }

    async fn drivers(&self) -> Result<Vec<DriverRecord>, Error> {
        queries::drivers(&self.0.run.client().await?).await
    }

    async fn set_driver_unseen(&self, id: Id, unseen: bool) -> Result<bool, Error> {
        self.write(body(move |t| {
            let id = id.clone();
            async move { transitions::set_driver_unseen(t, &id, unseen).await }.boxed()
        }))
        .await
    }

    async fn save_positions(&self, positions: Vec<(Id, Location)>) -> Result<(), Error> {
        let positions = Arc::new(positions);
        self.write(body(move |t| {
            let positions = positions.clone();
            async move { t.save_positions(&positions).await }.boxed()
        }))
        .await
    }

    async fn lease_pending(
        &self,
        owner: u64,
        lease: Duration,
    ) -> Result<Vec<PendingBooking>, Error> {
        // Not renewed while this replica could not make its dispatch live: its
        // leases lapse and another replica takes its bookings.
        self.0.run.writable()?;
        queries::lease_pending(&self.0.run.client().await?, owner, lease).await
    }

    async fn ping(&self) -> Result<(), Error> {
        let answered = tokio::time::timeout(PING_TIMEOUT, async {
            self.0.run.client().await?.simple_query("SELECT 1").await?;
            Ok::<(), Error>(())
        })
        .await;
        match answered {
            Ok(result) => result,
            Err(_) => Err(Error::Unavailable(format!(
                "PostgreSQL at {} did not answer in {PING_TIMEOUT:?}",
                self.0.url
            ))),
        }
    }

    async fn release_leases(&self, owner: u64) -> Result<(), Error> {
        let client = self.0.run.client().await?;
        client.execute(lease::RELEASE, &[&(owner as i64)]).await?;
        Ok(())
    }

    async fn topic_state(&self, topic: String) -> Result<TopicState, Error> {
        queries::topic_state(&self.0.run.client().await?, &topic).await
    }

    async fn topic_states(&self, topics: Vec<String>) -> Result<Vec<TopicState>, Error> {
        queries::topic_states(&self.0.run.client().await?, &topics).await
    }

    async fn topic_snapshot(&self, topic: Topic) -> Result<(TopicState, TopicSnapshot), Error> {
        // One REPEATABLE READ transaction: the snapshot is exactly the state at
        // the head returned with it.
        let now = SystemTime::now();
        self.0
            .run
            .snapshot(|tx| {
                async move {
                    let state = queries::topic_state(tx, &topic.to_string()).await?;
                    Ok((state, queries::snapshot(tx, &topic, now).await?))
                }
                .boxed()
            })
            .await
    }

    async fn events_after(
        &self,
        topic: String,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<pb::Event>, Error> {
        let client = self.0.run.client().await?;
        queries::events_after(&client, self.0.epoch, &topic, after_seq, limit).await
    }

    async fn prune(&self, before: SystemTime) -> Result<u64, Error> {
        self.write(body(|t| {
            let since = t.now().checked_sub(REQUEST_ID_WINDOW).unwrap_or(t.now());
            async move { t.forget_requests(since).await }.boxed()
        }))
        .await?;
        let mut removed = 0;
        // Bounded batches, one transaction each, so that the topics' rows are
        // locked only briefly.
        loop {
            let batch = self
                .write(body(move |t| t.prune_batch(before, PRUNE_BATCH).boxed()))
                .await?;
            removed += batch;
            if batch < PRUNE_BATCH as u64 {
                return Ok(removed);
            }
        }
    }
}

#[cfg(test)]
mod tests;
