//! The database a test's core-svc runs on: a SQLite file in a temporary folder,
//! or a PostgreSQL database of the test's own, created for it and dropped after.
//!
//! Tests written against [`Db`] run on every store through [`on_every_store!`]:
//! `name::sqlite` always, `name::postgres` when `LOGI_TEST_POSTGRES_URL` names a
//! server to create databases on (`.ci/run` sets it). Without it the PostgreSQL
//! runs pass at once, and the suite says so in one line.

use std::path::Path;
use std::sync::Once;

use core_svc::store::postgres::scratch::ScratchDatabase;
use tempfile::TempDir;

/// Where the PostgreSQL tests create their databases.
pub const POSTGRES_URL: &str = "LOGI_TEST_POSTGRES_URL";
/// The NATS server the cluster tests' replicas talk through.
pub const NATS_URL: &str = "LOGI_TEST_NATS_URL";

pub struct Db {
    location: String,
    dir: TempDir,
    _scratch: Option<ScratchDatabase>,
    postgres: bool,
}

impl Db {
    /// A SQLite file in a folder of a new temporary folder (core-svc creates the
    /// folder, as it does `data/` on a laptop).
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().join("data/logi.db").to_str().unwrap().to_owned();
        Self {
            location,
            dir,
            _scratch: None,
            postgres: false,
        }
    }

    /// A new PostgreSQL database, or None (said once) when no server is configured.
    pub async fn postgres() -> Option<Self> {
        let Ok(admin) = std::env::var(POSTGRES_URL) else {
            skipped();
            return None;
        };
        let scratch = ScratchDatabase::create(&admin)
            .await
            .unwrap_or_else(|e| panic!("{POSTGRES_URL}={admin}: {e}"));
        Some(Self {
            location: scratch.url().to_owned(),
            dir: tempfile::tempdir().unwrap(),
            _scratch: Some(scratch),
            postgres: true,
        })
    }

    /// A new PostgreSQL database and the NATS server, for replicas of a cluster;
    /// None (said once) unless both are configured. Clusters of tests running at
    /// once do not hear each other: replicas talk on subjects named after their
    /// database's epoch.
    pub async fn cluster() -> Option<(Self, String)> {
        let Ok(nats) = std::env::var(NATS_URL) else {
            skipped();
            return None;
        };
        Some((Self::postgres().await?, nats))
    }

    /// The same database reached at another `location` (through a relay); it is
    /// removed with `db`, not with the alias.
    pub fn alias(db: &Db, location: &str) -> Self {
        Self {
            location: location.to_owned(),
            dir: tempfile::tempdir().unwrap(),
            _scratch: None,
            postgres: db.is_postgres(),
        }
    }

    /// What `--database` is given.
    pub fn location(&self) -> &str {
        &self.location
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    /// A temporary folder that lives as long as the database, for other files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// One line for the whole run, past the test harness's capture of output.
fn skipped() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "note: the PostgreSQL runs of the end-to-end tests were skipped: set {POSTGRES_URL}=postgres://postgres@127.0.0.1:5432/postgres (and LOGI_TEST_NATS_URL=nats://127.0.0.1:4222) to run them, as .ci/run does"
        );
    });
}

/// Declares, for each named `async fn name(db: Db)`, the tests `name::sqlite` and
/// `name::postgres`.
#[macro_export]
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::support::db::Db::sqlite()).await
                }

                #[tokio::test]
                async fn postgres() {
                    if let Some(db) = $crate::support::db::Db::postgres().await {
                        super::$name(db).await
                    }
                }
            }
        )*
    };
}
