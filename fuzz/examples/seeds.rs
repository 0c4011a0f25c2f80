//! Writes the seed corpus, `corpus/<target>/`, from real examples: the frames the
//! README documents, tokens minted by `logi::auth::Signer`, the subscribe requests
//! ws-edge sends with its cursors, and the events of the README's trip.
//!
//! `cargo run --example seeds` from `fuzz/`. Tokens are valid for 70 years.

use std::path::Path;
use std::time::Duration;

use logi::auth::{Role, Signer};
use logi::pb::{self, event::Kind};
use logi_fuzz::{HEADER, SECRET, now};
use prost::Message;
use serde_json::json;

const EPHEMERAL_SPAN: u64 = core_svc::hub::EPHEMERAL_SPAN;
const TTL: Duration = Duration::from_secs(70 * 365 * 24 * 3600);

fn write(target: &str, name: &str, bytes: impl AsRef<[u8]>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("seed written");
}

fn main() {
    inbound();
    let tokens = tokens();
    handshake(&tokens);
    jwt(&tokens);
    cursor();
    render();
}

fn inbound() {
    let frames = [
        (
            "readme-channels-strings",
            r#"{"type": "location_update", "current_latitude": "37.7749", "current_longitude": "-122.4194"}"#,
        ),
        (
            "readme-channels-numbers",
            r#"{"type": "location_update", "current_latitude": 37.7749, "current_longitude": -122.4194}"#,
        ),
        (
            "readme-logi",
            r#"{"type": "driver_location", "payload": {"latitude": 37.7749, "longitude": -122.4194}}"#,
        ),
        ("not-json", "hello"),
        ("no-type", "[1]"),
        ("unknown-type", r#"{"type": "chat"}"#),
        (
            "bad-coordinate",
            r#"{"type": "location_update", "current_latitude": "north", "current_longitude": 1}"#,
        ),
        ("logi-no-payload", r#"{"type": "driver_location"}"#),
    ];
    for (name, frame) in frames {
        write("inbound", name, frame);
    }
}

/// Tokens for the README's demo principals, as `logi up` and `logi token` mint them.
fn tokens() -> Vec<(&'static str, String)> {
    let signer = Signer::hs256(SECRET).expect("the secret is not empty");
    let strict = signer
        .clone()
        .issuer(Some("logi".into()))
        .audience(Some("apps".into()));
    let mint = |s: &Signer, sub, role| s.mint(sub, role, TTL).expect("HS256 signs");
    vec![
        ("rider", mint(&signer, "12", Role::User)),
        ("driver", mint(&signer, "45", Role::Driver)),
        ("admin", mint(&signer, "ops", Role::Admin)),
        ("service", mint(&signer, "ws-edge", Role::Service)),
        ("rider-iss-aud", mint(&strict, "12", Role::User)),
    ]
}

fn claims(sub: &str, role: &str) -> String {
    let now = now();
    json!({"sub": sub, "role": role, "exp": now + TTL.as_secs(), "iat": now}).to_string()
}

fn handshake(tokens: &[(&str, String)]) {
    let routes = [
        ("rider-channels", "/regular_user/ws/bookings/", "12", "user"),
        (
            "driver-available",
            "/driver/ws/available_bookings/",
            "45",
            "driver",
        ),
        ("driver-bookings", "/driver/ws/bookings/", "45", "driver"),
        ("admin-logi", "/ws", "ops", "admin"),
        ("service-logi", "/ws", "ws-edge", "service"),
        ("rider-wrong-route", "/driver/ws/bookings", "12", "user"),
    ];
    for (name, path, sub, role) in routes {
        write(
            "handshake",
            &format!("signed-{name}"),
            format!("{path}?token=$JWT\n{}", claims(sub, role)),
        );
    }
    for (name, token) in tokens {
        write(
            "handshake",
            &format!("minted-{name}"),
            format!("/ws?token={token}"),
        );
    }
    write("handshake", "no-token", "/ws");
    write("handshake", "empty-token", "/ws?token=");
    write("handshake", "two-tokens", "/ws?token=a&token=$JWT\n{}");
    write(
        "handshake",
        "unknown-path",
        format!("/nope?token=$JWT\n{}", claims("12", "user")),
    );
    write("handshake", "bad-escape", "/ws?token=%ZZ&x=%E2%82");
}

fn jwt(tokens: &[(&str, String)]) {
    for (name, token) in tokens {
        write("jwt", &format!("minted-{name}"), token);
    }
    let exp = now() + TTL.as_secs();
    let signed = [
        ("signer-claims", HEADER.to_owned(), claims("45", "driver")),
        (
            "simplejwt-access",
            HEADER.to_owned(),
            json!({"token_type": "access", "exp": exp, "iat": now(), "jti": "d5c3", "user_id": 12, "role": "user"}).to_string(),
        ),
        (
            "simplejwt-refresh",
            HEADER.to_owned(),
            json!({"token_type": "refresh", "exp": exp, "user_id": 12, "role": "user"})
                .to_string(),
        ),
        (
            "iss-aud",
            HEADER.to_owned(),
            json!({"sub": "12", "role": "user", "exp": exp, "iss": "logi", "aud": ["apps", "web"]})
                .to_string(),
        ),
        (
            "future-iat",
            HEADER.to_owned(),
            json!({"sub": "12", "role": "user", "exp": exp, "iat": exp - 60}).to_string(),
        ),
        (
            "nbf",
            HEADER.to_owned(),
            json!({"sub": "12", "role": "user", "exp": exp, "nbf": 1_700_000_000u64})
                .to_string(),
        ),
        (
            "crit",
            r#"{"alg":"HS256","crit":["b64"],"b64":true}"#.to_owned(),
            claims("12", "user"),
        ),
        (
            "kid",
            r#"{"alg":"HS256","typ":"JWT","kid":"2024-10"}"#.to_owned(),
            claims("ops", "admin"),
        ),
    ];
    for (name, header, claims) in signed {
        write(
            "jwt",
            &format!("signed-{name}"),
            format!("{header}\n{claims}"),
        );
    }
    write("jwt", "not-a-jwt", "not.a.jwt");
}

/// A subscribe request as ws-edge sends it, after a topic state of `last_seq`
/// durable events of which `pruned` were removed.
fn cursor() {
    let request = |last_seq: u32, pruned: u32, cursors: &[(&str, u64, u64)]| {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&last_seq.to_le_bytes());
        bytes.extend_from_slice(&pruned.to_le_bytes());
        let r = pb::SubscribeRequest {
            topics: cursors.iter().map(|(t, _, _)| (*t).to_owned()).collect(),
            resume: cursors
                .iter()
                .map(|(t, epoch, offset)| {
                    (
                        (*t).to_owned(),
                        pb::Cursor {
                            epoch: *epoch,
                            offset: *offset,
                        },
                    )
                })
                .collect(),
            heads: false,
            snapshots: false,
        };
        bytes.extend_from_slice(&r.encode_to_vec());
        bytes
    };
    let s = EPHEMERAL_SPAN;
    let seeds = [
        ("durable", request(5, 0, &[("admins", 7, 3 * s)])),
        ("head", request(5, 0, &[("user_12_bookings", 7, 5 * s)])),
        (
            "ephemeral",
            request(5, 0, &[("user_12_bookings", 7, 5 * s + 41)]),
        ),
        ("ahead", request(5, 0, &[("admins", 7, 6 * s)])),
        ("pruned", request(5, 2, &[("admins", 7, s)])),
        ("other-epoch", request(5, 0, &[("admins", 8, 3 * s)])),
        (
            "driver-topics",
            request(
                3,
                1,
                &[
                    ("driver_45_available_bookings", 7, 3 * s + 2),
                    ("driver_45_bookings", 7, 2 * s),
                ],
            ),
        ),
        ("empty-log", request(0, 0, &[("admins", 7, 0)])),
        // What the cursor target found: refused, yet it used up the hub's offsets.
        (
            "found-refused-cursor-deep-at-head",
            request(5, 0, &[("admins", 7, 5 * s + 999_967_232)]),
        ),
    ];
    for (name, bytes) in seeds {
        write("cursor", name, bytes);
    }
}

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

/// The events of the README's trip: booking 1 of rider 12, driver 45.
fn render() {
    let place = |address: &str, latitude, longitude| {
        Some(pb::Place {
            latitude,
            longitude,
            address: address.into(),
        })
    };
    let booking = |status: pb::BookingStatus| pb::Booking {
        id: 1,
        user_id: "12".into(),
        driver_id: if status == pb::BookingStatus::Pending {
            String::new()
        } else {
            "45".into()
        },
        status: status as i32,
        pickup: place("123 Main St", 37.7749, -122.4194),
        dropoff: place("456 Elm St", 37.7849, -122.4094),
        vehicle_type: "car".into(),
        price_estimate: 12.5,
        phone_number: "+1234567890".into(),
        pickup_time: ts(1_795_000_000),
        dropoff_time: ts(1_795_000_900),
        created_at: ts(1_794_999_000),
        updated_at: ts(1_795_000_900),
        cancelled_by: 0,
        cancel_reason: String::new(),
        otp: String::new(),
        distance_m: 0.0,
    };
    let event = |topic: &str, offset: u64, kind: Kind| pb::Event {
        topic: topic.into(),
        cursor: Some(pb::Cursor { epoch: 7, offset }),
        occurred_at: ts(1_795_000_000),
        kind: Some(kind),
    };
    let changed = |status, previous: pb::BookingStatus| {
        Kind::BookingChanged(pb::BookingChanged {
            booking: Some(booking(status)),
            previous_status: previous as i32,
        })
    };
    use pb::BookingStatus::{Accepted, Cancelled, Completed, OnTrip, Pending, Unspecified};
    let s = EPHEMERAL_SPAN;
    let mut cancelled = booking(Cancelled);
    cancelled.cancelled_by = pb::Canceller::Driver as i32;
    let events = [
        (
            "rider-pending",
            event("user_12_bookings", s, changed(Pending, Unspecified)),
        ),
        (
            "rider-accepted",
            event("user_12_bookings", 2 * s, changed(Accepted, Pending)),
        ),
        (
            "rider-otp",
            event(
                "user_12_bookings",
                3 * s,
                Kind::OtpIssued(pb::OtpIssued {
                    booking_id: 1,
                    otp: "321184".into(),
                }),
            ),
        ),
        (
            "rider-location",
            event(
                "user_12_bookings",
                3 * s + 1,
                Kind::DriverLocation(pb::DriverLocationChanged {
                    booking_id: 1,
                    booking_status: Accepted as i32,
                    location: Some(pb::DriverLocation {
                        driver_id: "45".into(),
                        latitude: 37.776,
                        longitude: -122.418,
                        heading: 90.0,
                        speed_mps: 8.5,
                        updated_at: ts(1_795_000_000),
                    }),
                }),
            ),
        ),
        (
            "rider-on-trip",
            event("user_12_bookings", 4 * s, changed(OnTrip, Accepted)),
        ),
        (
            "rider-completed",
            event("user_12_bookings", 5 * s, changed(Completed, OnTrip)),
        ),
        (
            "rider-cancelled-by-driver",
            event(
                "user_12_bookings",
                6 * s,
                Kind::BookingChanged(pb::BookingChanged {
                    booking: Some(cancelled),
                    previous_status: Accepted as i32,
                }),
            ),
        ),
        (
            "driver-offered",
            event(
                "driver_45_available_bookings",
                s,
                Kind::BookingOffered(pb::BookingOffered {
                    booking: Some(booking(Pending)),
                    distance_m: 104.2,
                }),
            ),
        ),
        (
            "driver-offer-taken",
            event(
                "driver_45_available_bookings",
                2 * s,
                Kind::OfferClosed(pb::OfferClosed {
                    booking_id: 1,
                    reason: pb::offer_closed::Reason::Taken as i32,
                    booking: Some(booking(Accepted)),
                }),
            ),
        ),
        (
            "driver-accepted",
            event("driver_45_bookings", s, changed(Accepted, Pending)),
        ),
        (
            "admin-on-trip",
            event("admins", 3 * s, changed(OnTrip, Accepted)),
        ),
        (
            "admin-driver-status",
            event(
                "admins",
                4 * s,
                Kind::DriverStatus(pb::DriverStatusChanged {
                    driver_id: "45".into(),
                    status: pb::DriverStatus::OnTrip as i32,
                    previous_status: pb::DriverStatus::Available as i32,
                    vehicle_type: "car".into(),
                    unseen: false,
                }),
            ),
        ),
        (
            "fleet-position",
            event(
                "fleet",
                4 * s + 1,
                Kind::DriverPosition(pb::DriverPosition {
                    location: Some(pb::DriverLocation {
                        driver_id: "45".into(),
                        latitude: 37.775,
                        longitude: -122.418,
                        ..Default::default()
                    }),
                    status: pb::DriverStatus::OnTrip as i32,
                    vehicle_type: "car".into(),
                    booking_id: 7,
                    driver_id: "45".into(),
                }),
            ),
        ),
        (
            "resync",
            event(
                "admins",
                5 * s,
                Kind::ResyncRequired(pb::ResyncRequired {
                    reason: 3,
                    detail: "cursor offset 6000000000 is past the last event written".into(),
                }),
            ),
        ),
        (
            "head",
            event("admins", 5 * s, Kind::StreamHead(pb::StreamHead {})),
        ),
    ];
    for (name, e) in events {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&e.encode_to_vec());
        write("render", name, bytes);
    }
}
