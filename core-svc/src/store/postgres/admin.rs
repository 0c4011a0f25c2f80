//! Statements about databases rather than in one: creating and dropping them,
//! on a connection of their own to the server's `postgres` database.

use tokio_postgres::NoTls;

use super::without_password;
use crate::error::Error;

/// Runs one statement on a connection of its own to `admin_url`.
pub async fn run_admin(admin_url: &str, sql: &str) -> Result<(), Error> {
    let (client, connection) = tokio_postgres::connect(admin_url, NoTls)
        .await
        .map_err(|e| {
            Error::Unavailable(format!(
                "cannot connect to PostgreSQL at {}: {}",
                without_password(admin_url),
                crate::error::chain(&e)
            ))
        })?;
    let connection = tokio::spawn(connection);
    let done = client
        .batch_execute(sql)
        .await
        .map_err(|e| Error::storage_from(format!("{sql} failed"), e));
    drop(client);
    let _ = connection.await;
    done
}

/// `url` naming database `name` instead of its own.
pub fn with_database(url: &str, name: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // key=value form: a later key wins.
        return format!("{url} dbname={name}");
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((r, q)) => (r, format!("?{q}")),
        None => (rest, String::new()),
    };
    let authority = before_query.split('/').next().unwrap_or_default();
    format!("{scheme}://{authority}/{name}{query}")
}

/// Creates the database `url` names unless it exists (a laptop's first
/// `logi up --cluster`); whether it created it.
///
/// # Errors
/// [`Error::Unavailable`] when the server does not answer, [`Error::Storage`]
/// when the database cannot be created.
pub async fn create_if_missing(url: &str) -> Result<bool, Error> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| Error::invalid(format!("{}: {e}", without_password(url))))?;
    let Some(name) = config.get_dbname().map(str::to_owned) else {
        return Ok(false);
    };
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Error::invalid(format!(
            "database name {name:?}: only letters, digits and _ can be created here; create it yourself"
        )));
    }
    let admin = with_database(url, "postgres");
    let (client, connection) = tokio_postgres::connect(&admin, NoTls).await.map_err(|e| {
        Error::Unavailable(format!(
            "cannot connect to PostgreSQL at {}: {}",
            without_password(&admin),
            crate::error::chain(&e)
        ))
    })?;
    let connection = tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(|e| Error::storage_from("cannot list the databases", e))?
        .is_some();
    drop(client);
    let _ = connection.await;
    if exists {
        return Ok(false);
    }
    run_admin(&admin, &format!("CREATE DATABASE {name}")).await?;
    Ok(true)
}
