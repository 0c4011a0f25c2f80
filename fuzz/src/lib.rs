//! What the fuzz targets share: the JWT key they sign with, the audiences frames
//! are rendered for, and events built from fuzzer input.
//!
//! # Layout
//! - `fuzz_targets/inbound.rs`: WebSocket frames apps send, both dialects.
//! - `fuzz_targets/handshake.rs`: the upgrade request's `?token=` query and the
//!   handshake check.
//! - `fuzz_targets/jwt.rs`: `Verifier::verify` on raw bytes and on tokens with
//!   arbitrary header and claims, correctly signed.
//! - `fuzz_targets/cursor.rs`: resume cursors of `EventService.Subscribe`.
//! - `fuzz_targets/render.rs`: event → frame, every dialect, route and role.
//! - `examples/seeds.rs`: writes the seed corpus from real examples.

use std::time::{SystemTime, UNIX_EPOCH};

use arbitrary::{Arbitrary, Result, Unstructured};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use logi::auth::Role;
use logi::id::Id;
use logi::pb::{self, event::Kind};
use ws_edge::dialect::Audience;
use ws_edge::route::{ChannelsRoute, Dialect};

/// The HS256 secret every target verifies with.
pub const SECRET: &[u8] = b"fuzz-secret-fuzz-secret-fuzz-secret!";

/// The header `logi::auth::Signer` writes.
pub const HEADER: &str = r#"{"typ":"JWT","alg":"HS256"}"#;

/// Every dialect, with each channels route.
pub const DIALECTS: [Dialect; 4] = [
    Dialect::Channels(ChannelsRoute::UserBookings),
    Dialect::Channels(ChannelsRoute::DriverAvailable),
    Dialect::Channels(ChannelsRoute::DriverBookings),
    Dialect::Logi,
];

pub const ROLES: [Role; 4] = [Role::User, Role::Driver, Role::Admin, Role::Service];

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// A compact JWS of exactly these header and claims bytes, signed HS256 with
/// [`SECRET`], so that the verifier gets past the signature.
pub fn sign(header: &[u8], claims: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = EncodingKey::from_secret(SECRET).expect("the secret is not empty");
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256)
        .expect("HS256 signs");
    format!("{message}.{signature}")
}

/// Every audience a frame can be rendered for: each dialect and role. The
/// principal's id only fills the logi frames' `user_id`, so one will do.
pub fn audiences() -> Vec<Audience> {
    let mut out = Vec::new();
    for dialect in DIALECTS {
        for role in ROLES {
            out.push(Audience {
                dialect,
                principal: Id::new("45").expect("valid id"),
                role,
            });
        }
    }
    out
}

/// A string that is often one the renderers treat specially.
fn text(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0..=7)? {
        0 => String::new(),
        1 => "45".into(),
        2 => "045".into(),
        3 => "driver456".into(),
        4 => "99999999999999999999999".into(),
        5 => "\u{0}\"\\\u{7f}\u{2028}😀".into(),
        _ => String::arbitrary(u)?,
    })
}

/// Any double, NaN and the infinities included.
fn number(u: &mut Unstructured<'_>) -> Result<f64> {
    Ok(match u.int_in_range(0..=5)? {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3 => -0.0,
        _ => f64::from_bits(u64::arbitrary(u)?),
    })
}

fn enum_value(u: &mut Unstructured<'_>, max: i32) -> Result<i32> {
    // Mostly a known value; sometimes one from a newer contract.
    if u.ratio(1, 8)? {
        i32::arbitrary(u)
    } else {
        u.int_in_range(0..=max)
    }
}

fn timestamp(u: &mut Unstructured<'_>) -> Result<Option<prost_types::Timestamp>> {
    if !bool::arbitrary(u)? {
        return Ok(None);
    }
    let seconds = match u.int_in_range(0..=3)? {
        0 => 1_729_247_400,
        1 => i64::MIN,
        2 => i64::MAX,
        _ => i64::arbitrary(u)?,
    };
    Ok(Some(prost_types::Timestamp {
        seconds,
        nanos: i32::arbitrary(u)?,
    }))
}

fn place(u: &mut Unstructured<'_>) -> Result<Option<pb::Place>> {
    if !bool::arbitrary(u)? {
        return Ok(None);
    }
    Ok(Some(pb::Place {
        latitude: number(u)?,
        longitude: number(u)?,
        address: text(u)?,
    }))
}

