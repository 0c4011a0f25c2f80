//! The run's counters and the one-line summary printed from them: rewritten in
//! place every second on a terminal, a plain line every few seconds otherwise.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Counters every participant adds to; gauges may go down.
#[derive(Debug, Default)]
pub struct Stats {
    pub drivers_online: AtomicI64,
    pub created: AtomicU64,
    pub accepted: AtomicU64,
    pub on_trip: AtomicI64,
    pub completed: AtomicU64,
    pub cancelled: AtomicU64,
    pub expired: AtomicU64,
    /// Accepts another driver won: expected, not failures.
    pub races_lost: AtomicU64,
    pub failures: AtomicU64,
}

pub fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

impl Stats {
    /// The summary line after `elapsed`.
    pub fn line(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64();
        let created = self.created.load(Relaxed);
        format!(
            "{:.0}s  drivers {}  bookings: {} created, {} accepted, {} on trip, {} completed, {} cancelled, {} expired  {:.2} bookings/s  races lost {}  failures {}",
            secs,
            self.drivers_online.load(Relaxed),
            created,
            self.accepted.load(Relaxed),
            self.on_trip.load(Relaxed),
            self.completed.load(Relaxed),
            self.cancelled.load(Relaxed),
            self.expired.load(Relaxed),
            if secs > 0.0 {
                created as f64 / secs
            } else {
                0.0
            },
            self.races_lost.load(Relaxed),
            self.failures.load(Relaxed),
        )
    }
}

/// Prints the summary until `stop`; on a terminal the line is rewritten in place
/// (and left for the final summary to overwrite).
pub async fn print_live(stats: &Stats, since: Instant, stop: CancellationToken) {
    let tty = std::io::stdout().is_terminal();
    let every = if tty {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    let mut ticks = tokio::time::interval_at(since + every, every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let line = stats.line(since.elapsed());
        let mut out = std::io::stdout().lock();
        // A closed stdout is not a reason to stop the fleet.
        let _ = if tty {
            write!(out, "\r\x1b[2K{line}").and_then(|()| out.flush())
        } else {
            writeln!(out, "{line}")
        };
    }
}

/// Prints the final summary on a line of its own.
pub fn print_final(stats: &Stats, elapsed: Duration) {
    let clear = if std::io::stdout().is_terminal() {
        "\r\x1b[2K"
    } else {
        ""
    };
    println!("{clear}final: {}", stats.line(elapsed));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_every_count() {
        let stats = Stats::default();
        stats.drivers_online.store(20, Relaxed);
        stats.created.store(30, Relaxed);
        stats.completed.store(12, Relaxed);
        assert_eq!(
            stats.line(Duration::from_secs(15)),
            "15s  drivers 20  bookings: 30 created, 0 accepted, 0 on trip, 12 completed, 0 cancelled, 0 expired  2.00 bookings/s  races lost 0  failures 0"
        );
    }
}
