//! The domain error of core-svc and the one table that maps it to gRPC codes.

use std::sync::Arc;

use logi::auth::AuthError;
use tonic::{Code, Status};

use crate::model::{BookingId, BookingStatus};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Unauthenticated(#[from] AuthError),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("booking {0} does not exist")]
    BookingNotFound(BookingId),
    #[error("driver {0} is not registered: call SetDriverStatus first")]
    DriverNotFound(String),
    #[error("driver {0} has not reported a position yet")]
    NoLocation(String),
    #[error("booking {booking} is {status}: {what}", status = .status.as_str())]
    WrongStatus {
        booking: BookingId,
        status: BookingStatus,
        what: &'static str,
    },
    #[error("booking {0} was already taken by another driver")]
    Taken(BookingId),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("wrong OTP for booking {booking}: {left} tries left")]
    WrongOtp { booking: BookingId, left: u32 },
    #[error(
        "too many wrong OTPs for booking {0}: the rider must get a new code (BookingService/IssueOtp) before trying again"
    )]
    OtpLocked(BookingId),
    #[error("{0}")]
    Unavailable(String),
    #[error("storage failure: {0}")]
    Storage(#[source] StorageError),
}

/// A storage failure: what was being done, and the error underneath, kept so the
/// whole chain reaches the log line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{context}")]
pub struct StorageError {
    context: String,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl PartialEq for StorageError {
    fn eq(&self, other: &Self) -> bool {
        self.context == other.context
    }
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }

    pub fn denied(msg: impl Into<String>) -> Self {
        Self::PermissionDenied(msg.into())
    }

    pub fn precondition(msg: impl Into<String>) -> Self {
        Self::FailedPrecondition(msg.into())
    }

    /// A storage failure with nothing underneath.
    pub fn storage(context: impl Into<String>) -> Self {
        Self::Storage(StorageError {
            context: context.into(),
            source: None,
        })
    }

    /// A storage failure caused by `source`.
    pub fn storage_from(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Storage(StorageError {
            context: context.into(),
            source: Some(Arc::new(source)),
        })
    }

    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) | Self::WrongOtp { .. } => Code::InvalidArgument,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::BookingNotFound(_) | Self::DriverNotFound(_) | Self::NoLocation(_) => {
                Code::NotFound
            }
            Self::WrongStatus { .. } | Self::Taken(_) | Self::FailedPrecondition(_) => {
                Code::FailedPrecondition
            }
            Self::OtpLocked(_) => Code::ResourceExhausted,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Storage(_) => Code::Internal,
        }
    }
}

/// `e` and every error under it, `: `-separated.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        if let Error::Storage(_) = &e {
            tracing::error!(error = %chain(&e), "storage failure");
        }
        Status::new(e.code(), e.to_string())
    }
}

/// The message of a full disk, as callers see it.
pub const DISK_FULL: &str =
    "core-svc's disk is full: nothing was changed; retry once the operator has freed space";

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        // A full disk is the operator's to fix and the caller's to retry: UNAVAILABLE,
        // which clients retry with backoff, rather than INTERNAL, which they do not.
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            tracing::error!(error = %e, "the database's disk is full");
            return Self::Unavailable(DISK_FULL.to_owned());
        }
        Self::storage_from("database error", e)
    }
}

/// The message of a PostgreSQL that cannot be reached, or hung up, before a change
/// committed.
pub const PG_UNREACHABLE: &str =
    "core-svc's database (PostgreSQL) is unreachable: nothing was changed, retry shortly";

impl From<tokio_postgres::Error> for Error {
    /// What the caller can do decides: a server that is away, shutting down, out of
    /// resources or too slow (statement timeout) is UNAVAILABLE, to retry; anything
    /// else is a storage failure. Transactions that lost a serialization race or a
    /// deadlock are retried before they get here (see the store's `run`), with their
    /// SQLSTATE kept as the source.
    fn from(e: tokio_postgres::Error) -> Self {
        let unavailable = match e.code().map(|c| c.code()) {
            Some("57014") => Some(
                "core-svc's database took too long (statement timeout): nothing was changed, retry shortly",
            ),
            Some(c) if c.starts_with("08") || c.starts_with("53") || c.starts_with("57") => {
                Some(PG_UNREACHABLE)
            }
            Some(_) => None,
            None if e.is_closed() || io_cause(&e).is_some() => Some(PG_UNREACHABLE),
            None => None,
        };
        match unavailable {
            Some(msg) => {
                tracing::warn!(error = %chain(&e), "PostgreSQL failed");
                Self::Unavailable(msg.to_owned())
            }
            None => Self::storage_from("database error", e),
        }
    }
}

/// The I/O error under `e`, if any: then the connection failed.
pub fn io_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut next = Some(e);
    while let Some(cause) = next {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        next = cause.source();
    }
    None
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match e {
            PoolError::Backend(e) => e.into(),
            PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => Self::Unavailable(
                "core-svc's database is overloaded (no free connection in time): nothing was changed, retry shortly"
                    .into(),
            ),
            PoolError::Timeout(_) => Self::Unavailable(PG_UNREACHABLE.into()),
            PoolError::Closed => Self::Unavailable("core-svc is shutting down".into()),
            e => Self::storage_from("cannot get a database connection", e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_state() {
        let e = Error::WrongStatus {
            booking: 12,
            status: BookingStatus::Cancelled,
            what: "only a pending booking can be accepted",
        };
        assert_eq!(
            e.to_string(),
            "booking 12 is cancelled: only a pending booking can be accepted"
        );
        assert_eq!(Status::from(e).code(), Code::FailedPrecondition);
        assert_eq!(
            Status::from(Error::OtpLocked(3)).code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            Status::from(Error::WrongOtp {
                booking: 3,
                left: 2
            })
            .message(),
            "wrong OTP for booking 3: 2 tries left"
        );
    }
}
