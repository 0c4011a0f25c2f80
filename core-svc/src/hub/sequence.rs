//! One topic's order of delivery: which durable events go out now, which wait for
//! an earlier one, and the offsets of ephemeral events between them.
//!
//! In [`Order::Committed`] events come from one writer in commit order and go out
//! as they come. In [`Order::Sequenced`] they come from several connections or
//! replicas and may arrive out of order, twice, or not at all: each goes out only
//! after the one before it (durable sequence numbers of a topic are contiguous),
//! later ones are held meanwhile, and a gap that stays open past a grace period is
//! reported ([`Sequence::gap`]) so that the missing events are read from the store.
//! A sequenced topic starts unknown: nothing goes out until its head is read
//! ([`Sequence::start`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use logi::pb;
use tokio::time::Instant;

/// Offsets reserved after each durable event for the ephemeral events that follow.
pub const EPHEMERAL_SPAN: u64 = 1_000_000_000;
/// Events one topic holds back while an earlier one is missing; past it, the
/// topic's subscribers resume from their cursors instead.
pub const MAX_HELD: usize = 4096;

/// The durable sequence number and ephemeral counter an offset stands for.
pub fn split(offset: u64) -> (u64, u64) {
    (offset / EPHEMERAL_SPAN, offset % EPHEMERAL_SPAN)
}

/// How durable events reach the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// From one writer, in commit order (SQLite).
    Committed,
    /// From several connections or replicas, in any order (PostgreSQL, NATS).
    Sequenced,
}

/// What offering an event did.
#[derive(Debug, PartialEq)]
pub enum Offered {
    /// These go out now, in this order (possibly none).
    Deliver(Vec<Arc<pb::Event>>),
    /// More than [`MAX_HELD`] wait: the topic must start over.
    Overflow,
}

#[derive(Debug)]
pub struct Sequence {
    order: Order,
    /// The last durable sequence number delivered; None until known.
    head: Option<u64>,
    /// Ephemeral events numbered since `head`.
    ephemeral: u64,
    /// Sequenced: events after a missing one, by sequence number.
    held: BTreeMap<u64, Arc<pb::Event>>,
    /// Sequenced: the highest sequence number known to exist.
    known: u64,
    /// Sequenced: since when the next event has been missing.
    missing_since: Option<Instant>,
}

fn seq_of(event: &pb::Event) -> u64 {
    split(event.cursor.map_or(0, |c| c.offset)).0
}

impl Sequence {
    pub fn new(order: Order) -> Self {
        Self {
            order,
            head: None,
            ephemeral: 0,
            held: BTreeMap::new(),
            known: 0,
            missing_since: None,
        }
    }

    /// Whether events can go out: always when committed, once started when sequenced.
    pub fn started(&self) -> bool {
        self.order == Order::Committed || self.head.is_some()
    }

    pub fn head(&self) -> Option<u64> {
        self.head
    }

    fn advance(&mut self, seq: u64) {
        if self.head.is_none_or(|h| seq > h) {
            self.head = Some(seq);
            self.ephemeral = 0;
        }
    }

    /// A committed durable event reached the hub.
    pub fn offer(&mut self, event: Arc<pb::Event>, now: Instant) -> Offered {
        let seq = seq_of(&event);
        if self.order == Order::Committed {
            self.advance(seq);
            return Offered::Deliver(vec![event]);
        }
        self.known = self.known.max(seq);
        match self.head {
            Some(h) if seq <= h => Offered::Deliver(Vec::new()),
            Some(h) if seq == h + 1 => {
                let mut out = vec![event];
                self.advance(seq);
                self.drain(&mut out, now);
                Offered::Deliver(out)
            }
            _ => {
                self.held.insert(seq, event);
                if self.held.len() > MAX_HELD {
                    return Offered::Overflow;
                }
                if self.head.is_some() {
                    self.missing_since.get_or_insert(now);
                }
                Offered::Deliver(Vec::new())
            }
        }
    }

