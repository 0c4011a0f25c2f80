//! Golden tests: every example frame of the two documents in `shared/spec/`, read
//! from the documents themselves, is produced value for value and type for type by
//! rendering the equivalent event.

use std::path::PathBuf;

use logi::auth::Role;
use logi::id::Id;
use logi::pb::{self, event::Kind};
use serde_json::Value;

use super::{Audience, render};
use crate::route::{ChannelsRoute, Dialect};

fn spec(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/spec")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the frame documents must sit beside the repository: {}: {e}",
            path.display()
        )
    })
}

/// Every JSON object in `text` that starts a line, parsed; blocks that are not JSON
/// (the logi document's annotated envelope) are skipped.
fn examples(text: &str) -> Vec<Value> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<Value> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "{" {
            let (mut depth, mut block) = (0i32, String::new());
            for line in &lines[i..] {
                depth += line.matches('{').count() as i32 - line.matches('}').count() as i32;
                block.push_str(line);
                block.push('\n');
                i += 1;
                if depth == 0 {
                    break;
                }
            }
            if let Ok(v) = serde_json::from_str::<Value>(&block)
                && !out.contains(&v)
            {
                out.push(v);
            }
        } else {
            i += 1;
        }
    }
    out
}

fn at(s: &str) -> Option<prost_types::Timestamp> {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let t = time::PrimitiveDateTime::parse(s, &format)
        .unwrap()
        .assume_utc();
    Some(prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: 0,
    })
}

fn booking(status: pb::BookingStatus) -> pb::Booking {
    pb::Booking {
        id: 123,
        user_id: "user123".into(),
        driver_id: "45".into(),
        status: status as i32,
        pickup: Some(pb::Place {
            latitude: 37.7749,
            longitude: -122.4194,
            address: "123 Main St".into(),
        }),
        dropoff: Some(pb::Place {
            latitude: 37.7749,
            longitude: -122.4194,
            address: "456 Elm St".into(),
        }),
        vehicle_type: "car".into(),
        price_estimate: 25.50,
        phone_number: "+1234567890".into(),
        pickup_time: at("2024-10-18 10:30:00"),
        dropoff_time: at("2024-10-18 11:00:00"),
        ..Default::default()
    }
}

fn event(topic: &str, kind: Kind) -> pb::Event {
    pb::Event {
        topic: topic.into(),
        cursor: None,
        occurred_at: None,
        kind: Some(kind),
    }
}

fn changed(topic: &str, b: pb::Booking, previous: pb::BookingStatus) -> pb::Event {
    event(
        topic,
        Kind::BookingChanged(pb::BookingChanged {
            booking: Some(b),
            previous_status: previous as i32,
        }),
    )
}

fn audience(dialect: Dialect, id: &str, role: Role) -> Audience {
    Audience {
        dialect,
        principal: Id::new(id).unwrap(),
        role,
    }
}

#[test]
fn every_channels_example_is_rendered_exactly() {
    use pb::BookingStatus::*;
    let rider = audience(
        Dialect::Channels(ChannelsRoute::UserBookings),
        "user123",
        Role::User,
    );
    let available = audience(
        Dialect::Channels(ChannelsRoute::DriverAvailable),
        "45",
        Role::Driver,
    );
    let confirmed = audience(
        Dialect::Channels(ChannelsRoute::DriverBookings),
        "45",
        Role::Driver,
    );
    let cancelled = pb::Booking {
        cancelled_by: pb::Canceller::Driver as i32,
        ..booking(Cancelled)
    };
    let location = pb::DriverLocation {
        driver_id: "45".into(),
        latitude: 37.7749,
        longitude: -122.4194,
        ..Default::default()
    };
    let cases = [
        (
            &rider,
            changed("user_user123_bookings", booking(OnTrip), Accepted),
        ),
        (
            &rider,
            event(
                "user_user123_bookings",
                Kind::OtpIssued(pb::OtpIssued {
                    booking_id: 123,
                    otp: "123456".into(),
                }),
            ),
        ),
        (
            &rider,
            event(
                "user_user123_bookings",
                Kind::DriverLocation(pb::DriverLocationChanged {
                    booking_id: 123,
                    booking_status: OnTrip as i32,
                    location: Some(location),
                }),
            ),
        ),
        (
            &available,
            changed("driver_45_bookings", booking(Accepted), Pending),
        ),
        (
            &available,
            changed("driver_45_bookings", booking(OnTrip), Accepted),
        ),
        (
            &available,
            changed("driver_45_bookings", booking(Completed), OnTrip),
        ),
        (
            &confirmed,
            changed("driver_45_bookings", booking(Accepted), Pending),
        ),
        (
            &confirmed,
            changed("driver_45_bookings", cancelled, Accepted),
        ),
        (
            &confirmed,
            changed("driver_45_bookings", booking(OnTrip), Accepted),
        ),
    ];
    let rendered: Vec<Value> = cases
        .iter()
        .map(|(who, e)| {
            let frames = render(e, who);
            assert_eq!(frames.len(), 1, "{e:?}");
            frames.into_iter().next().unwrap()
        })
        .collect();
    let documented = examples(&spec("channels-dialect.md"));
    // Thirteen examples, eight distinct (the trip start reads the same for rider and driver).
    assert_eq!(
        documented.len(),
        8,
        "distinct example frames in the document"
    );
    for example in &documented {
        assert!(
            rendered.contains(example),
            "no event renders the documented frame\n{example:#}\nrendered:\n{rendered:#?}"
        );
    }
}

