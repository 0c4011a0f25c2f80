//! What both stores make of rows once read.

use std::time::SystemTime;

use crate::model::{Booking, BookingId, GeoPoint, Location};

/// `rows` were read newest first, one more than `limit` at most: the page, and the
/// id to continue before when there are more.
pub fn page(mut rows: Vec<Booking>, limit: usize) -> (Vec<Booking>, Option<BookingId>) {
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(|b| b.id);
        (rows, next)
    } else {
        (rows, None)
    }
}

/// A driver's saved position: none until one was saved.
pub fn location(
    lat: Option<f64>,
    lon: Option<f64>,
    heading: f64,
    speed_mps: f64,
    seen_at: Option<SystemTime>,
) -> Option<Location> {
    Some(Location {
        point: GeoPoint {
            lat: lat?,
            lon: lon?,
        },
        heading,
        speed_mps,
        at: seen_at?,
    })
}
