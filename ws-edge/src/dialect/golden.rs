//! Golden tests: every example frame of the two frame documents, kept as JSON values
//! in `ws-edge/tests/frames/` beside the event each is rendered from, is produced
//! exactly — compared as JSON text, so key order counts as well as values and types.
//!
//! A fixture holds the document's example booking once (`booking`), then cases:
//! `documented` (the documents' examples) and `added` (frames the README adds). A
//! case names its audience (route, principal, role), its event (the proto fields in
//! snake case, enums by their short names, times as the documents write them, and
//! a booking as the fields that differ from the example booking) and the frames
//! the event becomes, in order. Booking ids are core-svc's numbers: the logi
//! document's `"booking123"` is `"123"` here.

use logi::auth::Role;
use logi::id::Id;
use logi::pb::{self, event::Kind};
use serde_json::{Map, Value};

use super::{Audience, render};
use crate::route;

const CHANNELS: &str = include_str!("../../tests/frames/channels.json");
const LOGI: &str = include_str!("../../tests/frames/logi.json");

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} must be a string in {v}"))
}

fn f64_of(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or_default()
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or_default()
}

fn at(v: &Value, key: &str) -> Option<prost_types::Timestamp> {
    let s = v.get(key)?.as_str()?;
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let t = time::PrimitiveDateTime::parse(s, &format)
        .unwrap_or_else(|e| panic!("{key} {s:?}: {e}"))
        .assume_utc();
    Some(prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: 0,
    })
}

fn booking_status(name: &str) -> i32 {
    pb::BookingStatus::from_str_name(&format!("BOOKING_STATUS_{name}"))
        .unwrap_or_else(|| panic!("no booking status {name}")) as i32
}

fn driver_status(name: &str) -> i32 {
    pb::DriverStatus::from_str_name(&format!("DRIVER_STATUS_{name}"))
        .unwrap_or_else(|| panic!("no driver status {name}")) as i32
}

fn place(v: &Value) -> Option<pb::Place> {
    v.as_object().map(|_| pb::Place {
        latitude: f64_of(v, "latitude"),
        longitude: f64_of(v, "longitude"),
        address: str_of(v, "address").to_owned(),
    })
}

/// The example booking with the fields of `changes` in place of its own.
fn booking(example: &Value, changes: &Value) -> pb::Booking {
    let mut fields: Map<String, Value> = example.as_object().expect("an object").clone();
    fields.extend(changes.as_object().expect("an object").clone());
    let b = Value::Object(fields);
    let cancelled_by = b
        .get("cancelled_by")
        .and_then(Value::as_str)
        .map_or(0, |c| {
            pb::Canceller::from_str_name(&format!("CANCELLER_{c}")).expect("a canceller") as i32
        });
    pb::Booking {
        id: u64_of(&b, "id"),
        user_id: str_of(&b, "user_id").to_owned(),
        driver_id: str_of(&b, "driver_id").to_owned(),
        status: booking_status(str_of(&b, "status")),
        pickup: place(&b["pickup"]),
        dropoff: place(&b["dropoff"]),
        vehicle_type: str_of(&b, "vehicle_type").to_owned(),
        price_estimate: f64_of(&b, "price_estimate"),
        phone_number: str_of(&b, "phone_number").to_owned(),
        pickup_time: at(&b, "pickup_time"),
        dropoff_time: at(&b, "dropoff_time"),
        cancelled_by,
        ..Default::default()
    }
}

