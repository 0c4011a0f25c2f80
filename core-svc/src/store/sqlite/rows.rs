//! Mapping between rows and domain types.

use logi::id::Id;
use rusqlite::{Row, types::Type};

use crate::model::{Booking, BookingStatus, Canceller, DriverStatus, GeoPoint, Place, from_millis};

pub(super) use crate::store::BOOKING_COLUMNS;

fn bad(idx: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, what.to_owned().into())
}

pub fn id(row: &Row<'_>, idx: usize) -> rusqlite::Result<Id> {
    Id::new(row.get::<_, String>(idx)?).map_err(|e| bad(idx, &e.to_string()))
}

pub fn driver_status(row: &Row<'_>, idx: usize) -> rusqlite::Result<DriverStatus> {
    DriverStatus::parse(&row.get::<_, String>(idx)?)
        .ok_or_else(|| bad(idx, "unknown driver status"))
}

pub fn booking_status(row: &Row<'_>, idx: usize) -> rusqlite::Result<BookingStatus> {
    BookingStatus::parse(&row.get::<_, String>(idx)?)
        .ok_or_else(|| bad(idx, "unknown booking status"))
}

pub fn booking(row: &Row<'_>) -> rusqlite::Result<Booking> {
    let place = |lat: usize| -> rusqlite::Result<Place> {
        Ok(Place {
            point: GeoPoint {
                lat: row.get(lat)?,
                lon: row.get(lat + 1)?,
            },
            address: row.get(lat + 2)?,
        })
    };
    let cancelled_by: Option<String> = row.get(16)?;
    Ok(Booking {
        id: row.get::<_, i64>(0)? as u64,
        user_id: id(row, 1)?,
        driver_id: row
            .get::<_, Option<String>>(2)?
            .map(Id::new)
            .transpose()
            .map_err(|e| bad(2, &e.to_string()))?,
        status: booking_status(row, 3)?,
        pickup: place(4)?,
        dropoff: place(7)?,
        vehicle_type: row.get(10)?,
        price_estimate: row.get(11)?,
        distance_m: row.get(12)?,
        phone_number: row.get(13)?,
        otp: row.get(14)?,
        otp_failures: row.get(15)?,
        cancelled_by: cancelled_by.as_deref().and_then(Canceller::parse),
        cancel_reason: row.get(17)?,
        pickup_time: row.get::<_, Option<i64>>(18)?.map(from_millis),
        dropoff_time: row.get::<_, Option<i64>>(19)?.map(from_millis),
        created_at: from_millis(row.get(20)?),
        updated_at: from_millis(row.get(21)?),
    })
}
