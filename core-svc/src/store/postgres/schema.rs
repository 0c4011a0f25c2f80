//! Migrations and the epoch. Several replicas may start at once: migrations run
//! under a transaction-scoped advisory lock, and the epoch is drawn by whichever
//! start inserts it first.

use deadpool_postgres::Client;

use crate::error::Error;

const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/postgres/0001_init.sql"),
    include_str!("../../../migrations/postgres/0002_requests.sql"),
    include_str!("../../../migrations/postgres/0003_driver_positions.sql"),
    include_str!("../../../migrations/postgres/0004_driver_version.sql"),
    include_str!("../../../migrations/postgres/0005_dispatch_leases.sql"),
];

/// The advisory lock key that serializes migrations: "logi" in ASCII.
const MIGRATION_LOCK: i64 = 0x6c6f_6769;

/// Brings the schema up to this build's version, in one transaction.
///
/// # Errors
/// [`Error::Storage`] when a migration fails or the schema is newer than this build.
pub async fn migrate(client: &mut Client) -> Result<(), Error> {
    let tx = client.transaction().await?;
    // Held until the commit: a replica starting meanwhile waits here, then finds
    // the schema migrated.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .await?;
    let version: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .await?
        .try_get(0)?;
    let version = version as usize;
    if version > MIGRATIONS.len() {
        return Err(Error::storage(format!(
            "the database schema is version {version}, newer than this core-svc knows ({}): upgrade core-svc",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| Error::storage_from(format!("schema migration {} failed", i + 1), e))?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The epoch of this database's event log, drawn the first time. Replicas that
/// start together each offer one; the first inserted is everyone's.
///
/// # Errors
/// [`Error::Storage`] when it cannot be read or written.
pub async fn epoch(client: &Client) -> Result<u64, Error> {
    // Below 2^53 so that JSON tools that read numbers as doubles keep it exact.
    let offer = rand::random_range(1..(1u64 << 53)).to_string();
    client
        .execute(
            "INSERT INTO meta (key, value) VALUES ('epoch', $1) ON CONFLICT (key) DO NOTHING",
            &[&offer],
        )
        .await?;
    let v: String = client
        .query_one("SELECT value FROM meta WHERE key = 'epoch'", &[])
        .await?
        .try_get(0)?;
    v.parse()
        .map_err(|_| Error::storage(format!("meta.epoch {v:?} is not a number")))
}
