//! The WebSocket frames the simulated apps read and send, in both dialects (see
//! the README, "Watch it over WebSockets"): what a rider or driver frame means to
//! the simulator, and a driver's position ping.

use serde_json::{Value, json};

use super::check::Status;
use super::path::Point;

/// Which of the edge's dialects an app speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Channels,
    Logi,
}

impl Dialect {
    /// Every other app speaks channels, the rest logi.
    pub fn of(index: usize) -> Self {
        if index.is_multiple_of(2) {
            Self::Channels
        } else {
            Self::Logi
        }
    }

    pub fn rider_path(self) -> &'static str {
        match self {
            Self::Channels => "/regular_user/ws/bookings/",
            Self::Logi => "/ws",
        }
    }

    pub fn driver_path(self) -> &'static str {
        match self {
            Self::Channels => "/driver/ws/available_bookings/",
            Self::Logi => "/ws",
        }
    }

    /// A driver's position, as its app pushes it up the socket.
    pub fn ping(self, at: Point) -> String {
        match self {
            Self::Channels => json!({
                "type": "location_update",
                "current_latitude": format!("{:.6}", at.lat),
                "current_longitude": format!("{:.6}", at.lon),
            }),
            Self::Logi => json!({
                "type": "driver_location",
                "payload": {"latitude": at.lat, "longitude": at.lon},
            }),
        }
        .to_string()
    }

    fn status(self, name: &str) -> Option<Status> {
        Some(match (self, name) {
            (Self::Channels, "pending") | (Self::Logi, "Pending") => Status::Pending,
            (Self::Channels, "accepted") | (Self::Logi, "Accepted") => Status::Accepted,
            (Self::Channels, "on_trip") | (Self::Logi, "In Transit") => Status::OnTrip,
            (Self::Channels, "completed") | (Self::Logi, "Completed") => Status::Completed,
            (Self::Channels, "cancelled") | (Self::Logi, "Cancelled") => Status::Cancelled,
            (Self::Channels, "expired") | (Self::Logi, "Expired") => Status::Expired,
            _ => return None,
        })
    }
}

/// What a frame to a rider or a driver means here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A booking's status changed (the rider's booking, or one the driver accepted).
    Status(u64, Status),
    /// The rider's OTP for a booking.
    Otp(u64, String),
    /// A booking offered to the driver.
    Offer(u64),
    /// An offer to the driver closed without it (taken, cancelled, expired, ...).
    OfferClosed(u64),
    /// The edge refused a frame the app sent.
    Error(String),
    /// Anything the simulator does not act on (positions, a rider's
    /// `booking_accepted`, ...).
    Other,
}

