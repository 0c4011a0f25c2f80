//! Throw-away databases, for tests and benchmarks only: each [`ScratchDatabase`]
//! is a fresh, uniquely named database on a server, removed when it is dropped.

use std::sync::atomic::{AtomicU64, Ordering};

use super::admin::{run_admin, with_database};
use crate::error::Error;

/// Scratch databases made by this process so far: part of each name.
static MADE: AtomicU64 = AtomicU64::new(0);

/// A database of its own for one test or benchmark, dropped with it.
#[derive(Debug)]
pub struct ScratchDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    /// Creates a database named `logi_test_<pid>_<counter>_<random>` on the server
    /// that `admin_url` connects to (as a user that may create databases).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server cannot be reached,
    /// [`Error::Storage`] when the database cannot be created.
    pub async fn create(admin_url: &str) -> Result<Self, Error> {
        let name = format!(
            "logi_test_{}_{}_{:08x}",
            std::process::id(),
            MADE.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let url = with_database(admin_url, &name);
        run_admin(admin_url, &format!("CREATE DATABASE {name}")).await?;
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
            url,
        })
    }

    /// The URL of the scratch database: the admin URL with its database replaced.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for ScratchDatabase {
    /// Removes the database, ending any connection still open to it. Drop cannot
    /// await, and may run inside a runtime: the work goes to a thread of its own
    /// with its own runtime, waited for so the database is gone when this returns.
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::storage_from("cannot start a runtime", e))?;
            rt.block_on(run_admin(
                &admin_url,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            ))
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(database = %self.name, error = %crate::error::chain(&e), "cannot drop a scratch database")
            }
            Err(_) => tracing::warn!(database = %self.name, "dropping a scratch database panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::admin::with_database;

    #[test]
    fn the_database_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("host=h user=u", "x"),
            "host=h user=u dbname=x"
        );
    }
}
