//! The bounded pool of connections, with the settings every connection has, and
//! the URL as it may be shown (without its password).

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::error::{Error, io_cause};

/// How long a caller waits for a free connection, or a new one for the server.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(5);

/// How the store uses PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Connections kept open at most; transactions in flight are bounded at four
    /// times this.
    pub pool_size: usize,
    /// How long one statement may run before the server cancels it (set on every
    /// connection): a stuck query answers UNAVAILABLE instead of holding its locks.
    pub statement_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            statement_timeout: Duration::from_secs(10),
        }
    }
}

/// A pool for `url`; it connects lazily.
///
/// # Errors
/// [`Error::InvalidArgument`] when `url` is not a PostgreSQL URL.
pub fn build(url: &str, options: &PostgresOptions) -> Result<Pool, Error> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
        Error::invalid(format!(
            "{} is not a PostgreSQL URL: {e}",
            without_password(url)
        ))
    })?;
    let timeout = format!(
        "-c statement_timeout={}",
        options.statement_timeout.as_millis()
    );
    let startup = match config.get_options() {
        Some(given) => format!("{given} {timeout}"),
        None => timeout,
    };
    config.options(&startup);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(WAIT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("core-svc");
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(options.pool_size.max(1))
        .wait_timeout(Some(WAIT_TIMEOUT))
        .create_timeout(Some(WAIT_TIMEOUT))
        .recycle_timeout(Some(WAIT_TIMEOUT))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| Error::storage_from("cannot build the PostgreSQL pool", e))
}

/// The one-line error of a first connection that failed: where, and why, in a
/// person's words (`connection refused`, the server's own message).
pub fn unreachable(url: &str, e: &PoolError) -> Error {
    let why = match e {
        PoolError::Backend(e) => match (e.as_db_error(), io_cause(e)) {
            (Some(db), _) => db.message().to_owned(),
            (None, Some(io)) => io.kind().to_string(),
            (None, None) => crate::error::chain(e),
        },
        PoolError::Timeout(_) => format!("no answer within {} s", WAIT_TIMEOUT.as_secs()),
        other => other.to_string(),
    };
    Error::Unavailable(format!(
        "cannot connect to PostgreSQL at {}: {why}",
        without_password(url)
    ))
}

/// `url` with any password removed, to be shown or logged.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // key=value form
        return url
            .split_whitespace()
            .filter(|kv| !kv.starts_with("password="))
            .collect::<Vec<_>>()
            .join(" ");
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => format!("{}@{host}", user.split(':').next().unwrap_or_default()),
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|kv| !kv.starts_with("password="))
                .collect();
            if kept.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn passwords_are_not_shown() {
        for (url, shown) in [
            (
                "postgres://postgres:s3cret@127.0.0.1:5432/logi",
                "postgres://postgres@127.0.0.1:5432/logi",
            ),
            (
                "postgresql://u:p@h/db?sslmode=disable&password=x",
                "postgresql://u@h/db?sslmode=disable",
            ),
            ("postgres://h:5432", "postgres://h:5432"),
            (
                "host=h user=u password=p dbname=d",
                "host=h user=u dbname=d",
            ),
        ] {
            assert_eq!(without_password(url), shown);
        }
    }
}
