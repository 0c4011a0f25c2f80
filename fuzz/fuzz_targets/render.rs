//! Event → frame, for every dialect, route and role: never a panic, every frame a
//! JSON object with a "type" that serializes and reads back the same, and the
//! frames written straight to text (positions) the very text of the dialect's own.
//!
//! Input: a first byte choosing how the event is made (even: the rest decoded as
//! protobuf, as it arrives from core-svc; odd: built field by field from the rest,
//! where odd values such as NaN, huge timestamps and unknown enum values are
//! common), then the event.
#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use logi::pb::{self, event::Kind};
use prost::Message;
use serde_json::Value;
use ws_edge::dialect::{self, Audience};

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let event = if mode % 2 == 0 {
        match pb::Event::decode(rest) {
            Ok(event) => event,
            Err(_) => return,
        }
    } else {
        match logi_fuzz::event(&mut Unstructured::new(rest)) {
            Ok(event) => event,
            Err(_) => return,
        }
    };
    // Every booking an event carries is also shown as a snapshot would show it.
    let snapshot = match &event.kind {
        Some(Kind::Snapshot(s)) => Some(s.clone()),
        Some(Kind::BookingChanged(pb::BookingChanged { booking, .. }))
        | Some(Kind::OfferClosed(pb::OfferClosed { booking, .. })) => {
            booking.clone().map(|b| pb::Snapshot {
                bookings: vec![b],
                ..Default::default()
            })
        }
        Some(Kind::BookingOffered(offer)) => Some(pb::Snapshot {
            offers: vec![offer.clone()],
            ..Default::default()
        }),
        Some(Kind::DriverPosition(driver)) => Some(pb::Snapshot {
            drivers: vec![driver.clone()],
            ..Default::default()
        }),
        _ => None,
    };
    for audience in logi_fuzz::audiences() {
        let frames = dialect::render(&event, &audience);
        for frame in &frames {
            check(frame, &audience);
        }
        if let Some(text) = dialect::text::render(&event, &audience) {
            let slow: Vec<String> = frames.iter().map(Value::to_string).collect();
            assert_eq!(
                text, slow,
                "straight to text differs from the dialect's frame"
            );
        }
        if let Some(s) = &snapshot {
            for frame in dialect::snapshot(s, &event.topic, &audience) {
                check(&frame, &audience);
            }
        }
    }
});

fn check(frame: &Value, audience: &Audience) {
    let object = frame.as_object().expect("a frame is a JSON object");
    let kind = object.get("type").and_then(Value::as_str);
    assert!(kind.is_some_and(|k| !k.is_empty()), "no type: {frame}");
    if audience.dialect == ws_edge::route::Dialect::Logi {
        assert!(
            object.get("user_id").is_some_and(Value::is_string),
            "{frame}"
        );
        assert!(
            object.get("payload").is_some_and(Value::is_object),
            "{frame}"
        );
    }
    let text = serde_json::to_string(frame).expect("a frame serializes");
    let back: Value = serde_json::from_str(&text).expect("a frame reads back");
    assert!(same(&back, frame), "{text} read back as {back}");
}

/// Equal, but for the last digits of a float: serde_json's default float parsing is
/// best-effort (exact only with its `float_roundtrip` feature), and apps parse the
/// frames with their own parsers anyway.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            // Relative, but never finer than the normal range: subnormal numbers
            // have fewer digits of precision.
            let scale = x.abs().max(y.abs()).max(f64::MIN_POSITIVE);
            x == y || (x - y).abs() <= f64::EPSILON * 4.0 * scale
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && same(vx, vy))
        }
        _ => a == b,
    }
}
