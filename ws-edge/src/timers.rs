//! A connection's clocks: the heartbeat (a ping every interval; two unanswered and
//! the client is gone) and its token's expiry, on tokio's clock so that they are
//! tested on a paused one.

use std::time::Duration;

use tokio::time::{Instant, Interval};

/// Pings left unanswered before the client is closed.
pub const MAX_UNANSWERED_PINGS: u32 = 2;
/// The longest a token is waited for: later expiries are treated as this.
const MAX_TOKEN_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// What the heartbeat asks for when it ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Send a ping.
    Ping,
    /// The pings sent went unanswered: close the connection.
    Silent,
}

pub struct Heartbeat {
    ticks: Interval,
    unanswered: u32,
}

impl Heartbeat {
    /// The first ping goes one `interval` from now.
    pub fn new(interval: Duration) -> Self {
        Self {
            ticks: tokio::time::interval_at(Instant::now() + interval, interval),
            unanswered: 0,
        }
    }

    /// Waits for the next tick. Cancel-safe.
    pub async fn tick(&mut self) -> Beat {
        self.ticks.tick().await;
        if self.unanswered >= MAX_UNANSWERED_PINGS {
            return Beat::Silent;
        }
        self.unanswered += 1;
        Beat::Ping
    }

    /// The client showed it is there (a pong, or any frame).
    pub fn answered(&mut self) {
        self.unanswered = 0;
    }
}

/// When a token with `left` of its validity expires, on tokio's clock.
pub fn token_deadline(left: Duration) -> Instant {
    Instant::now() + left.min(MAX_TOKEN_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn two_unanswered_pings_and_the_client_is_silent() {
        let start = Instant::now();
        let mut beat = Heartbeat::new(Duration::from_secs(20));
        assert_eq!(beat.tick().await, Beat::Ping);
        assert_eq!(start.elapsed(), Duration::from_secs(20));
        assert_eq!(beat.tick().await, Beat::Ping);
        assert_eq!(beat.tick().await, Beat::Silent);
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_resets_the_count() {
        let mut beat = Heartbeat::new(Duration::from_secs(20));
        for _ in 0..10 {
            assert_eq!(beat.tick().await, Beat::Ping);
            beat.answered();
        }
        assert_eq!(beat.tick().await, Beat::Ping);
        assert_eq!(beat.tick().await, Beat::Ping);
        assert_eq!(beat.tick().await, Beat::Silent);
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_expires_on_time_and_a_far_one_is_capped() {
        let start = Instant::now();
        let deadline = token_deadline(Duration::from_secs(90));
        tokio::time::sleep_until(deadline).await;
        assert_eq!(start.elapsed(), Duration::from_secs(90));
        assert_eq!(
            token_deadline(Duration::ZERO),
            Instant::now(),
            "already expired"
        );
        assert_eq!(
            token_deadline(Duration::MAX) - Instant::now(),
            MAX_TOKEN_WAIT
        );
    }
}
