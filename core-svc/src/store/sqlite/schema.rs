//! Opening a database file: connection settings, migrations and the epoch.

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::error::Error;

const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/0001_init.sql"),
    include_str!("../../../migrations/0002_requests.sql"),
    include_str!("../../../migrations/0003_driver_positions.sql"),
    include_str!("../../../migrations/0004_driver_version.sql"),
    include_str!("../../../migrations/0005_dispatch_leases.sql"),
];

/// Prepared statements kept per connection: more than the store has.
const STATEMENTS: usize = 64;

/// A connection with the settings every one of ours has.
///
/// # Errors
/// [`Error::Storage`] when the file cannot be opened.
pub fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, Error> {
    let conn = Connection::open_with_flags(path, flags)?;
    // Every statement we run stays prepared: there are about 30 of them, more than
    // rusqlite keeps by default (16). And a prepared statement stays as it was
    // planned: the bundled SQLite (STAT4) would otherwise plan a statement again
    // whenever a value it looked at while planning is bound anew, which the
    // connect-storm profile showed as a tenth of core-svc's CPU (a snapshot's
    // query, re-parsed at every step for its `updated_at >= ?`).
    conn.set_prepared_statement_cache_capacity(STATEMENTS);
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // FULL: a commit is on disk before its events are published, so a power loss can
    // never roll back events that subscribers already saw (and reuse their offsets).
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// Brings the schema up to this build's version.
///
/// # Errors
/// [`Error::Storage`] when a migration fails or the schema is newer than this build.
pub fn migrate(conn: &mut Connection) -> Result<(), Error> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(Error::storage(format!(
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

/// The epoch of this database's event log, drawn the first time.
///
/// # Errors
/// [`Error::Storage`] when it cannot be read or written.
pub fn epoch(conn: &Connection) -> Result<u64, Error> {
    if let Some(v) = conn
        .query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
            r.get::<_, String>(0)
        })
        .optional()?
    {
        return v
            .parse()
            .map_err(|_| Error::storage(format!("meta.epoch {v:?} is not a number")));
    }
    // Below 2^53 so that JSON tools that read numbers as doubles keep it exact.
    let epoch = rand::random_range(1..(1u64 << 53));
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('epoch', ?1)",
        [epoch.to_string()],
    )?;
    Ok(epoch)
}
