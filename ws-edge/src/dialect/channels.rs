//! The channels dialect (`spec/channels-dialect.md`): numeric ids as JSON numbers,
//! coordinates in `location_update` as strings, times as `"YYYY-MM-DD HH:MM:SS"` UTC.
//!
//! Frame type by route and topic:
//! - rider route: booking changes → `booking_status_update`; OTPs →
//!   `send_otp_update`; positions → `location_update`.
//! - `/driver/ws/available_bookings/`: offers and the driver's accepted bookings →
//!   `available_booking_update`; an offer that closed without this driver →
//!   `available_booking_closed` (added).
//! - `/driver/ws/bookings/`: the driver's accepted bookings → `booking_status_update`.

use logi::pb::{self, event::Kind};
use logi::topic::Topic;
use serde_json::{Map, Value, json};

use super::{channels_status, channels_time, offer_closed_reason};
use crate::route::ChannelsRoute;

/// The `message` texts the document shows, word for word, and ours beside them.
pub const TRIP_STARTED: &str = "OTP Verified. Trip has started.";
pub const CANCELLED_BY_DRIVER: &str = "Booking has been cancelled by the driver.";
pub const CANCELLED_BY_USER: &str = "Booking has been cancelled by the user.";
pub const EXPIRED: &str = "No driver accepted the booking in time.";

/// An id as the document shows it: a JSON number when it is one, else a string.
pub fn id_value(id: &str) -> Value {
    match logi::id::canonical_number(id) {
        Some(n) => json!(n),
        None => json!(id),
    }
}

/// Which of the document's two message shapes a booking change takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// `booking_status_update`: the trip start carries the "OTP Verified" message.
    StatusUpdate,
    /// `available_booking_update`: the trip start carries only the pickup time.
    Available,
}

fn booking_message(b: &pb::Booking, flavor: Flavor) -> Value {
    let status = pb::BookingStatus::try_from(b.status).unwrap_or(pb::BookingStatus::Unspecified);
    let mut m = Map::new();
    m.insert("status".into(), json!(channels_status(b.status)));
    m.insert("booking_id".into(), json!(b.id));
    let place =
        |p: &Option<pb::Place>| json!(p.as_ref().map(|p| p.address.as_str()).unwrap_or_default());
    match status {
        pb::BookingStatus::OnTrip => {
            m.insert("pickup_time".into(), channels_time(b.pickup_time.as_ref()));
            if flavor == Flavor::StatusUpdate {
                m.insert("message".into(), json!(TRIP_STARTED));
            }
        }
        pb::BookingStatus::Completed => {
            m.insert(
                "dropoff_time".into(),
                channels_time(b.dropoff_time.as_ref()),
            );
        }
        pb::BookingStatus::Cancelled => {
            let by_driver = b.cancelled_by == pb::Canceller::Driver as i32;
            m.insert(
                "message".into(),
                json!(if by_driver {
                    CANCELLED_BY_DRIVER
                } else {
                    CANCELLED_BY_USER
                }),
            );
        }
        pb::BookingStatus::Expired => {
            m.insert("message".into(), json!(EXPIRED));
        }
        _ => {
            m.insert("pickup_location".into(), place(&b.pickup));
            m.insert("phone_number".into(), json!(b.phone_number));
            m.insert("dropoff_location".into(), place(&b.dropoff));
        }
    }
    Value::Object(m)
}

fn frame(kind: &str, message: Value) -> Value {
    json!({"type": kind, "message": message})
}

pub fn render(event: &pb::Event, route: ChannelsRoute) -> Vec<Value> {
    let (Ok(topic), Some(kind)) = (Topic::parse(&event.topic), &event.kind) else {
        return Vec::new();
    };
    let frame = match (route, &topic, kind) {
        (ChannelsRoute::UserBookings, Topic::UserBookings(_), Kind::BookingChanged(c)) => {
            c.booking.as_ref().map(|b| {
                frame(
                    "booking_status_update",
                    booking_message(b, Flavor::StatusUpdate),
                )
            })
        }
        (ChannelsRoute::UserBookings, Topic::UserBookings(_), Kind::OtpIssued(o)) => {
            Some(json!({"type": "send_otp_update", "otp": o.otp, "booking_id": o.booking_id}))
        }
        (ChannelsRoute::UserBookings, Topic::UserBookings(_), Kind::DriverLocation(l)) => {
            l.location.as_ref().map(|loc| {
                json!({
                    "type": "location_update",
                    "driver_id": id_value(&loc.driver_id),
                    "current_latitude": loc.latitude.to_string(),
                    "current_longitude": loc.longitude.to_string(),
                    "status": channels_status(l.booking_status),
                })
            })
        }
        (ChannelsRoute::DriverAvailable, Topic::DriverAvailable(_), Kind::BookingOffered(o)) => {
            o.booking.as_ref().map(|b| {
                frame(
                    "available_booking_update",
                    booking_message(b, Flavor::Available),
                )
            })
        }
        (ChannelsRoute::DriverAvailable, Topic::DriverAvailable(_), Kind::OfferClosed(c)) => {
            let Some(reason) = offer_closed_reason(c.reason) else {
                return Vec::new();
            };
            Some(frame(
                "available_booking_closed",
                json!({"booking_id": c.booking_id, "reason": reason}),
            ))
        }
        (ChannelsRoute::DriverAvailable, Topic::DriverBookings(_), Kind::BookingChanged(c)) => {
            c.booking.as_ref().map(|b| {
                frame(
                    "available_booking_update",
                    booking_message(b, Flavor::Available),
                )
            })
        }
        (ChannelsRoute::DriverBookings, Topic::DriverBookings(_), Kind::BookingChanged(c)) => {
            c.booking.as_ref().map(|b| {
                frame(
                    "booking_status_update",
                    booking_message(b, Flavor::StatusUpdate),
                )
            })
        }
        _ => None,
    };
    frame.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_numbers_only_when_they_are_numbers() {
        assert_eq!(id_value("45"), json!(45));
        assert_eq!(id_value("0"), json!(0));
        assert_eq!(id_value("045"), json!("045"));
        assert_eq!(id_value("driver456"), json!("driver456"));
        assert_eq!(
            id_value("99999999999999999999999"),
            json!("99999999999999999999999")
        );
    }
}
