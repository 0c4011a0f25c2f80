//! The logi dialect (`spec/logi-dialect.txt`): every frame is
//! `{"user_id": "...", "type": "...", "payload": {...}}`, ids are strings, `user_id`
//! is the recipient (empty for admin frames), and places are GeoJSON points
//! `[longitude, latitude]`.
//!
//! - rider: `status_update` for every booking change, preceded by `booking_accepted`
//!   on accept; `driver_location` during trips; `booking_otp` (added) with the OTP.
//! - driver: `new_booking_request` for offers; `booking_request_closed` (added) when
//!   an offer closes without it; `status_update` for bookings it accepted.
//! - admin: `status_update` for every booking change, `driver_status_update`; with
//!   `?fleet=1` (added) one `fleet_snapshot` of every driver on connecting, then a
//!   `driver_position` per position.

use logi::auth::Role;
use logi::pb::{self, event::Kind};
use logi::topic::Topic;
use serde_json::{Value, json};

use super::{Audience, driver_status, logi_status, offer_closed_reason};

fn point(p: &Option<pb::Place>) -> Value {
    let (lat, lon) = p.as_ref().map_or((0.0, 0.0), |p| (p.latitude, p.longitude));
    json!({"type": "Point", "coordinates": [lon, lat]})
}

/// A driver on the `fleet` topic; no position yet is `null` coordinates.
fn driver_position(p: &pb::DriverPosition) -> Value {
    let (lat, lon) = p.location.as_ref().map_or((Value::Null, Value::Null), |l| {
        (l.latitude.into(), l.longitude.into())
    });
    let booking_id = match p.booking_id {
        0 => String::new(),
        id => id.to_string(),
    };
    json!({
        "driver_id": p.driver_id,
        "status": driver_status(p.status),
        "vehicle_type": p.vehicle_type,
        "latitude": lat,
        "longitude": lon,
        "booking_id": booking_id,
    })
}

/// The one frame that brings an operations console up to date with the fleet:
/// every driver, and the bookings in progress as `status_update` payloads.
pub fn fleet_snapshot(snap: &pb::Snapshot, audience: &Audience) -> Value {
    let drivers: Vec<Value> = snap.drivers.iter().map(driver_position).collect();
    let bookings: Vec<Value> = snap.bookings.iter().map(status_update).collect();
    json!({"user_id": recipient(audience), "type": "fleet_snapshot",
           "payload": {"drivers": drivers, "bookings": bookings}})
}

fn status_update(b: &pb::Booking) -> Value {
    json!({"booking_id": b.id.to_string(), "status": logi_status(b.status)})
}

/// The envelope's `user_id`: the recipient, empty for admins.
pub fn recipient(audience: &Audience) -> String {
    if audience.role == Role::Admin {
        String::new()
    } else {
        audience.principal.to_string()
    }
}

pub fn render(event: &pb::Event, audience: &Audience) -> Vec<Value> {
    let (Ok(topic), Some(kind)) = (Topic::parse(&event.topic), &event.kind) else {
        return Vec::new();
    };
    let payloads: Vec<(&str, Value)> = match (&topic, kind) {
        (Topic::UserBookings(_), Kind::BookingChanged(c)) => {
            let Some(b) = &c.booking else {
                return Vec::new();
            };
            let mut out = Vec::new();
            let just_accepted = b.status == pb::BookingStatus::Accepted as i32
                && c.previous_status != pb::BookingStatus::Accepted as i32;
            if just_accepted {
                out.push((
                    "booking_accepted",
                    json!({"booking_id": b.id.to_string(), "driver_id": b.driver_id}),
                ));
            }
            out.push(("status_update", status_update(b)));
            out
        }
        (Topic::UserBookings(_), Kind::OtpIssued(o)) => {
            vec![(
                "booking_otp",
                json!({"booking_id": o.booking_id.to_string(), "otp": o.otp}),
            )]
        }
        (Topic::UserBookings(_), Kind::DriverLocation(l)) => {
            let Some(loc) = &l.location else {
                return Vec::new();
            };
            vec![(
                "driver_location",
                json!({"booking_id": l.booking_id.to_string(), "latitude": loc.latitude, "longitude": loc.longitude}),
            )]
        }
        (Topic::DriverAvailable(_), Kind::BookingOffered(o)) => {
            let Some(b) = &o.booking else {
                return Vec::new();
            };
            vec![(
                "new_booking_request",
                json!({
                    "booking_id": b.id.to_string(),
                    "user_id": b.user_id,
                    "pickup_location": point(&b.pickup),
                    "dropoff_location": point(&b.dropoff),
                    "vehicle_type": b.vehicle_type,
                    "price_estimate": b.price_estimate,
                }),
            )]
        }
        (Topic::DriverAvailable(_), Kind::OfferClosed(c)) => {
            let Some(reason) = offer_closed_reason(c.reason) else {
                return Vec::new();
            };
            vec![(
                "booking_request_closed",
                json!({"booking_id": c.booking_id.to_string(), "reason": reason}),
            )]
        }
        (Topic::DriverBookings(_) | Topic::Admins, Kind::BookingChanged(c)) => c
            .booking
            .as_ref()
            .map(|b| ("status_update", status_update(b)))
            .into_iter()
            .collect(),
        (Topic::Admins, Kind::DriverStatus(d)) => {
            vec![(
                "driver_status_update",
                json!({"driver_id": d.driver_id, "status": driver_status(d.status)}),
            )]
        }
        (Topic::Fleet, Kind::DriverPosition(p)) => vec![("driver_position", driver_position(p))],
        _ => Vec::new(),
    };
    let user_id = recipient(audience);
    payloads
        .into_iter()
        .map(|(kind, payload)| json!({"user_id": user_id, "type": kind, "payload": payload}))
        .collect()
}
