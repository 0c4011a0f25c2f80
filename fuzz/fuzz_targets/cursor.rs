//! Resume cursors of `EventService.Subscribe`, as core-svc reads them: each cursor
//! of the request is checked against its topic's bounds and told to the hub by
//! `core_svc::cursor::resume`, the function `Subscribe` calls.
//!
//! Input: 4 bytes of the topic's last durable sequence number and 4 of its pruned
//! one (little-endian; the store's, not the caller's), then an encoded
//! `SubscribeRequest`. The event log's epoch is 7.
//!
//! Whatever the cursors, a refusal says why, an accepted cursor is one that could
//! have been handed out, and the hub numbers the next position after everything it
//! was told with at least half of the ephemeral range still ahead.
#![no_main]

use core_svc::cursor::{self, plausible};
use core_svc::hub::{self, EPHEMERAL_SPAN, Hub, Next};
use core_svc::store::TopicState;
use libfuzzer_sys::fuzz_target;
use logi::pb::{self, event::Kind, resync_required::Reason};
use prost::Message;

const EPOCH: u64 = 7;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let word = |at: usize| u64::from(u32::from_le_bytes(data[at..at + 4].try_into().unwrap()));
    let last_seq = word(0);
    let state = TopicState {
        last_seq,
        pruned_seq: word(4) % (last_seq + 1),
    };
    let Ok(request) = pb::SubscribeRequest::decode(&data[8..]) else {
        return;
    };
    let hub = Hub::new(EPOCH, 4);
    for (topic, c) in request.resume {
        let mut sub = hub.subscribe(vec![topic.clone()]).expect("the hub is open");
        let verdict = cursor::resume(&hub, &topic, EPOCH, state, Some(c));
        let (seq, _) = hub::split(c.offset);
        match verdict.expect("a cursor was given") {
            Ok(offset) => {
                assert_eq!(offset, c.offset);
                assert_eq!(c.epoch, EPOCH);
                assert!(plausible(offset, state.last_seq));
                assert!(seq >= state.pruned_seq);
            }
            Err(refusal) => {
                assert!(!refusal.detail.is_empty());
                let expected = if c.epoch != EPOCH {
                    Reason::EpochChanged
                } else if !plausible(c.offset, state.last_seq) {
                    Reason::CursorAhead
                } else {
                    Reason::HistoryTruncated
                };
                assert_eq!(refusal.reason, expected, "{c:?} {state:?}");
            }
        }
        // The next position on this topic must still get an offset, after the head
        // and after an accepted cursor.
        let kind = Kind::DriverLocation(pb::DriverLocationChanged::default());
        assert!(
            hub.publish_ephemeral(&topic, kind, std::time::SystemTime::now()),
            "no offset left for positions after cursor {c:?} at {state:?}"
        );
        let Next::Event(event) = futures::executor::block_on(sub.next()) else {
            panic!("the position was not delivered");
        };
        let next = event.cursor.expect("numbered").offset;
        let (next_seq, counter) = hub::split(next);
        assert_eq!(next_seq, state.last_seq);
        // `plausible` keeps cursors out of the upper half of the ephemeral range so
        // that resuming leaves room for as many positions again.
        assert!(
            counter <= EPHEMERAL_SPAN / 2,
            "cursor {c:?} at {state:?} left {} offsets for positions",
            EPHEMERAL_SPAN - counter
        );
        assert!(next > state.last_seq * EPHEMERAL_SPAN);
        if c.epoch == EPOCH && plausible(c.offset, state.last_seq) {
            assert!(next > c.offset, "{next} repeats cursor {c:?}");
        }
    }
});