#[test]
fn every_logi_example_is_rendered_exactly() {
    use pb::BookingStatus::*;
    let rider = audience(Dialect::Logi, "user123", Role::User);
    let driver = audience(Dialect::Logi, "driver456", Role::Driver);
    let admin = audience(Dialect::Logi, "ops", Role::Admin);
    let accepted = pb::Booking {
        driver_id: "driver456".into(),
        ..booking(Accepted)
    };
    let location = pb::DriverLocation {
        driver_id: "driver456".into(),
        latitude: 37.7749,
        longitude: -122.4194,
        ..Default::default()
    };
    let offered = event(
        "driver_driver456_available_bookings",
        Kind::BookingOffered(pb::BookingOffered {
            booking: Some(booking(Pending)),
            distance_m: 0.0,
        }),
    );
    let frames: Vec<(String, Value)> = [
        (&driver, offered),
        (&rider, changed("user_user123_bookings", accepted, Pending)),
        (
            &rider,
            event(
                "user_user123_bookings",
                Kind::DriverLocation(pb::DriverLocationChanged {
                    booking_id: 123,
                    booking_status: OnTrip as i32,
                    location: Some(location),
                }),
            ),
        ),
        (
            &rider,
            changed("user_user123_bookings", booking(OnTrip), Accepted),
        ),
        (
            &admin,
            event(
                "admins",
                Kind::DriverStatus(pb::DriverStatusChanged {
                    driver_id: "driver123".into(),
                    status: pb::DriverStatus::Available as i32,
                    previous_status: pb::DriverStatus::Offline as i32,
                    vehicle_type: "car".into(),
                }),
            ),
        ),
    ]
    .iter()
    .flat_map(|(who, e)| render(e, who))
    .map(|frame| {
        // The envelope of the document: user_id (the recipient, empty for admins), type, payload.
        let keys: Vec<&str> = frame
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["user_id", "type", "payload"]);
        (
            frame["type"].as_str().unwrap().to_owned(),
            frame["payload"].clone(),
        )
    })
    .collect();

    let documented = examples(&spec("logi-dialect.txt"));
    assert_eq!(documented.len(), 5, "payload examples in the document");
    let types = [
        "new_booking_request",
        "booking_accepted",
        "driver_location",
        "status_update",
        "driver_status_update",
    ];
    for (kind, mut example) in types.into_iter().zip(documented) {
        // Booking ids are core-svc's numbers, sent as strings: "123" where the
        // document writes "booking123". Nothing else is adjusted.
        if example.get("booking_id").is_some() {
            assert_eq!(example["booking_id"], "booking123");
            example["booking_id"] = Value::from("123");
        }
        assert!(
            frames.iter().any(|(k, p)| k == kind && *p == example),
            "no {kind} frame has the documented payload\n{example:#}\nrendered:\n{frames:#?}"
        );
    }
    // Envelopes name the recipient, and nobody for admins.
    let admin_frame = render(&changed("admins", booking(OnTrip), Accepted), &admin).remove(0);
    assert_eq!(admin_frame["user_id"], "");
    let rider_frame = render(
        &changed("user_user123_bookings", booking(OnTrip), Accepted),
        &rider,
    )
    .remove(0);
    assert_eq!(rider_frame["user_id"], "user123");
}