fn booking(u: &mut Unstructured<'_>) -> Result<pb::Booking> {
    Ok(pb::Booking {
        id: u64::arbitrary(u)?,
        user_id: text(u)?,
        driver_id: text(u)?,
        status: enum_value(u, 6)?,
        pickup: place(u)?,
        dropoff: place(u)?,
        vehicle_type: text(u)?,
        price_estimate: number(u)?,
        phone_number: text(u)?,
        pickup_time: timestamp(u)?,
        dropoff_time: timestamp(u)?,
        created_at: timestamp(u)?,
        updated_at: timestamp(u)?,
        cancelled_by: enum_value(u, 3)?,
        cancel_reason: text(u)?,
        otp: text(u)?,
        distance_m: number(u)?,
    })
}

fn maybe_booking(u: &mut Unstructured<'_>) -> Result<Option<pb::Booking>> {
    if u.ratio(1, 8)? {
        Ok(None)
    } else {
        booking(u).map(Some)
    }
}

fn maybe_location(u: &mut Unstructured<'_>) -> Result<Option<pb::DriverLocation>> {
    if u.ratio(1, 8)? {
        return Ok(None);
    }
    Ok(Some(pb::DriverLocation {
        driver_id: text(u)?,
        latitude: number(u)?,
        longitude: number(u)?,
        heading: number(u)?,
        speed_mps: number(u)?,
        updated_at: timestamp(u)?,
    }))
}

fn driver_position(u: &mut Unstructured<'_>) -> Result<pb::DriverPosition> {
    Ok(pb::DriverPosition {
        location: maybe_location(u)?,
        status: enum_value(u, 3)?,
        vehicle_type: text(u)?,
        booking_id: u64::arbitrary(u)?,
        driver_id: text(u)?,
    })
}

fn topic(u: &mut Unstructured<'_>) -> Result<String> {
    let id = || ["12", "45", "ops"];
    Ok(match u.int_in_range(0..=5)? {
        0 => format!("user_{}_bookings", u.choose(&id())?),
        1 => format!("driver_{}_available_bookings", u.choose(&id())?),
        2 => format!("driver_{}_bookings", u.choose(&id())?),
        3 => "admins".into(),
        4 => "fleet".into(),
        _ => String::arbitrary(u)?,
    })
}

fn kind(u: &mut Unstructured<'_>) -> Result<Option<Kind>> {
    Ok(Some(match u.int_in_range(0..=10)? {
        0 => Kind::BookingChanged(pb::BookingChanged {
            booking: maybe_booking(u)?,
            previous_status: enum_value(u, 6)?,
        }),
        1 => Kind::OtpIssued(pb::OtpIssued {
            booking_id: u64::arbitrary(u)?,
            otp: text(u)?,
        }),
        2 => Kind::BookingOffered(pb::BookingOffered {
            booking: maybe_booking(u)?,
            distance_m: number(u)?,
        }),
        3 => Kind::OfferClosed(pb::OfferClosed {
            booking_id: u64::arbitrary(u)?,
            reason: enum_value(u, 6)?,
            booking: maybe_booking(u)?,
        }),
        4 => Kind::DriverLocation(pb::DriverLocationChanged {
            booking_id: u64::arbitrary(u)?,
            booking_status: enum_value(u, 6)?,
            location: maybe_location(u)?,
        }),
        5 => Kind::DriverStatus(pb::DriverStatusChanged {
            driver_id: text(u)?,
            status: enum_value(u, 3)?,
            previous_status: enum_value(u, 3)?,
            vehicle_type: text(u)?,
            unseen: bool::arbitrary(u)?,
        }),
        6 => Kind::ResyncRequired(pb::ResyncRequired {
            reason: enum_value(u, 3)?,
            detail: text(u)?,
        }),
        7 => Kind::StreamHead(pb::StreamHead {}),
        8 => {
            let mut bookings = Vec::new();
            let mut offers = Vec::new();
            for _ in 0..u.int_in_range(0..=3)? {
                bookings.push(booking(u)?);
            }
            for _ in 0..u.int_in_range(0..=3)? {
                offers.push(pb::BookingOffered {
                    booking: maybe_booking(u)?,
                    distance_m: number(u)?,
                });
            }
            let mut drivers = Vec::new();
            for _ in 0..u.int_in_range(0..=3)? {
                drivers.push(driver_position(u)?);
            }
            Kind::Snapshot(pb::Snapshot {
                bookings,
                offers,
                drivers,
            })
        }
        9 => Kind::DriverPosition(driver_position(u)?),
        _ => return Ok(None),
    }))
}

/// An event as core-svc could send it, or could not: any field may be odd.
pub fn event(u: &mut Unstructured<'_>) -> Result<pb::Event> {
    Ok(pb::Event {
        topic: topic(u)?,
        cursor: Option::<(u64, u64)>::arbitrary(u)?
            .map(|(epoch, offset)| pb::Cursor { epoch, offset }),
        occurred_at: timestamp(u)?,
        kind: kind(u)?,
    })
}
