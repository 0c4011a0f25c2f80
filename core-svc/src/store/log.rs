//! The durable event log's rows as subscribers see them, for every store.

use logi::pb;
use prost::Message;

use crate::error::Error;
use crate::hub::EPHEMERAL_SPAN;
use crate::model::{from_millis, timestamp};

/// `event` as published and replayed: its topic, its cursor (the sequence number
/// times [`EPHEMERAL_SPAN`]) and the time it was stored with, to the millisecond,
/// so that a live event and its replay read the same.
pub fn stamped(mut event: pb::Event, topic: &str, epoch: u64, seq: i64, at_ms: i64) -> pb::Event {
    event.topic = topic.to_owned();
    event.cursor = Some(pb::Cursor {
        epoch,
        offset: seq as u64 * EPHEMERAL_SPAN,
    });
    event.occurred_at = Some(timestamp(from_millis(at_ms)));
    event
}

/// A stored row of `topic`: its payload is a `pb::Event` with only `kind` set.
///
/// # Errors
/// [`Error::Storage`] when the payload does not decode.
pub fn replayed(
    topic: &str,
    epoch: u64,
    seq: i64,
    at_ms: i64,
    payload: &[u8],
) -> Result<pb::Event, Error> {
    let event = pb::Event::decode(payload)
        .map_err(|e| Error::storage_from(format!("event {topic}#{seq} is corrupt"), e))?;
    Ok(stamped(event, topic, epoch, seq, at_ms))
}

/// The payload stored for an event of `kind`.
pub fn payload(kind: pb::event::Kind) -> (pb::Event, Vec<u8>) {
    let event = pb::Event {
        kind: Some(kind),
        ..Default::default()
    };
    let bytes = event.encode_to_vec();
    (event, bytes)
}
