//! Every call the simulator makes, bounded in time, and how its failures read.

use std::future::Future;
use std::time::Duration;

use tonic::{Code, Response, Status};

/// No call waits longer than this for its answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Awaits `call` for at most [`TIMEOUT`].
///
/// # Errors
/// The call's status, or `DEADLINE_EXCEEDED` when it did not answer in time.
pub async fn call<T>(call: impl Future<Output = Result<Response<T>, Status>>) -> Result<T, Status> {
    match tokio::time::timeout(TIMEOUT, call).await {
        Ok(answer) => answer.map(Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no answer within {} s",
            TIMEOUT.as_secs()
        ))),
    }
}

/// A losing race: the booking moved on before this call (taken by another
/// driver, cancelled, started).
pub fn lost_race(status: &Status) -> bool {
    status.code() == Code::FailedPrecondition
}

/// One line for a failed call: which, by whom, and what core-svc said.
pub fn describe(method: &str, who: &str, status: &Status) -> String {
    format!(
        "{method} by {who}: {:?}: {}",
        status.code(),
        status.message()
    )
}
