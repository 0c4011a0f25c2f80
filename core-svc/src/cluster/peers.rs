//! What the numbers on the other replicas' commit messages say: a number skipped
//! is a message lost, and a replica that has gone quiet may have died between a
//! commit and its message. Either way this replica may have missed events.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// A replica unheard for this long is taken as gone (it sends a heartbeat a second).
pub const SILENT_AFTER: Duration = Duration::from_secs(3);
/// A replica unheard for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
pub struct Peers {
    seen: HashMap<u64, Peer>,
}

#[derive(Debug)]
struct Peer {
    last: u64,
    heard: Instant,
    silent: bool,
}

impl Peers {
    /// Message `sent` of `replica` arrived (a heartbeat repeats the last number);
    /// whether one may have been lost before it.
    pub fn heard(&mut self, replica: u64, sent: u64, now: Instant) -> bool {
        let Some(peer) = self.seen.get_mut(&replica) else {
            // A replica heard for the first time: what it sent before, this one
            // read from the store when its topics started.
            self.seen.insert(
                replica,
                Peer {
                    last: sent,
                    heard: now,
                    silent: false,
                },
            );
            return false;
        };
        let lost = sent > peer.last + 1 || peer.silent;
        peer.last = peer.last.max(sent);
        peer.heard = now;
        peer.silent = false;
        lost
    }

    /// Whether a replica went quiet since the last call (each is told once).
    pub fn went_quiet(&mut self, now: Instant) -> bool {
        self.seen
            .retain(|_, p| now.saturating_duration_since(p.heard) < FORGET_AFTER);
        let mut quiet = false;
        for peer in self.seen.values_mut() {
            if !peer.silent && now.saturating_duration_since(peer.heard) >= SILENT_AFTER {
                peer.silent = true;
                quiet = true;
            }
        }
        quiet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skipped_number_is_a_loss_and_heartbeats_are_not() {
        let mut peers = Peers::default();
        let t0 = Instant::now();
        assert!(!peers.heard(1, 5, t0), "first heard: nothing to compare");
        assert!(!peers.heard(1, 6, t0));
        assert!(!peers.heard(1, 6, t0), "a heartbeat repeats the number");
        assert!(peers.heard(1, 8, t0), "7 was lost");
        assert!(!peers.heard(2, 1, t0), "another replica counts on its own");
    }

    #[test]
    fn a_replica_that_goes_quiet_is_told_once_and_again_when_it_is_back() {
        let mut peers = Peers::default();
        let t0 = Instant::now();
        peers.heard(1, 1, t0);
        assert!(!peers.went_quiet(t0 + SILENT_AFTER / 2));
        assert!(peers.went_quiet(t0 + SILENT_AFTER));
        assert!(!peers.went_quiet(t0 + SILENT_AFTER * 2), "once");
        // Back after a partition: what it sent meanwhile never arrived.
        assert!(peers.heard(1, 1, t0 + SILENT_AFTER * 3));
        assert!(!peers.went_quiet(t0 + FORGET_AFTER * 2));
        assert!(
            !peers.heard(1, 9, t0 + FORGET_AFTER * 2),
            "forgotten, then new"
        );
    }
}
