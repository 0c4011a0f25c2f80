//! Running transactions: each write in a task of its own, retried when it lost a
//! serialization race or a deadlock, its effects published once it committed.
//!
//! A tonic handler's future is dropped when its client goes away. The write it
//! started goes on in its task regardless, so a change that commits is always
//! handed to the sink; the caller only stops waiting for the answer.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Client, Pool};
use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::IsolationLevel;

use super::pool::WAIT_TIMEOUT;
use super::tx::PgTx;
use crate::error::Error;
use crate::store::CommitSink;

/// Times a transaction that lost a serialization race or a deadlock is run again.
const RETRIES: u32 = 5;

/// A write transaction's body: run again from the start on each retry, so it
/// borrows nothing of its caller's.
pub type Body<T> =
    Box<dyn for<'a, 'c> FnMut(&'a mut PgTx<'c>) -> BoxFuture<'a, Result<T, Error>> + Send>;

/// The pool, the bound on transactions in flight, and where commits go.
pub struct Runner {
    pub pool: Pool,
    /// Transactions started and not yet finished, waiting for a connection or
    /// holding one: more wait [`WAIT_TIMEOUT`] and then get UNAVAILABLE.
    in_flight: Arc<Semaphore>,
    epoch: u64,
    sink: Arc<dyn CommitSink>,
}

impl Runner {
    pub fn new(pool: Pool, in_flight: usize, epoch: u64, sink: Arc<dyn CommitSink>) -> Self {
        Self {
            pool,
            in_flight: Arc::new(Semaphore::new(in_flight)),
            epoch,
            sink,
        }
    }

    /// Runs `body` in one READ COMMITTED transaction in a task of its own; after
    /// the commit, that task hands the effects to the sink, then the caller hears.
    ///
    /// # Errors
    /// What `body` returned, the database's error, or [`Error::Unavailable`] when
    /// too many transactions are in flight, no connection frees up in time, the
    /// database is unreachable, or the retries ran out.
    pub async fn write<T: Send + 'static>(&self, mut body: Body<T>) -> Result<T, Error> {
        self.sink.writable()?;
        let permit = self.permit().await?;
        let (pool, epoch, sink) = (self.pool.clone(), self.epoch, self.sink.clone());
        let task = tokio::spawn(async move {
            let _permit = permit;
            let mut client = pool.get().await?;
            let mut retried = 0;
            loop {
                match attempt(&mut client, epoch, &mut body, sink.as_ref()).await {
                    Ok((value, fx)) => {
                        if catch_unwind(AssertUnwindSafe(|| sink.committed(&fx))).is_err() {
                            // Committed effects failed to reach the live side:
                            // subscribers and the registry no longer match the
                            // database. A restart rebuilds them from it.
                            tracing::error!(
                                "publishing committed effects panicked; stopping so a restart resyncs"
                            );
                            std::process::abort();
                        }
                        return Ok(value);
                    }
                    Err(e) if lost_race(&e) && retried < RETRIES => {
                        retried += 1;
                        tokio::time::sleep(backoff(retried)).await;
                    }
                    Err(e) if lost_race(&e) => {
                        tracing::warn!(error = %crate::error::chain(&e), "a transaction kept conflicting");
                        return Err(Error::Unavailable(
                            "core-svc's database is too busy with conflicting changes: nothing was changed, retry shortly"
                                .into(),
                        ));
                    }
                    Err(e) => return Err(e),
                }
            }
        });
        joined(task.await)
    }

    /// Runs `read` in one REPEATABLE READ READ ONLY transaction: everything it
    /// reads is the state at one instant.
    ///
    /// # Errors
    /// What `read` returned, or the database's error.
    pub async fn snapshot<T>(
        &self,
        read: impl for<'a> FnOnce(
            &'a deadpool_postgres::Transaction<'_>,
        ) -> BoxFuture<'a, Result<T, Error>>,
    ) -> Result<T, Error> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let value = read(&tx).await?;
        tx.commit().await?;
        Ok(value)
    }

    /// Whether a write could be made live now (see [`CommitSink::writable`]).
    ///
    /// # Errors
    /// Why not.
    pub fn writable(&self) -> Result<(), Error> {
        self.sink.writable()
    }

    /// A connection for a read.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when none frees up in time or the database is away.
    pub async fn client(&self) -> Result<Client, Error> {
        Ok(self.pool.get().await?)
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit, Error> {
        tokio::time::timeout(WAIT_TIMEOUT, self.in_flight.clone().acquire_owned())
            .await
            .map_err(|_| {
                Error::Unavailable(
                    "core-svc's database is overloaded: nothing was changed, retry shortly".into(),
                )
            })?
            .map_err(|_| Error::Unavailable("core-svc is shutting down".into()))
    }
}

/// One run of `body`: its value and the committed effects. On an error the
/// transaction is dropped, which rolls it back.
async fn attempt<T>(
    client: &mut Client,
    epoch: u64,
    body: &mut Body<T>,
    sink: &dyn CommitSink,
) -> Result<(T, crate::store::Effects), Error> {
    let mut tx = PgTx::new(client.transaction().await?, epoch);
    let value = body(&mut tx).await?;
    let started = std::time::Instant::now();
    let fx = tx.commit().await;
    sink.measured(1, started.elapsed(), fx.is_ok());
    Ok((value, fx?))
}

/// Whether `e` is a serialization failure (40001) or a deadlock (40P01): the
/// transaction was rolled back and may run again as it was.
fn lost_race(e: &Error) -> bool {
    let Error::Storage(storage) = e else {
        return false;
    };
    // The database's error sits somewhere down the chain (behind the Arc that
    // keeps it cloneable): look at every level.
    let mut next = std::error::Error::source(storage);
    while let Some(cause) = next {
        let code = cause
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::code)
            .or_else(|| {
                cause
                    .downcast_ref::<tokio_postgres::error::DbError>()
                    .map(tokio_postgres::error::DbError::code)
            });
        if let Some(code) = code {
            return matches!(code.code(), "40001" | "40P01");
        }
        next = cause.source();
    }
    false
}

/// A few milliseconds, doubling with each retry, at random so that the
/// transactions that collided do not collide again.
fn backoff(retried: u32) -> Duration {
    let ceiling = 2u64 << retried.min(6);
    Duration::from_millis(rand::random_range(1..=ceiling))
}

fn joined<T>(outcome: Result<Result<T, Error>, tokio::task::JoinError>) -> Result<T, Error> {
    outcome.map_err(|e| {
        if e.is_cancelled() {
            // The runtime is going down with writes still running.
            Error::Unavailable("core-svc is shutting down".into())
        } else {
            Error::storage_from("a database transaction panicked", e)
        }
    })?
}
