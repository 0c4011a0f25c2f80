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
pub mod text;

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

/// The frames that bring a (re)connecting app up to date with a topic, as if each
/// booking had just changed and each open offer had just been made: the status and,
/// for the rider of an accepted booking, the OTP.
pub fn snapshot(snap: &pb::Snapshot, topic: &str, audience: &Audience) -> Vec<Value> {
    if topic == ::logi::topic::FLEET {
        // Thousands of drivers: one frame, not one each (an app's inbox is bounded).
        return match audience.dialect {
            Dialect::Logi => vec![logi::fleet_snapshot(snap, audience)],
            Dialect::Channels(_) => Vec::new(),
        };
    }
    let event = |kind| pb::Event {
        topic: topic.to_owned(),
        cursor: None,
        occurred_at: None,
        kind: Some(kind),
    };
    let mut frames = Vec::new();
    for booking in &snap.bookings {
        let changed = pb::event::Kind::BookingChanged(pb::BookingChanged {
            booking: Some(pb::Booking {
                otp: String::new(),
                ..booking.clone()
            }),
            previous_status: pb::BookingStatus::Unspecified as i32,
        });
        frames.extend(render(&event(changed), audience));
        if !booking.otp.is_empty() {
            let otp = pb::event::Kind::OtpIssued(pb::OtpIssued {
                booking_id: booking.id,
                otp: booking.otp.clone(),
            });
            frames.extend(render(&event(otp), audience));
        }
    }
    for offer in &snap.offers {
        frames.extend(render(
            &event(pb::event::Kind::BookingOffered(offer.clone())),
            audience,
        ));
    }
    frames
}

/// Whether an event is kept in core-svc's log, so that a resume replays it; its
/// frames carry a cursor in recover mode. Positions are not kept.
pub fn is_durable(kind: &pb::event::Kind) -> bool {
    use pb::event::Kind;
    matches!(
        kind,
        Kind::BookingChanged(_)
            | Kind::OtpIssued(_)
            | Kind::BookingOffered(_)
            | Kind::OfferClosed(_)
            | Kind::DriverStatus(_)
            | Kind::Snapshot(_)
    )
}

/// Adds the recover-mode `"cursor"` after a frame's other fields.
pub fn with_cursor(mut frame: Value, cursor: &str) -> Value {
    if let Value::Object(fields) = &mut frame {
        fields.insert("cursor".to_owned(), Value::from(cursor));
    }
    frame
}

/// Why an app's resume cursor cannot be honoured, as the `resync` frame names it.
pub fn resync_reason(reason: i32) -> &'static str {
    use pb::resync_required::Reason;
    match Reason::try_from(reason) {
        Ok(Reason::EpochChanged) => "epoch_changed",
        Ok(Reason::HistoryTruncated) => "history_truncated",
        Ok(Reason::CursorAhead) => "cursor_ahead",
        Ok(Reason::Unspecified) | Err(_) => "unknown",
    }
}

/// The frame that tells an app its cursor could not be honoured: the frames that
/// follow are its current state (a snapshot), and their cursors replace the old one.
pub fn resync_frame(audience: &Audience, reason: &str, message: &str) -> Value {
    match audience.dialect {
        Dialect::Channels(_) => json!({"type": "resync", "reason": reason, "message": message}),
        Dialect::Logi => json!({
            "user_id": logi::recipient(audience),
            "type": "resync",
            "payload": {"reason": reason, "message": message},
        }),
    }
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
        Ok(Reason::DriverBusy) => Some("busy"),
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
