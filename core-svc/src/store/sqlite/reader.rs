//! A small pool of read-only connections, used on the blocking thread pool. WAL
//! mode lets them read beside the writer.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use super::schema::connect;
use super::writer::ENQUEUE_TIMEOUT;
use crate::error::Error;

/// Read-only connections.
const READERS: usize = 4;

pub struct Readers {
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl Readers {
    /// # Errors
    /// [`Error::Storage`] when a connection cannot be opened.
    pub fn open(path: &Path) -> Result<Arc<Self>, Error> {
        let idle = (0..READERS)
            .map(|_| {
                connect(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Self {
            idle: Mutex::new(idle),
            permits: Arc::new(Semaphore::new(READERS)),
        }))
    }

    /// Runs `f` on a connection of the pool.
    ///
    /// # Errors
    /// What `f` returned, or [`Error::Unavailable`] when no connection frees up in time.
    pub async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let permit = tokio::time::timeout(ENQUEUE_TIMEOUT, self.permits.clone().acquire_owned())
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
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop()
                .expect("one per permit");
            let result = f(&conn);
            this.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
            result
        })
        .await
        .map_err(|e| {
            if e.is_cancelled() {
                // The runtime is going down with reads still queued: not a storage
                // failure, and not worth an error line for each of them.
                Error::Unavailable("core-svc is shutting down".into())
            } else {
                Error::storage_from("read task failed", e)
            }
        })?
    }
}