fn event(example: &Value, e: &Value) -> pb::Event {
    let kind = if let Some(c) = e.get("booking_changed") {
        Kind::BookingChanged(pb::BookingChanged {
            booking: Some(booking(example, &c["booking"])),
            previous_status: booking_status(str_of(c, "previous_status")),
        })
    } else if let Some(o) = e.get("booking_offered") {
        Kind::BookingOffered(pb::BookingOffered {
            booking: Some(booking(example, &o["booking"])),
            distance_m: f64_of(o, "distance_m"),
        })
    } else if let Some(c) = e.get("offer_closed") {
        let reason =
            pb::offer_closed::Reason::from_str_name(&format!("REASON_{}", str_of(c, "reason")))
                .expect("an offer-closed reason");
        Kind::OfferClosed(pb::OfferClosed {
            booking_id: u64_of(c, "booking_id"),
            reason: reason as i32,
            booking: None,
        })
    } else if let Some(o) = e.get("otp_issued") {
        Kind::OtpIssued(pb::OtpIssued {
            booking_id: u64_of(o, "booking_id"),
            otp: str_of(o, "otp").to_owned(),
        })
    } else if let Some(l) = e.get("driver_location") {
        let at = &l["location"];
        Kind::DriverLocation(pb::DriverLocationChanged {
            booking_id: u64_of(l, "booking_id"),
            booking_status: booking_status(str_of(l, "booking_status")),
            location: Some(pb::DriverLocation {
                driver_id: str_of(at, "driver_id").to_owned(),
                latitude: f64_of(at, "latitude"),
                longitude: f64_of(at, "longitude"),
                ..Default::default()
            }),
        })
    } else if let Some(d) = e.get("driver_status") {
        Kind::DriverStatus(pb::DriverStatusChanged {
            driver_id: str_of(d, "driver_id").to_owned(),
            status: driver_status(str_of(d, "status")),
            previous_status: driver_status(str_of(d, "previous_status")),
            vehicle_type: str_of(d, "vehicle_type").to_owned(),
            unseen: d.get("unseen").and_then(Value::as_bool).unwrap_or_default(),
        })
    } else {
        panic!("no event kind in {e}")
    };
    pb::Event {
        topic: str_of(e, "topic").to_owned(),
        cursor: None,
        occurred_at: None,
        kind: Some(kind),
    }
}

fn audience(a: &Value) -> Audience {
    let route = route::find(str_of(a, "route")).expect("a route");
    let role = Role::parse(str_of(a, "role")).expect("a role");
    Audience {
        dialect: route.dialect,
        principal: Id::new(str_of(a, "principal")).expect("an id"),
        role,
    }
}

/// Renders every case of `fixture`; returns how many cases each section held.
fn check(fixture: &str) -> (usize, usize) {
    let fixture: Value = serde_json::from_str(fixture).expect("the fixture is JSON");
    let example = &fixture["booking"];
    let mut counts = [0, 0];
    for (section, count) in ["documented", "added"].into_iter().zip(&mut counts) {
        for case in fixture[section].as_array().expect("a list of cases") {
            let e = event(example, &case["event"]);
            let who = audience(&case["audience"]);
            let rendered: Vec<String> = render(&e, &who).iter().map(Value::to_string).collect();
            let expected: Vec<String> = case["frames"]
                .as_array()
                .expect("a list of frames")
                .iter()
                .map(Value::to_string)
                .collect();
            assert_eq!(
                rendered, expected,
                "{section} case for {} renders other frames",
                case["event"]
            );
            *count += 1;
        }
    }
    (counts[0], counts[1])
}

#[test]
fn every_channels_example_is_rendered_exactly() {
    // Thirteen examples in the document, nine cases: the repeats are the same frame
    // for the same audience, except the trip start, sent to rider and driver alike.
    let (documented, added) = check(CHANNELS);
    assert_eq!((documented, added), (9, 6));
}

#[test]
fn every_logi_example_is_rendered_exactly() {
    let (documented, added) = check(LOGI);
    assert_eq!((documented, added), (5, 5));
}

#[test]
fn text_comparison_sees_key_order() {
    // What the golden tests rely on: the same keys and values in another order are
    // another text (serde_json keeps insertion order in this workspace).
    let documented: Value =
        serde_json::from_str(r#"{"type":"t","otp":"1","booking_id":1}"#).unwrap();
    let reordered: Value =
        serde_json::from_str(r#"{"otp":"1","type":"t","booking_id":1}"#).unwrap();
    assert_eq!(documented, reordered);
    assert_ne!(documented.to_string(), reordered.to_string());
}
