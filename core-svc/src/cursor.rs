//! Resume cursors: whether the cursor a subscriber sends for a topic can be
//! honoured against the topic's durable bounds, and what the hub is told of it.
//!
//! Cursors come from outside (apps through ws-edge, or any gRPC client), so every
//! value of one must be safe here: a refused cursor only earns the subscriber a
//! `ResyncRequired` event.

use logi::pb::{self, resync_required::Reason};

use crate::hub::{self, EPHEMERAL_SPAN, Hub};
use crate::store::TopicState;

/// Why a cursor cannot be resumed from; the subscriber is sent a `ResyncRequired`
/// with these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub detail: String,
}

/// Whether a same-epoch cursor could have been handed out: not past the last
/// durable event, and not so far into the ephemeral range that raising the counter
/// past it would leave no offsets for further positions.
pub fn plausible(offset: u64, last_seq: u64) -> bool {
    let (seq, ephemeral) = hub::split(offset);
    seq <= last_seq && ephemeral < EPHEMERAL_SPAN / 2
}

/// The offset to resume after, when `cursor` can be honoured by this event log
/// (`epoch`) for a topic in `state`.
///
/// # Errors
/// [`Refusal`] for a cursor of another epoch, one past what was written, or one
/// whose following events were removed by retention.
pub fn check(cursor: pb::Cursor, epoch: u64, state: TopicState) -> Result<u64, Refusal> {
    let refuse = |reason, detail| Err(Refusal { reason, detail });
    if cursor.epoch != epoch {
        return refuse(
            Reason::EpochChanged,
            format!(
                "cursor epoch {} is not this event log's epoch {epoch}",
                cursor.epoch
            ),
        );
    }
    if !plausible(cursor.offset, state.last_seq) {
        return refuse(
            Reason::CursorAhead,
            format!(
                "cursor offset {} is past the last event written",
                cursor.offset
            ),
        );
    }
    if hub::split(cursor.offset).0 < state.pruned_seq {
        return refuse(
            Reason::HistoryTruncated,
            "events after the cursor were removed by retention".to_owned(),
        );
    }
    Ok(cursor.offset)
}

/// Checks a subscriber's `cursor` for `topic` (if it sent one) and tells `hub` the
/// topic's durable head and, when the cursor is honoured, the offset the subscriber
/// resumes from, so that later ephemeral offsets exceed both. A refused cursor is
/// not told: it could be anywhere in the ephemeral range and use it up.
pub fn resume(
    hub: &Hub,
    topic: &str,
    epoch: u64,
    state: TopicState,
    cursor: Option<pb::Cursor>,
) -> Option<Result<u64, Refusal>> {
    let verdict = cursor.map(|c| check(c, epoch, state));
    let resume_offset = verdict.as_ref().and_then(|v| v.as_ref().ok().copied());
    hub.observe(topic, state.last_seq, resume_offset);
    verdict
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use logi::pb::event::Kind;

    use super::*;
    use crate::hub::Next;

    const STATE: TopicState = TopicState {
        last_seq: 5,
        pruned_seq: 2,
    };

    fn at(offset: u64) -> Option<pb::Cursor> {
        Some(pb::Cursor { epoch: 7, offset })
    }

    /// Resumes `cursor` on a fresh hub, then returns the verdict and the offset the
    /// next position gets.
    async fn resume_then_position(
        cursor: Option<pb::Cursor>,
    ) -> (Option<Result<u64, Refusal>>, u64) {
        let hub = Hub::new(7, 4);
        let mut sub = hub.subscribe(vec!["admins".into()]).unwrap();
        let verdict = resume(&hub, "admins", 7, STATE, cursor);
        let kind = Kind::DriverLocation(pb::DriverLocationChanged::default());
        assert!(hub.publish_ephemeral("admins", kind, SystemTime::now()));
        match sub.next().await {
            Next::Event(e) => (verdict, e.cursor.unwrap().offset),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn the_checks_in_order() {
        let s = EPHEMERAL_SPAN;
        let reason = |c| check(c, 7, STATE).unwrap_err().reason;
        assert_eq!(check(at(3 * s).unwrap(), 7, STATE), Ok(3 * s));
        assert_eq!(check(at(5 * s + 41).unwrap(), 7, STATE), Ok(5 * s + 41));
        let other_epoch = pb::Cursor {
            epoch: 8,
            offset: 6 * s,
        };
        assert_eq!(reason(other_epoch), Reason::EpochChanged);
        assert_eq!(reason(at(6 * s).unwrap()), Reason::CursorAhead);
        assert_eq!(reason(at(5 * s + s / 2).unwrap()), Reason::CursorAhead);
        assert_eq!(reason(at(s).unwrap()), Reason::HistoryTruncated);
        assert_eq!(
            check(at(6 * s).unwrap(), 7, STATE).unwrap_err().detail,
            "cursor offset 6000000000 is past the last event written"
        );
        assert_eq!(resume_then_position(None).await, (None, 5 * s + 1));
    }

    #[tokio::test]
    async fn positions_after_an_accepted_cursor_follow_it() {
        let s = EPHEMERAL_SPAN;
        let (verdict, next) = resume_then_position(at(5 * s + 41)).await;
        assert_eq!((verdict, next), (Some(Ok(5 * s + 41)), 5 * s + 42));
    }

    /// Found by `fuzz/fuzz_targets/cursor.rs`: a same-epoch cursor at the head but
    /// deep in the ephemeral range was refused, yet still raised the hub's counter
    /// to itself, so the topic's positions ran out of offsets (all of them, for
    /// `head + EPHEMERAL_SPAN - 1`) until its next durable event.
    #[tokio::test]
    async fn a_refused_cursor_leaves_the_hubs_counter_alone() {
        let s = EPHEMERAL_SPAN;
        for offset in [5 * s + 999_967_232, 5 * s + s - 1] {
            let (verdict, next) = resume_then_position(at(offset)).await;
            assert_eq!(verdict.unwrap().unwrap_err().reason, Reason::CursorAhead);
            assert_eq!(next, 5 * s + 1, "after cursor {offset}");
        }
    }
}
