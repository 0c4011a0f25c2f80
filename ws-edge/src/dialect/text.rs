//! The hottest frames written straight to text, without building a JSON value
//! first: a driver's position, in both dialects (most of what an edge sends).
//! Each is exactly the text `serde_json` makes of the dialect's own value (the
//! tests below compare the two), so the documented shapes hold for both ways.

use std::io::Write;

use ::logi::pb::{self, event::Kind};
use ::logi::topic::Topic;

use super::{Audience, channels_status, logi};
use crate::route::{ChannelsRoute, Dialect};

/// The frames of `event` for `audience` when it is one written here; `None`
/// for every other event, to be rendered by its dialect.
pub fn render(event: &pb::Event, audience: &Audience) -> Option<Vec<String>> {
    let Some(Kind::DriverLocation(l)) = &event.kind else {
        return None;
    };
    let Ok(Topic::UserBookings(_)) = Topic::parse(&event.topic) else {
        return None;
    };
    let loc = l.location.as_ref()?;
    let mut out = Vec::with_capacity(160);
    match audience.dialect {
        Dialect::Channels(ChannelsRoute::UserBookings) => {
            out.extend_from_slice(br#"{"type":"location_update","driver_id":"#);
            match ::logi::id::canonical_number(&loc.driver_id) {
                Some(n) => write!(out, "{n}").ok()?,
                None => json(&mut out, &loc.driver_id)?,
            }
            out.extend_from_slice(br#","current_latitude":"#);
            json(&mut out, &loc.latitude.to_string())?;
            out.extend_from_slice(br#","current_longitude":"#);
            json(&mut out, &loc.longitude.to_string())?;
            out.extend_from_slice(br#","status":"#);
            json(&mut out, channels_status(l.booking_status))?;
            out.push(b'}');
        }
        Dialect::Logi => {
            out.extend_from_slice(br#"{"user_id":"#);
            json(&mut out, &logi::recipient(audience))?;
            out.extend_from_slice(br#","type":"driver_location","payload":{"booking_id":"#);
            json(&mut out, &l.booking_id.to_string())?;
            out.extend_from_slice(br#","latitude":"#);
            json(&mut out, &loc.latitude)?;
            out.extend_from_slice(br#","longitude":"#);
            json(&mut out, &loc.longitude)?;
            out.extend_from_slice(b"}}");
        }
        // Positions go only to riders.
        Dialect::Channels(_) => return Some(Vec::new()),
    }
    String::from_utf8(out).ok().map(|text| vec![text])
}

/// One JSON value, as serde_json writes it (escaped strings, shortest floats,
/// `null` for a float that is not finite).
fn json(out: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) -> Option<()> {
    serde_json::to_writer(out, value).ok()
}

#[cfg(test)]
mod tests {
    use ::logi::auth::Role;
    use ::logi::id::Id;

    use super::*;

    fn position(driver: &str, lat: f64, lon: f64, status: pb::BookingStatus) -> pb::Event {
        pb::Event {
            topic: "user_12_bookings".into(),
            cursor: None,
            occurred_at: None,
            kind: Some(Kind::DriverLocation(pb::DriverLocationChanged {
                booking_id: 9_000_000_001,
                booking_status: status as i32,
                location: Some(pb::DriverLocation {
                    driver_id: driver.into(),
                    latitude: lat,
                    longitude: lon,
                    ..Default::default()
                }),
            })),
        }
    }

    #[test]
    fn the_same_text_as_the_dialects_own_values() {
        let audiences = [
            Dialect::Channels(ChannelsRoute::UserBookings),
            Dialect::Channels(ChannelsRoute::DriverBookings),
            Dialect::Logi,
        ]
        .map(|dialect| Audience {
            dialect,
            principal: Id::new("12").unwrap(),
            role: Role::User,
        });
        let coordinates = [
            (37.7749, -122.4194),
            (0.0, -0.0),
            (-90.0, 180.0),
            (1e-7, -1.5e-9),
            (45.123_456_789_012_34, 7.0),
            (f64::NAN, f64::INFINITY),
        ];
        let mut compared = 0;
        for driver in ["45", "driver456", "07", "d.1-x"] {
            for (lat, lon) in coordinates {
                for status in [pb::BookingStatus::Accepted, pb::BookingStatus::OnTrip] {
                    let event = position(driver, lat, lon, status);
                    for audience in &audiences {
                        let fast = render(&event, audience).expect("a position");
                        let slow: Vec<String> = super::super::render(&event, audience)
                            .iter()
                            .map(ToString::to_string)
                            .collect();
                        assert_eq!(fast, slow, "{driver} {lat} {lon} {:?}", audience.dialect);
                        compared += fast.len();
                    }
                }
            }
        }
        assert_eq!(compared, 4 * 6 * 2 * 2, "every rider frame was compared");
    }

    #[test]
    fn other_events_are_left_to_the_dialects() {
        let event = pb::Event {
            topic: "user_12_bookings".into(),
            kind: Some(Kind::OtpIssued(pb::OtpIssued::default())),
            ..Default::default()
        };
        let audience = Audience {
            dialect: Dialect::Logi,
            principal: Id::new("12").unwrap(),
            role: Role::User,
        };
        assert!(render(&event, &audience).is_none());
    }
}
