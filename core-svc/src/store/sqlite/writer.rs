//! The writer thread: the only write connection, fed by a bounded queue of jobs,
//! committing every job queued meanwhile in ONE transaction (group commit).
//!
//! Each job runs in its own savepoint, so a job that fails rolls back alone. Nobody
//! hears of a job's effects before its batch commits: then, in order, its effects
//! go to the sink and its caller gets its answer; if the commit fails, every caller
//! of the batch gets the error.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::tx::Tx;
use crate::error::Error;
use crate::store::{CommitSink, Effects};

/// How long a caller waits for room in the writer's queue.
pub const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for its transaction once queued.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Jobs that may wait for the writer; when full, callers wait up to
/// [`ENQUEUE_TIMEOUT`] and then get UNAVAILABLE.
const WRITE_QUEUE: usize = 1024;
/// Jobs committed together at most (one fsync for all of them).
pub const MAX_BATCH: usize = 256;

/// What a job leaves to do once its batch's commit succeeded (Ok) or failed (Err):
/// publish its effects and answer its caller.
type Done = Box<dyn FnOnce(Result<(), Error>) + Send>;
/// A write, run inside its own savepoint of the batch's transaction; given no
/// transaction, it is not run and its caller hears the batch's outcome alone.
type Job = Box<dyn FnOnce(Option<&mut Transaction<'_>>) -> Ran + Send>;

/// What running a job left: what to do after the commit, and whether the job
/// wrote (its savepoint was kept). A refusal, a skipped job and one not run
/// change nothing, so they are not counted as committed writes.
struct Ran {
    done: Done,
    wrote: bool,
}

impl Ran {
    fn refused(done: Done) -> Self {
        Self { done, wrote: false }
    }
}

/// The queue to the writer thread.
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    epoch: u64,
    sink: Arc<dyn CommitSink>,
}

impl Writer {
    /// Starts the writer thread on `conn`; it ends when the [`Writer`] is dropped.
    ///
    /// # Errors
    /// [`Error::Storage`] when the thread cannot be started.
    pub fn start(
        mut conn: Connection,
        epoch: u64,
        sink: Arc<dyn CommitSink>,
    ) -> Result<Self, Error> {
        let (jobs, mut queue) = mpsc::channel::<Job>(WRITE_QUEUE);
        let measured = sink.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                while let Some(first) = queue.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        let Ok(job) = queue.try_recv() else { break };
                        batch.push(job);
                    }
                    commit_batch(&mut conn, batch, measured.as_ref());
                }
            })
            .map_err(|e| Error::storage_from("cannot start the writer thread", e))?;
        Ok(Self { jobs, epoch, sink })
    }

    /// Runs `f` on the writer thread, in its own savepoint of the batch transaction
    /// it joins. Only after the batch commits do its effects go to the sink, in
    /// order, and the caller hear back; if `f` fails, its savepoint alone is rolled
    /// back. A job whose caller went away before it started is skipped.
    ///
    /// # Errors
    /// What `f` returned, the commit's error, or [`Error::Unavailable`] when the
    /// queue stays full or the answer does not come in time.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        self.sink.writable()?;
        let (reply, answer) = oneshot::channel();
        let (epoch, sink) = (self.epoch, self.sink.clone());
        let job: Job = Box::new(move |tx: Option<&mut Transaction<'_>>| -> Ran {
            if reply.is_closed() {
                // The caller gave up; change nothing on its behalf.
                return Ran::refused(Box::new(|_| {}));
            }
            let Some(tx) = tx else {
                return Ran::refused(Box::new(move |committed: Result<(), Error>| {
                    let _ = reply.send(committed.and(Err(Error::Unavailable(
                        "core-svc's database could not take this write: nothing was changed, retry later".into(),
                    ))));
                }));
            };
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
                Err(e) => Ran::refused(Box::new(move |committed: Result<(), Error>| {
                    let answer = match committed {
                        // A full disk is this job's own answer even though the
                        // batch failed with it: it says what to do.
                        Err(_) if matches!(e, Error::Unavailable(_)) => e,
                        Err(batch) => batch,
                        Ok(()) => e,
                    };
                    let _ = reply.send(Err(answer));
                })),
                Ok((value, fx)) => Ran {
                    done: Box::new(move |committed: Result<(), Error>| {
                        let result = committed.map(|()| {
                            sink.committed(&fx);
                            value
                        });
                        let _ = reply.send(result);
                    }),
                    wrote: true,
                },
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
            .map_err(|_| Error::storage("the database writer dropped a transaction"))?
    }
}

/// Runs a batch of jobs in one IMMEDIATE transaction and completes them in order.
fn commit_batch(conn: &mut Connection, batch: Vec<Job>, sink: &dyn CommitSink) {
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
    let mut writes = 0;
    for job in batch {
        // After some errors (disk full, I/O) SQLite rolls the whole transaction back
        // by itself: then nothing of this batch is committed, and a further savepoint
        // would start (and commit) a transaction of its own. The jobs left are not
        // run; their callers hear the batch's error.
        if tx.is_autocommit() {
            done.push(job(None).done);
            continue;
        }
        // A panic unwinds through the job's savepoint, which rolls back that job
        // alone; its caller's reply is dropped. The batch goes on.
        match catch_unwind(AssertUnwindSafe(|| job(Some(&mut tx)))) {
            Ok(ran) => {
                writes += usize::from(ran.wrote);
                done.push(ran.done);
            }
            Err(_) => tracing::error!("a database write panicked; that write was rolled back"),
        }
    }
    let started = Instant::now();
    let committed = if tx.is_autocommit() {
        Err(Error::Unavailable(
            "core-svc's database rolled the write back (disk full or I/O error): nothing was changed, retry later"
                .into(),
        ))
    } else {
        tx.commit().map_err(Error::from)
    };
    // Only the jobs that wrote, as PostgreSQL counts only the bodies that
    // succeeded; a batch of refusals alone committed nothing worth a sample.
    if writes > 0 || committed.is_err() {
        sink.measured(writes, started.elapsed(), committed.is_ok());
    }
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
