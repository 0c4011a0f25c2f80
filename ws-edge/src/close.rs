//! Close codes, and the one place a core-svc status becomes a close code or an
//! `error` frame.

use tonic::{Code, Status};

/// The edge is shutting down: reconnect (to another edge).
pub const GOING_AWAY: u16 = 1001;
/// A frame was larger than the configured limit.
pub const TOO_BIG: u16 = 1009;
/// Something unexpected failed on our side.
pub const INTERNAL: u16 = 1011;
/// core-svc was unreachable for longer than the outage limit: reconnect.
pub const SERVICE_RESTART: u16 = 1012;
/// The client did not keep up with its frames: reconnect.
pub const TRY_AGAIN_LATER: u16 = 1013;
/// The token expired while connected: reconnect with a fresh one.
pub const TOKEN_EXPIRED: u16 = 4001;
/// The client answered no ping for two ping intervals.
pub const PING_TIMEOUT: u16 = 4002;

/// What to do when a Subscribe stream to core-svc ends with `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// Transient: subscribe again from the last cursor, with backoff.
    Resubscribe,
    /// The edge cannot fix this by retrying: close with this code.
    Close(u16),
}

pub fn on_stream_end(status: &Status) -> StreamEnd {
    match status.code() {
        // Transient, or (UNAUTHENTICATED) a service token that expired or was
        // rotated: a minted one is renewed and a token file read again before the
        // next call, so retrying within the outage limit can succeed. A static token
        // that expired will not: the outage limit then ends the wait.
        Code::Unavailable
        | Code::Unknown
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Internal
        | Code::Unauthenticated => StreamEnd::Resubscribe,
        _ => StreamEnd::Close(INTERNAL),
    }
}

/// The `error` frame text for a position core-svc refused.
pub fn location_error(status: &Status) -> String {
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::PermissionDenied => {
            format!("location_update refused: {}", status.message())
        }
        _ => "location_update not recorded: core-svc is unavailable, send the next one".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_ends_resubscribe_and_the_rest_close() {
        assert_eq!(
            on_stream_end(&Status::unavailable("x")),
            StreamEnd::Resubscribe
        );
        assert_eq!(
            on_stream_end(&Status::resource_exhausted("x")),
            StreamEnd::Resubscribe
        );
        assert_eq!(
            on_stream_end(&Status::permission_denied("x")),
            StreamEnd::Close(INTERNAL)
        );
        assert_eq!(
            location_error(&Status::invalid_argument(
                "location.latitude must be a number from -90 to 90, got 91"
            )),
            "location_update refused: location.latitude must be a number from -90 to 90, got 91"
        );
    }
}
