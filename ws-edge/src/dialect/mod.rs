//! Event → frame, per dialect, as pure functions; and inbound frames → commands.
//!
//! Every frame shape of the two documents in `spec/` is reproduced exactly; the
//! golden tests in [`golden`] render each documented example from the equivalent
//! event. What the documents do not cover is an added frame type or field, listed in
//! the README.

pub mod channels;
#[cfg(test)]
mod golden;
pub mod inbound;
pub mod logi;

use ::logi::auth::Role;
use ::logi::id::Id;
use ::logi::pb;
use serde_json::{Value, json};

use crate::route::Dialect;

/// Who a frame is for: the connection's route and principal.
#[derive(Debug, Clone)]
pub struct Audience {
    pub dialect: Dialect,
    pub principal: Id,
    pub role: Role,
}

/// The frames `event` becomes for `audience`, as JSON values (possibly none).
pub fn render(event: &pb::Event, audience: &Audience) -> Vec<Value> {
    match audience.dialect {
        Dialect::Channels(route) => channels::render(event, route),
        Dialect::Logi => logi::render(event, audience),
    }
}

/// The frames that bring a (re)connecting app up to date with one booking, as if
/// it had just changed: its status and, for the rider of an accepted booking, the OTP.
pub fn snapshot(booking: &pb::Booking, topic: &str, audience: &Audience) -> Vec<Value> {
    let changed = pb::Event {
        topic: topic.to_owned(),
        cursor: None,
        occurred_at: booking.updated_at,
        kind: Some(pb::event::Kind::BookingChanged(pb::BookingChanged {
            booking: Some(pb::Booking {
                otp: String::new(),
                ..booking.clone()
            }),
            previous_status: pb::BookingStatus::Unspecified as i32,
        })),
    };
    let mut frames = render(&changed, audience);
    if !booking.otp.is_empty() {
        let otp = pb::Event {
            kind: Some(pb::event::Kind::OtpIssued(pb::OtpIssued {
                booking_id: booking.id,
                otp: booking.otp.clone(),
            })),
            ..changed
        };
        frames.extend(render(&otp, audience));
    }
    frames
}

/// The answer to a malformed or unknown inbound frame, in both dialects.
pub fn error_frame(message: &str) -> Value {
    json!({"type": "error", "message": message})
}

/// `"YYYY-MM-DD HH:MM:SS"` in UTC, as the channels document shows times.
pub fn channels_time(t: Option<&prost_types::Timestamp>) -> Value {
    let Some(t) = t else { return Value::Null };
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(t.seconds)
        .ok()
        .and_then(|dt| dt.format(&format).ok())
        .map_or(Value::Null, Value::String)
}

/// Status names of the channels dialect.
pub fn channels_status(status: i32) -> &'static str {
    match pb::BookingStatus::try_from(status) {
        Ok(pb::BookingStatus::Pending) => "pending",
        Ok(pb::BookingStatus::Accepted) => "accepted",
        Ok(pb::BookingStatus::OnTrip) => "on_trip",
        Ok(pb::BookingStatus::Completed) => "completed",
        Ok(pb::BookingStatus::Cancelled) => "cancelled",
        Ok(pb::BookingStatus::Expired) => "expired",
        _ => "unknown",
    }
}

/// Status names of the logi dialect.
pub fn logi_status(status: i32) -> &'static str {
    match pb::BookingStatus::try_from(status) {
        Ok(pb::BookingStatus::Pending) => "Pending",
        Ok(pb::BookingStatus::Accepted) => "Accepted",
        Ok(pb::BookingStatus::OnTrip) => "In Transit",
        Ok(pb::BookingStatus::Completed) => "Completed",
        Ok(pb::BookingStatus::Cancelled) => "Cancelled",
        Ok(pb::BookingStatus::Expired) => "Expired",
        _ => "Unknown",
    }
}

/// Why an offer closed without this driver, as both dialects name it; `None` when
/// the driver itself accepted (it hears of that from its bookings topic).
pub fn offer_closed_reason(reason: i32) -> Option<&'static str> {
    use pb::offer_closed::Reason;
    match Reason::try_from(reason) {
        Ok(Reason::Taken) => Some("taken"),
        Ok(Reason::Cancelled) => Some("cancelled"),
        Ok(Reason::Expired) => Some("expired"),
        Ok(Reason::DriverOffline) => Some("offline"),
        Ok(Reason::Accepted | Reason::Unspecified) | Err(_) => None,
    }
}

/// Driver status names, as both dialects show them.
pub fn driver_status(status: i32) -> &'static str {
    match pb::DriverStatus::try_from(status) {
        Ok(pb::DriverStatus::Available) => "Available",
        Ok(pb::DriverStatus::OnTrip) => "On Trip",
        Ok(pb::DriverStatus::Offline) => "Offline",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_names() {
        let t = prost_types::Timestamp {
            seconds: 1_729_247_400,
            nanos: 999_000_000,
        };
        assert_eq!(channels_time(Some(&t)), json!("2024-10-18 10:30:00"));
        assert_eq!(channels_time(None), Value::Null);
        assert_eq!(channels_status(pb::BookingStatus::OnTrip as i32), "on_trip");
        assert_eq!(logi_status(pb::BookingStatus::OnTrip as i32), "In Transit");
        assert_eq!(driver_status(pb::DriverStatus::OnTrip as i32), "On Trip");
    }
}
