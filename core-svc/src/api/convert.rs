//! Requests become domain values here, or INVALID_ARGUMENT saying which field is
//! wrong and how.

use logi::id::Id;
use logi::pb;

use crate::error::Error;
use crate::model::{BookingId, GeoPoint, Place};
use crate::tariff::{Tariff, Tariffs};

/// Longest address or cancel reason, bytes.
pub const MAX_TEXT: usize = 512;

pub fn booking_id(id: u64) -> Result<BookingId, Error> {
    if id == 0 {
        Err(Error::invalid("booking_id is required"))
    } else {
        Ok(id)
    }
}

pub fn id(field: &str, value: &str) -> Result<Id, Error> {
    if value.is_empty() {
        return Err(Error::invalid(format!("{field} is required")));
    }
    Id::new(value).map_err(|e| Error::invalid(format!("{field} {e}")))
}

pub fn text(field: &str, value: String) -> Result<String, Error> {
    if value.len() > MAX_TEXT {
        return Err(Error::invalid(format!(
            "{field} is longer than {MAX_TEXT} bytes"
        )));
    }
    Ok(value)
}

pub fn place(field: &str, place: Option<pb::Place>) -> Result<Place, Error> {
    let p = place.ok_or_else(|| Error::invalid(format!("{field} is required")))?;
    Ok(Place {
        point: GeoPoint::new(p.latitude, p.longitude, field)?,
        address: text(&format!("{field}.address"), p.address)?,
    })
}

pub fn phone(value: String) -> Result<String, Error> {
    let ok = value.len() <= 32
        && value
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | ' ' | '(' | ')'));
    if ok {
        Ok(value)
    } else {
        Err(Error::invalid(
            "phone_number may have at most 32 digits, spaces and + - ( )",
        ))
    }
}

/// The longest `request_id` accepted.
pub const MAX_REQUEST_ID: usize = 64;

/// A CreateBooking `request_id`: empty (none), or up to 64 printable ASCII characters.
pub fn request_id(value: String) -> Result<Option<String>, Error> {
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() <= MAX_REQUEST_ID && value.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(Some(value))
    } else {
        Err(Error::invalid(format!(
            "request_id may have at most {MAX_REQUEST_ID} printable ASCII characters, no spaces"
        )))
    }
}

pub fn vehicle_type(tariffs: &Tariffs, value: &str) -> Result<Tariff, Error> {
    if value.is_empty() {
        return Err(Error::invalid(format!(
            "vehicle_type is required: one of {}",
            tariffs.names()
        )));
    }
    tariffs.get(value).ok_or_else(|| {
        Error::invalid(format!(
            "unknown vehicle_type {value:?}: one of {}",
            tariffs.names()
        ))
    })
}

/// Heading in degrees, 0 to 360, and speed in m/s, 0 or more.
pub fn motion(heading: f64, speed_mps: f64) -> Result<(), Error> {
    if !(heading.is_finite() && (0.0..=360.0).contains(&heading)) {
        return Err(Error::invalid(format!(
            "heading must be from 0 to 360 degrees, got {heading}"
        )));
    }
    if !(speed_mps.is_finite() && speed_mps >= 0.0) {
        return Err(Error::invalid(format!(
            "speed_mps must be 0 or more, got {speed_mps}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_are_in_the_messages() {
        assert_eq!(
            booking_id(0).unwrap_err().to_string(),
            "booking_id is required"
        );
        assert_eq!(
            id("driver_id", "").unwrap_err().to_string(),
            "driver_id is required"
        );
        assert!(
            id("driver_id", "a_b")
                .unwrap_err()
                .to_string()
                .starts_with("driver_id may only contain")
        );
        assert_eq!(
            place("dropoff", None).unwrap_err().to_string(),
            "dropoff is required"
        );
        let bad = pb::Place {
            latitude: 91.0,
            longitude: 0.0,
            address: String::new(),
        };
        assert!(
            place("pickup", Some(bad))
                .unwrap_err()
                .to_string()
                .starts_with("pickup.latitude")
        );
        assert!(phone("+1 (234) 567-890".into()).is_ok());
        assert!(phone("call me".into()).is_err());
        let msg = vehicle_type(&Tariffs::default(), "boat")
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "unknown vehicle_type \"boat\": one of bike, car, truck, van"
        );
        assert!(motion(361.0, 0.0).is_err());
        assert!(motion(0.0, -1.0).is_err());
        assert!(motion(f64::NAN, 0.0).is_err());
        assert!(motion(90.0, 12.5).is_ok());
    }
}
