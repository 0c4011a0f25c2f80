//! Mapping between rows and domain types.

use logi::id::Id;
use tokio_postgres::Row;

use crate::error::Error;
use crate::model::{
    ActiveTrip, Booking, BookingStatus, Canceller, DriverStatus, GeoPoint, Place, from_millis,
};

fn bad(what: impl std::fmt::Display) -> Error {
    Error::storage(format!("a row read from PostgreSQL is invalid: {what}"))
}

pub fn id(row: &Row, idx: usize) -> Result<Id, Error> {
    Id::new(row.try_get::<_, String>(idx)?).map_err(bad)
}

pub fn driver_status(row: &Row, idx: usize) -> Result<DriverStatus, Error> {
    let s: &str = row.try_get(idx)?;
    DriverStatus::parse(s).ok_or_else(|| bad(format!("unknown driver status {s:?}")))
}

pub fn booking_status(row: &Row, idx: usize) -> Result<BookingStatus, Error> {
    let s: &str = row.try_get(idx)?;
    BookingStatus::parse(s).ok_or_else(|| bad(format!("unknown booking status {s:?}")))
}

/// A booking from [`crate::store::BOOKING_COLUMNS`] starting at column 0.
pub fn booking(row: &Row) -> Result<Booking, Error> {
    let place = |lat: usize| -> Result<Place, Error> {
        Ok(Place {
            point: GeoPoint {
                lat: row.try_get(lat)?,
                lon: row.try_get(lat + 1)?,
            },
            address: row.try_get(lat + 2)?,
        })
    };
    let cancelled_by: Option<&str> = row.try_get(16)?;
    Ok(Booking {
        id: row.try_get::<_, i64>(0)? as u64,
        user_id: id(row, 1)?,
        driver_id: row
            .try_get::<_, Option<String>>(2)?
            .map(Id::new)
            .transpose()
            .map_err(bad)?,
        status: booking_status(row, 3)?,
        pickup: place(4)?,
        dropoff: place(7)?,
        vehicle_type: row.try_get(10)?,
        price_estimate: row.try_get(11)?,
        distance_m: row.try_get(12)?,
        phone_number: row.try_get(13)?,
        otp: row.try_get(14)?,
        otp_failures: row.try_get::<_, i32>(15)? as u32,
        cancelled_by: cancelled_by.and_then(Canceller::parse),
        cancel_reason: row.try_get(17)?,
        pickup_time: row.try_get::<_, Option<i64>>(18)?.map(from_millis),
        dropoff_time: row.try_get::<_, Option<i64>>(19)?.map(from_millis),
        created_at: from_millis(row.try_get(20)?),
        updated_at: from_millis(row.try_get(21)?),
    })
}

/// An active trip from `id, user_id, status` starting at column `at`.
pub fn trip(row: &Row, at: usize) -> Result<ActiveTrip, Error> {
    Ok(ActiveTrip {
        booking_id: row.try_get::<_, i64>(at)? as u64,
        user_id: id(row, at + 1)?,
        status: booking_status(row, at + 2)?,
    })
}