/// A booking id: a number in the channels dialect, a string in logi.
fn booking_id(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

/// Reads a text frame of `dialect`.
pub fn parse(dialect: Dialect, text: &str) -> Frame {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return Frame::Other;
    };
    let kind = v["type"].as_str().unwrap_or_default();
    let parsed = match (dialect, kind) {
        (_, "error") => Some(Frame::Error(
            v["message"].as_str().unwrap_or_default().to_owned(),
        )),
        (Dialect::Channels, "booking_status_update" | "available_booking_update") => {
            let m = &v["message"];
            let id = booking_id(&m["booking_id"]);
            let status = m["status"].as_str().and_then(|s| dialect.status(s));
            // A pending frame on a driver's socket is an offer; on a rider's, its booking.
            match (kind, status) {
                ("available_booking_update", Some(Status::Pending)) => id.map(Frame::Offer),
                (_, Some(s)) => id.map(|id| Frame::Status(id, s)),
                _ => None,
            }
        }
        (Dialect::Channels, "available_booking_closed") => {
            booking_id(&v["message"]["booking_id"]).map(Frame::OfferClosed)
        }
        (Dialect::Logi, "booking_request_closed") => {
            booking_id(&v["payload"]["booking_id"]).map(Frame::OfferClosed)
        }
        (Dialect::Channels, "send_otp_update") => {
            let otp = v["otp"].as_str().map(str::to_owned);
            booking_id(&v["booking_id"])
                .zip(otp)
                .map(|(id, o)| Frame::Otp(id, o))
        }
        (Dialect::Logi, "status_update") => {
            let p = &v["payload"];
            let status = p["status"].as_str().and_then(|s| dialect.status(s));
            booking_id(&p["booking_id"])
                .zip(status)
                .map(|(id, s)| Frame::Status(id, s))
        }
        (Dialect::Logi, "booking_otp") => {
            let p = &v["payload"];
            let otp = p["otp"].as_str().map(str::to_owned);
            booking_id(&p["booking_id"])
                .zip(otp)
                .map(|(id, o)| Frame::Otp(id, o))
        }
        (Dialect::Logi, "new_booking_request") => {
            booking_id(&v["payload"]["booking_id"]).map(Frame::Offer)
        }
        _ => None,
    };
    parsed.unwrap_or(Frame::Other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn riders_frames_in_both_dialects() {
        let c = Dialect::Channels;
        assert_eq!(
            parse(
                c,
                r#"{"type":"booking_status_update","message":{"status":"accepted","booking_id":1,"pickup_location":"123 Main St","phone_number":"+1234567890","dropoff_location":"456 Elm St"}}"#
            ),
            Frame::Status(1, Status::Accepted)
        );
        assert_eq!(
            parse(
                c,
                r#"{"type":"send_otp_update","otp":"321184","booking_id":1}"#
            ),
            Frame::Otp(1, "321184".into())
        );
        assert_eq!(
            parse(
                c,
                r#"{"type":"location_update","driver_id":45,"current_latitude":"37.776","current_longitude":"-122.418","status":"accepted"}"#
            ),
            Frame::Other
        );
        let l = Dialect::Logi;
        assert_eq!(
            parse(
                l,
                r#"{"user_id":"12","type":"status_update","payload":{"booking_id":"1","status":"In Transit"}}"#
            ),
            Frame::Status(1, Status::OnTrip)
        );
        assert_eq!(
            parse(
                l,
                r#"{"user_id":"12","type":"booking_otp","payload":{"booking_id":"1","otp":"123456"}}"#
            ),
            Frame::Otp(1, "123456".into())
        );
        assert_eq!(
            parse(
                l,
                r#"{"user_id":"12","type":"booking_accepted","payload":{"booking_id":"1","driver_id":"45"}}"#
            ),
            Frame::Other
        );
    }

    #[test]
    fn drivers_frames_in_both_dialects() {
        let c = Dialect::Channels;
        assert_eq!(
            parse(
                c,
                r#"{"type":"available_booking_update","message":{"status":"pending","booking_id":123,"pickup_location":"123 Main St","phone_number":"+1234567890","dropoff_location":"456 Elm St"}}"#
            ),
            Frame::Offer(123)
        );
        assert_eq!(
            parse(
                c,
                r#"{"type":"available_booking_update","message":{"status":"cancelled","booking_id":123,"message":"Booking has been cancelled by the user."}}"#
            ),
            Frame::Status(123, Status::Cancelled)
        );
        assert_eq!(
            parse(
                c,
                r#"{"type":"available_booking_closed","message":{"booking_id":123,"reason":"taken"}}"#
            ),
            Frame::OfferClosed(123)
        );
        let l = Dialect::Logi;
        assert_eq!(
            parse(
                l,
                r#"{"user_id":"driver456","type":"new_booking_request","payload":{"booking_id":"123","user_id":"user123","pickup_location":{"type":"Point","coordinates":[-122.4194,37.7749]},"dropoff_location":{"type":"Point","coordinates":[-122.4194,37.7749]},"vehicle_type":"car","price_estimate":25.5}}"#
            ),
            Frame::Offer(123)
        );
        assert_eq!(
            parse(
                l,
                r#"{"user_id":"driver456","type":"booking_request_closed","payload":{"booking_id":"123","reason":"expired"}}"#
            ),
            Frame::OfferClosed(123)
        );
        assert_eq!(
            parse(
                l,
                r#"{"type":"error","message":"payload.latitude must be a number or a numeric string"}"#
            ),
            Frame::Error("payload.latitude must be a number or a numeric string".into())
        );
    }

    #[test]
    fn pings_are_the_documented_inbound_frames() {
        let at = Point {
            lat: 37.7749,
            lon: -122.4194,
        };
        assert_eq!(
            Dialect::Channels.ping(at),
            r#"{"type":"location_update","current_latitude":"37.774900","current_longitude":"-122.419400"}"#
        );
        assert_eq!(
            Dialect::Logi.ping(at),
            r#"{"type":"driver_location","payload":{"latitude":37.7749,"longitude":-122.4194}}"#
        );
    }
}