    /// Moves held events that now follow the head to `out`, and notes whether one
    /// is still missing.
    fn drain(&mut self, out: &mut Vec<Arc<pb::Event>>, now: Instant) {
        let head = self.head.unwrap_or(0);
        self.held = self.held.split_off(&(head + 1));
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() != self.head.unwrap_or(0) + 1 {
                break;
            }
            let seq = *entry.key();
            out.push(entry.remove());
            self.advance(seq);
        }
        // Progress gives the next missing event a grace period of its own.
        self.missing_since = (self.known > self.head.unwrap_or(0)).then_some(now);
    }

    /// The head read from the store: a sequenced topic starts there (held events up
    /// to it were in the store already; the ones after it go out in order). For a
    /// started topic it only says that events up to `head` exist.
    pub fn start(&mut self, head: u64, now: Instant) -> Vec<Arc<pb::Event>> {
        let mut out = Vec::new();
        match self.order {
            Order::Committed => self.advance(head),
            Order::Sequenced if self.head.is_none() => {
                self.head = Some(head);
                self.known = self.known.max(head);
                self.drain(&mut out, now);
            }
            Order::Sequenced => {
                if head > self.known {
                    self.known = head;
                }
                if self.known > self.head.unwrap_or(0) {
                    self.missing_since.get_or_insert(now);
                }
            }
        }
        out
    }

    /// The sequence number to read the store after, once the next event has been
    /// missing for `grace`.
    pub fn gap(&self, now: Instant, grace: Duration) -> Option<u64> {
        let since = self.missing_since?;
        (now.saturating_duration_since(since) >= grace).then(|| self.head.unwrap_or(0))
    }

    /// When [`Sequence::gap`] will next report one, if an event is missing.
    pub fn gap_due(&self, grace: Duration) -> Option<Instant> {
        self.missing_since.map(|since| since + grace)
    }

    /// A fill from the store found nothing after `after` although later events
    /// were seen: they were removed by retention, or never existed.
    pub fn unfillable(&self, after: u64) -> bool {
        self.head == Some(after) && self.known > after
    }

    /// The offset of a new ephemeral event, if the head is known and the span not
    /// used up.
    pub fn next_ephemeral(&mut self) -> Option<u64> {
        let head = self.head?;
        if self.ephemeral + 1 >= EPHEMERAL_SPAN {
            return None;
        }
        self.ephemeral += 1;
        Some(head * EPHEMERAL_SPAN + self.ephemeral)
    }

    /// A subscriber resumes from `offset`: later ephemeral offsets exceed it.
    pub fn resumed_at(&mut self, offset: u64) {
        let (seq, eph) = split(offset);
        if Some(seq) == self.head {
            self.ephemeral = self.ephemeral.max(eph);
        }
    }
}

#[cfg(test)]
mod tests {
    use logi::pb::event::Kind;

    use super::*;

    fn event(seq: u64) -> Arc<pb::Event> {
        Arc::new(pb::Event {
            topic: "t".into(),
            cursor: Some(pb::Cursor {
                epoch: 1,
                offset: seq * EPHEMERAL_SPAN,
            }),
            occurred_at: None,
            kind: Some(Kind::OtpIssued(pb::OtpIssued::default())),
        })
    }

    fn seqs(offered: Offered) -> Vec<u64> {
        match offered {
            Offered::Deliver(events) => events.iter().map(|e| seq_of(e)).collect(),
            Offered::Overflow => panic!("overflow"),
        }
    }

    const GRACE: Duration = Duration::from_millis(100);

    #[test]
    fn committed_events_go_out_as_they_come() {
        let mut s = Sequence::new(Order::Committed);
        let now = Instant::now();
        assert!(s.started());
        assert_eq!(seqs(s.offer(event(3), now)), [3]);
        assert_eq!(s.next_ephemeral(), Some(3 * EPHEMERAL_SPAN + 1));
        assert_eq!(s.gap(now + GRACE, GRACE), None);
    }

    #[test]
    fn sequenced_events_wait_for_the_head_then_go_out_in_order() {
        let mut s = Sequence::new(Order::Sequenced);
        let now = Instant::now();
        assert_eq!(seqs(s.offer(event(6), now)), Vec::<u64>::new());
        assert_eq!(seqs(s.offer(event(5), now)), Vec::<u64>::new());
        assert!(!s.started());
        assert_eq!(
            s.next_ephemeral(),
            None,
            "no offset before the head is known"
        );
        // The store's head is 5: 5 was there already, 6 follows it.
        let out: Vec<u64> = s.start(5, now).iter().map(|e| seq_of(e)).collect();
        assert_eq!(out, [6]);
        assert_eq!(
            seqs(s.offer(event(8), now)),
            Vec::<u64>::new(),
            "7 is missing"
        );
        assert_eq!(seqs(s.offer(event(6), now)), Vec::<u64>::new(), "twice");
        assert_eq!(seqs(s.offer(event(7), now)), [7, 8]);
        assert_eq!(s.gap(now + GRACE, GRACE), None);
        assert_eq!(s.next_ephemeral(), Some(8 * EPHEMERAL_SPAN + 1));
    }

    #[test]
    fn a_gap_is_reported_after_the_grace_period() {
        let mut s = Sequence::new(Order::Sequenced);
        let t0 = Instant::now();
        s.start(2, t0);
        s.offer(event(4), t0);
        assert_eq!(s.gap(t0 + GRACE / 2, GRACE), None, "3 may still come");
        assert_eq!(s.gap_due(GRACE), Some(t0 + GRACE));
        assert_eq!(s.gap(t0 + GRACE, GRACE), Some(2));
        // The fill brings 3 (and 4 again).
        let later = t0 + GRACE;
        assert_eq!(seqs(s.offer(event(3), later)), [3, 4]);
        assert_eq!(seqs(s.offer(event(4), later)), Vec::<u64>::new());
        assert_eq!(s.gap(later + GRACE, GRACE), None);
    }

    #[test]
    fn a_head_read_past_what_arrived_opens_a_gap() {
        let mut s = Sequence::new(Order::Sequenced);
        let t0 = Instant::now();
        s.start(2, t0);
        // A subscriber read head 4 from the store before 3 and 4 got here.
        assert!(s.start(4, t0).is_empty());
        assert_eq!(
            s.head(),
            Some(2),
            "the head moves only with delivered events"
        );
        assert_eq!(s.gap(t0 + GRACE, GRACE), Some(2));
        assert!(s.unfillable(2));
        let later = t0 + GRACE / 2;
        assert_eq!(seqs(s.offer(event(3), later)), [3]);
        assert_eq!(
            s.gap(t0 + GRACE, GRACE),
            None,
            "progress restarts the grace period"
        );
        assert_eq!(s.gap(later + GRACE, GRACE), Some(3));
    }

    #[test]
    fn too_many_held_events_overflow() {
        let mut s = Sequence::new(Order::Sequenced);
        let now = Instant::now();
        s.start(0, now);
        for seq in 2..(MAX_HELD as u64 + 2) {
            assert_eq!(seqs(s.offer(event(seq), now)), Vec::<u64>::new());
        }
        assert_eq!(s.offer(event(MAX_HELD as u64 + 2), now), Offered::Overflow);
    }

    #[test]
    fn resume_cursors_raise_ephemeral_offsets_at_the_head() {
        let mut s = Sequence::new(Order::Committed);
        s.start(3, Instant::now());
        s.resumed_at(3 * EPHEMERAL_SPAN + 41);
        s.resumed_at(2 * EPHEMERAL_SPAN + 900);
        assert_eq!(s.next_ephemeral(), Some(3 * EPHEMERAL_SPAN + 42));
    }
}
